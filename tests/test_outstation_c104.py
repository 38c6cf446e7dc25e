"""The simulator against a real master: lib60870-C's client (c104 package)."""
import asyncio
import time

import c104
import pytest

from iec104.outstation import Outstation

from c104_peer import run_c104

pytestmark = pytest.mark.interop


async def in_thread(fn):
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def test_c104_gi_receives_every_point_with_types_and_values():
    async with Outstation(stations=2, points=60) as out:
        seen = {}

        def body(conn, wire):
            points = {}
            for ca in (1, 2):
                st = conn.add_station(common_address=ca)
                for row in out.image_of(ca):
                    points[(ca, int(row["ioa"]))] = st.add_point(
                        io_address=int(row["ioa"]), type=c104.Type(int(row["type_id"])))
            for ca in (1, 2):
                assert wire.answered(conn.interrogation(
                    common_address=ca, cause=c104.Cot.ACTIVATION, qualifier=c104.Qoi.STATION),
                    100, ca)
                assert wire.answered(conn.counter_interrogation(common_address=ca), 101, ca)
            deadline = time.monotonic() + 10         # the data follows the ActCon
            while any(p.processed_at is None for p in points.values()) and time.monotonic() < deadline:
                time.sleep(0.02)
            for key, p in points.items():
                seen[key] = (int(p.type), p.value, p.processed_at)
        await in_thread(lambda: run_c104(out.port, body))
    assert len(seen) == 120
    for row in out.image:
        t, v, _ = seen[(int(row["ca"]), int(row["ioa"]))]
        assert t == int(row["type_id"])
        expected = float(row["value"])
        if t == 1:
            assert bool(v) == bool(expected)
        elif t == 3:
            assert v == c104.Double(int(expected))
        elif t == 5:
            assert int(str(getattr(v, "position", v)) if not isinstance(v, int) else v) == expected
        elif t == 7:
            assert int(str(v), 0) == expected
        elif t == 15:
            assert int(getattr(v, "counter", v)) == expected
        else:
            assert float(str(v) if not isinstance(v, (int, float)) else v) == \
                pytest.approx(expected, rel=1e-5, abs=1 / 32768)


async def test_c104_commands_direct_and_sbo_are_confirmed_and_recorded():
    async with Outstation(stations=1, points=20) as out:
        results = {}

        def body(conn, wire):
            st = conn.add_station(common_address=1)
            sc = st.add_point(io_address=2, type=c104.Type.C_SC_NA_1)        # IOA 2: single point
            sc.value = True
            results["direct"] = wire.answered(sc.transmit(cause=c104.Cot.ACTIVATION), 45, 1, 2)
            se = st.add_point(io_address=1, type=c104.Type.C_SE_NC_1,       # IOA 1: float
                              command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
            se.value = 7.25
            results["sbo"] = wire.answered(se.transmit(cause=c104.Cot.ACTIVATION), 50, 1, 1)
            bad = st.add_point(io_address=9999, type=c104.Type.C_SC_NA_1)
            bad.value = True
            results["unknown"] = bad.transmit(cause=c104.Cot.ACTIVATION)
        await in_thread(lambda: run_c104(out.port, body))
    assert results == {"direct": True, "sbo": True, "unknown": False}
    rec = [(c["type"], c["ioa"], c["select"], c["result"]) for c in out.commands]
    assert ("C_SC_NA_1", 2, False, "executed") in rec
    assert ("C_SE_NC_1", 1, True, "selected") in rec and ("C_SE_NC_1", 1, False, "executed") in rec
    assert ("C_SC_NA_1", 9999, False, "unknown IOA") in rec
    assert out.image_of(1)["value"][0] == 7.25
