"""The receive path of one connection (link core + decoder + store), without sockets: bytes go
into the shared buffer as a transport would put them, with a fake clock."""
import struct

import numpy as np

from iec104._codec import Decoder, Workspace
from iec104._store import EventRing, LatestTable
from iec104.link import Batch, Channel, Link, LinkConfig, LinkEvent, RecvBuffer, Timers

from scripted_peer import asdu, float_objects, i_frame, u_frame

STARTDT_CON = u_frame(0x0B)


def channel(*, station=0, ring=None, table=None, rb=None, ws=None, started=True, config=None):
    link = Link(config or LinkConfig())
    link.connection_made(0.0)
    link.start(0.0)
    link.data_to_send()
    ch = Channel(link, Decoder(station=station, workspace=ws or Workspace(256)),
                 rb or RecvBuffer(4096), table if table is not None else LatestTable(),
                 ring if ring is not None else EventRing(1000))
    if started:
        feed(ch, STARTDT_CON)
        assert link.take_events() == LinkEvent.STARTED
    return ch


def feed(ch, data: bytes, now=1.0) -> int:
    """What a transport does: get_buffer, copy what fits, buffer_updated."""
    flags = 0
    while data:
        buf = ch.get_buffer()
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        data = data[n:]
        flags |= ch.received(n, now)
    return flags


def gi_data(ns, ca=1, ioa=1, values=(1.0,), cot=3):
    return i_frame(asdu(13, cot, ca, float_objects(ioa, values), count=len(values)), ns, 0)


def test_accepted_frames_are_stored_in_one_call():
    table, ring = LatestTable(), EventRing(100)
    ch = channel(table=table, ring=ring)
    flags = feed(ch, gi_data(0, values=(1.5, 2.5)) + gi_data(1, ioa=3, values=(3.5,)))
    assert flags & Batch.IFRAMES and len(table) == 3 and ring.total == 3
    assert ch.points()["value"].tolist() == [1.5, 2.5, 3.5]


def test_a_duplicate_i_frame_stores_nothing_and_closes():
    table, ring = LatestTable(), EventRing(100)
    ch = channel(table=table, ring=ring)
    feed(ch, gi_data(0, ioa=1))
    # the same N(S) again, then a frame that would be next: neither reaches the store
    feed(ch, gi_data(0, ioa=50, values=(9.0,)) + gi_data(1, ioa=60, values=(9.0,)))
    assert ch.link.take_events() & LinkEvent.CLOSE and "N(S)=0, expected 1" in ch.link.close_reason
    assert len(table) == 1 and ring.total == 1
    assert table.lookup(0, 1, 50, 13) == -1


def test_frames_before_the_refused_one_are_kept():
    table = LatestTable()
    ch = channel(table=table)
    feed(ch, gi_data(0, ioa=1) + gi_data(1, ioa=2) + gi_data(5, ioa=3) + gi_data(3, ioa=4))
    assert ch.accepted == 2 and sorted(table.columns()["ioa"].tolist()) == [1, 2]


def test_data_before_startdt_con_is_refused():
    table = LatestTable()
    link = Link(LinkConfig())
    link.connection_made(0.0)                    # STARTDT not even sent: stopped
    ch = Channel(link, Decoder(), RecvBuffer(4096), table, EventRing(10))
    feed(ch, gi_data(0))
    assert link.closed and len(table) == 0


def test_partial_apdus_are_carried_per_connection_over_a_shared_buffer():
    rb, ws = RecvBuffer(4096), Workspace(256)
    t1, t2 = LatestTable(), LatestTable()
    a = channel(station=1, table=t1, rb=rb, ws=ws)
    b = channel(station=2, table=t2, rb=rb, ws=ws)
    fa, fb = gi_data(0, ioa=10, values=(1.0, 2.0)), gi_data(0, ioa=20, values=(3.0,))
    feed(a, fa[:7])
    feed(b, fb[:3])
    feed(a, fa[7:])
    feed(b, fb[3:])
    assert t1.columns()["ioa"].tolist() == [10, 11] and t2.columns()["ioa"].tolist() == [20]
    assert t1.columns()["value"].tolist() == [1.0, 2.0] and t2.columns()["station"].tolist() == [2]


def test_a_read_never_brings_more_rows_than_a_lossless_reader_has_room_for():
    ring = EventRing(50)
    ring.hold = 0                                # a lossless reader at row 0
    ch = channel(ring=ring)
    assert len(ch.get_buffer()) == 50            # a row takes at least one octet
    frames = b"".join(gi_data(ns, ioa=ns + 1) for ns in range(40))   # 40 rows, 600 octets
    feed(ch, frames)
    assert ring.total == 40 and ring.capacity == 50 and ring.grown == 0
    assert len(ch.get_buffer()) <= 10


