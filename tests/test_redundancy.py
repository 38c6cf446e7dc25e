"""Redundancy groups (IEC 60870-5-104 edition 2, redundant connections), master and simulator:
the active connection killed mid-stream (its socket, or frozen so that t1 expires), the switch
timed, the GI after it, the event log kept, a command in flight failed and executed once, the
simulator's stream queued for the group across the switch. 127.0.0.1 only."""
import asyncio
import collections
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import iec104
from iec104.errors import CommandInDoubt, ConfirmationTimeout, ConnectError, ConnectionLostError
from iec104.outstation import Outstation
from iec104.types import Cot

from scripted_peer import ScriptedPeer, u_frame
from waiting import round_trips, wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)


POINTS = 200                            # one station
GI_OBJECTS = 180                        # the GI leaves out the integrated totals (one in ten)
FAST = dict(backoff_min=0.05, backoff_max=0.2)
# the masters of the tests that wait for the stream delivered (_stream_delivered): t2 0.1 s,
# so that the last I-frames of the stream (fewer than w = 8) are acknowledged within 0.1 s,
# not the default 10 s, and "all delivered" (Outstation.pending() == 0, which counts the
# frames not acknowledged yet) is reached without waiting out t2
ACK_SOON = dict(t2=0.1)



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record_changes(out):
    """Count per IOA the spontaneous objects the simulator makes (each is sent once)."""
    made = collections.Counter()
    changes = out.changes

    def counted(n):
        rows = changes(n)
        made.update(rows["ioa"].tolist())
        return rows
    out.changes = counted
    return made


def _received(master) -> collections.Counter:
    ev = master.store.event_frame()
    return collections.Counter(ev.filter(ev["cot"] == Cot.SPONTANEOUS)["ioa"].to_list())


async def _stream_delivered(out, master, made, rtu):
    """Stop the simulator's stream; then every object it made has reached the event log
    (at least once: an object sent but not acknowledged at the failure is sent again)."""
    out.rate = 0
    # every frame queued for the group delivered and acknowledged: at k = 12 a queue of
    # hundreds takes a window round trip per 12 (TESTFR round trips are no barrier: a
    # TESTFR con overtakes the I-frames queued behind the window)
    await wait_for(lambda: out.pending() == 0, timeout=20)
    await round_trips(rtu)
    got = _received(master)
    missing = {ioa: n - got[ioa] for ioa, n in made.items() if got[ioa] < n}
    assert not missing, f"spontaneous objects lost across the switch: {missing}"
    return sum(got.values()) - sum(made.values())


async def _group(master, out, **kw):
    rtu = await master.connect("127.0.0.1", out.ports[0], standby=[("127.0.0.1", out.ports[1])],
                               name="rtu", **kw)
    await wait_for(lambda: rtu.history and rtu.history[-1]["gi_objects"] is not None, 10)
    return rtu


async def test_killed_socket_mid_stream_switches_runs_a_gi_and_loses_nothing():
    async with iec104.Outstation(stations=1, points=POINTS, rate=2000, standby_ports=[0]) as out, \
            iec104.Master(**FAST, **ACK_SOON) as master:
        made = _record_changes(out)
        rtu = await _group(master, out)
        assert rtu.status()["active"] == f"127.0.0.1:{out.ports[0]}"
        assert [c["role"] for c in rtu.status()["connections"]] == ["active", "standby"]
        assert rtu.members[1].data_transfer == "stopped"     # up and tested, no STARTDT
        await wait_for(lambda: sum(_received(master).values()) > 500, 10)   # mid-stream
        before = master.store.event_frame()
        t_kill = time.time()
        out.fail_port(out.ports[0])
        await wait_for(lambda: len(rtu.history) == 2 and rtu.history[-1]["gi_objects"] is not None, 10)
        rec = rtu.history[-1]
        switched = rec["time"] - t_kill          # the activation's time: STARTDT con
        print(f"\nswitch on a killed socket: {switched * 1e3:.1f} ms from the kill to STARTDT con "
              f"({rec['switch_time'] * 1e3:.1f} ms from the failure seen), GI after it: "
              f"{rec['gi_objects']} objects in {rec['gi_time'] * 1e3:.1f} ms")
        assert switched < 5
        assert rec["previous"] == f"127.0.0.1:{out.ports[0]}"
        assert rec["active"] == f"127.0.0.1:{out.ports[1]}" == rtu.status()["active"]
        assert "closed" in rec["reason"] or "reset" in rec["reason"].lower(), rec["reason"]
        assert rec["gi_objects"] == GI_OBJECTS and rec["gi_error"] is None
        st = rtu.status()
        assert st["switches"] == 1 and st["last_switch"] is rec and st["active_reason"] == rec["reason"]
        # the log is shared by the group: every row received before the failure is still there
        after = master.store.event_frame()
        assert after.head(len(before)).equals(before)
        assert after.filter(after["cot"] == Cot.INTERROGATED_BY_STATION).height >= 2 * GI_OBJECTS
        assert out.counts["group_switches"] == 2
        dup = await _stream_delivered(out, master, made, rtu)
        print(f"spontaneous objects: {sum(made.values())} made, all received "
              f"({dup} twice: sent again after the failure)")


