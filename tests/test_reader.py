"""The loop's own reader (``iec104.link.Reader``): one epoll, every ready socket read into
its channel in C. Unit tests on loopback sockets with a fake loop; then a master on each loop."""
import asyncio
import errno
import gc
import os
import socket
import struct

import pytest

import iec104
from iec104.link import Reader
from iec104.protocol import loop_reader

from scripted_peer import u_frame
from test_channel import channel, gi_data
from waiting import run_and_close, wait_for


class FakeLoop:
    def __init__(self):
        self.readers = {}

    def time(self):
        return 1.0

    def add_reader(self, fd, callback):
        self.readers[fd] = callback

    def remove_reader(self, fd):
        self.readers.pop(fd, None)


def tcp_pair():
    srv = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(srv.getsockname())
    ours, _ = srv.accept()
    srv.close()
    ours.setblocking(False)
    return ours, peer


def bound(ch, write=lambda data: None):
    ch.bind_write(write, lambda: False)
    return ch


def add(reader, sock, ch, closed=None, closing=lambda: False):
    reader.add(sock.fileno(), ch, closed if closed is not None else Closed(), closing)


class Closed(list):
    def __call__(self, exc, socket_error):
        self.append((exc, socket_error))


@pytest.fixture
def sockets():
    made = []

    def make():
        made.append(tcp_pair())
        return made[-1]
    yield make
    for pair in made:
        for s in pair:
            s.close()


def test_each_ready_socket_is_read_into_its_own_channel(sockets):
    loop = FakeLoop()
    reader = Reader(loop)
    (a, pa), (b, pb) = sockets(), sockets()
    ca, cb = bound(channel()), bound(channel())
    add(reader, a, ca)
    add(reader, b, cb)
    assert list(loop.readers) == [reader.fileno()] and len(reader) == 2
    pa.sendall(gi_data(0, values=(1.0, 2.0)))
    pb.sendall(gi_data(0, values=(3.0,))[:9])           # a partial APDU: carried
    reader.ready()
    pb.sendall(gi_data(0, values=(3.0,))[9:])
    reader.ready()
    assert ca.points_in == 2 and cb.points_in == 1
    reader.discard(ca)
    reader.discard(cb)
    assert not loop.readers and len(reader) == 0


def test_end_of_file_and_a_reset_end_their_own_connection_only(sockets):
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    (a, pa), (b, pb), (c, pc) = sockets(), sockets(), sockets()
    closed = [Closed(), Closed(), Closed()]
    chans = [bound(channel()) for _ in range(3)]
    for s, ch, cl in zip((a, b, c), chans, closed):
        add(reader, s, ch, cl)
    pa.shutdown(socket.SHUT_WR)                         # end of file
    pb.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pb.close()                                          # a reset
    pc.sendall(gi_data(0))
    reader.ready()
    assert closed[0] == [(None, True)]
    (exc, socket_error), = closed[1]
    assert isinstance(exc, OSError) and exc.errno == errno.ECONNRESET and socket_error
    assert closed[2] == [] and chans[2].points_in == 1 and len(reader) == 1
    pc.sendall(gi_data(1))
    reader.ready()
    assert chans[2].points_in == 2


def test_a_batch_that_raises_closes_its_connection_and_the_others_are_still_read(sockets):
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    (a, pa), (b, pb) = sockets(), sockets()

    def broken(data):
        raise RuntimeError("boom")
    bad, good = bound(channel(), broken), bound(channel())
    closed_bad, closed_good = Closed(), Closed()
    add(reader, a, bad, closed_bad)
    add(reader, b, good, closed_good)
    pa.sendall(u_frame(0x43))               # TESTFR act: its con is written from C, and fails
    pb.sendall(gi_data(0))
    reader.ready()
    (exc, socket_error), = closed_bad
    assert isinstance(exc, RuntimeError) and not socket_error
    assert closed_good == [] and good.points_in == 1 and len(reader) == 1


def test_a_paused_connection_is_not_read_until_resumed(sockets):
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    a, pa = sockets()
    ch = bound(channel())
    add(reader, a, ch)
    reader.pause(ch)
    pa.sendall(gi_data(0))
    reader.ready()
    assert ch.points_in == 0
    reader.resume(ch)
    reader.ready()
    assert ch.points_in == 1


def test_a_closing_transport_is_not_read_any_more(sockets):
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    a, pa = sockets()
    ch = bound(channel())
    add(reader, a, ch, closing=lambda: True)            # its transport is closing
    pa.sendall(gi_data(0))
    reader.ready()
    assert ch.points_in == 0 and len(reader) == 0


def test_a_socket_number_taken_by_a_new_connection_stays_when_the_old_is_discarded(sockets):
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    (a, _), (new_conn, peer) = sockets(), sockets()
    fd, old, new = a.fileno(), bound(channel()), bound(channel())
    reader.add(fd, old, Closed(), lambda: False)
    a.close()                               # epoll forgets a closed socket by itself
    os.dup2(new_conn.fileno(), fd)          # a new connection gets the old number
    new_conn.close()
    b = socket.socket(fileno=fd)
    try:
        reader.add(fd, new, Closed(), lambda: False)
        reader.discard(old)                 # the old connection's late connection_lost
        peer.sendall(gi_data(0))
        reader.ready()
        assert new.points_in == 1 and old.points_in == 0 and len(reader) == 1
    finally:
        b.close()