def test_monitor_data_makes_devices_but_the_broadcast_address_does_not():
    ch = channel()
    assert feed(ch, gi_data(0, ca=7)) & Batch.NEW_DEVICE
    assert ch.new_devices() == [7]
    assert not feed(ch, gi_data(1, ca=7)) & Batch.NEW_DEVICE
    assert not feed(ch, gi_data(2, ca=0xFFFF)) & Batch.NEW_DEVICE
    assert ch.new_devices() == []


def test_answers_to_requests_are_flagged_and_spontaneous_data_is_not():
    ch = channel()
    assert not feed(ch, gi_data(0, cot=3)) & Batch.REQUEST_DATA
    assert feed(ch, gi_data(1, cot=20)) & Batch.REQUEST_DATA
    confirmation = i_frame(asdu(100, 7, 1, b"\x00\x00\x00\x14"), 2, 0)
    assert feed(ch, confirmation) & Batch.CONTROL


def test_the_station_cap_refuses_new_addresses_and_counts_them():
    table = LatestTable()
    table.set_cap(0, 2)
    ch = channel(table=table)
    flags = feed(ch, gi_data(0, values=(1.0, 2.0, 3.0, 4.0)))
    assert flags & Batch.REFUSED and len(table) == 2 and table.refused == 2
    assert ch.refused_rows == 2
    feed(ch, gi_data(1, values=(5.0,)))          # known addresses still update
    assert table.columns()["value"].tolist() == [5.0, 2.0]


def test_the_event_ring_grows_rather_than_overwrite_a_lossless_reader():
    ring = EventRing(4)
    ring.hold = 0
    rows = np.zeros(6, dtype=Decoder().points.dtype)
    rows["ioa"] = np.arange(6)
    ring.append(rows)
    assert ring.grown == 1 and ring.slice(0, 6)["ioa"].tolist() == list(range(6))
    ring.hold = -1                               # lossy readers only: the oldest go
    ring.append(rows[:1])
    assert ring.total == 7


def test_station_indexes_beyond_16_bits_do_not_share_rows():
    table = LatestTable()
    rows = np.zeros(2, dtype=Decoder().points.dtype)
    rows["station"] = [1, 65537]
    rows["ca"], rows["ioa"], rows["type_id"], rows["value"] = 1, 5, 13, [1.0, 2.0]
    table.update(rows)
    assert len(table) == 2 and table.columns()["station"].tolist() == [1, 65537]


def test_read_coalescing_asks_for_one_nap_per_loop_iteration():
    """``RecvBuffer.on_read`` (iec104.protocol.coalesce) is called by the first read after
    the nap re-armed it, not by every read: the glue's nap then serves every connection."""
    rb = RecvBuffer(4096)
    naps = []
    rb.on_read = lambda: naps.append(1)
    a, b = channel(rb=rb), channel(rb=rb)
    for ch in (a, b):
        ch.bind(lambda: 1.0, lambda flags: None)
    for ch, ns in ((a, 0), (b, 0), (a, 1)):
        buf = ch.get_buffer()
        data = gi_data(ns)
        buf[:len(data)] = data
        ch.buffer_updated(len(data))
    assert naps == [1] and rb.armed
    rb.armed = False                     # the nap ran
    buf = b.get_buffer()
    buf[:len(gi_data(1))] = gi_data(1)
    b.buffer_updated(len(gi_data(1)))
    assert naps == [1, 1]


def test_timers_run_the_deadlines_that_have_come_and_only_those():
    """One Timers per loop runs every connection's t1-t3 from one loop timer: a channel
    whose t2 has come sends its S-frame through its glue; the others are not touched."""
    timers, calls = Timers(), []
    a, b, c = channel(), channel(), channel()
    for name, ch in (("a", a), ("b", b), ("c", c)):
        ch.bind(lambda: 0.0, lambda flags, name=name: calls.append((name, flags)))
        timers.add(ch)
    timers.add(a)                                   # twice: once
    assert len(timers) == 3
    feed(a, gi_data(0), now=1.0)                    # a owes an ack by t2 (10 s)
    a.link.data_to_send()
    assert timers.tick(5.0) == 0 and calls == []
    assert timers.tick(11.0) == 1
    assert calls == [("a", int(Batch.OUTPUT))]
    assert a.link.data_to_send()[2] == 0x01        # the S-frame
    timers.discard(a)
    timers.discard(a)
    assert len(timers) == 2
    calls.clear()
    timers.tick(1000.0)                             # b and c idle past t3: TESTFR act
    assert sorted(n for n, _ in calls) == ["b", "c"]


