"""The simulator as a controlled station: against our master and against a raw client."""
import asyncio

import numpy as np
import polars as pl
import pytest

import iec104
from iec104 import decode_all, decode_frames
from iec104.errors import NegativeConfirmation, UnknownCommonAddressError, UnknownIOAError
from iec104.outstation import GENERATED_TYPES, Outstation
from iec104.types import FrameFormat, family_of

from scripted_peer import asdu, i_frame, s_frame, u_frame
from test_outstation_safety import Raw, close_raw_clients, command_asdu  # noqa: F401 (autouse)
from waiting import round_trips, wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)


POINTS_CSV = "ca,ioa,type,value,command_type,sbo\n1,1,M_SP_NA_1,1,C_SC_NA_1,no\n" \
             "1,2,M_DP_NA_1,1,C_DC_NA_1,yes\n1,3,M_ME_NC_1,12.5,C_SE_NC_1,\n" \
             "1,4,M_IT_NA_1,100,,\n2,1,M_ME_NB_1,-7,,\n"


async def test_gi_returns_every_point_of_every_station_with_types_and_values():
    async with Outstation(stations=3, points=250) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        counters = np.isin(out.image["type_id"], (15, 16, 37))   # not in a GI: only in a CI
        assert await rtu.interrogate() == 750 - counters.sum()
        df = m.points().sort(["ca", "ioa"])
        img = np.sort(out.image[~counters], order=["ca", "ioa"])
        assert df["ioa"].to_list() == img["ioa"].tolist()
        assert df["type_id"].to_list() == img["type_id"].tolist()      # plain types in GI
        np.testing.assert_allclose(df["value"].to_numpy(), img["value"], rtol=1e-6, atol=1 / 32768)
        assert set(df["cot"].to_list()) == {20}


async def test_group_and_counter_interrogation_and_read():
    async with Outstation(stations=2, points=160) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        assert await rtu.interrogate(ca=2, group=3) == 10           # IOAs 3, 19, 35, ...
        got = m.points()
        assert set(got["ioa"].to_list()) == {3 + 16 * i for i in range(10)}
        assert set(got["cot"].to_list()) == {23}
        counters = int((out.image_of(1)["type_id"] == 15).sum())
        assert await rtu.counter_interrogation(ca=1) == counters
        row = await rtu.read(1, 3)
        assert (row["cot"], row["value"]) == (5, out.image_of(1)["value"][2])
        with pytest.raises(UnknownIOAError):
            await rtu.read(1, 99999)


