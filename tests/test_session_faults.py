"""The session against a scripted peer that misbehaves on purpose."""
import asyncio

import pytest

import iec104
from iec104.errors import ConfirmationTimeout, ConnectError
from iec104.outstation import Outstation
from iec104.session import Session
from iec104.settings import SessionSettings
from iec104.store import Store

from scripted_peer import ScriptedPeer, asdu, float_objects, i_frame, s_frame
from waiting import round_trips, wait_for


async def test_data_is_stored_and_acknowledged_at_w():
    async with ScriptedPeer() as peer, iec104.Master(w=4, k=6) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        for i in range(4):
            peer.send_i(asdu(13, 3, 1, float_objects(10 * i, [1.0, 2.0]), count=2))
        await wait_for(lambda: len(master) == 8)
        await wait_for(lambda: peer.received(fmt=1))
        f, _ = peer.received(fmt=1)[0]
        assert f["nr"] == 4
        assert rtu.status()["points"] == 8


async def test_wrong_send_sequence_number_closes_and_reconnects():
    async with ScriptedPeer() as peer, iec104.Master(backoff_min=0.05, backoff_max=0.1) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        first = peer.conn
        peer.send(i_frame(asdu(13, 3, 1, float_objects(1, [5.0])), ns=7, nr=0))  # expected 0
        await asyncio.wait_for(first["closed"].wait(), 5)
        await wait_for(lambda: len(peer.connections) == 2 and rtu.data_transfer == "started")
        assert "sequence" in (rtu.last_error or "").lower()
        assert rtu.counts["reconnects"] == 1


async def test_garbage_bytes_close_the_link_but_not_other_sessions():
    async with ScriptedPeer() as bad, ScriptedPeer() as good, \
            iec104.Master(backoff_min=5, backoff_max=5) as master:
        a = await master.connect("127.0.0.1", bad.port, gi_on_start=False)
        b = await master.connect("127.0.0.1", good.port, gi_on_start=False)
        good.send_i(asdu(13, 3, 1, float_objects(1, [1.5])))
        bad.send(b"\x00\xffnot iec 104 at all")
        await asyncio.wait_for(bad.conn["closed"].wait(), 5)
        good.send_i(asdu(13, 3, 1, float_objects(2, [2.5])))
        await wait_for(lambda: len(master.points(station=b.station)) == 2)
        assert b.data_transfer == "started" and a.tcp_state != "connected"
        assert a.counts["bad_frames"] >= 1


async def test_unknown_type_is_counted_and_the_link_stays_up():
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        peer.send_i(bytes([0x16, 1, 3, 0, 1, 0, 1, 0, 0, 9]))
        peer.send_i(asdu(13, 3, 1, float_objects(1, [1.0])))
        await wait_for(lambda: len(master) == 1)
        assert rtu.counts["bad_frames"] == 1 and rtu.data_transfer == "started"


async def test_no_startdt_con_fails_the_connect_after_t1():
    async with ScriptedPeer(auto_start=False) as peer:
        async with iec104.Master(t1=0.2, t2=0.1, reconnect=False) as master:
            with pytest.raises(ConnectError):
                await asyncio.wait_for(master.connect("127.0.0.1", peer.port), 5)


async def test_refused_connection_is_a_connect_error():
    async with ScriptedPeer() as peer:
        port = peer.port
    async with iec104.Master(reconnect=False) as master:
        with pytest.raises(ConnectError, match="127.0.0.1"):
            await master.connect("127.0.0.1", port)


async def test_half_open_peer_is_detected_by_testfr_and_t1():
    async with ScriptedPeer(auto_test=False) as peer, \
            iec104.Master(t1=0.3, t2=0.1, t3=0.1, backoff_min=5, backoff_max=5) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        await asyncio.wait_for(peer.conn["closed"].wait(), 5)
        assert peer.received(fmt=2)[-1][0]["u_function"] == 0x43   # TESTFR act went unanswered
        assert "t1" in (rtu.last_error or "").lower()


async def test_full_window_makes_commands_wait_then_time_out_cleanly():
    async with ScriptedPeer() as peer, iec104.Master(k=2, w=1, t1=30) as master:
        rtu = await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        tasks = [asyncio.ensure_future(rtu.command(1, 100 + i, "C_SC_NA_1", 1, timeout=0.25))
                 for i in range(4)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, ConfirmationTimeout) for r in results)
        assert len(peer.received(fmt=0)) == 2                   # never more than k in flight
        # the callers gave up: the two still queued are withdrawn, they never go out
        peer.send(s_frame(2))
        await round_trips(rtu)
        assert len(peer.received(fmt=0)) == 2
        st = rtu.status()
        assert st["withdrawn"] == 2 and st["link"]["queued"] == 0 and st["in_doubt"] == 2
        assert rtu.data_transfer == "started"


async def test_sequence_numbers_wrap_at_32768():
    async with ScriptedPeer() as peer, iec104.Master(w=8) as master:
        await master.connect("127.0.0.1", peer.port, gi_on_start=False)
        c = peer.conn
        c["vs"] = 32766
        # the master expects 0; jump it there with a peer that starts near the wrap
        # (a real wrap: send 32770 frames cheaply as one write)
        c["vs"] = 0
        data = b"".join(i_frame(asdu(1, 3, 1, b"\x01\x00\x00\x01"), ns, 0) for ns in range(32770))
        peer.send(data)
        await wait_for(lambda: len(master.points()) == 1 and master.points()["updates"][0] == 32770, 20)
        await wait_for(lambda: any(f["nr"] == 2 for f, _ in peer.received(fmt=1)), 5)


async def test_a_cancel_that_comes_with_the_connection_stops_the_session():
    """Close() cancels the reconnect loop; on Python 3.11 asyncio.wait_for drops a cancel
    that arrives just as the connection is made, and the loop then waited on a link that
    close() never saw (close hung, the socket stayed open)."""
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "__dict__"):
        pytest.skip("the loop's create_connection cannot be wrapped (uvloop)")
    async with Outstation(stations=1, points=5) as out:
        session = Session("127.0.0.1", out.port, name="rtu", station=0,
                          settings=SessionSettings(), store=Store())
        real = loop.create_connection

        async def connect(*args, **kwargs):
            made = await real(*args, **kwargs)
            session._run_task.cancel()          # the cancel and the connection, together
            return made
        loop.create_connection = connect
        starting = asyncio.ensure_future(session.start())
        try:
            await wait_for(lambda: session._run_task is not None and session._run_task.done(), 2)
            assert session._run_task.cancelled()
        finally:
            del loop.create_connection
            starting.cancel()
            await session.close()