def test_a_link_moved_behind_the_tick_by_a_discard_is_still_run_in_that_tick():
    """A callback that discards a channel in an earlier slot moves the last channel there,
    behind the tick: it still runs in this tick (it used to wait one resolution more)."""
    timers, calls = Timers(), []
    later = channel(config=LinkConfig(t3=5000.0))   # not due: its slot ends the tick
    a, b, c = channel(), channel(), channel()
    for name, ch in (("a", a), ("b", b), ("later", later), ("c", c)):
        timers.add(ch)

    def on(name):
        def batch(flags):
            calls.append(name)
            if name == "b":
                timers.discard(a)               # c, the last, moves to a's slot 0
        return batch
    for name, ch in (("a", a), ("b", b), ("later", later), ("c", c)):
        ch.bind(lambda: 0.0, on(name))
    timers.tick(1000.0)                         # the others idle past t3: TESTFR act each
    assert sorted(calls) == ["a", "b", "c"]


def test_timers_resolution_is_a_twentieth_of_the_shortest_timer_within_bounds():
    """The standard's timers (t2 = 10 s) are checked twice a second, not 20 times (each
    tick a wake-up of the loop); a link with short timers makes the ticks finer while it
    is there, and add() says so, so that the glue sets its loop timer again."""
    timers = Timers()
    assert timers.resolution == 0.5 and (timers.finest, timers.coarsest) == (0.05, 0.5)
    std = channel()
    assert timers.add(std) is False and timers.resolution == 0.5
    mid = channel(config=LinkConfig(t1=3.0, t2=2.0, t3=4.0))          # 2 s / 20
    assert timers.add(mid) is True and timers.resolution == 0.1
    short = [channel(config=LinkConfig(t1=0.3, t2=0.2, t3=0.5)) for _ in range(2)]
    assert [timers.add(ch) for ch in short] == [True, False]          # 0.01 s: 0.05 at most
    assert timers.resolution == 0.05
    assert timers.add(short[0]) is False                              # twice: once
    timers.discard(short[0])
    assert timers.resolution == 0.05                                  # the other is still here
    timers.discard(short[1])
    assert timers.resolution == 0.1
    timers.discard(mid)
    timers.discard(mid)
    assert timers.resolution == 0.5 and len(timers) == 1
    timers.discard(std)
    assert timers.resolution == 0.5 and len(timers) == 0
    assert Timers(0.01, 0.2).resolution == 0.2
    # t2 just short of t1: an ack 0.5 s late would come after the peer's t1
    tight = channel(config=LinkConfig(t1=15.0, t2=14.5, t3=20.0))
    assert timers.add(tight) is True and timers.resolution == 0.05


def test_timers_see_a_deadline_that_moved_earlier_or_later_between_ticks():
    """The Timers keep a lower bound of each link's deadline (no look at every link per
    tick): what moves a deadline earlier tells them (t1 of a sent I-frame or U act, t2 of a
    received I-frame); a deadline that moved later is found when the old one comes."""
    timers, calls = Timers(), []
    links = {}
    for name in ("idle", "sent", "test", "recv", "last"):
        ch = channel()
        ch.bind(lambda: 0.0, lambda flags, name=name: calls.append(name))
        timers.add(ch)
        links[name] = ch
    # all at t3 = 20 s (connected at 0); then, at 1.0:
    links["sent"].link.send_asdu(b"\x2d\x01\x06\x00\x01\x00\x01\x00\x00\x01", 1.0)  # t1: 16 s
    links["test"].link.test(1.0)                                 # TESTFR act: its con by 16 s
    feed(links["recv"], gi_data(0), now=1.0)                     # t2: an ack owed by 11 s
    timers.discard(links["idle"])                                # "last" takes its place
    for ch in links.values():
        ch.link.data_to_send()
    assert timers.tick(10.9) == 0 and calls == []
    assert timers.tick(11.0) == 1 and calls == ["recv"]          # the S-frame
    assert links["recv"].link.data_to_send()[2] == 0x01
    assert timers.tick(16.0) == 2 and links["sent"].link.closed and links["test"].link.closed
    calls.clear()
    feed(links["last"], u_frame(0x43), now=15.0)                 # TESTFR act in: t3 now 35 s
    links["last"].link.data_to_send()                            # (our con)
    assert timers.tick(20.0) == 0 and calls == []                # the old deadline: not due
    assert timers.tick(21.0) == 1 and calls == ["recv"]          # its t3 (a frame in at 1.0)
    assert timers.tick(35.0) == 1 and calls == ["recv", "last"]  # TESTFR act at the new one

