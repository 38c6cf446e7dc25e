"""The asyncio glue around a link core :class:`~iec104.link.Channel`, shared by the master's
sessions and the simulator's connections (asyncpg's protocol.pyx to the core's coreproto).

``buffer_updated`` is one call into C; Python runs only when the batch asks for it (bytes to
send, a link event, a timer to arm, answers to requests). Writing is bounded: a peer that
does not read what we send is closed once the unsent backlog passes ``max_backlog``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref

from iec104._codec import Workspace
from iec104.link import Batch, Channel, Reader, RecvBuffer, Timers

__all__ = ["LinkProtocol", "shared_buffers", "loop_timers", "loop_reader", "coalesce",
           "hold_coalesce", "release_coalesce", "MAX_BACKLOG"]

log = logging.getLogger("iec104.protocol")
MAX_BACKLOG = 4 << 20       # octets written but not taken by the peer before we close
_OUTPUT = int(Batch.OUTPUT)            # an int: IntFlag operations cost us each
_shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[RecvBuffer, Workspace]]" = \
    weakref.WeakKeyDictionary()
_timers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Timers]" = weakref.WeakKeyDictionary()
_readers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Reader | None]" = \
    weakref.WeakKeyDictionary()


def shared_buffers(loop: asyncio.AbstractEventLoop) -> tuple[RecvBuffer, Workspace]:
    """The receive buffer and decoder output of ``loop``: one set serves every connection,
    since each batch is decoded and stored inside its own ``buffer_updated``."""
    bufs = _shared.get(loop)
    if bufs is None:
        bufs = _shared[loop] = (RecvBuffer(1 << 16), Workspace(4096))
    return bufs


def loop_timers(loop: asyncio.AbstractEventLoop) -> Timers:
    """The link deadlines of every connection of ``loop``, run by one loop timer while any
    connection is registered (none: no wake-ups)."""
    timers = _timers.get(loop)
    if timers is None:
        timers = _timers[loop] = Timers()
    return timers


def loop_reader(loop: asyncio.AbstractEventLoop) -> Reader | None:
    """The :class:`Reader` of ``loop`` (None where there is no epoll or the loop cannot
    watch a descriptor): it reads the plain TCP connections of its masters and simulators."""
    if loop not in _readers:
        try:
            _readers[loop] = Reader(loop)
        except OSError:
            _readers[loop] = None
    return _readers[loop]


def _tick(loop: asyncio.AbstractEventLoop, timers: Timers) -> None:
    timers.handle = None
    try:
        timers.tick(loop.time())    # (a connection whose batch raises ends, not the others)
    finally:
        if len(timers) and timers.handle is None:   # (a callback may have armed it)
            timers.handle = loop.call_later(timers.resolution, _tick, loop, timers)


def coalesce(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Read coalescing for ``loop`` (0: off): after an iteration that read anything, the
    loop naps ``seconds`` so that the next poll finds many connections ready at once.

    With RTUs that each send a small APDU now and then, every APDU otherwise costs the loop a
    wake-up of its own (a context switch and an epoll call, most of the CPU per APDU); a nap
    of a few milliseconds shares one wake-up among every connection that sent meanwhile. The
    price: spontaneous data and timers on this loop wait up to ``seconds`` more. An
    iteration that read answers to a request (``RecvBuffer.urgent``: interrogation data,
    confirmations, read and counter answers) does not nap: a GI at k = 12 would otherwise
    wait a nap per window (0.07 M objects/s with 5 ms instead of 2.8) and a select its
    ActCon's nap before the execute.
    """
    rb, _ = shared_buffers(loop)
    if seconds <= 0:
        rb.on_read, rb.armed, rb.urgent = None, False, False
        return

    def nap() -> None:
        if not rb.urgent:
            time.sleep(seconds)
        rb.armed = rb.urgent = False

    rb.on_read = lambda: loop.call_soon(nap)


_holds: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, float]]" = \
    weakref.WeakKeyDictionary()


def hold_coalesce(loop: asyncio.AbstractEventLoop, owner: object, seconds: float) -> None:
    """``owner`` (a Master) wants :func:`coalesce` on ``loop``: the loop naps the longest
    that its owners ask for, until the last of them lets go (:func:`release_coalesce`), so
    that closing one Master does not turn it off under another."""
    holds = _holds.setdefault(loop, {})
    holds[id(owner)] = seconds
    coalesce(loop, max(holds.values()))


def release_coalesce(loop: asyncio.AbstractEventLoop, owner: object) -> None:
    holds = _holds.setdefault(loop, {})
    if holds.pop(id(owner), None) is not None:
        coalesce(loop, max(holds.values(), default=0.0))


