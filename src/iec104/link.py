"""The IEC 60870-5-104 link rules (APCI: IEC 60870-5-104, clause 5): their Python face.

The rules themselves are C (``ext/link.pyx``, module ``iec104._link``): :class:`Link` takes
frames and the clock and gives bytes to send, a :class:`LinkEvent` bitmask and the next
deadline, in the manner of h11 (nothing reads a clock, owns a socket or starts a task), and
:class:`Channel` is one connection's receive path (decode, validate, then store) returning
:class:`Batch` bits. Here: their configuration, validated, and the names of their bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from iec104._link import Channel, Link, Reader, RecvBuffer, Timers

__all__ = ["LinkConfig", "Link", "Channel", "Reader", "RecvBuffer", "Timers", "LinkEvent", "Batch", "MOD"]

MOD = 32768


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

    def __post_init__(self) -> None:
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


class LinkEvent(IntFlag):
    """What ``Link.take_events()`` reports (the EV_ enum of ext/link.pyx)."""

    STARTED = 1             # master: STARTDT con received; outstation: STARTDT act answered
    STOPPED = 2
    START_REQUESTED = 4     # outstation: the master sent STARTDT act (already confirmed)
    STOP_REQUESTED = 8      # outstation: STOPDT act (confirmed once our frames are acked)
    TEST_CONFIRMED = 16     # TESTFR con to our act: ``link.rtt``
    CLOSE = 32              # the connection must be closed: ``link.close_reason``


class Batch(IntFlag):
    """What ``Channel.received()`` / ``tick()`` ask of the glue (the B_ enum of ext/link.pyx)."""

    OUTPUT = 1              # the link has bytes to send: ``link.data_to_send()``
    EVENTS = 2              # ``link.take_events()``
    FRAMES = 4              # frames arrived and the glue taps them (debug log, raw hooks)
    IFRAMES = 8             # accepted I-frames (requests, for the simulator)
    CONTROL = 16            # accepted control-direction or system ASDUs (type >= 45)
    REQUEST_DATA = 32       # rows answering a request (COT other than 1, 2, 3)
    NEW_DEVICE = 64         # ``channel.new_devices()``
    PAUSE = 128             # a lossless event reader is past its high-water mark
    BAD = 256               # malformed frames
    REFUSED = 512           # new rows refused by the station's cap
    WAKE = 1024             # rows arrived for an event reader that waits (a channel wakes
                            # it itself: ``EventRing.wake``, not ``on_batch``)
    ACKED = 2048            # the peer acknowledged sent I-frames: room in the k window