def test_a_waiting_reader_is_woken_by_the_first_read_at_or_after_its_wake_time():
    # a reader's linger rides on the reads: the link core asks for the wake-up only once the
    # loop time reaches wake_at (no timer of the reader's own while data keeps coming)
    ring = EventRing(100)
    ch = channel(ring=ring)
    ring.notify, ring.wake_at = True, 5.0
    assert not feed(ch, gi_data(0), now=4.9) & Batch.WAKE and ring.total == 1   # stored
    assert feed(ch, gi_data(1), now=5.0) & Batch.WAKE
    ring.wake_at = 0.0
    assert feed(ch, gi_data(2), now=5.1) & Batch.WAKE
    ring.notify = False
    assert not feed(ch, gi_data(3), now=9.0) & Batch.WAKE


class FakeLoop:
    """What a Waiter uses of a loop and a future: the time, call_later, done/set_result."""

    def __init__(self):
        self.now, self.timers = 0.0, []

    def time(self):
        return self.now

    def call_later(self, delay, cb):
        self.timers.append([self.now + delay, cb, False])
        timer = self.timers[-1]

        class Handle:
            def cancel(self):
                timer[2] = True
        return Handle()


class FakeFuture:
    def __init__(self, loop):
        self.loop, self.result = loop, None

    def get_loop(self):
        return self.loop

    def done(self):
        return self.result is not None

    def set_result(self, _):
        self.result = "woken"


def test_a_reader_is_woken_by_the_link_core_itself_after_its_linger():
    # the read path (buffer_updated) wakes the ring's waiters in C: the glue's on_batch sees
    # only what else a batch asks for; the first rows start the linger (and its fallback
    # timer at twice it), the first read from then on hands the batch over
    loop, glue = FakeLoop(), []
    ring = EventRing(100)
    ch = channel(ring=ring)
    ch.bind(loop.time, glue.append)

    def read(data, now):
        loop.now = now
        buf = ch.get_buffer()
        buf[:len(data)] = data
        ch.buffer_updated(len(data))
    fut = FakeFuture(loop)
    w = ring.add_waiter(fut, 0.005)
    read(gi_data(0), 1.0)                       # first rows: linger until 1.005
    assert w.lingering and w.due == 1.005 and ring.wake_at == 1.005 and not fut.done()
    assert [t[0] for t in loop.timers] == [1.01]
    read(gi_data(1), 1.004)
    assert not fut.done()
    read(gi_data(2), 1.006)                     # handed over; its timer cancelled
    assert fut.done() and loop.timers[0][2] and not ring.notify and ring.waiters == 0
    assert not any(f & Batch.WAKE for f in glue)
    fut = FakeFuture(loop)
    ring.remove_waiter(ring.add_waiter(fut, 0.0))   # a wait that ended: nothing left
    assert ring.waiters == 0 and not ring.notify
    fut = FakeFuture(loop)
    w = ring.add_waiter(fut, 0.0)               # no linger: the next rows wake it
    read(gi_data(3), 2.0)
    assert fut.done() and ring.waiters == 0 and ring.total == 4
    fut = FakeFuture(loop)
    w = ring.add_waiter(fut, 0.005)
    read(gi_data(4), 3.0)                       # its first rows, and none after:
    due, wake, cancelled = loop.timers[-1]
    assert due == 3.01 and not cancelled and not fut.done()
    wake()                                      # its timer hands the batch over
    assert fut.done()
    ring.remove_waiter(w)                       # (what EventLog.wait does then)
    assert ring.waiters == 0 and not ring.notify


def test_master_refuses_and_does_not_store_i_frames_before_startdt_con():
    """The master has sent STARTDT act and no con came yet: an I-frame of the outstation is
    refused (the link closed) and nothing of it stored, as before STARTDT act (5.3)."""
    table, ring = LatestTable(), EventRing(100)
    link = Link(LinkConfig())
    link.connection_made(0.0)
    link.start(0.0)                                  # STARTDT act out, no con
    link.data_to_send()
    ch = Channel(link, Decoder(workspace=Workspace(256)), RecvBuffer(4096), table, ring)
    feed(ch, gi_data(0, ioa=7, values=(9.5,)))
    assert ch.accepted == 0 and len(table) == 0 and ring.total == 0
    assert link.closed and link.take_events() & LinkEvent.CLOSE