class _Relay:
    """A TCP relay to one port that can be frozen: nothing passes either way, as a link that
    dies without a close (the master finds out by t1). Closes pass on."""

    def __init__(self, port):
        self.target, self.frozen, self.pairs = port, False, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for w in self.pairs:
            w.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self.pairs += [writer, up_w]
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer),
                             return_exceptions=True)

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                if not self.frozen:
                    writer.write(data)
        finally:
            writer.close()


async def test_t1_expiry_on_a_frozen_link_switches_and_standbys_are_tested():
    # the master finds the freeze at t3 + t1 (0.25 + 0.5 s after the last frame in); the
    # simulator's own t1 (its I-frames unacknowledged behind the freeze) is 5 s, so that it
    # never closes the link first (the reason would then be a close, not t1)
    async with iec104.Outstation(stations=1, points=POINTS, rate=1000, standby_ports=[0],
                                 t1=5, t2=0.5, t3=1) as out, _Relay(out.ports[0]) as relay, \
            iec104.Master(t1=0.5, t2=0.1, t3=0.25, **FAST) as master:
        made = _record_changes(out)
        rtu = await master.connect("127.0.0.1", relay.port, standby=[("127.0.0.1", out.ports[1])],
                                   name="rtu")
        await wait_for(lambda: rtu.history[-1]["gi_objects"] is not None, 10)
        standby = rtu.members[1]
        tested = standby.last_testfr_con
        await wait_for(lambda: standby.last_testfr_con != tested, 5)     # t3 keeps testing it
        assert standby.data_transfer == "stopped"
        await wait_for(lambda: sum(_received(master).values()) > 200, 10)
        before = master.store.event_frame()
        t_freeze = time.time()
        relay.frozen = True
        await wait_for(lambda: len(rtu.history) == 2, 10)
        rec = rtu.history[-1]
        switched = rec["time"] - t_freeze
        print(f"\nswitch on a frozen link (t3 0.25 s, t1 0.5 s): {switched * 1e3:.0f} ms from the "
              f"freeze to STARTDT con ({rec['switch_time'] * 1e3:.1f} ms from the t1 expiry)")
        assert "t1 expired" in rec["reason"], rec["reason"]
        assert rec["active"] == f"127.0.0.1:{out.ports[1]}"
        assert master.store.event_frame().head(len(before)).equals(before)
        await wait_for(lambda: rtu.history[-1]["gi_objects"] == GI_OBJECTS, 10)
        await _stream_delivered(out, master, made, rtu)