async def test_commands_direct_sbo_and_negative_from_a_point_list(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(POINTS_CSV)
    async with Outstation(point_list=path) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        res = await rtu.command(1, 3, "C_SE_NC_1", 42.0, wait_term=True)
        assert res.terminated
        assert out.image_of(1)["value"][2] == 42.0                        # set before ActTerm
        await wait_for(lambda: len(m.points().filter(pl.col("ioa") == 3)))
        assert m.points().filter(pl.col("ioa") == 3)["value"][0] == 42.0  # COT 11 feedback
        with pytest.raises(NegativeConfirmation):                        # SBO-only point
            await rtu.command(1, 2, "C_DC_NA_1", 2)
        await rtu.command(1, 2, "C_DC_NA_1", 2, select=True)
        with pytest.raises(UnknownIOAError):
            await rtu.command(1, 4, "C_SC_NA_1", 1)
        with pytest.raises(UnknownCommonAddressError):
            await rtu.command(9, 1, "C_SC_NA_1", 1)
        results = [(c["ioa"], c["select"], c["result"]) for c in out.commands]
        assert results == [(3, False, "executed"), (2, False, "refused: not selected"),
                           (2, True, "selected"), (2, False, "executed"),
                           (4, False, "unknown IOA")]


async def test_spontaneous_data_never_exceeds_k_unacknowledged():
    async with Outstation(stations=1, points=500, rate=20000, k=5, w=3) as out:
        r, w = await asyncio.open_connection("127.0.0.1", out.port)
        w.write(u_frame(0x07))
        data = b""
        for _ in range(20):
            try:
                data += await asyncio.wait_for(r.read(65536), 0.1)
            except asyncio.TimeoutError:
                break
        fr, pts = decode_all(data)
        i_frames = fr[fr["format"] == 0]
        assert len(i_frames) == 5 and len(pts) > 5          # k frames, then it waits
        w.write(s_frame(5))                                 # acknowledge: five more may come
        more = b""
        while len(decode_all(more)[0]) < 5:
            more += await asyncio.wait_for(r.read(65536), 2)
        fr2 = decode_all(more)[0]
        assert fr2["ns"].tolist()[:5] == [5, 6, 7, 8, 9]
        w.close()


async def test_misbehaving_client_is_closed_and_others_keep_working():
    async with Outstation(stations=1, points=50) as out, iec104.Master(gi_on_start=False) as m:
        good = await m.connect("127.0.0.1", out.port)
        r, w = await asyncio.open_connection("127.0.0.1", out.port)
        w.write(u_frame(0x07))
        await r.read(6)
        w.write(i_frame(asdu(100, 6, 1, b"\x00\x00\x00\x14"), ns=5, nr=0))   # wrong N(S)
        try:
            closed = await asyncio.wait_for(r.read(65536), 2) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        w.close()
        assert await good.interrogate() == 45             # 50 points, 5 of them counters
        assert out.stats()["closed_on_fault"] >= 1


async def test_end_of_initialization_triggers_a_gi():
    async with Outstation(stations=2, points=20, send_ei=True) as out, \
            iec104.Master(gi_on_start=False) as m:
        await m.connect("127.0.0.1", out.port)
        await wait_for(lambda: len(m) >= 36)
        assert len(m) == 36                                     # 40 points less 4 counters


async def test_stopdt_is_confirmed_and_stops_data():
    async with Outstation(stations=1, points=10, rate=1000) as out:
        async with iec104.Master(gi_on_start=False) as m:
            rtu = await m.connect("127.0.0.1", out.port)
            await wait_for(lambda: len(m) > 0)                  # spontaneous data flows
            rtu.enable_debug()
        u = [(f["dir"], f["u_function"]) for f in rtu.frame_log if f["format"] == "U"]
        assert ("tx", 0x13) in u and ("rx", 0x23) in u            # STOPDT act, then con
        after_con = list(rtu.frame_log)[[f["u_function"] for f in rtu.frame_log].index(0x23) + 1:]
        assert not [f for f in after_con if f["dir"] == "rx" and f["format"] == "I"]
        assert rtu.tcp_state == "closed" and rtu.counts["link_closes"] == 0


def test_a_generated_image_holds_every_common_family_of_generated_types():
    out = Outstation(stations=2, points=len(GENERATED_TYPES))      # built, not started
    for ca in (1, 2):
        types = out.image_of(ca)["type_id"].tolist()
        assert types == list(GENERATED_TYPES)                   # one of each, in that order
    assert {1, 3, 5, 7, 9, 11, 13, 15} <= {family_of(t) for t in out.image["type_id"]}


async def test_schedules_repeat_gi_counters_and_clock_sync():
    async with Outstation(stations=1, points=30) as out, \
            iec104.Master(gi_interval=0.1, ci_interval=0.12, clock_sync_interval=0.15) as m:
        rtu = await m.connect("127.0.0.1", out.port)

        def repeated() -> bool:                                 # start GI + periodic ones
            updates = m.points()["updates"]
            return len(updates) == 30 and updates.min() >= 3 and out.counts["requests"] >= 3 + 3 + 2
        await wait_for(repeated, timeout=10)
        await wait_for(lambda: out.clock_offset_ms is not None)
        assert out.clock_offset_ms is not None and rtu.counts["reconnects"] == 0


async def test_debug_log_and_raw_hooks_see_every_frame():
    async with Outstation(stations=1, points=10) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        sent, received = [], []
        rtu.on_send.append(sent.append)
        rtu.on_receive.append(received.append)
        assert not rtu.frame_log                               # off by default
        rtu.enable_debug()
        await rtu.interrogate()
        dirs = [f["dir"] for f in rtu.frame_log]
        assert dirs[0] == "tx" and dirs.count("rx") >= 3
        tx = rtu.frame_log[0]
        assert (tx["format"], tx["type_id"], tx["cot"], tx["ca"]) == ("I", 100, 6, 65535)
        assert tx["raw"][:2] == bytes([0x68, 14])
        assert b"".join(sent).startswith(tx["raw"])
        assert sum(len(r) for r in received) >= sum(len(f["raw"]) for f in rtu.frame_log if f["dir"] == "rx")
        rtu.enable_debug(False)
        n = len(rtu.frame_log)
        await rtu.interrogate()
        assert len(rtu.frame_log) == n


async def test_debug_and_raw_hooks_see_the_frames_of_reads_that_ask_nothing_else():
    """A trickle of spontaneous APDUs, one per read and fewer than w: such a read needs no
    Python in the master, yet the debug log and the raw hooks must see each of its frames
    (they saw only the reads that sent an S-frame, one in eight)."""
    async with Outstation(stations=1, points=10, rate=80) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        received = []
        rtu.on_receive.append(received.append)
        rtu.enable_debug()
        await wait_for(lambda: rtu.status()["link"]["i_in"] >= 12, 5)
        out.rate = 0
        await round_trips(rtu)
        i_in = rtu.status()["link"]["i_in"]
        logged = [f for f in rtu.frame_log if f["dir"] == "rx" and f["format"] == "I"]
        assert len(logged) == i_in
        i_frames = decode_frames(b"".join(received))
        assert int((i_frames["format"] == FrameFormat.I).sum()) == i_in


async def test_reconnect_on_demand_and_a_new_gi():
    async with Outstation(stations=1, points=10) as out, iec104.Master() as m:
        rtu = await m.connect("127.0.0.1", out.port)
        await rtu.interrogate()                 # the GI at start (joined, not a second one)
        assert out.counts["requests"] == 1
        await rtu.reconnect()
        assert rtu.data_transfer == "started" and rtu.counts["started"] == 2
        await wait_for(lambda: out.counts["requests"] >= 2)
        assert out.counts["connections"] == 2 and out.counts["requests"] >= 2


async def test_session_point_list_gates_commands_and_devices_can_be_forced(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(POINTS_CSV)
    async with Outstation(point_list=path) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        rtu.import_points(path)
        assert m.metadata()["station"].unique().to_list() == [rtu.station]
        with pytest.raises(iec104.CommandNotAllowed):
            await rtu.command(1, 4, "C_SC_NA_1", 1)            # not a command point: nothing sent
        assert out.commands == []
        assert await m.interrogate_device(rtu.station, 2) == 1
        dev = m.devices().row(0, named=True)
        assert (dev["ca"], dev["gi_state"]) == (2, "done")
        params = m.parameters()
        assert params.filter(params["status"] == "ok").height == 1   # only CA 2 interrogated
        assert params.filter(params["status"] == "missing").height == 4


# ---- select before operate: a deactivation breaks the select (IEC 60870-5-5) ------------------

async def test_a_deactivation_of_the_select_held_breaks_it(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text(POINTS_CSV)                         # IOA 2: a double command, select first
    async with Outstation(point_list=path) as out:
        c = await Raw.connect(out.port)
        before = out.image.copy()
        for cot, select in ((6, True), (8, True), (6, False)):  # select, its break, execute
            c.send(command_asdu(c, 46, 2, 2.0, select=select, cot=cot))
        await c.until(lambda: len(c.answers(46)) == 3)
        assert [a[1:3] for a in c.answers(46)] == [(7, False), (9, False), (7, True)]
        assert [r["result"] for r in out.commands] == ["selected", "select broken",
                                                       "refused: not selected"]
        np.testing.assert_array_equal(out.image, before)        # nothing operated


@pytest.mark.parametrize("held", ["none", "timed out", "other value", "execute"])
async def test_a_deactivation_without_the_select_it_mirrors_is_refused(tmp_path, held):
    """A negative DeactCon: no select held (never, or past the select timeout), one of
    another value, or the deactivation of an execute (it ran: nothing to break)."""
    path = tmp_path / "points.csv"
    path.write_text(POINTS_CSV)
    async with Outstation(point_list=path, select_timeout=0.05) as out:
        c = await Raw.connect(out.port)
        if held != "none":
            c.send(command_asdu(c, 46, 2, 2.0, select=True))
            await c.until(lambda: len(c.answers(46)) == 1)
            if held == "timed out":
                await asyncio.sleep(0.1)
        c.send(command_asdu(c, 46, 2, 1.0 if held == "other value" else 2.0,
                            select=held != "execute", cot=8))
        await c.until(lambda: any(a[1] == 9 for a in c.answers(46)))
        assert c.answers(46)[-1][1:3] == (9, True)
        assert out.commands[-1]["result"].startswith("refused")


async def test_a_parameter_activation_may_be_deactivated():
    async with Outstation(stations=1, points=5) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(113, 1, 3, 2, cot=6))                     # QPA 2: this object's parameter
        c.send(c.asdu(113, 1, 3, 2, cot=8))
        await c.until(lambda: len(c.answers(113)) == 2)
        assert [a[1:3] for a in c.answers(113)] == [(7, False), (9, False)]