def test_a_loop_that_cannot_watch_the_epoll_leaves_nothing_registered(sockets):
    class NoReaders(FakeLoop):
        def add_reader(self, fd, callback):
            raise NotImplementedError
    loop = NoReaders()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    a, pa = sockets()
    with pytest.raises(NotImplementedError):
        add(reader, a, bound(channel()))        # the glue then keeps the transport's reads
    assert len(reader) == 0
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    ch = bound(channel())
    add(reader, a, ch)                          # the same socket on a loop that can
    pa.sendall(gi_data(0))
    reader.ready()
    assert ch.points_in == 1


# ---- a master on each loop ---------------------------------------------------------------

async def test_a_master_and_the_simulator_read_plain_tcp_with_the_reader_not_the_transport():
    async with iec104.Outstation(stations=1, points=50) as out, \
            iec104.Master(reconnect=False) as master:
        rtu = await master.connect("127.0.0.1", out.port, gi_on_start=False)
        assert await rtu.interrogate(timeout=5) == 45      # (5 of the 50 take commands)
        p = rtu._proto
        assert p.reader is not None and not p.transport.is_reading()
        c, = out._conns
        assert c.reader is p.reader and not c.transport.is_reading()     # one per loop


async def test_a_reset_by_the_rtu_is_reported_as_such():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.setblocking(False)
    loop = asyncio.get_running_loop()
    async with iec104.Master(reconnect=False) as master:
        accept = loop.create_task(loop.sock_accept(srv))
        connect = loop.create_task(master.connect("127.0.0.1", srv.getsockname()[1],
                                                  gi_on_start=False))
        conn, _ = await accept
        await loop.sock_sendall(conn, u_frame(0x0B))        # STARTDT con
        rtu = await connect
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        await wait_for(lambda: rtu.tcp_state == "disconnected", 5)
        assert "reset" in rtu.last_error.lower()
    srv.close()


async def test_a_session_that_connects_while_its_reading_is_paused_reads_nothing():
    # uvloop starts a transport's reading after connection_made whatever it was told: the
    # pause of a held (lossless) reader must still hold for a connection made meanwhile
    async with iec104.Outstation(stations=1, points=10) as out, \
            iec104.Master(backoff_min=0.01, backoff_max=0.02, t1=1.5, t2=1.0,
                          t3=0.1) as master:
        rtu = await master.connect("127.0.0.1", out.port, gi_on_start=False)
        rtu.set_reading(False)      # (the loss is then seen when the TESTFR act of t3 fails)
        first = rtu._proto
        for c in list(out._conns):
            c.transport.abort()
        await wait_for(lambda: rtu._proto not in (None, first), 5)
        await asyncio.sleep(0.2)
        assert rtu._proto.channel.frames_in == 0 and rtu.data_transfer != "started"
        rtu.set_reading(True)
        await wait_for(lambda: rtu.data_transfer == "started", 5)


def _epoll_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "eventpoll" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n


def test_a_loop_whose_reader_read_a_connection_is_freed_with_the_readers_epoll(sockets):
    """The loop keeps its Reader, not the reverse: a Reader that held its loop (``_readers``
    is keyed weakly by the loop) kept every loop that ever read a plain TCP connection in
    memory, each ``asyncio.run`` of a program that polls now and then, with its epoll open."""
    sock, _ = sockets()

    async def one_connection():
        reader = loop_reader(asyncio.get_running_loop())
        ch = bound(channel())
        add(reader, sock, ch)
        reader.discard(ch)                  # its connection_lost: nothing is read any more

    gc.collect()                            # (the readers of earlier tests' loops)
    before = _epoll_fds()
    refs = [run_and_close(one_connection) for _ in range(3)]
    assert [r() for r in refs] == [None, None, None]
    assert _epoll_fds() == before


def test_a_connection_paused_by_another_ones_batch_is_not_read_in_the_same_wake_up(sockets):
    """A connection paused by a batch read before it in the same wake-up (one session's rows
    pass the event log's high-water mark and the Master pauses every session) is not read
    in that wake-up, as a transport's pause_reading cancels its pending read."""
    loop = FakeLoop()                  # (kept: a Reader holds its loop weakly)
    reader = Reader(loop)
    (a, pa), (b, pb) = sockets(), sockets()
    chans = [bound(channel()), bound(channel())]

    def pause_all(flags):               # what Master._reading(False) does, for each session
        for ch in chans:
            reader.pause(ch)
    for s, ch in zip((a, b), chans):
        ch.bind(lambda: 1.0, pause_all)     # (CA 1 first seen: every first batch asks for it)
        add(reader, s, ch)
    pa.sendall(gi_data(0))
    pb.sendall(gi_data(0))
    reader.ready()
    assert sorted(ch.points_in for ch in chans) == [0, 1]