async def test_a_command_in_flight_at_the_failure_fails_and_runs_at_most_once():
    async with iec104.Outstation(stations=1, points=POINTS, standby_ports=[0]) as out, \
            iec104.Master(**FAST) as master:
        rtu = await _group(master, out)
        first = out.ports[0]
        # the outstation executes the command and its link dies before the ActCon leaves
        out.on_command.append(lambda rec: out.fail_port(first) if len(out.commands) == 1 else None)
        with pytest.raises(ConnectionLostError):
            await rtu.command(ca=1, ioa=2, type="C_SC_NA_1", value=1)
        executed = lambda: sum(1 for c in out.commands if c["ioa"] == 2 and c["result"] == "executed")
        assert executed() == 1
        await wait_for(lambda: len(rtu.history) == 2 and rtu.history[-1]["gi_objects"] is not None, 10)
        await round_trips(rtu)
        assert executed() == 1                  # never sent again on the new connection
        with pytest.raises(CommandInDoubt):     # it may have run (it did): nothing blindly
            await rtu.command(ca=1, ioa=2, type="C_SC_NA_1", value=0)
        assert rtu.status()["in_doubt"] == 1 and executed() == 1
        rtu.clear_doubt(ca=1, ioa=2)            # the GI showed its state: the caller decides
        result = await rtu.command(ca=1, ioa=2, type="C_SC_NA_1", value=0)   # a new one works
        assert result.ioa == 2 and executed() == 2
        assert [c["connection"] for c in out.commands][0] != out.commands[1]["connection"]


async def test_the_simulator_queues_the_group_stream_until_a_connection_starts():
    async with iec104.Outstation(stations=1, points=POINTS, rate=2000, standby_ports=[0]) as out, \
            iec104.Master(reconnect=False, **ACK_SOON) as master:
        made = _record_changes(out)
        a = await master.connect("127.0.0.1", out.ports[0], gi_on_start=False)
        await wait_for(lambda: sum(_received(master).values()) > 100, 10)
        out.fail_port(out.ports[0])
        await wait_for(lambda: a.tcp_state != "connected", 5)
        # nobody started: held (60 frames: five k = 12 windows to deliver once one starts)
        await wait_for(lambda: out.counts["group_queued"] > 60, 10)
        assert sum(_received(master).values()) < sum(made.values())
        b = await master.connect("127.0.0.1", out.ports[1], gi_on_start=False)
        assert out.counts["group_switches"] == 2
        await _stream_delivered(out, master, made, b)


async def test_a_group_starts_on_the_standby_when_the_first_address_is_down():
    async with iec104.Outstation(stations=1, points=POINTS) as out, iec104.Master(**FAST) as master:
        down = _free_port()
        rtu = await master.connect("127.0.0.1", down, standby=[("127.0.0.1", out.port)])
        assert rtu.status()["active"] == f"127.0.0.1:{out.port}"
        assert rtu.status()["connections"][0]["tcp_state"] != "connected"
        assert await rtu.interrogate() == GI_OBJECTS
        assert master.status()[0]["name"] == "127.0.0.1:%d" % down
        with pytest.raises(ConnectError, match="no connection of the group"):
            await master.connect("127.0.0.1", _free_port(), standby=[("127.0.0.1", _free_port())])


async def test_points_of_the_group_share_one_station():
    """Both connections decode into the group's station: one set of rows, not two."""
    async with iec104.Outstation(stations=1, points=POINTS, standby_ports=[0]) as out, \
            iec104.Master(**FAST) as master:
        rtu = await _group(master, out)
        out.fail_port(out.ports[0])
        await wait_for(lambda: len(rtu.history) == 2 and rtu.history[-1]["gi_objects"], 10)
        pts = master.points()
        assert pts.height == GI_OBJECTS and set(pts["station"].to_list()) == {rtu.station}
        assert np.all(pts["ca"].to_numpy() == 1)


