"""The IEC 60870-5-104 link rules without I/O (APCI: IEC 60870-5-104, clause 5).

Frames and the clock go in, bytes to send and events come out, in the manner of h11:
nothing here reads a clock, owns a socket or starts a task, so every timer and fault case is
tested deterministically. The session feeds ``receive_frames`` with the decoder's FRAME_DTYPE
rows, writes ``data_to_send()``, acts on ``events()`` and keeps one timer at
``next_deadline()`` that calls ``tick``.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from iec104._encode import i_frame, s_frame, u_frame
from iec104.types import FrameFormat, FrameStatus, UFunction

__all__ = ["LinkConfig", "Link", "Started", "Stopped", "StartRequested", "StopRequested",
           "TestConfirmed", "Close", "WindowOpen", "Acked"]

MOD = 32768
# statuses after which the byte stream can no longer be trusted to be framed
_FRAMING_LOST = (FrameStatus.BAD_START, FrameStatus.BAD_LENGTH, FrameStatus.BAD_CONTROL)


@dataclass(frozen=True)
class LinkConfig:
    """Timers (s), windows (frames) and role; the standard's defaults, validated."""

    t0: float = 30.0
    t1: float = 15.0
    t2: float = 10.0
    t3: float = 20.0
    k: int = 12
    w: int = 8
    role: str = "master"

    def __post_init__(self):
        for name in ("t0", "t1", "t2", "t3"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s (got {getattr(self, name)})")
        if not self.t2 < self.t1:
            raise ValueError(f"t2 ({self.t2} s) must be shorter than t1 ({self.t1} s)")
        if not 1 <= self.k <= 32767:
            raise ValueError(f"k ({self.k}) must be in 1..32767")
        if not 1 <= self.w <= self.k * 2 / 3:
            raise ValueError(f"w ({self.w}) must be in 1..2k/3 (k = {self.k})")
        if self.role not in ("master", "outstation"):
            raise ValueError(f"role {self.role!r}: 'master' or 'outstation'")


@dataclass(frozen=True)
class Started:
    """Data transfer started (master: STARTDT con received; outstation: STARTDT act answered)."""


@dataclass(frozen=True)
class Stopped:
    """Data transfer stopped."""


@dataclass(frozen=True)
class StartRequested:
    """Outstation role: the master sent STARTDT act (already confirmed)."""


@dataclass(frozen=True)
class StopRequested:
    """Outstation role: the master sent STOPDT act (confirmed once our frames are acked)."""


@dataclass(frozen=True)
class TestConfirmed:
    """TESTFR con arrived ``rtt`` seconds after our TESTFR act."""

    __test__ = False                    # not a pytest class, whatever its name
    rtt: float


@dataclass(frozen=True)
class Close:
    """The connection must be closed (the standard's reaction to this fault)."""

    reason: str


@dataclass(frozen=True)
class WindowOpen:
    """Sent I-frames were acknowledged: there is room in the k window again."""

    space: int


@dataclass(frozen=True)
class Acked:
    count: int


class Link:
    """State of one IEC 104 connection's APCI layer (either role)."""

    def __init__(self, config: LinkConfig):
        self.config = config
        self.master = config.role == "master"
        self.data_transfer = "stopped"
        self.vs = 0                     # V(S): next send sequence number
        self.vr = 0                     # V(R): next expected receive sequence number
        self.ack = 0                    # oldest unacknowledged sent I-frame
        self._sent_times: collections.deque[float] = collections.deque()
        self._queue: collections.deque[bytes] = collections.deque()
        self._out: list[bytes] = []
        self._events: list = []
        self._unacked_rx = 0            # received I-frames not yet acknowledged
        self._t2_at: float | None = None
        self._u_pending: int | None = None   # U act awaiting its con
        self._u_at = 0.0
        self._t3_at: float | None = None
        self._closed = False
        self._stop_pending = False      # outstation: STOPDT act waits for our frames' ack
        self.last_testfr_con: float | None = None
        self.rtt: float | None = None
        self.counts = collections.Counter()

    # ---- inputs ------------------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        self._t3_at = now + self.config.t3

    def connection_lost(self) -> None:
        self._closed = True
        self.data_transfer = "stopped"

    def start(self, now: float) -> None:
        """Master: send STARTDT act."""
        self.data_transfer = "starting"
        self._send_u(UFunction.STARTDT_ACT, now)

    def stop(self, now: float) -> None:
        """Master: acknowledge everything received, then STOPDT act."""
        if self._unacked_rx:
            self._send_s()
        self.data_transfer = "stopping"
        self._send_u(UFunction.STOPDT_ACT, now)

    def test(self, now: float) -> None:
        """TESTFR act now (on demand; t3 sends it by itself)."""
        if self._u_pending is None:
            self._send_u(UFunction.TESTFR_ACT, now)

    def send_asdu(self, asdu: bytes, now: float) -> None:
        """Queue an ASDU; it goes out while started and the k window has room."""
        self._queue.append(asdu)
        self._flush_queue(now)

    def window_space(self) -> int:
        """I-frames that may be sent now (0 unless data transfer is started)."""
        if self.data_transfer != "started" and not (self.master and self.data_transfer == "stopping"):
            return 0
        return max(0, self.config.k - len(self._sent_times) - len(self._queue))

    def account_sent(self, count: int, now: float) -> tuple[int, int]:
        """Bulk sending (the simulator): reserve ``count`` I-frames, returns ``(ns, nr)`` to
        stamp them with (frames ns, ns+1, ...); the caller writes them itself, right away.
        ``count`` must not exceed :meth:`window_space`."""
        if count > self.window_space():
            raise ValueError("bulk send beyond the k window")
        ns = self.vs
        self.vs = (self.vs + count) % MOD
        self._sent_times.extend([now] * count)
        self._acked_by_us()
        self.counts["i_out"] += count
        return ns, self.vr

    def receive_frames(self, now: float, frames: np.ndarray) -> int:
        """Process a batch of received frames (FRAME_DTYPE rows) in order; returns how many
        leading frames were accepted. A frame the link refuses (and every frame after it,
        since the link is then closed) must not reach the store or be acted on."""
        n = len(frames)
        if n == 0 or self._closed:
            return 0
        self._t3_at = now + self.config.t3
        ns = frames["ns"]
        if n > 1 and (frames["format"] == FrameFormat.I).all() and not frames["status"].any() \
                and int(ns[0]) == self.vr and self.data_transfer != "stopped" and \
                ((np.diff(ns.astype(np.int32)) % MOD) == 1).all() and \
                self._check_nr(int(frames["nr"][-1])):
            self.vr = (self.vr + n) % MOD       # the common case: a run of good I-frames
            self.counts["i_in"] += n
            self._received_i(now, n)
            self._flush_queue(now)
            return n
        accepted = 0
        for f in frames:
            self._receive_one(now, f)
            if self._closed:
                break
            accepted += 1
        self._flush_queue(now)
        return accepted

    def tick(self, now: float) -> None:
        """Timers: t1 (sent I-frames, U act), t2 (ack received), t3 (idle: TESTFR)."""
        if self._closed:
            return
        t1 = self.config.t1
        if self._sent_times and now >= self._sent_times[0] + t1:
            self._fail(f"t1 expired: I-frame N(S)={self.ack} unacknowledged for {t1:g} s")
            self.counts["t1_expiries"] += 1
            return
        if self._u_pending is not None and now >= self._u_at + t1:
            self._fail(f"t1 expired: no answer to {UFunction(self._u_pending).name} in {t1:g} s")
            self.counts["t1_expiries"] += 1
            return
        if self._t2_at is not None and now >= self._t2_at:
            self._send_s()
        if self._t3_at is not None and now >= self._t3_at and self._u_pending is None:
            self._send_u(UFunction.TESTFR_ACT, now)
            self._t3_at = now + self.config.t3

    def next_deadline(self) -> float | None:
        """The earliest time at which ``tick`` has something to do."""
        if self._closed:
            return None
        times = [self._t3_at, self._t2_at]
        if self._sent_times:
            times.append(self._sent_times[0] + self.config.t1)
        if self._u_pending is not None:
            times.append(self._u_at + self.config.t1)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # ---- outputs -----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def events(self) -> list:
        ev, self._events = self._events, []
        return ev

    def status(self) -> dict:
        return {
            "data_transfer": self.data_transfer, "vs": self.vs, "vr": self.vr, "ack": self.ack,
            "unacked_sent": len(self._sent_times), "unacked_received": self._unacked_rx,
            "queued": len(self._queue), "last_testfr_con": self.last_testfr_con, "rtt": self.rtt,
            **{k: self.counts[k] for k in ("i_in", "s_in", "u_in", "i_out", "s_out", "u_out",
                                           "t1_expiries", "sequence_errors")},
        }

    # ---- internals ---------------------------------------------------------------------------

    def _accepting_i(self) -> bool:
        if self.master and self.data_transfer == "stopped":
            self._fail("I-frame received while data transfer is stopped")
            return False
        return True

    def _received_i(self, now: float, n: int) -> None:
        if self._unacked_rx == 0:
            self._t2_at = now + self.config.t2
        self._unacked_rx += n
        if self._unacked_rx >= self.config.w:
            self._send_s()

    def _receive_one(self, now: float, f) -> None:
        fmt, status = int(f["format"]), int(f["status"])
        if status in _FRAMING_LOST:
            self._fail(f"malformed frame ({FrameStatus(status).name}): framing lost")
            return
        if fmt == FrameFormat.I:
            if not self._accepting_i():
                return
            ns = int(f["ns"])
            if ns != self.vr:
                self.counts["sequence_errors"] += 1
                self._fail(f"sequence error: N(S)={ns}, expected {self.vr}")
                return
            if not self._check_nr(int(f["nr"])):
                return
            self.vr = (self.vr + 1) % MOD
            self.counts["i_in"] += 1
            self._received_i(now, 1)
        elif fmt == FrameFormat.S:
            self.counts["s_in"] += 1
            self._check_nr(int(f["nr"]))
        else:
            self.counts["u_in"] += 1
            self._receive_u(now, int(f["u_function"]))

    def _receive_u(self, now: float, fn: int) -> None:
        if fn == UFunction.TESTFR_ACT:
            self._out.append(u_frame(UFunction.TESTFR_CON))
            self.counts["u_out"] += 1
        elif fn == UFunction.TESTFR_CON:
            if self._u_pending == UFunction.TESTFR_ACT:
                self.rtt = now - self._u_at
                self.last_testfr_con = now
                self._u_pending = None
                self._events.append(TestConfirmed(self.rtt))
        elif fn == UFunction.STARTDT_CON and self.master:
            if self._u_pending == UFunction.STARTDT_ACT:
                self._u_pending = None
                self.data_transfer = "started"
                self._events.append(Started())
        elif fn == UFunction.STOPDT_CON and self.master:
            if self._u_pending == UFunction.STOPDT_ACT:
                self._u_pending = None
                self.data_transfer = "stopped"
                self._events.append(Stopped())
        elif fn == UFunction.STARTDT_ACT and not self.master:
            self._out.append(u_frame(UFunction.STARTDT_CON))
            self.counts["u_out"] += 1
            if self.data_transfer != "started":
                self.data_transfer = "started"
                self._events.append(StartRequested())
                self._events.append(Started())
        elif fn == UFunction.STOPDT_ACT and not self.master:
            self._stop_pending = True
            self.data_transfer = "stopping"
            self._events.append(StopRequested())
            self._maybe_confirm_stop()
        # anything else (a con we did not ask for) is ignored, as lib60870 does

    def _maybe_confirm_stop(self) -> None:
        if self._stop_pending and not self._sent_times:
            if self._unacked_rx:
                self._send_s()
            self._out.append(u_frame(UFunction.STOPDT_CON))
            self.counts["u_out"] += 1
            self._stop_pending = False
            self.data_transfer = "stopped"
            self._events.append(Stopped())

    def _check_nr(self, nr: int) -> bool:
        """Acknowledge sent I-frames up to N(R); an N(R) outside the window is fatal."""
        outstanding = (self.vs - self.ack) % MOD
        acked = (nr - self.ack) % MOD
        if acked > outstanding:
            self.counts["sequence_errors"] += 1
            self._fail(f"sequence error: N(R)={nr} acknowledges unsent frames (V(S)={self.vs}, "
                       f"oldest unacknowledged {self.ack})")
            return False
        if acked:
            for _ in range(acked):
                self._sent_times.popleft()
            self.ack = nr
            self._events.append(Acked(acked))
            room = self.config.k - len(self._sent_times)
            if room > 0:
                self._events.append(WindowOpen(room))
            self._maybe_confirm_stop()
        return True

    def _flush_queue(self, now: float) -> None:
        if self.data_transfer != "started" or not self._queue:
            return
        k = self.config.k
        while self._queue and len(self._sent_times) < k:
            asdu = self._queue.popleft()
            self._out.append(i_frame(asdu, self.vs, self.vr))
            self._sent_times.append(now)
            self.vs = (self.vs + 1) % MOD
            self.counts["i_out"] += 1
            self._acked_by_us()

    def _acked_by_us(self) -> None:
        # an I-frame carries N(R): it acknowledges everything received so far
        self._unacked_rx = 0
        self._t2_at = None

    def _send_s(self) -> None:
        self._out.append(s_frame(self.vr))
        self.counts["s_out"] += 1
        self._acked_by_us()

    def _send_u(self, fn: int, now: float) -> None:
        self._out.append(u_frame(fn))
        self.counts["u_out"] += 1
        self._u_pending = fn
        self._u_at = now

    def _fail(self, reason: str) -> None:
        self._closed = True
        self._events.append(Close(reason))
