"""One RTU link: the asyncio glue of the link core, the request tracking and the store.

The receive path is C (:class:`iec104.link.Channel`): each read is decoded, validated by the
link and stored in one call, and Python runs only when the batch asks for it (bytes to send,
a link event, answers to requests, a device first seen). Requests are matched to their
answers in :mod:`iec104.requests`; this module connects, reconnects and sends.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import random
import ssl
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeVar, cast

import numpy as np
import polars as pl

from iec104._codec import Decoder, decode_frames
from iec104._encode import encode_asdu
from iec104.commands import (
    CommandResult, Pending, build_command, check_address, is_int, mirror_of, to_ms,
)
from iec104.errors import (
    CommandError, ConfirmationTimeout, ConnectError, ConnectionLostError, InvalidRequestError,
    NotConnected, SettingsError,
)
from iec104.link import Batch, Channel, Link, LinkEvent
from iec104.protocol import LinkProtocol, shared_buffers
from iec104.requests import Break, DoubtRecord, Interrogation, Requests
from iec104.settings import SessionSettings
from iec104 import tls as _tls
from iec104.types import Cot, FrameFormat, TypeID, broadcast_ca

# Our own generator: the back-off never draws from (or reseeds) the user's global random.
_JITTER = random.Random()

if TYPE_CHECKING:
    from iec104.metadata import Catalog, PointListSource
    from iec104.store import Store

__all__ = ["Session", "SessionSettings"]

log = logging.getLogger("iec104.session")
_T = TypeVar("_T")

# the Batch bits a master acts on (accepted rows are stored already; the link sends its own
# queue when acks open the window); plain ints on the hot path: IntFlag ops cost us each
_WANT = ~(Batch.IFRAMES | Batch.ACKED) & 0xFFFF
_BAD, _REFUSED, _NEW_DEVICE, _REQUEST_DATA, _CONTROL, _PAUSE, _EVENTS, _FRAMES = (
    int(b) for b in (Batch.BAD, Batch.REFUSED, Batch.NEW_DEVICE, Batch.REQUEST_DATA,
                     Batch.CONTROL, Batch.PAUSE, Batch.EVENTS, Batch.FRAMES))
_CLOSE, _STARTED, _TEST_CONFIRMED = int(LinkEvent.CLOSE), int(LinkEvent.STARTED), \
    int(LinkEvent.TEST_CONFIRMED)


class _Protocol(LinkProtocol):
    """One TCP connection of a session: every callback goes to the session."""

    def __init__(self, session: "Session") -> None:
        store = session._store
        channel = Channel(Link(session.settings.link_config()), session._decoder,
                          shared_buffers(session._loop)[0], store.table, store.log.ring,
                          broadcast_ca=session.broadcast_ca, want=_WANT)
        channel.taps, channel.debug = session.on_receive, session.debug    # Batch.FRAMES
        channel.send_taps = session.on_send     # with hooks, S-frames go through on_batch too
        super().__init__(session._loop, channel)
        self.s = session
        self.max_backlog = session.settings.max_backlog
        self.aborted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)     # a stream connection's (TCP or TLS)
        self.transport = tr
        self.channel.bind_write(tr.write, tr.is_closing)    # S-frames from C (bind_write)
        self.read_with_reader(tr)
        self.arm()
        self.s._connected(self, tr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_timer()
        self.stop_reader()
        self.transport = None
        self.s._lost(self, exc or self.read_error)

    def on_batch(self, flags: int) -> None:
        self.s._batch(self, flags)

    def sent(self, data: bytes | bytearray | memoryview) -> None:
        self.s._sent(cast(bytes, data))     # a session writes only its link's output: bytes

    def abort(self, reason: str) -> None:
        self.aborted = True
        self.s.last_error = reason
        self.s.counts["link_closes"] += 1
        super().abort(reason)

    def peer_name(self) -> str:
        return self.s.name

    def resume_reading_if_allowed(self) -> None:
        if not self.s.reading_paused:
            self.resume_reading()


class Session:
    """One IEC 104 link to an RTU, kept up (reconnects) until closed.

    Made by :meth:`iec104.Master.connect`; read its state with :meth:`status`, talk to the
    RTU with :meth:`interrogate`, :meth:`command` and the system requests.
    """

    def __init__(self, host: str, port: int, *, name: str, station: int,
                 settings: SessionSettings, store: Store, catalog: Catalog | None = None
                 ) -> None:
        self.host, self.port, self.name, self.station = host, port, name, station
        self.settings = settings
        self._store = store
        self._catalog = catalog                 # the master's point lists (metadata.Catalog)
        self._loop = asyncio.get_running_loop()
        self._sizes = settings.sizes
        self.broadcast_ca = broadcast_ca(settings.ca_size)
        self._decoder = Decoder(station=station, tz=settings.tz,
                                workspace=shared_buffers(self._loop)[1], **self._sizes)
        store.table.set_cap(station, settings.max_points)
        self._proto: _Protocol | None = None
        self._requests = Requests(name, self.broadcast_ca)
        self._started: asyncio.Future[None] | None = None
        self._lost_evt = asyncio.Event()
        self._closing = False
        self._now_reconnect = False
        self._attempt_started = False
        self._started_at: float | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._sched_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.tcp_state = "disconnected"
        self.devices: dict[int, dict[str, Any]] = {}
        self._counts: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self.last_testfr_con: float | None = None
        self.rtt: float | None = None
        # the I- and S-frames received on this connection and the wall time a status() call
        # saw that count change (None: not yet): the receive path runs no Python, so it keeps
        # no time for us
        self._rx_seen: tuple[int, float | None] | None = None
        self.connected_since: float | None = None
        # (station, ca, ioa, type) -> the last result (a redundancy group shares its own)
        self.learned_commands: dict[tuple[int, ...], dict[str, Any]] = {}
        self.debug = False
        self.reading_paused = False
        self._frame_log: collections.deque[dict[str, Any]] | None = None
        self.on_send: list[Callable[[bytes], None]] = []
        self.on_receive: list[Callable[[bytes], None]] = []
        # a standby connection of a redundancy group (iec104.redundancy): connected and
        # tested with TESTFR, no STARTDT until activate(); on_link hears "ready" and "lost"
        self.hold_start = False
        self.on_link: list[Callable[["Session", str], None]] = []

    def __repr__(self) -> str:
        return (f"<Session {self.name} {self.host}:{self.port} station={self.station} "
                f"{self.tcp_state}/{self.data_transfer}>")

    @property
    def _link(self) -> Link | None:
        p = self._proto
        return p.channel.link if p is not None and p.channel is not None else None

    @property
    def frame_log(self) -> collections.deque[dict[str, Any]]:
        """The last ``settings.debug_frames`` APCI frames, while debugging is on."""
        if self._frame_log is None:
            self._frame_log = collections.deque(maxlen=self.settings.debug_frames)
        return self._frame_log

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self, *, keep_trying: bool = False) -> None:
        """Connect and start data transfer (with ``hold_start``: connect and test); raises
        ConnectError if the first attempt fails, after which ``keep_trying`` keeps the
        session trying (reconnect) instead of closing it."""
        self._started = self._loop.create_future()
        self._run_task = self._loop.create_task(self._run(), name=f"iec104 {self.name}")
        self._start_schedules()
        try:
            await self._started
        except BaseException as e:
            if not (keep_trying and isinstance(e, ConnectError)):
                await self.close()
            raise

    async def activate(self) -> None:
        """STARTDT on a connection held in standby; returns at STARTDT con (ConnectError
        if the link fails first, NotConnected if there is no connection)."""
        self.hold_start = False
        p = self._proto
        if p is None or p.transport is None or self.data_transfer != "stopped":
            raise NotConnected(f"{self.name}: no standby connection to start ({self.tcp_state})")
        self._started = self._loop.create_future()
        p.channel.link.start(self._loop.time())
        p.flush(p.channel.pending())
        await self._started

    async def close(self) -> None:
        """STOPDT (acknowledging everything received first), then close; no reconnect."""
        self._closing = True
        self._fail_start(ConnectError(f"{self.name}: closed while connecting"))
        p = self._proto
        if p is not None and p.transport is not None and self.data_transfer == "started":
            p.channel.link.stop(self._loop.time())
            p.flush(p.channel.pending())
            try:
                await asyncio.wait_for(self._wait_stopped(), timeout=min(self.settings.t1, 2.0))
            except (asyncio.TimeoutError, ConnectionError):
                pass
        if p is not None and p.transport is not None:
            p.transport.close()
        tasks = [t for t in (self._sched_task, self._run_task, *self._bg)
                 if t is not None and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.tcp_state = "closed"

    async def reconnect(self) -> None:
        """Close the socket and open it again now (no back-off); returns once started."""
        if self._closing:
            raise NotConnected(f"{self.name}: the session is closed")
        self._started = self._loop.create_future()
        self._now_reconnect = True
        p = self._proto
        if p is not None and p.transport is not None:
            p.transport.close()
        elif self._run_task is None or self._run_task.done():
            # the reconnect loop ended (reconnect=False and the link went down): run it again
            self._run_task = self._loop.create_task(self._run(), name=f"iec104 {self.name}")
        else:
            self._lost_evt.set()
        await self._started

    async def _wait_stopped(self) -> None:
        while self.data_transfer not in ("stopped", "-"):
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        failures = 0
        loop = self._loop
        s = self.settings
        try:
            context, tls = _tls.context_of(s.tls, server=False)
            allowed = tls.fingerprints if tls is not None else None     # (it reads files too)
        except Exception as e:                  # SettingsError: files that do not load
            self.last_error = str(e)
            self._fail_start(ConnectError(f"{self.name}: {e}"))
            return
        kw: dict[str, Any] = {}
        factory: Callable[[], _Protocol] = lambda: _Protocol(self)
        if context is not None:
            kw = dict(ssl=context, ssl_handshake_timeout=s.t0,
                      server_hostname=(tls.server_hostname if tls is not None else None) or self.host)
            if allowed:
                factory = lambda: self._guarded(_Protocol(self), allowed)
        while not self._closing:
            self.tcp_state = "connecting"
            self._lost_evt.clear()
            self._started_at = None
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for drops a close()'s cancel
                # that comes with the connection, and this loop would wait on a link that
                # close() never saw
                async with asyncio.timeout(s.t0):
                    await loop.create_connection(factory, self.host, self.port, **kw)
            except (OSError, TimeoutError) as e:
                reason = "t0 expired" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
                if context is not None and (isinstance(e, (ssl.SSLError, ConnectionResetError))
                                            or "handshake" in reason.lower()):
                    reason = _tls.describe(e)
                    self._counts["tls_failures"] += 1
                elif context is not None and isinstance(e, TimeoutError):
                    reason = "t0 expired (TCP connect or TLS handshake)"
                self.tcp_state = "disconnected"
                self.last_error = f"connect to {self.host}:{self.port}: {reason}"
                log.warning("%s: %s", self.name, self.last_error)
                self._fail_start(ConnectError(self.last_error))
            else:
                await self._lost_evt.wait()
            held = self._started_at is not None and loop.time() - self._started_at >= s.backoff_reset
            if held:
                failures = 0                    # a connection that worked: start again low
            if self._closing or not s.reconnect:
                break
            if self._now_reconnect:
                self._now_reconnect = False
            else:
                delay = min(s.backoff_max, s.backoff_min * 2 ** failures)
                failures += 1
                self._counts["backoff_waits"] += 1
                await asyncio.sleep(delay * _JITTER.uniform(0.5, 1.0))   # jitter: no herd
            self._counts["reconnects"] += 1

    def _guarded(self, proto: _Protocol, allowed: frozenset[str]) -> _Protocol:
        """``proto``, refusing a TLS peer whose certificate is not in ``allowed`` before
        anything is sent (the allow-list is checked after the handshake)."""
        made = proto.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            why = _tls.check_peer(transport, allowed)
            if why is None:
                return made(transport)
            proto.transport = None
            # the refused connection is not the session's: its loss must not reach _lost
            proto.connection_lost = lambda exc: None    # type: ignore[method-assign]
            cast(asyncio.Transport, transport).abort()      # a stream connection's (TLS)
            self._counts["tls_failures"] += 1
            self.last_error = f"connect to {self.host}:{self.port}: {why}"
            log.warning("%s: %s", self.name, self.last_error)
            self._fail_start(ConnectError(self.last_error))
            self._lost_evt.set()

        proto.connection_made = connection_made     # type: ignore[method-assign]
        return proto

    def _done_start(self) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _fail_start(self, exc: Exception) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_exception(exc)
            self._started.exception()           # the caller may have gone: do not warn

    # ---- protocol callbacks ----------------------------------------------------------------

    def _connected(self, proto: _Protocol, transport: asyncio.Transport) -> None:
        now = self._loop.time()
        self._proto = proto
        self._attempt_started = False
        self.tcp_state = "connected"
        self.connected_since = time.time()
        self._rx_seen = (0, None)
        transport.set_write_buffer_limits(high=min(1 << 16, self.settings.max_backlog))
        if self.reading_paused:
            proto.pause_reading()
        link = proto.channel.link
        link.connection_made(now)
        if self.hold_start:
            link.test(now)                      # a standby is ready once TESTFR con is back
        else:
            link.start(now)
        proto.flush(proto.channel.pending())

    def _lost(self, proto: _Protocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        link = proto.channel.link if proto.channel is not None else None
        self.tcp_state = "disconnected"
        self.connected_since = None
        if link is not None:
            if isinstance(exc, ssl.SSLError) and not self._closing:
                # TLS 1.3: the outstation checks our certificate after our handshake ended
                self.last_error = f"connect to {self.host}:{self.port}: {_tls.describe(exc)}"
                if not self._attempt_started:
                    self._counts["tls_failures"] += 1
                log.warning("%s: %s", self.name, self.last_error)
            elif (self.settings.tls is not None and not self._attempt_started
                  and not proto.aborted and not self._closing and not proto.channel.frames_in):
                # the outstation checks our certificate after our side of the handshake
                self.last_error = (f"connect to {self.host}:{self.port}: TLS: the outstation "
                                   "closed right after the handshake: it refused our certificate "
                                   "(none, expired, an unknown CA or not in its allow-list)")
                self._counts["tls_failures"] += 1
                log.warning("%s: %s", self.name, self.last_error)
            elif not (link.closed or proto.aborted or self._closing):
                self.last_error = "connection closed by the RTU" + (f" ({exc})" if exc else "")
            link.connection_lost()
        self._count_channel(proto)
        self._proto = None
        err = ConnectionLostError(f"{self.name}: connection lost" + (f" ({exc})" if exc else "")
                                  + "; a request that was sent may have been executed")
        self._requests.fail_all(err)
        if not self._attempt_started:           # this connection never got to STARTDT con
            self._fail_start(ConnectError(
                f"{self.name}: {self.last_error or 'connection closed before STARTDT con'}"))
        self._lost_evt.set()
        for hook in self.on_link:
            hook(self, "lost")

    def _count_channel(self, proto: _Protocol) -> None:
        """Fold a finished connection's counters into the session's."""
        ch = proto.channel
        if ch is None:
            return
        ch.bind_write(None)
        for name in ("frames_in", "points_in", "bad_frames", "refused_rows", "bytes_out"):
            self._counts[name + "_done"] += getattr(ch, name)

    def _batch(self, proto: _Protocol, flags: int) -> None:
        """What a batch (or the timer) asks for, in the order that keeps answers right."""
        ch = proto.channel
        if flags & _FRAMES:                 # a read (not the timers): its octets, once
            self._tap(ch)
        if flags & _BAD:
            log.warning("%s: malformed frame(s) from the RTU (%d in all)", self.name, ch.bad_frames)
        if flags & _REFUSED:
            self._refused_rows(ch)
        if flags & _NEW_DEVICE:
            for ca in ch.new_devices():
                self._device(ca)
        req = self._requests
        if flags & _REQUEST_DATA and req:
            req.data(ch.points())
        if flags & _CONTROL:
            self._confirmations(ch)
        if flags & _PAUSE:                  # (a reader's wake-up: the link core's, in C)
            self._store.log.appended()
        if flags & _EVENTS:
            if not self._events(proto, ch.link.take_events()):
                return
        proto.flush(flags | ch.pending())

    def _tap(self, ch: Channel) -> None:
        raw = ch.raw()
        if self.on_receive and len(raw):
            data = bytes(raw)
            for hook in self.on_receive:
                hook(data)
        if self.debug:
            self._log_frames("rx", raw, ch.frames())

    def _refused_rows(self, ch: Channel) -> None:
        first = self._counts["refused_rows_warned"] == 0
        self._counts["refused_rows_warned"] += 1
        if first or self._counts["refused_rows_warned"] % 1000 == 0:
            log.warning("%s: the RTU sent new addresses beyond max_points=%d: %d row(s) "
                        "refused", self.name, self.settings.max_points, self.refused_rows)

    def _events(self, proto: _Protocol, ev: int) -> bool:
        """Link events; False when the link closes."""
        link = proto.channel.link
        if ev & _TEST_CONFIRMED:
            self.last_testfr_con = time.time()
            self.rtt = link.rtt
            if self.hold_start and self._started_at is None:    # a standby: tested, ready
                self._started_at = self._loop.time()
                self._done_start()
                for hook in self.on_link:
                    hook(self, "ready")
        if ev & _CLOSE:
            self.last_error = link.close_reason
            self._counts["link_closes"] += 1
            log.warning("%s: closing the link: %s", self.name, link.close_reason)
            if proto.transport is not None:
                proto.transport.abort()
            return False
        if ev & _STARTED:
            self._attempt_started = True
            self._started_at = self._loop.time()
            self._counts["started"] += 1
            self._done_start()
            if self.settings.gi_on_start:     # a full image after every (re)connect
                self._per_ca(self.interrogate)
        return True

    def _sent(self, data: bytes) -> None:
        self._counts["bytes_out"] += len(data)
        if self.debug:
            self._log_frames("tx", data, decode_frames(data, **self._sizes))
        for hook in self.on_send:
            hook(data)

    def _confirmations(self, ch: Channel) -> None:
        """ActCon/ActTerm/negative answers to our requests (and M_EI_NA_1)."""
        frames = ch.frames()[:ch.accepted]
        points = ch.points()
        req = self._requests
        for f in frames[(frames["format"] == FrameFormat.I) & (frames["type_id"] >= 45)]:
            t, ca, cot, neg = int(f["type_id"]), int(f["ca"]), int(f["cot"]), bool(f["negative"])
            first, n = int(f["first_point"]), int(f["n_points"])
            objs = points[first:first + n]
            # each object with what it echoes (none decoded: nothing it could mirror)
            answers = zip(objs["ioa"].tolist(), objs["value"].tolist(),
                          objs["quality"].tolist()) if n else [(0, None, None)]
            for ioa, value, quality in answers:
                ei = req.confirmation(t, ca, ioa, cot, neg, value, quality)
                if ei is not None:
                    log.info("%s: end of initialization of CA %d: general interrogation",
                             self.name, ei)
                    self._background(self.interrogate(ca=ei))
                    break

    def _per_ca(self, request: Callable[..., Coroutine[Any, Any, object]], **kw: Any) -> None:
        """``request`` in the background for each CA of ``settings.ca`` (None: once, to the
        broadcast address); one that fails is logged, the others go on."""
        for ca in self.settings.ca or (None,):
            self._background(request(ca=ca, **kw))

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = self._loop.create_task(coro)
        self._bg.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._bg.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s: %s", self.name, t.exception())
        task.add_done_callback(done)

    def _device(self, ca: int) -> dict[str, Any]:
        """The device (common address) ``ca`` behind this session, made when first seen."""
        dev = self.devices.get(ca)
        if dev is None:
            dev = self.devices[ca] = {"ca": ca, "last_gi": None, "gi_state": "never"}
        return dev

    # ---- requests --------------------------------------------------------------------------

    @property
    def data_transfer(self) -> str:
        """"stopped", "starting", "started", "stopping", or "-" when not connected."""
        p = self._proto
        if p is None or p.transport is None or p.channel is None:
            return "-"
        return p.channel.link.data_transfer

    def _send(self, asdu: bytes) -> tuple[Link, int]:
        """Queue an ASDU on the link; returns (link, token) to withdraw it."""
        p = self._proto
        if p is None or p.transport is None or self.data_transfer != "started":
            raise NotConnected(f"{self.name}: data transfer is not started ({self.tcp_state})")
        link = p.channel.link
        token = link.send_asdu(asdu, self._loop.time())
        self._counts["requests"] += 1
        p.flush(p.channel.pending())
        return link, token

    def _withdraw(self, sent: tuple[Link, int] | None) -> bool:
        """Take a request back if it has not left; True if it had been sent."""
        if sent is None:
            return False
        link, token = sent
        if link.withdraw(token):
            self._counts["withdrawn"] += 1
            return False
        return True

    def _timeout(self, timeout: float | None) -> float:
        """A request's timeout in s (None: ``request_timeout``), checked before anything is
        sent: 0, a negative or NaN one would give the request up as it leaves (in doubt)."""
        if timeout is None:
            return self.settings.request_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                not 0 < timeout < math.inf:
            raise InvalidRequestError(f"timeout {timeout!r}: seconds, a number above 0")
        return float(timeout)

    async def _await(self, fut: asyncio.Future[_T], what: str, timeout: float | None) -> _T:
        timeout = timeout or self.settings.request_timeout
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise ConfirmationTimeout(f"{self.name}: no confirmation of {what} within "
                                      f"{timeout:g} s") from None

    def _check(self, ca: int, ioa: int = 0, *, broadcast: bool = True) -> None:
        check_address(ca, ioa, self._sizes, broadcast=broadcast)

    async def interrogate(self, ca: int | None = None, group: int | None = None, *,
                          timeout: float | None = None) -> int:
        """General (or group 1..16) interrogation; returns the number of objects received.

        Returns when ActTerm has arrived for every addressed station: ``ca=None`` broadcasts
        (CA 65535, or 255 with a 1-octet CA) and waits for every station that confirms it
        and every device already known, or for the RTU's termination with the broadcast
        address. A negative ActCon raises :class:`NegativeConfirmation`.
        """
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or not 1 <= group <= 16):
            raise InvalidRequestError(f"group {group!r}: groups are 1..16")
        qoi = 20 + (group or 0)
        return await self._interrogation(TypeID.C_IC_NA_1, ca, qoi, timeout, "general interrogation")

    async def counter_interrogation(self, ca: int | None = None, qcc: int | None = None, *,
                                    timeout: float | None = None) -> int:
        """Counter interrogation (C_CI_NA_1, QCC default 5: general request, no freeze)."""
        qcc = self.settings.qcc if qcc is None else qcc
        if isinstance(qcc, bool) or not isinstance(qcc, int) or not 0 <= qcc <= 255:
            raise InvalidRequestError(f"qcc {qcc!r}: an octet (0..255)")
        return await self._interrogation(TypeID.C_CI_NA_1, ca, qcc, timeout, "counter interrogation")

    async def _interrogation(self, type_id: int, ca: int | None, qualifier: int,
                             timeout: float | None, what: str) -> int:
        ca = self.broadcast_ca if ca is None else ca
        self._check(ca)
        timeout = self._timeout(timeout)
        asdu = encode_asdu(int(type_id), ca, 0, qualifier, 0, cot=Cot.ACTIVATION, **self._sizes)
        key = (int(type_id), ca)
        req = self._requests
        while (running := self._interrogation_running(int(type_id), ca)) is not None:
            if running.ca == ca and running.qualifier == qualifier:
                return await self._await(running.done, what, timeout)
            # one whose answers ours could not be told from (another group's, or a broadcast
            # and a station's): ours goes out after it, within our own timeout
            if not (await asyncio.wait({running.done}, timeout=timeout))[0]:
                raise ConfirmationTimeout(f"{self.name}: {what} not sent: the running "
                                          f"interrogation of CA {running.ca} did not end within "
                                          f"{timeout:g} s")
        broadcast = ca == self.broadcast_ca
        expect = set(self.devices) if broadcast else set()
        gi = Interrogation(int(type_id), ca, qualifier, expect, self.broadcast_ca)
        req.interrogations[key] = gi
        is_gi = type_id == TypeID.C_IC_NA_1
        targets = list(self.devices) if broadcast else [ca]
        if is_gi:
            for c in targets:
                if c in self.devices:           # a device is what answered: none made here
                    self.devices[c]["gi_state"] = "running"
        sent = None
        try:
            sent = self._send(asdu)
            n = await self._await(gi.done, what, timeout)
            for c in gi.stations():
                dev = self._device(c)
                if is_gi:
                    dev.update(last_gi=time.time(), gi_state="done")
            return n
        except BaseException as e:
            self._withdraw(sent)
            # whoever waits on it with us (the same request, or the next group) stops too
            gi.fail(e if isinstance(e, Exception) else ConfirmationTimeout(
                f"{self.name}: {what} of CA {ca}: its first caller gave up"))
            for c in gi.stations():
                self._device(c)                 # it answered positively: it exists
            if is_gi:
                for c in targets:
                    if c in self.devices:
                        self.devices[c]["gi_state"] = "failed"
            raise
        finally:
            if req.interrogations.get(key) is gi:
                del req.interrogations[key]

    def _interrogation_running(self, type_id: int, ca: int) -> Interrogation | None:
        """A running interrogation of this type to ``ca``, to the global address, or (for
        the global address) to any station: their ActCon/ActTerm look the same."""
        for (t, other), gi in self._requests.interrogations.items():
            if t == type_id and (other == ca or self.broadcast_ca in (ca, other)):
                return gi
        return None

    async def command(self, ca: int, ioa: int, type: int | str, value: float, *,
                      select: bool = False, qualifier: int = 0,
                      time: datetime | int | None = None, timeout: float | None = None,
                      wait_term: bool = False, allow_unlisted: bool = False) -> CommandResult:
        """Send a command and return once the RTU confirmed it.

        ``type`` is a TypeID or its name (``"C_SC_NA_1"``); ``time`` (datetime, ms or True)
        sends the CP56Time2a variant; ``select=True`` does select-before-operate (select,
        its ActCon, then execute); ``wait_term`` also waits for ActTerm. The address and
        value are checked against the field sizes, the type's range and the point list
        before anything is sent (:class:`InvalidRequestError`, :class:`CommandNotAllowed`).
        A negative ActCon or COT 44-47 raises the matching :class:`CommandError`; a timeout
        raises :class:`ConfirmationTimeout`, withdraws the command if it has not left, and
        nothing is re-sent; a command whose caller gave up after it left is in doubt
        (:class:`CommandInDoubt` for a new command to that object until its answer). A
        select that the RTU confirmed or may have (its ActCon late) with no execute sent
        after it (given up, cancelled) is broken while the link is up: the same command
        with COT 8, whose DeactCon is awaited in the background (logged if refused or
        missing); an execute that left is never followed by anything.
        """
        # everything is checked before the select leaves: the execute cannot fail later
        type_id, _ = build_command(type, ca, ioa, value, select=False, qualifier=qualifier,
                                   time=time, sizes=self._sizes)
        if self._catalog is not None:
            self._catalog.check_command(self.station, ca, ioa, type_id, value=value,
                                        select=select, allow_unlisted=allow_unlisted)
        t0 = self._loop.time()
        ends: list[Pending] = []                # the select's and the execute's, as they end
        try:
            if select:
                await self._confirm(type_id, ca, ioa, value, True, qualifier, time, timeout,
                                    False, ends)
            t, term = await self._confirm(type_id, ca, ioa, value, False, qualifier, time,
                                          timeout, wait_term, ends)
        except BaseException:
            if select:
                self._break_select(ends, type_id, ca, ioa, value, qualifier, time)
            raise
        result = CommandResult(t, ca, ioa, float(value), con_cot=Cot.ACTIVATION_CON,
                               terminated=term, rtt=self._loop.time() - t0)
        self.learned_commands[(self.station, ca, ioa, t)] = {"last_result": "confirmed",
                                                              "value": float(value)}
        return result

    async def _confirm(self, type: int | str, ca: int, ioa: int, value: float, select: bool,
                       qualifier: int, time_: datetime | int | None, timeout: float | None,
                       wait_term: bool, ends: list[Pending]) -> tuple[int, bool]:
        t, asdu = build_command(type, ca, ioa, value, select=select, qualifier=qualifier,
                                time=time_, sizes=self._sizes)
        what = f"{TypeID(t).name} {'select' if select else 'execute'} CA {ca} IOA {ioa}"
        p = await self._request(t, ca, ioa, asdu, what, timeout, wait_term,
                                mirror_of(asdu, self._sizes), ends)
        return t, p.term.done() and not p.term.cancelled() and p.term.exception() is None

    def _break_select(self, ends: list[Pending], type_id: int, ca: int, ioa: int,
                      value: float, qualifier: int, time_: datetime | int | None) -> None:
        """A select that left and was not refused, with no execute that left after it: the
        RTU may hold it, and the next execute (anyone's) would operate. Break it (the same
        command, COT 8) if the link is up: queued now, before anything sent after it, and
        its answer awaited in the background (the caller does not wait for it)."""
        if not ends or not ends[0].left or ends[0].refused or any(p.left for p in ends[1:]) \
                or self._requests.breaks_reselect:
            return
        t, asdu = build_command(type_id, ca, ioa, value, select=True, qualifier=qualifier,
                                time=time_, cot=Cot.DEACTIVATION, sizes=self._sizes)
        b = self._requests.begin_break((t, ca, ioa), f"break of the {ends[0].what}",
                                       mirror_of(asdu, self._sizes))
        try:
            sent = self._send(asdu)
        except NotConnected:                    # no link: the RTU's select timeout ends it
            self._requests.end_break(b)
            return
        self._background(self._await_break(b, sent))

    async def _await_break(self, b: Break, sent: tuple[Link, int]) -> None:
        """A break's answer, within ``request_timeout``; one refused or not answered is
        logged (the RTU may hold the select until its own select timeout)."""
        timeout = self.settings.request_timeout
        why = None
        try:
            if await self._await(b.done, b.what, timeout) == Cot.ACTIVATION_CON:
                why = ("answered as a new select (ActCon, no DeactCon; no later select "
                       "of this session is broken, that would only prolong it)")
        except CommandError as e:
            why = f"refused ({e})"
        except ConnectionLostError:
            why = "not answered: the connection was lost"
        except ConfirmationTimeout:
            why = (f"not answered within {timeout:g} s" if self._withdraw(sent)
                   else "withdrawn: it did not leave in time")
        finally:
            self._requests.end_break(b)
        if why is not None:
            log.warning("%s: %s %s: the RTU may keep it selected until its select timeout",
                        self.name, b.what, why)

    async def _request(self, t: int, ca: int, ioa: int, asdu: bytes, what: str,
                       timeout: float | None, wait_term: bool = False,
                       mirror: tuple[float, int] | None = None,
                       ends: list[Pending] | None = None) -> Pending:
        timeout = self._timeout(timeout)
        key = (t, ca, ioa)
        req = self._requests
        p = req.begin(key, what, wait_term, mirror)
        if ends is not None:
            ends.append(p)
        sent = None
        gave_up = lost = False
        try:
            sent = self._send(asdu)
            await self._await(p.con, what, timeout)
            if wait_term:
                await self._await(p.term, what + " termination", timeout)
            return p
        except BaseException as e:
            lost = isinstance(e, ConnectionLostError)
            # no answer came, and none will to this caller: if it left, it may have run
            gave_up = lost or isinstance(e, (ConfirmationTimeout, asyncio.CancelledError))
            if isinstance(e, Exception) and not gave_up:
                self.learned_commands[(self.station, ca, ioa, t)] = {"last_result": str(e)}
            raise
        finally:
            p.left = self._withdraw(sent) if gave_up else sent is not None
            req.end(key, p, gave_up=gave_up, sent=p.left, what=what, lost=lost)

    def clear_doubt(self, ca: int | None = None, ioa: int | None = None) -> list[str]:
        """Accept a new request to what is in doubt (to ``ca``, its ``ioa``; None: all):
        call it once you have seen the RTU's state (a command whose caller gave up, or whose
        connection was lost, after it left may have run). Returns what was cleared."""
        return self._requests.clear_doubt(ca, ioa)

    def doubt_records(self) -> list[DoubtRecord]:
        """What is in doubt here, or would be if this process died now (see
        :meth:`Requests.doubt_records`): what a cluster worker reports at each heartbeat."""
        return self._requests.doubt_records()

    def restore_doubt(self, records: list[DoubtRecord]) -> None:
        """Put what a lost process had in doubt for this RTU (:meth:`doubt_records`) in doubt
        here, until :meth:`clear_doubt`: how a restarted cluster worker gets it back."""
        self._requests.restore_doubt(records)

    async def read(self, ca: int, ioa: int, *, timeout: float | None = None) -> np.void:
        """Read one object (C_RD_NA_1, COT 5); returns its POINT_DTYPE row."""
        self._check(ca, ioa, broadcast=False)
        timeout = self._timeout(timeout)
        asdu = encode_asdu(TypeID.C_RD_NA_1, ca, ioa, cot=Cot.REQUEST, **self._sizes)
        fut: asyncio.Future[np.void] = self._loop.create_future()
        reads = self._requests.reads
        waiting = reads.setdefault((ca, ioa), collections.deque())
        waiting.append(fut)                     # answers come in the order of the reads
        sent = None
        try:
            sent = self._send(asdu)
            return await self._await(fut, f"read CA {ca} IOA {ioa}", timeout)
        except BaseException:
            self._withdraw(sent)
            raise
        finally:
            if fut in waiting:
                waiting.remove(fut)
            if not waiting and reads.get((ca, ioa)) is waiting:
                del reads[(ca, ioa)]

    async def clock_sync(self, ca: int | None = None, time: datetime | int = True, *,
                         timeout: float | None = None) -> None:
        """Clock synchronization (C_CS_NA_1) with ``time`` (datetime or ms; True: now, UTC);
        ``ca=None``: the broadcast address."""
        ca = self.broadcast_ca if ca is None else ca
        self._check(ca)
        asdu = encode_asdu(TypeID.C_CS_NA_1, ca, 0, cot=Cot.ACTIVATION, time_ms=to_ms(time),
                           **self._sizes)
        await self._request(TypeID.C_CS_NA_1, ca, 0, asdu, f"clock sync CA {ca}", timeout)

    async def test_command(self, ca: int, *, tsc: int = 0, timeout: float | None = None) -> None:
        """Test command with time tag (C_TS_TA_1)."""
        self._check(ca)
        if not (is_int(tsc) and 0 <= tsc <= 0xFFFF):
            raise InvalidRequestError(f"test sequence counter {tsc!r}: an integer 0..65535")
        asdu = encode_asdu(TypeID.C_TS_TA_1, ca, 0, tsc, cot=Cot.ACTIVATION, time_ms=to_ms(True),
                           **self._sizes)
        await self._request(TypeID.C_TS_TA_1, ca, 0, asdu, f"test command CA {ca}", timeout)

    async def reset_process(self, ca: int, qrp: int = 1, *, timeout: float | None = None) -> None:
        """Reset process command (C_RP_NA_1; QRP 1: general reset, 2: reset pending events)."""
        self._check(ca)
        if not (is_int(qrp) and 1 <= qrp <= 255):
            raise InvalidRequestError(f"qrp {qrp!r}: an integer 1..255 (1 general reset, "
                                      "2 pending events)")
        asdu = encode_asdu(TypeID.C_RP_NA_1, ca, 0, qrp, cot=Cot.ACTIVATION, **self._sizes)
        await self._request(TypeID.C_RP_NA_1, ca, 0, asdu, f"reset process CA {ca}", timeout)

    async def test(self) -> float:
        """TESTFR act now; returns the round trip once TESTFR con arrives."""
        p = self._proto
        if p is None or p.transport is None:
            raise NotConnected(f"{self.name}: not connected")
        before = self.last_testfr_con
        p.channel.link.test(self._loop.time())
        p.flush(p.channel.pending())
        deadline = self._loop.time() + self.settings.t1
        while self.last_testfr_con == before:
            if self._loop.time() > deadline or self._proto is not p:
                raise ConfirmationTimeout(f"{self.name}: no TESTFR con")
            await asyncio.sleep(0.005)
        rtt = self.rtt
        assert rtt is not None                  # set with last_testfr_con
        return rtt

    # ---- point list --------------------------------------------------------------------------

    def import_points(self, source: PointListSource, **options: Any) -> pl.DataFrame:
        """Put a point list in force for this session's station (see Master.import_points)."""
        assert self._catalog is not None, "a session made by Master.connect has its catalog"
        return self._catalog.load(source, station=self.station, **options)

    async def import_points_async(self, source: PointListSource | None = None,
                                  **options: Any) -> pl.DataFrame:
        """Import off the event loop, for this session's station."""
        assert self._catalog is not None, "a session made by Master.connect has its catalog"
        return await self._catalog.import_points(source, station=self.station, **options)

    # ---- schedules -------------------------------------------------------------------------

    def set_schedules(self, **schedules: Any) -> None:
        """Change the interrogation and clock sync schedules now: ``gi_interval``,
        ``gi_group``, ``ci_interval``, ``clock_sync_interval``, as in
        :class:`SessionSettings` (None: off; ``gi_group`` None: the station). Each interval
        counts from now. A bad value raises SettingsError and changes nothing."""
        unknown = set(schedules) - {"gi_interval", "gi_group", "ci_interval", "clock_sync_interval"}
        if unknown:
            raise SettingsError(f"not a schedule: {', '.join(sorted(unknown))}")
        self.settings = dataclasses.replace(self.settings, **schedules)   # checks the values
        if self._sched_task is not None:
            self._sched_task.cancel()
            self._sched_task = None
        if not self._closing:
            self._start_schedules()

    def _start_schedules(self) -> None:
        s = self.settings
        if s.gi_interval or s.ci_interval or s.clock_sync_interval:
            self._sched_task = self._loop.create_task(self._schedules(),
                                                      name=f"iec104 {self.name} schedules")

    async def _schedules(self) -> None:
        s = self.settings
        every: list[tuple[float | None, Callable[[], None]]] = [
            (s.gi_interval, lambda: self._per_ca(self.interrogate, group=s.gi_group)),
            (s.ci_interval, lambda: self._per_ca(self.counter_interrogation)),
            (s.clock_sync_interval, lambda: self._per_ca(self.clock_sync))]
        # [interval, request, next due] of each schedule that is on
        jobs: list[list[Any]] = [[interval, fn, self._loop.time() + interval]
                                 for interval, fn in every if interval]
        while True:
            job = min(jobs, key=lambda j: j[2])
            await asyncio.sleep(max(0.0, job[2] - self._loop.time()))
            job[2] += job[0]
            if self.data_transfer == "started":
                job[1]()

    # ---- what operators look at ------------------------------------------------------------

    def set_reading(self, on: bool) -> None:
        """Pause or resume reading from the socket (backpressure from the event log)."""
        self.reading_paused = not on
        p = self._proto
        if p is not None and p.transport is not None and not p.transport.is_closing():
            if on and not p.write_paused:
                p.resume_reading()
            elif not on:
                p.pause_reading()

    def enable_debug(self, on: bool = True) -> None:
        """Keep the last ``settings.debug_frames`` APCI frames (off by default)."""
        self.debug = on
        if self._proto is not None:
            self._proto.channel.debug = on

    def _log_frames(self, direction: str, raw: bytes | memoryview, frames: np.ndarray) -> None:
        t = time.time()
        log_ = self.frame_log
        for f in frames:
            off, n = int(f["offset"]), int(f["length"])
            log_.append({
                "time": t, "dir": direction, "raw": bytes(raw[off:off + n]),
                "format": FrameFormat(int(f["format"])).name, "status": int(f["status"]),
                "ns": int(f["ns"]), "nr": int(f["nr"]), "u_function": int(f["u_function"]),
                "type_id": int(f["type_id"]), "cot": int(f["cot"]), "ca": int(f["ca"]),
                "count": int(f["count"])})

    def _channel_count(self, name: str) -> int:
        p = self._proto
        ch = p.channel if p is not None else None
        now: int = getattr(ch, name) if ch is not None else 0
        return self._counts[name + "_done"] + now

    @property
    def refused_rows(self) -> int:
        return self._channel_count("refused_rows")

    @property
    def counts(self) -> collections.Counter[str]:
        """The session's counters (a snapshot), over every connection it made."""
        c = collections.Counter({k: v for k, v in self._counts.items() if not k.endswith("_done")})
        for name, public in (("frames_in", "frames_in"), ("points_in", "points"),
                             ("bad_frames", "bad_frames"), ("refused_rows", "refused_rows")):
            c[public] = self._channel_count(name)
        c["bytes_out"] += self._channel_count("bytes_out")     # those the channel wrote
        return c

    def last_frame_in(self) -> float | None:
        """Wall time of the last frame received (None: none yet), as status() calls see it:
        when one finds more I- and S-frames received than the one before did (so exact to
        their interval: 0.5 s in watch), or the last TESTFR con (timed as it arrives) if
        later."""
        seen, link = self._rx_seen, self._link
        if seen is None:
            return None
        if link is not None:
            c = link.counts
            n = c["i_in"] + c["s_in"]
            if n != seen[0]:
                seen = self._rx_seen = (n, time.time())
        times = [t for t in (seen[1], self.last_testfr_con) if t is not None]
        return max(times) if times else None

    def status(self) -> dict[str, Any]:
        """TCP state, data transfer state, connection health and counts, for operators."""
        link = self._link
        last_in = self.last_frame_in()
        s = self.settings
        return {
            "name": self.name, "host": self.host, "port": self.port, "station": self.station,
            "tcp_state": self.tcp_state, "data_transfer": self.data_transfer,
            "connected_since": self.connected_since, "last_testfr_con": self.last_testfr_con,
            "rtt": self.rtt, "last_error": self.last_error, "devices": len(self.devices),
            "last_frame_in": last_in,
            "health": health(self.tcp_state, time.time(), last_in, self.last_testfr_con,
                             self.rtt, stale_after=s.t3 + s.t1),
            "frames_in": self._channel_count("frames_in"),
            "points": self._channel_count("points_in"),
            "bad_frames": self._channel_count("bad_frames"),
            "refused_rows": self.refused_rows,
            "reconnects": self._counts["reconnects"], "link_closes": self._counts["link_closes"],
            "requests": self._counts["requests"], "withdrawn": self._counts["withdrawn"],
            "late_answers": self._requests.late, "in_doubt": len(self._requests.in_doubt),
            "unmatched_answers": self._requests.unmatched,
            "bytes_out": self._counts["bytes_out"] + self._channel_count("bytes_out"),
            "link": link.status() if link is not None and self._proto is not None
            and self._proto.transport is not None else {},
            "tls": _tls.peer_info(self.settings.tls,
                                  self._proto.transport if self._proto is not None else None),
            "tls_failures": self._counts["tls_failures"],
        }


def health(tcp_state: str, now: float, last_frame_in: float | None,
           last_testfr_con: float | None, rtt: float | None, *, stale_after: float) -> str:
    """A session's health in words, from the last frame received, not from TESTFR alone: a
    busy link never sends TESTFR (t3 runs only while idle). ``stale_after`` is t3 + t1: an
    idle link tests after t3 and its TESTFR con is due within t1."""
    if tcp_state != "connected":
        return tcp_state
    if last_frame_in is None:
        return "no frame yet"
    age = max(0.0, now - last_frame_in)
    if age > stale_after:
        return f"no frame for {age:.0f} s"
    if last_testfr_con is not None and last_testfr_con >= last_frame_in:
        rtt_ = f", rtt {rtt * 1000:.2f} ms" if rtt is not None else ""
        return f"ok (TESTFR con {age:.1f} s ago{rtt_})"
    return f"ok (frame {age:.1f} s ago)"