async def test_the_cli_simulator_serves_a_group_on_its_standby_ports():
    ports = [_free_port(), _free_port()]
    proc = subprocess.Popen([sys.executable, "-m", "iec104.cli", "simulate", "--port", str(ports[0]),
                             "--standby-port", str(ports[1]), "--stations", "1", "--points",
                             str(POINTS), "--rate", "200", "--duration", "30"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert f"redundancy group with ports [{ports[1]}]" in line
        async with iec104.Master(**FAST) as master:
            rtu = await master.connect("127.0.0.1", ports[0], standby=[("127.0.0.1", ports[1])])
            await wait_for(lambda: rtu.history[-1]["gi_objects"] == GI_OBJECTS, 10)
            await rtu.reconnect()               # both up: nothing to do but answer
            assert [c["tcp_state"] for c in rtu.status()["connections"]] == ["connected"] * 2
            assert await rtu.interrogate() == GI_OBJECTS
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


async def test_the_operator_tools_work_on_a_group():
    """What `iec104 watch --standby` calls: the debug switch reads back, the schedules are
    set on every connection (the active one runs them) and a bad value changes nothing."""
    async with iec104.Outstation(stations=1, points=POINTS, standby_ports=[0]) as out, \
            iec104.Master(**FAST) as master:
        rtu = await _group(master, out)
        assert rtu.debug is False
        rtu.enable_debug()
        assert rtu.debug is True and all(m.debug for m in rtu.members)
        with pytest.raises(iec104.SettingsError):
            rtu.set_schedules(gi_interval=-1)
        assert rtu.settings.gi_interval is None
        before = master.store.event_frame().height
        rtu.set_schedules(gi_interval=0.1)
        assert rtu.settings.gi_interval == 0.1
        assert all(m.settings.gi_interval == 0.1 for m in rtu.members)
        await wait_for(lambda: master.store.event_frame().height >= before + 2 * GI_OBJECTS, 10)
        rtu.set_schedules(gi_interval=None)
        assert all(m._sched_task is None for m in rtu.members)


async def test_stopdt_then_startdt_in_one_segment_keeps_the_connection_the_groups_active_one():
    """A master sends STOPDT act and STARTDT act in one segment: its connection ends started
    and stays the group's active one (the two events come as one mask; the connection used
    to join the group on STARTED and leave it on STOPPED, and the stream was held)."""
    async with Outstation(stations=1, points=5, standby_ports=[0]) as out:
        r, w = await asyncio.open_connection("127.0.0.1", out.ports[0])
        try:
            w.write(u_frame(0x07))
            assert await asyncio.wait_for(r.readexactly(6), 2) == u_frame(0x0B)
            conn = next(iter(out._conns))
            assert out._active is conn
            w.write(u_frame(0x13) + u_frame(0x07))       # STOPDT act, STARTDT act
            assert await asyncio.wait_for(r.readexactly(12), 2) == u_frame(0x23) + u_frame(0x0B)
            assert conn.link.data_transfer == "started"
            assert out._active is conn, "the started connection left the group"
        finally:
            w.close()


async def _switched(rtu, n=2):
    await wait_for(lambda: len(rtu.history) == n and rtu.history[-1]["gi_objects"] is not None, 5)


async def test_a_command_in_doubt_is_not_forgotten_by_a_switchover():
    """A command in doubt (it left, its caller gave up: the RTU may have run it) stays so
    across a switchover: the group's connections share what is in doubt, so the retry is
    refused on the new connection too (it used to be sent again there)."""
    async with ScriptedPeer() as a, ScriptedPeer() as b, iec104.Master(**FAST) as master:
        rtu = await asyncio.wait_for(master.connect(
            "127.0.0.1", a.port, standby=[("127.0.0.1", b.port)], name="rtu"), 5)
        await _switched(rtu, 1)
        cmd = dict(ca=1, ioa=5, type="C_SC_NA_1", value=1, timeout=0.2)
        with pytest.raises(ConfirmationTimeout):        # sent on A, no ActCon: in doubt
            await rtu.command(**cmd)
        with pytest.raises(CommandInDoubt):             # the retry is refused on A
            await rtu.command(**cmd)
        a.connections[0]["writer"].close()              # A fails: the group switches to B
        await _switched(rtu)
        assert rtu.history[-1]["active"] == f"127.0.0.1:{b.port}"
        try:
            with pytest.raises(CommandInDoubt):         # still in doubt: not sent again
                await rtu.command(**cmd)
        finally:
            sent_on_b = [c for c in b.connections if b.received(c, type_id=45)]
            assert not sent_on_b, "the command in doubt was sent again on the new connection"


async def test_the_gi_after_a_switch_survives_set_schedules():
    """set_schedules changes the schedules only: the group still runs its general
    interrogation after a switchover (it used to take the members' gi_on_start=False)."""
    async with iec104.Outstation(stations=1, points=20, standby_ports=[0]) as out, \
            iec104.Master(**FAST) as master:
        rtu = await asyncio.wait_for(master.connect(
            "127.0.0.1", out.ports[0], standby=[("127.0.0.1", out.ports[1])], name="rtu"), 5)
        await _switched(rtu, 1)
        rtu.set_schedules(gi_interval=None)             # changes no GI setting
        out.fail_port(out.ports[0])
        await wait_for(lambda: len(rtu.history) == 2, 5)
        await wait_for(lambda: rtu.history[-1]["gi_objects"] is not None, 3)


async def test_an_on_switch_hook_that_raises_does_not_end_failover():
    """An on_switch hook that raises is logged; the group still switches at the next failure
    (the supervising task used to die with it)."""
    async with iec104.Outstation(stations=1, points=20, standby_ports=[0, 0]) as out, \
            iec104.Master(**FAST) as master:
        rtu = await asyncio.wait_for(master.connect(
            "127.0.0.1", out.ports[0], standby=[("127.0.0.1", p) for p in out.ports[1:]],
            name="rtu"), 5)
        await _switched(rtu, 1)

        def hook(rec):
            raise RuntimeError("operator hook failed")
        rtu.on_switch.append(hook)
        out.fail_port(out.ports[0])
        await _switched(rtu, 2)                         # the hook runs (and raises) here
        await asyncio.sleep(0.1)
        out.fail_port(out.ports[1])                     # the third address is still up
        await wait_for(lambda: len(rtu.history) == 3, 3)
        assert rtu.status()["active"] == f"127.0.0.1:{out.ports[2]}"


async def test_a_group_start_given_up_closes_its_connections():
    """A group start given up while it waits for STARTDT con (a caller's timeout, Ctrl-C)
    closes every connection of the group (they used to stay up, reconnecting, unowned)."""
    async with ScriptedPeer(auto_start=False) as a, ScriptedPeer(auto_start=False) as b:
        master = iec104.Master(t1=5, t2=1, **FAST)
        try:
            with pytest.raises(TimeoutError):           # no STARTDT con within 0.5 s
                await asyncio.wait_for(master.connect(
                    "127.0.0.1", a.port, standby=[("127.0.0.1", b.port)], name="rtu"), 0.5)
            assert a.connections and b.connections      # both were up and tested
        finally:
            await asyncio.wait_for(master.close(), 3)
        conns = a.connections + b.connections
        await wait_for(lambda: all(c["closed"].is_set() for c in conns), 1.5)


async def test_closing_a_group_just_after_it_connected_returns():
    """close() right after connect returns, even when its cancel of the supervisor is lost
    (3.11's wait_for drops a cancel that comes with a result): the supervisor sees the group
    closing (it used to wait for ever, and close() with it)."""
    async with ScriptedPeer() as a, ScriptedPeer() as b:
        master = iec104.Master(t1=5, t2=1, **FAST)
        rtu = await asyncio.wait_for(master.connect(
            "127.0.0.1", a.port, standby=[("127.0.0.1", b.port)], name="rtu"), 3)
        try:
            # the lost cancel, made certain: the supervisor, not cancelled, must see that
            # the group closes (as close() says it before its cancel) and end
            rtu._closing = True
            rtu._changed.set()
            await asyncio.wait_for(asyncio.shield(rtu._task), 2)
            await asyncio.wait_for(rtu.close(), 2)
        finally:
            await master.close()


async def test_a_group_closed_while_it_starts_ends_its_start_and_shows_no_active_connection():
    """close() while the group waits for STARTDT con: start ends with ConnectError (it used
    to wait for ever), and the status shows no active connection."""
    async with ScriptedPeer(auto_start=False) as a, ScriptedPeer(auto_start=False) as b:
        async with iec104.Master(t1=5, t2=1, **FAST) as master:
            starting = asyncio.ensure_future(master.connect(
                "127.0.0.1", a.port, standby=[("127.0.0.1", b.port)], name="rtu"))
            def startdt_sent():
                return any(f["u_function"] == 0x07 for peer in (a, b) for c in peer.connections
                           for f, _ in peer.received(c, fmt=2))
            await wait_for(startdt_sent, 3)
            group = master.sessions[-1]                 # waiting for STARTDT con
            await asyncio.wait_for(group.close(), 3)
            with pytest.raises(ConnectError):
                await asyncio.wait_for(starting, 3)
            assert group.status()["active"] is None
