"""Per-RTU common addresses (connect(ca=[...])): the GI at start, the scheduled interrogations
and the clock sync go to each listed CA instead of the broadcast address, as the simulator
sees them; and the link's health read from the last frame received."""
import asyncio

import pytest

import iec104
import iec104.requests
from iec104.errors import SettingsError
from iec104.outstation import Outstation
from iec104.session import health
from iec104.types import TypeID

from waiting import wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)



def _requests(out: Outstation) -> list[tuple[int, int]]:
    """(type id, CA) of every request the simulator receives, in order."""
    seen: list[tuple[int, int]] = []
    handle = out._request

    def request(conn, f, raw, rows):
        seen.append((int(f["type_id"]), int(f["ca"])))
        handle(conn, f, raw, rows)
    out._request = request
    return seen


async def test_the_gi_at_start_goes_to_each_listed_ca():
    async with Outstation(stations=2, points=5) as out, iec104.Master() as m:
        seen = _requests(out)
        rtu = await m.connect("127.0.0.1", out.port, ca=[1, 2])
        assert rtu.settings.ca == (1, 2)
        await wait_for(lambda: all(rtu.devices.get(c, {}).get("gi_state") == "done" for c in (1, 2)))
        assert sorted(seen) == [(TypeID.C_IC_NA_1, 1), (TypeID.C_IC_NA_1, 2)]
        assert len(m.points()) == 10


async def test_without_ca_the_gi_at_start_is_broadcast():
    async with Outstation(stations=2, points=5) as out, iec104.Master() as m:
        seen = _requests(out)
        rtu = await m.connect("127.0.0.1", out.port)
        await wait_for(lambda: len(m.points()) == 10)
        assert seen == [(TypeID.C_IC_NA_1, 0xFFFF)]
        assert rtu.settings.ca is None


async def test_the_scheduled_requests_go_to_each_listed_ca():
    async with Outstation(stations=2, points=5) as out, iec104.Master(gi_on_start=False) as m:
        seen = _requests(out)
        await m.connect("127.0.0.1", out.port, ca=[2], gi_interval=0.05, ci_interval=0.05,
                        clock_sync_interval=0.05)
        want = {(TypeID.C_IC_NA_1, 2), (TypeID.C_CI_NA_1, 2), (TypeID.C_CS_NA_1, 2)}
        await wait_for(lambda: want <= set(seen))
        assert set(seen) == want                # never the broadcast, never CA 1


@pytest.mark.parametrize("kw, says", [
    (dict(ca=[300], ca_size=1), "1..254"), (dict(ca=[0]), "1..65534"),
    (dict(ca=[65535]), "1..65534"), (dict(ca=[1, 1]), "twice"), (dict(ca=[]), "one common"),
    (dict(ca=["1"]), "ca .1."), (dict(ca="12"), "a list")])
async def test_a_ca_outside_ca_size_is_a_settings_error(kw, says):
    async with iec104.Master() as m:
        with pytest.raises(SettingsError, match=says):
            await m.connect("127.0.0.1", 9, **kw)
        assert m.sessions == []                 # nothing opened


async def test_a_busy_link_on_which_testfr_is_never_sent_reads_healthy():
    async with Outstation(stations=1, points=50, rate=400) as out, iec104.Master() as m:
        # a frame every ~10 ms (rate 400, the simulator's 10 ms tick): t3 0.3 s is 30 of them
        rtu = await m.connect("127.0.0.1", out.port, t1=0.4, t2=0.2, t3=0.3)
        rtu.status()
        await asyncio.sleep(0.8)                # beyond t3 + t1: idle, it would have tested
        st = rtu.status()
        assert st["last_testfr_con"] is None    # busy: t3 never ran out
        assert st["health"].startswith("ok (frame "), st["health"]
        assert st["last_frame_in"] is not None


async def test_an_idle_link_reads_healthy_from_its_testfr_con():
    async with Outstation(stations=1, points=5) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port, t1=0.4, t2=0.2, t3=0.1)
        await wait_for(lambda: rtu.last_testfr_con is not None)
        assert rtu.status()["health"].startswith("ok (TESTFR con ")


def test_health_in_words():
    assert health("connected", 100.0, 75.0, None, None, stale_after=35) == "ok (frame 25.0 s ago)"
    assert health("connected", 100.0, 60.0, 50.0, None, stale_after=35) == "no frame for 40 s"
    assert health("connected", 100.0, 99.0, 99.0, 0.0012, stale_after=35) \
        == "ok (TESTFR con 1.0 s ago, rtt 1.20 ms)"
    assert health("connected", 100.0, None, None, None, stale_after=35) == "no frame yet"
    assert health("disconnected", 100.0, 99.0, None, None, stale_after=35) == "disconnected"


async def test_a_redundancy_group_interrogates_each_listed_ca_once_per_activation():
    """The group's GI after activation goes to the listed CAs, and is the only one: its
    members' own GI at start (and the broadcast) would make two."""
    async with Outstation(stations=2, points=5, standby_ports=[0]) as out, \
            iec104.Master() as m:
        seen = _requests(out)
        rtu = await m.connect("127.0.0.1", out.ports[0], standby=[("127.0.0.1", out.ports[1])],
                              ca=[1, 2])
        await wait_for(lambda: rtu.history and rtu.history[-1]["gi_objects"] is not None)
        assert rtu.history[-1]["gi_objects"] == 10 and rtu.history[-1]["gi_error"] is None
        await asyncio.sleep(0.1)
        assert sorted(seen) == [(TypeID.C_IC_NA_1, 1), (TypeID.C_IC_NA_1, 2)]
