"""One RTU link: the asyncio protocol that feeds the link rules and the Cython decoder.

The hot path is ``_received``: one ``Decoder.feed`` over the receive buffer in place, one
store update for the whole batch, one ``Link.receive_frames`` for the APCI. Python looks at
single frames only for the control direction's mirrors (confirmations), which are rare.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from iec104._codec import Decoder, decode_frames
from iec104._encode import encode_asdu
from iec104.commands import CommandResult, Pending, build_command, refusal, to_ms
from iec104.errors import (
    ConfirmationTimeout, ConnectError, ConnectionLostError, NotConnected,
    SettingsError,
)
from iec104.link import Close, Link, LinkConfig, Started, TestConfirmed
from iec104.types import BROADCAST_CA, Cot, FrameFormat, TypeID

__all__ = ["Session", "SessionSettings"]

log = logging.getLogger("iec104.session")
BROADCAST_SETTLE = 0.2   # s without a new station's answer that ends a broadcast request


@dataclass(frozen=True)
class SessionSettings:
    """Everything configurable per RTU link, with the standard's defaults.

    Timers in seconds; ``k``, ``w`` in frames; field sizes in octets; ``tz`` the time zone of
    the RTU's clock (None: UTC). Schedules are intervals in seconds (None: off).
    """

    t0: float = 30.0
    t1: float = 15.0
    t2: float = 10.0
    t3: float = 20.0
    k: int = 12
    w: int = 8
    cot_size: int = 2
    ca_size: int = 2
    ioa_size: int = 3
    tz: str | None = None
    gi_on_start: bool = True
    gi_interval: float | None = None
    gi_group: int | None = None
    ci_interval: float | None = None
    qcc: int = 5
    clock_sync_interval: float | None = None
    reconnect: bool = True
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    request_timeout: float = 30.0
    debug_frames: int = 1000
    recv_buffer: int = 1 << 16

    def __post_init__(self):
        if self.cot_size not in (1, 2) or self.ca_size not in (1, 2) or self.ioa_size not in (1, 2, 3):
            raise SettingsError("field sizes: COT and CA take 1 or 2 octets, IOA 1, 2 or 3")
        if self.gi_group is not None and not 1 <= self.gi_group <= 16:
            raise SettingsError(f"gi_group {self.gi_group}: groups are 1..16")
        if self.backoff_min <= 0 or self.backoff_max < self.backoff_min:
            raise SettingsError("backoff_min must be > 0 and <= backoff_max")
        try:
            self.link_config()
        except ValueError as e:
            raise SettingsError(str(e)) from None

    def link_config(self) -> LinkConfig:
        return LinkConfig(t0=self.t0, t1=self.t1, t2=self.t2, t3=self.t3, k=self.k, w=self.w,
                          role="master")

    @classmethod
    def of(cls, **kwargs) -> "SessionSettings":
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise SettingsError(f"unknown session settings: {', '.join(sorted(unknown))}")
        return cls(**kwargs)


class _Protocol(asyncio.BufferedProtocol):
    """The asyncio glue: every callback goes to the session, nothing else lives here."""

    __slots__ = ("s",)

    def __init__(self, session: "Session"):
        self.s = session

    def connection_made(self, transport):
        self.s._connected(transport)

    def get_buffer(self, sizehint):
        return self.s._view[self.s._end:]

    def buffer_updated(self, nbytes):
        self.s._received(nbytes)

    def connection_lost(self, exc):
        self.s._lost(exc)

    def eof_received(self):
        return False


class _Interrogation:
    """A (counter) interrogation: ActCon and ActTerm per common address, objects counted."""

    def __init__(self, type_id: int, ca: int, qualifier: int, expect: set[int]):
        self.type_id, self.ca, self.qualifier = type_id, ca, qualifier
        self.expect = expect                    # broadcast: the devices known when it began
        self.done = asyncio.get_running_loop().create_future()
        self.confirmed: set[int] = set()
        self.terminated: set[int] = set()
        self.refused: dict[int, Exception] = {}
        self.objects = 0
        self._settle: asyncio.TimerHandle | None = None
        if type_id == TypeID.C_IC_NA_1:
            self.cots = (qualifier, qualifier)  # QOI 20..36 is also the data's COT
        else:
            rqt = qualifier & 0x3F              # 1..4: counter group, 5: general request
            self.cots = (37 + rqt, 37 + rqt) if 1 <= rqt <= 4 else (37, 37)

    def answer(self, ca: int, cot: int, negative: bool) -> None:
        if self.done.done() or (self.ca != BROADCAST_CA and ca != self.ca):
            return
        err = refusal(self.type_id, ca, 0, cot, negative)
        if err is not None:
            self.refused[ca] = err
        elif cot == Cot.ACTIVATION_CON:
            self.confirmed.add(ca)
        elif cot == Cot.ACTIVATION_TERMINATION:
            self.confirmed.add(ca)
            self.terminated.add(ca)
        if self._settle is not None:            # another station answered: not done yet
            self._settle.cancel()
            self._settle = None
        if self.ca != BROADCAST_CA:
            if self.refused:
                self.done.set_exception(self.refused[ca])
            elif self.terminated:
                self.done.set_result(self.objects)
            return
        waiting = (self.confirmed | self.expect) - self.terminated - set(self.refused)
        if not waiting and (self.terminated or self.refused):
            if self.expect:                     # every known station answered
                self._finish()
            else:
                # stations not known yet answer one by one: finish once no other station
                # has confirmed for a moment after the last termination
                self._settle = asyncio.get_running_loop().call_later(BROADCAST_SETTLE, self._finish)

    def _finish(self) -> None:
        if self.done.done():
            return
        if self.terminated:
            self.done.set_result(self.objects)
        else:
            self.done.set_exception(next(iter(self.refused.values())))


class Session:
    """One IEC 104 link to an RTU, kept up (reconnects) until closed.

    Made by :meth:`iec104.Master.connect`; read its state with :meth:`status`, talk to the
    RTU with :meth:`interrogate`, :meth:`command` and the system requests.
    """

    def __init__(self, host: str, port: int, *, name: str, station: int,
                 settings: SessionSettings, on_points: Callable[[np.ndarray], None],
                 catalog=None):
        self.host, self.port, self.name, self.station = host, port, name, station
        self.settings = settings
        self._on_points = on_points
        self._catalog = catalog                 # the master's point lists (metadata.Catalog)
        self._loop = asyncio.get_running_loop()
        self._decoder = Decoder(cot_size=settings.cot_size, ca_size=settings.ca_size,
                                ioa_size=settings.ioa_size, station=station, tz=settings.tz)
        self._sizes = dict(cot_size=settings.cot_size, ca_size=settings.ca_size,
                           ioa_size=settings.ioa_size)
        self._buf = bytearray(settings.recv_buffer)
        self._view = memoryview(self._buf)
        self._end = 0
        self._link: Link | None = None
        self._transport = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._pending: dict[tuple, Pending] = {}
        self._reads: dict[tuple, asyncio.Future] = {}
        self._interrogations: dict[tuple, _Interrogation] = {}
        self._started: asyncio.Future | None = None
        self._lost_evt = asyncio.Event()
        self._closing = False
        self._now_reconnect = False
        self._attempt_started = False
        self._run_task: asyncio.Task | None = None
        self._sched_task: asyncio.Task | None = None
        self._bg: set[asyncio.Task] = set()
        self.tcp_state = "disconnected"
        self.devices: dict[int, dict] = {}
        self.counts = collections.Counter()
        self.last_error: str | None = None
        self.last_testfr_con: float | None = None
        self.rtt: float | None = None
        self.connected_since: float | None = None
        self.learned_commands: dict[tuple, dict] = {}
        self.debug = False
        self.reading_paused = False
        self.frame_log: collections.deque = collections.deque(maxlen=settings.debug_frames)
        self.on_send: list[Callable[[bytes], None]] = []
        self.on_receive: list[Callable[[bytes], None]] = []

    def __repr__(self):
        return (f"<Session {self.name} {self.host}:{self.port} station={self.station} "
                f"{self.tcp_state}/{self.data_transfer}>")

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start data transfer; raises ConnectError if the first attempt fails."""
        self._started = self._loop.create_future()
        self._run_task = self._loop.create_task(self._run(), name=f"iec104 {self.name}")
        self._sched_task = self._loop.create_task(self._schedules(), name=f"iec104 {self.name} schedules")
        try:
            await self._started
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """STOPDT (acknowledging everything received first), then close; no reconnect."""
        self._closing = True
        if self._link is not None and self._transport is not None and self.data_transfer == "started":
            self._link.stop(self._loop.time())
            self._pump()
            try:
                await asyncio.wait_for(self._wait_stopped(), timeout=min(self.settings.t1, 2.0))
            except (asyncio.TimeoutError, ConnectionError):
                pass
        if self._transport is not None:
            self._transport.close()
        for task in (self._sched_task, self._run_task, *self._bg):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for task in (self._sched_task, self._run_task, *self._bg):
            if task is not None and task is not asyncio.current_task():
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self.tcp_state = "closed"

    async def reconnect(self) -> None:
        """Close the socket and open it again now (no back-off); returns once started."""
        self._started = self._loop.create_future()
        self._now_reconnect = True
        if self._transport is not None:
            self._transport.close()
        else:
            self._lost_evt.set()
        await self._started

    async def _wait_stopped(self):
        while self.data_transfer not in ("stopped", "-") and self._transport is not None:
            await asyncio.sleep(0.01)

    async def _run(self):
        failures = 0
        loop = self._loop
        while not self._closing:
            self.tcp_state = "connecting"
            self._lost_evt.clear()
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(self), self.host, self.port),
                    timeout=self.settings.t0)
            except (OSError, asyncio.TimeoutError) as e:
                reason = "t0 expired" if isinstance(e, asyncio.TimeoutError) else str(e) or type(e).__name__
                self.tcp_state = "disconnected"
                self.last_error = f"connect to {self.host}:{self.port}: {reason}"
                log.warning("%s: %s", self.name, self.last_error)
                self._fail_start(ConnectError(self.last_error))
            else:
                await self._lost_evt.wait()
                if self.counts["started"]:
                    failures = 0
            if self._closing or not self.settings.reconnect:
                break
            if self._now_reconnect:
                self._now_reconnect = False
            else:
                delay = min(self.settings.backoff_max, self.settings.backoff_min * 2 ** failures)
                failures += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))   # jitter: no herd
            self.counts["reconnects"] += 1

    def _fail_start(self, exc: Exception) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_exception(exc)
            self._started.exception()           # the caller may have gone: do not warn

    # ---- protocol callbacks ----------------------------------------------------------------

    def _connected(self, transport) -> None:
        now = self._loop.time()
        self._transport = transport
        self._attempt_started = False
        self.tcp_state = "connected"
        self.connected_since = time.time()
        if self.reading_paused:
            transport.pause_reading()
        self._end = 0
        self._link = Link(self.settings.link_config())
        self._link.connection_made(now)
        self._link.start(now)
        self._pump()

    def _lost(self, exc) -> None:
        self._transport = None
        self.tcp_state = "disconnected"
        self.connected_since = None
        if self._link is not None:
            self._link.connection_lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        err = ConnectionLostError(f"{self.name}: connection lost" + (f" ({exc})" if exc else ""))
        for p in self._pending.values():
            p.fail(err)
        for f in self._reads.values():
            if not f.done():
                f.set_exception(err)
                f.exception()
        for gi in self._interrogations.values():
            if not gi.done.done():
                gi.done.set_exception(err)
                gi.done.exception()
        self._pending.clear()
        self._reads.clear()
        self._interrogations.clear()
        if not self._attempt_started:           # this connection never got to STARTDT con
            self._fail_start(ConnectError(
                f"{self.name}: {self.last_error or 'connection closed before STARTDT con'}"))
        self._lost_evt.set()

    def _received(self, nbytes: int) -> None:
        self._end += nbytes
        if self.on_receive:
            for hook in self.on_receive:
                hook(bytes(self._view[self._end - nbytes:self._end]))
        d = self._decoder
        used = d.feed(self._view[:self._end])
        frames = d.frames
        if d.n_points:
            points = d.points
            self.counts["points"] += d.n_points
            self._seen(points)
            self._on_points(points)
            if self._interrogations or self._reads:
                self._match_data(points)
        self.counts["frames_in"] += d.n_frames
        if d.bad_frames != self.counts["bad_frames"]:
            log.warning("%s: %d malformed frame(s) from the RTU", self.name,
                        d.bad_frames - self.counts["bad_frames"])
            self.counts["bad_frames"] = d.bad_frames
        if self.debug:
            self._log_frames("rx", self._view[:used], frames)
        if self._link is not None:
            self._link.receive_frames(self._loop.time(), frames)
            control = frames["type_id"] >= 45
            if control.any():
                self._confirmations(frames[control], d.points)
        rest = self._end - used
        if rest:
            self._buf[:rest] = self._buf[used:self._end]
        self._end = rest
        self._pump()

    # ---- the link's output and events ------------------------------------------------------

    def _pump(self) -> None:
        link = self._link
        if link is None:
            return
        out = link.data_to_send()
        if out and self._transport is not None:
            self.counts["bytes_out"] += len(out)
            if self.debug:
                self._log_frames("tx", out, decode_frames(out, **self._sizes))
            for hook in self.on_send:
                hook(out)
            self._transport.write(out)
        for ev in link.events():
            if isinstance(ev, Started):
                self._attempt_started = True
                self.counts["started"] += 1
                if self._started is not None and not self._started.done():
                    self._started.set_result(None)
                if self.settings.gi_on_start:     # a full image after every (re)connect
                    self._background(self.interrogate())
            elif isinstance(ev, TestConfirmed):
                self.last_testfr_con = time.time()
                self.rtt = ev.rtt
            elif isinstance(ev, Close):
                self.last_error = ev.reason
                self.counts["link_closes"] += 1
                log.warning("%s: closing the link: %s", self.name, ev.reason)
                if self._transport is not None:
                    self._transport.abort()
                return
        deadline = link.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        if self._link is not None and self._transport is not None:
            self._link.tick(self._loop.time())
            self._pump()

    def _background(self, coro) -> None:
        task = self._loop.create_task(coro)
        self._bg.add(task)

        def done(t):
            self._bg.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s: %s", self.name, t.exception())
        task.add_done_callback(done)

    # ---- what arrived ----------------------------------------------------------------------

    def _seen(self, points: np.ndarray) -> None:
        """Stations that sent process data are devices (answers to requests are not: a
        broadcast's confirmation carries CA 65535)."""
        cas = points["ca"]
        first = int(cas[0])
        if (cas == first).all():
            unique = (first,) if points["type_id"][0] <= 44 else ()
        else:
            unique = np.unique(cas[points["type_id"] <= 44]).tolist()
        for ca in unique:
            self._device(ca)

    def _device(self, ca: int) -> dict:
        """The device (common address) ``ca`` behind this session, made when first seen."""
        dev = self.devices.get(ca)
        if dev is None:
            dev = self.devices[ca] = {"ca": ca, "last_gi": None, "gi_state": "never"}
        return dev

    def _match_data(self, points: np.ndarray) -> None:
        cot = points["cot"]
        for gi in self._interrogations.values():
            lo, hi = gi.cots
            mask = (cot >= lo) & (cot <= hi)
            if gi.ca != BROADCAST_CA:
                mask &= points["ca"] == gi.ca
            gi.objects += int(np.count_nonzero(mask))
        if self._reads:
            for row in points[cot == Cot.REQUEST]:
                fut = self._reads.pop((int(row["ca"]), int(row["ioa"])), None)
                if fut is not None and not fut.done():
                    fut.set_result(row.copy())

    def _confirmations(self, frames: np.ndarray, points: np.ndarray) -> None:
        """ActCon/ActTerm/negative answers to our requests (and M_EI_NA_1)."""
        for f in frames:
            if f["status"] != 0 or f["format"] != FrameFormat.I:
                continue
            t, ca, cot, neg = int(f["type_id"]), int(f["ca"]), int(f["cot"]), bool(f["negative"])
            if t == TypeID.M_EI_NA_1:
                log.info("%s: end of initialization of CA %d: general interrogation", self.name, ca)
                self._background(self.interrogate(ca=ca))
                continue
            if t in (TypeID.C_IC_NA_1, TypeID.C_CI_NA_1):
                for gi in list(self._interrogations.values()):
                    if gi.type_id == t:
                        gi.answer(ca, cot, neg)
                continue
            first = int(f["first_point"])
            for row in points[first:first + int(f["n_points"])]:
                ioa = int(row["ioa"])
                p = self._pending.get((t, ca, ioa))
                if p is not None:
                    p.confirm(cot, neg, ca)
                err = refusal(t, ca, ioa, cot, neg) if t == TypeID.C_RD_NA_1 else None
                if err is not None:                 # a read is answered by data, or refused
                    fut = self._reads.pop((ca, ioa), None)
                    if fut is not None and not fut.done():
                        fut.set_exception(err)

    # ---- requests --------------------------------------------------------------------------

    @property
    def data_transfer(self) -> str:
        """"stopped", "starting", "started", "stopping", or "-" when not connected."""
        if self._link is None or self._transport is None:
            return "-"
        return self._link.data_transfer

    def _send(self, asdu: bytes) -> None:
        if self._link is None or self._transport is None or self.data_transfer != "started":
            raise NotConnected(f"{self.name}: data transfer is not started ({self.tcp_state})")
        self._link.send_asdu(asdu, self._loop.time())
        self.counts["requests"] += 1
        self._pump()

    async def _await(self, fut, what: str, timeout: float | None):
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout or self.settings.request_timeout)
        except asyncio.TimeoutError:
            raise ConfirmationTimeout(f"{self.name}: no confirmation of {what} within "
                                      f"{timeout or self.settings.request_timeout:g} s") from None

    async def interrogate(self, ca: int | None = None, group: int | None = None, *,
                          timeout: float | None = None) -> int:
        """General (or group 1..16) interrogation; returns the number of objects received.

        Returns when ActTerm has arrived for every addressed station: ``ca=None`` broadcasts
        (CA 65535) and waits for every station that confirms it and every device already known.
        A negative ActCon raises :class:`NegativeConfirmation`.
        """
        if group is not None and not 1 <= group <= 16:
            raise ValueError(f"group {group}: groups are 1..16")
        qoi = 20 + (group or 0)
        return await self._interrogation(TypeID.C_IC_NA_1, ca, qoi, timeout, "general interrogation")

    async def counter_interrogation(self, ca: int | None = None, qcc: int | None = None, *,
                                    timeout: float | None = None) -> int:
        """Counter interrogation (C_CI_NA_1, QCC default 5: general request, no freeze)."""
        qcc = self.settings.qcc if qcc is None else qcc
        return await self._interrogation(TypeID.C_CI_NA_1, ca, qcc, timeout, "counter interrogation")

    async def _interrogation(self, type_id, ca, qualifier, timeout, what) -> int:
        ca = BROADCAST_CA if ca is None else ca
        key = (int(type_id), ca)
        running = self._interrogations.get(key)
        if running is not None:
            if running.qualifier == qualifier:
                return await self._await(running.done, what, timeout)
            try:
                await running.done
            except Exception:
                pass
        expect = set(self.devices) if ca == BROADCAST_CA else set()
        gi = _Interrogation(int(type_id), ca, qualifier, expect)
        self._interrogations[key] = gi
        devices = list(self.devices.values()) if ca == BROADCAST_CA else [self._device(ca)]
        if type_id == TypeID.C_IC_NA_1:
            for dev in devices:
                dev["gi_state"] = "running"
        try:
            self._send(encode_asdu(int(type_id), ca, 0, qualifier, 0, cot=Cot.ACTIVATION, **self._sizes))
            n = await self._await(gi.done, what, timeout)
            if type_id == TypeID.C_IC_NA_1:
                for c in (gi.terminated if ca == BROADCAST_CA else [ca]):
                    self._device(c).update(last_gi=time.time(), gi_state="done")
            return n
        except Exception:
            if type_id == TypeID.C_IC_NA_1:
                for dev in devices:
                    dev["gi_state"] = "failed"
            raise
        finally:
            if self._interrogations.get(key) is gi:
                del self._interrogations[key]

    async def command(self, ca: int, ioa: int, type, value, *, select: bool = False,
                      qualifier: int = 0, time=None, timeout: float | None = None,
                      wait_term: bool = False, allow_unlisted: bool = False) -> CommandResult:
        """Send a command and return once the RTU confirmed it.

        ``type`` is a TypeID or its name (``"C_SC_NA_1"``); ``time`` (datetime, ms or True)
        sends the CP56Time2a variant; ``select=True`` does select-before-operate (select,
        its ActCon, then execute); ``wait_term`` also waits for ActTerm. A negative ActCon or
        COT 44-47 raises the matching :class:`CommandError`; a timeout raises
        :class:`ConfirmationTimeout` and nothing is re-sent.
        """
        type_id = int(TypeID.parse(type))
        if self._catalog is not None:
            self._catalog.check_command(self.station, ca, ioa, type_id, allow_unlisted=allow_unlisted)
        t0 = self._loop.time()
        if select:
            await self._confirm(type, ca, ioa, value, True, qualifier, time, timeout, False)
        t, term = await self._confirm(type, ca, ioa, value, False, qualifier, time, timeout, wait_term)
        result = CommandResult(t, ca, ioa, float(value), con_cot=Cot.ACTIVATION_CON,
                               terminated=term, rtt=self._loop.time() - t0)
        self.learned_commands[(self.station, ca, ioa, t)] = {"last_result": "confirmed",
                                                              "value": float(value)}
        return result

    async def _confirm(self, type, ca, ioa, value, select, qualifier, time_, timeout, wait_term):
        t, asdu = build_command(type, ca, ioa, value, select=select, qualifier=qualifier,
                                time=time_, sizes=self._sizes)
        what = f"{TypeID(t).name} {'select' if select else 'execute'} CA {ca} IOA {ioa}"
        p = await self._request(t, ca, ioa, asdu, what, timeout, wait_term)
        return t, p.term.done() and not p.term.cancelled() and p.term.exception() is None

    async def _request(self, t: int, ca: int, ioa: int, asdu: bytes, what: str, timeout,
                       wait_term: bool = False) -> Pending:
        key = (t, ca, ioa)
        if key in self._pending:
            raise NotConnected(f"{self.name}: {what} already awaits its confirmation")
        p = Pending(t, ca, ioa, wait_term)
        self._pending[key] = p
        try:
            self._send(asdu)
            await self._await(p.con, what, timeout)
            if wait_term:
                await self._await(p.term, what + " termination", timeout)
            return p
        except BaseException as e:
            if isinstance(e, Exception) and not isinstance(e, ConfirmationTimeout):
                self.learned_commands[(self.station, ca, ioa, t)] = {"last_result": str(e)}
            raise
        finally:
            self._pending.pop(key, None)

    async def read(self, ca: int, ioa: int, *, timeout: float | None = None) -> np.void:
        """Read one object (C_RD_NA_1, COT 5); returns its POINT_DTYPE row."""
        fut = self._loop.create_future()
        self._reads[(ca, ioa)] = fut
        try:
            self._send(encode_asdu(TypeID.C_RD_NA_1, ca, ioa, cot=Cot.REQUEST, **self._sizes))
            return await self._await(fut, f"read CA {ca} IOA {ioa}", timeout)
        finally:
            self._reads.pop((ca, ioa), None)

    async def clock_sync(self, ca: int = BROADCAST_CA, time=True, *, timeout: float | None = None) -> None:
        """Clock synchronization (C_CS_NA_1) with ``time`` (datetime or ms; True: now, UTC)."""
        ms = to_ms(time)
        asdu = encode_asdu(TypeID.C_CS_NA_1, ca, 0, cot=Cot.ACTIVATION, time_ms=ms, **self._sizes)
        await self._request(TypeID.C_CS_NA_1, ca, 0, asdu, f"clock sync CA {ca}", timeout)

    async def test_command(self, ca: int, *, tsc: int = 0, timeout: float | None = None) -> None:
        """Test command with time tag (C_TS_TA_1)."""
        asdu = encode_asdu(TypeID.C_TS_TA_1, ca, 0, tsc, cot=Cot.ACTIVATION, time_ms=to_ms(True),
                           **self._sizes)
        await self._request(TypeID.C_TS_TA_1, ca, 0, asdu, f"test command CA {ca}", timeout)

    async def reset_process(self, ca: int, qrp: int = 1, *, timeout: float | None = None) -> None:
        """Reset process command (C_RP_NA_1; QRP 1: general reset, 2: reset pending events)."""
        asdu = encode_asdu(TypeID.C_RP_NA_1, ca, 0, qrp, cot=Cot.ACTIVATION, **self._sizes)
        await self._request(TypeID.C_RP_NA_1, ca, 0, asdu, f"reset process CA {ca}", timeout)

    async def test(self) -> float:
        """TESTFR act now; returns the round trip once TESTFR con arrives."""
        if self._link is None or self._transport is None:
            raise NotConnected(f"{self.name}: not connected")
        before = self.last_testfr_con
        self._link.test(self._loop.time())
        self._pump()
        deadline = self._loop.time() + self.settings.t1
        while self.last_testfr_con == before:
            if self._loop.time() > deadline or self._transport is None:
                raise ConfirmationTimeout(f"{self.name}: no TESTFR con")
            await asyncio.sleep(0.005)
        return self.rtt

    # ---- point list --------------------------------------------------------------------------

    def import_points(self, source, **options):
        """Put a point list in force for this session's station (see Master.import_points)."""
        return self._catalog.load(source, station=self.station, **options)

    async def import_points_async(self, source=None, **options):
        """Import off the event loop, for this session's station."""
        return await self._catalog.import_points(source, station=self.station, **options)

    # ---- schedules -------------------------------------------------------------------------

    async def _schedules(self):
        s = self.settings
        jobs = [(s.gi_interval, lambda: self.interrogate(group=s.gi_group)),
                (s.ci_interval, self.counter_interrogation),
                (s.clock_sync_interval, self.clock_sync)]
        jobs = [[interval, fn, self._loop.time() + interval] for interval, fn in jobs if interval]
        if not jobs:
            return
        while True:
            job = min(jobs, key=lambda j: j[2])
            await asyncio.sleep(max(0.0, job[2] - self._loop.time()))
            job[2] += job[0]
            if self.data_transfer == "started":
                self._background(job[1]())

    # ---- what operators look at ------------------------------------------------------------

    def set_reading(self, on: bool) -> None:
        """Pause or resume reading from the socket (backpressure from the event log)."""
        self.reading_paused = not on
        if self._transport is not None:
            (self._transport.resume_reading if on else self._transport.pause_reading)()

    def enable_debug(self, on: bool = True) -> None:
        """Keep the last ``settings.debug_frames`` APCI frames (off by default)."""
        self.debug = on

    def _log_frames(self, direction: str, raw, frames: np.ndarray) -> None:
        t = time.time()
        for f in frames:
            off, n = int(f["offset"]), int(f["length"])
            self.frame_log.append({
                "time": t, "dir": direction, "raw": bytes(raw[off:off + n]),
                "format": FrameFormat(int(f["format"])).name, "status": int(f["status"]),
                "ns": int(f["ns"]), "nr": int(f["nr"]), "u_function": int(f["u_function"]),
                "type_id": int(f["type_id"]), "cot": int(f["cot"]), "ca": int(f["ca"]),
                "count": int(f["count"])})

    def status(self) -> dict:
        """TCP state, data transfer state, connection health and counts, for operators."""
        link = self._link.status() if self._link is not None and self._transport is not None else {}
        return {
            "name": self.name, "host": self.host, "port": self.port, "station": self.station,
            "tcp_state": self.tcp_state, "data_transfer": self.data_transfer,
            "connected_since": self.connected_since, "last_testfr_con": self.last_testfr_con,
            "rtt": self.rtt, "last_error": self.last_error, "devices": len(self.devices),
            "frames_in": self.counts["frames_in"], "points": self.counts["points"],
            "bad_frames": self.counts["bad_frames"], "reconnects": self.counts["reconnects"],
            "link_closes": self.counts["link_closes"], "requests": self.counts["requests"],
            "bytes_out": self.counts["bytes_out"], "link": link,
        }
