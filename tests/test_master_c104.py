"""The master against a real outstation: lib60870-C (c104 package)."""
import asyncio

import polars as pl
import pytest

import iec104
from iec104.errors import UnknownCommonAddressError, UnknownIOAError

from c104_peer import COMMANDS, C104Outstation
from waiting import wait_for

pytestmark = pytest.mark.interop


@pytest.fixture
def c104_out():
    with C104Outstation(stations=3, points=200) as out:
        yield out


async def test_gi_collects_every_point_from_c104_outstation(c104_out):
    async with iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", c104_out.port, name="c104")
        for ca in (1, 2, 3):
            n = await asyncio.wait_for(rtu.interrogate(ca=ca), 20)
            assert n == 200                 # command points are not part of the image
        df = master.points().filter(pl.col("ioa") < 5000)
        assert len(df) == 600
        got = {(r["ca"], r["ioa"]): (r["type_id"], r["value"], r["quality"], r["cot"])
               for r in df.iter_rows(named=True)}
        for key, (type_id, value) in c104_out.expected.items():
            t, v, q, cot = got[key]
            assert t == type_id, key
            assert v == pytest.approx(value, abs=1e-6), key
            assert q == 0 and cot == 20
        assert sorted(master.devices()["ca"].to_list()) == [1, 2, 3]


async def test_broadcast_gi_waits_for_every_station(c104_out):
    async with iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", c104_out.port)
        n = await asyncio.wait_for(rtu.interrogate(), 20)
        assert n == 600
        assert len(master.points().filter(pl.col("ioa") < 5000)) == 600


COMMAND_CASES = [
    # ioa, type, value, select, expected value seen by the outstation
    (5001, "C_SC_NA_1", 1, False, True),
    (5002, "C_SC_NA_1", 1, True, True),
    (5003, "C_DC_NA_1", 2, False, "ON"),
    (5004, "C_RC_NA_1", 2, False, "HIGHER"),
    (5005, "C_SE_NA_1", 0.25, False, 0.25),
    (5006, "C_SE_NB_1", -1234, False, -1234),
    (5007, "C_SE_NC_1", 12.5, False, 12.5),
    (5008, "C_BO_NA_1", 0x12345678, False, 0x12345678),
    (5009, "C_SE_NC_1", -3.5, True, -3.5),
    (5011, "C_SC_NA_1", 0, False, False),       # time=True: sent as C_SC_TA_1
    (5012, "C_DC_NA_1", 1, False, "OFF"),       # C_DC_TA_1
    (5013, "C_SE_NC_1", 99.0, False, 99.0),     # C_SE_TC_1
]


async def test_every_command_type_is_received_by_c104_with_its_value(c104_out):
    async with iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", c104_out.port)
        for ioa, typ, value, select, _ in COMMAND_CASES:
            timed = COMMANDS[ioa][0].name.endswith("TA_1") or COMMANDS[ioa][0].name.endswith("TC_1")
            res = await asyncio.wait_for(
                rtu.command(2, ioa, typ, value, select=select, time=True if timed else None), 10)
            assert res.type_id == int(COMMANDS[ioa][0])
        await wait_for(lambda: len(c104_out.received) >= len(COMMAND_CASES))
    by_ioa = {r["ioa"]: r for r in c104_out.received if r["cot"] == 6}
    for ioa, _, _, _, expected in COMMAND_CASES:
        r = by_ioa[ioa]
        assert r["ca"] == 2 and r["type"] == int(COMMANDS[ioa][0])
        got = r["value"]
        if type(got).__name__ in ("Byte32", "Int16", "NormalizedFloat"):
            got = int(str(got), 0) if type(got).__name__ == "Byte32" else float(str(got))
        if isinstance(expected, str):
            assert expected in str(got), (ioa, got)
        elif isinstance(expected, float):
            assert float(got) == pytest.approx(expected, abs=1e-4), (ioa, got)
        else:
            assert (int(got) if not isinstance(got, bool) else got) == expected, (ioa, got)


async def test_unknown_ioa_and_unknown_ca_raise_typed_errors(c104_out):
    async with iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", c104_out.port)
        with pytest.raises(UnknownIOAError) as e:
            await asyncio.wait_for(rtu.command(1, 7777, "C_SC_NA_1", 1), 10)
        assert e.value.cot == 47 and e.value.ioa == 7777
        with pytest.raises(UnknownCommonAddressError):
            await asyncio.wait_for(rtu.command(42, 5001, "C_SC_NA_1", 1), 10)
        # the link survives refusals
        assert rtu.data_transfer == "started"
        assert (await rtu.command(1, 5001, "C_SC_NA_1", 1)).con_cot == 7


async def test_system_requests_are_confirmed_by_c104(c104_out):
    async with iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", c104_out.port)
        await asyncio.wait_for(rtu.clock_sync(1), 10)
        row = await asyncio.wait_for(rtu.read(1, 7), 10)        # M_ME_NB_1 at IOA 7
        assert (row["ioa"], row["cot"], row["type_id"]) == (7, 5, 11)
        assert row["value"] == c104_out.expected[(1, 7)][1]
        assert await asyncio.wait_for(rtu.counter_interrogation(1), 10) == 0


async def test_testfr_keeps_an_idle_link_up(c104_out):
    async with iec104.Master(gi_on_start=False, t1=2, t2=0.5, t3=0.1) as master:   # TESTFR after 0.1 s idle
        rtu = await master.connect("127.0.0.1", c104_out.port)
        await wait_for(lambda: rtu.last_testfr_con is not None, 5)
        first = rtu.last_testfr_con
        await wait_for(lambda: rtu.last_testfr_con != first, 5)
        assert rtu.data_transfer == "started" and rtu.rtt is not None and rtu.rtt < 1


async def test_killing_the_outstation_triggers_reconnect_and_new_gi():
    first = C104Outstation(stations=1, points=20).__enter__()
    port = first.port
    async with iec104.Master(backoff_min=0.1, backoff_max=0.3, t0=2) as master:
        rtu = await master.connect("127.0.0.1", port)
        await wait_for(lambda: rtu.devices.get(1, {}).get("gi_state") == "done")
        gi_time = rtu.devices[1]["last_gi"]
        first.__exit__(None, None, None)
        await wait_for(lambda: rtu.tcp_state != "connected", 10)
        with C104Outstation(stations=1, points=20, port=port):
            await wait_for(lambda: rtu.data_transfer == "started", 15)
            await wait_for(lambda: (rtu.devices[1].get("last_gi") or 0) > gi_time, 15)
            assert rtu.counts["reconnects"] >= 1 and rtu.counts["started"] >= 2
            assert len(master.points()) == 20