class LinkProtocol(asyncio.BufferedProtocol):
    """One connection: forwards reads to the channel, writes its output, registers its link
    with the loop's :class:`Timers` (``arm``, on connection) until it is lost.

    Subclasses give the channel (made before the transport: uvloop takes the read methods
    when it makes the transport) and implement ``on_batch(flags)`` for the bits beyond
    OUTPUT (which :meth:`flush` handles); the timers call it too.
    """

    max_backlog = MAX_BACKLOG

    def __init__(self, loop: asyncio.AbstractEventLoop, channel: Channel) -> None:
        self.loop = loop
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.reader: Reader | None = None       # see read_with_reader
        self.read_error: Exception | None = None
        # reads go straight to the channel (C): no Python frame per read
        channel.bind(loop.time, self.on_batch, self._read_closed)
        self.get_buffer = channel.get_buffer                # type: ignore[method-assign]
        self.buffer_updated = channel.buffer_updated        # type: ignore[method-assign]

    def eof_received(self) -> bool:
        return False                    # close the transport

    # ---- reading -----------------------------------------------------------------------------

    def read_with_reader(self, transport: asyncio.Transport) -> None:
        """Let the loop's :class:`Reader` read a plain TCP transport (not TLS), instead of
        the transport, whose reading is paused for good: ``pause_reading`` and
        ``resume_reading`` of this protocol then go to the reader."""
        reader = loop_reader(self.loop)
        sock = transport.get_extra_info("socket")
        if reader is None or sock is None or transport.get_extra_info("ssl_object") is not None:
            return
        try:
            reader.add(sock.fileno(), self.channel, None, transport.is_closing)
        except (OSError, NotImplementedError, RuntimeError):
            return                          # (a loop that cannot watch it: its own reads)
        self.reader = reader
        transport.pause_reading()
        # uvloop starts the transport's reading after connection_made whatever it was told:
        # stop it once more then (a read meanwhile goes to the same channel: harmless)
        self.loop.call_soon(self._stop_transport_reads, transport)

    def _stop_transport_reads(self, transport: asyncio.Transport) -> None:
        if self.reader is not None and transport is self.transport and not transport.is_closing():
            transport.pause_reading()

    def stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.discard(self.channel)
            self.reader = None

    def _read_closed(self, exc: Exception | None, socket_error: bool) -> None:
        # the end of the reader's reads, or what a batch outside the transport's reads (the
        # reader's, a timer's) raised: handled as the transport would handle its own
        self.stop_reader()
        t = self.transport
        if t is None or t.is_closing():
            return
        if exc is None:
            if not self.eof_received():
                t.close()
            return
        self.read_error = exc
        if not socket_error:
            self.loop.call_exception_handler({
                "message": "iec104: handling a read failed", "exception": exc,
                "transport": t, "protocol": self})
        t.abort()

    def pause_reading(self) -> None:
        if self.reader is not None:
            self.reader.pause(self.channel)
        elif self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reader is not None:
            self.reader.resume(self.channel)
        elif self.transport is not None:
            self.transport.resume_reading()

    # ---- writing and the timer ---------------------------------------------------------------

    def flush(self, flags: int) -> None:
        """Write the link's output, if ``flags`` say there is some."""
        if flags & _OUTPUT:
            self.write(self.channel.link.data_to_send())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        self.sent(data)
        t.write(data)
        backlog = t.get_write_buffer_size()
        if backlog > self.max_backlog:
            self.abort(f"the peer does not read: {backlog} octets unsent")

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        """Called with every octet string before it is written (counts, hooks)."""

    def abort(self, reason: str) -> None:
        log.warning("%s: closing: %s", self.peer_name(), reason)
        if self.transport is not None:
            self.transport.abort()

    def peer_name(self) -> str:
        return "peer"

    def arm(self) -> None:
        """Have the loop's :class:`Timers` run this link's deadlines (once connected)."""
        timers = loop_timers(self.loop)
        if timers.add(self.channel) and timers.handle is not None:
            timers.handle.cancel()              # set for a coarser resolution: set again
            timers.handle = None
        if timers.handle is None:
            timers.handle = self.loop.call_later(timers.resolution, _tick, self.loop, timers)

    def stop_timer(self) -> None:
        if self.channel is not None:
            timers = loop_timers(self.loop)
            timers.discard(self.channel)
            if not len(timers) and timers.handle is not None:
                # no link left: no tick (its handle would keep a closed loop alive)
                timers.handle.cancel()
                timers.handle = None

    def pause_writing(self) -> None:
        # the peer takes less than we send: stop reading what it sends until it catches up
        self.write_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.resume_reading_if_allowed()

    def resume_reading_if_allowed(self) -> None:
        self.resume_reading()

    def on_batch(self, flags: int) -> None:
        raise NotImplementedError
