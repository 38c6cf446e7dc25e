"""Everything configurable per RTU link, typed, with the standard's defaults."""
from __future__ import annotations

import enum
import math
import numbers
import ssl
import typing
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import tzinfo
from typing import Any, Final, TypedDict

from iec104.errors import SettingsError
from iec104.link import LinkConfig
from iec104.tls import TLS
from iec104.types import broadcast_ca

__all__ = ["SessionSettings", "FieldSizes", "DEFAULT", "Default", "check_coalesce",
           "check_linger", "check_max_rows", "check_rotate_rows", "check_flush_interval"]


class Default(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final = Default.DEFAULT
"""A keyword left out: the value the master was made with. ``Master.connect`` takes it for
the settings where None is itself a value (``tz``: UTC; the intervals: off; ``gi_group``: a
station interrogation); elsewhere None says the same."""


class FieldSizes(TypedDict):
    """COT, common address and IOA field sizes in octets, as the codec's keywords."""

    cot_size: int
    ca_size: int
    ioa_size: int


@dataclass(frozen=True)
class SessionSettings:
    """Everything configurable per RTU link, with the standard's defaults.

    Timers in seconds; ``k``, ``w`` in frames; field sizes in octets; ``tz`` the time zone of
    the RTU's clock (None: UTC). Schedules are intervals in seconds (None: off).
    ``max_points`` caps the latest-value rows of the session (new addresses beyond it are
    refused, counted and logged); ``max_backlog`` the octets written but not read by the
    RTU before the link is closed. Reconnects back off from ``backoff_min`` doubling to
    ``backoff_max``; the back-off starts again from ``backoff_min`` only after a
    connection held data transfer for ``backoff_reset`` seconds. ``tls`` (an
    :class:`iec104.tls.TLS` or a ready ``ssl.SSLContext``) runs the link over TLS
    (IEC 62351-3); None: plain TCP. ``ca`` lists the common addresses of the RTU's
    stations: the GI at start, the scheduled interrogations
    and the clock sync go to each of them, not to the broadcast address (None), which some
    RTUs refuse or answer partly.
    """

    t0: float = LinkConfig.t0           # the link's defaults are written once, in LinkConfig
    t1: float = LinkConfig.t1
    t2: float = LinkConfig.t2
    t3: float = LinkConfig.t3
    k: int = LinkConfig.k
    w: int = LinkConfig.w
    cot_size: int = 2
    ca_size: int = 2
    ioa_size: int = 3
    tz: str | tzinfo | None = None
    gi_on_start: bool = True
    gi_interval: float | None = None
    gi_group: int | None = None
    ci_interval: float | None = None
    qcc: int = 5
    clock_sync_interval: float | None = None
    reconnect: bool = True
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    backoff_reset: float = 30.0
    request_timeout: float = 30.0
    debug_frames: int = 1000
    max_points: int = 1 << 20
    max_backlog: int = 4 << 20
    tls: TLS | ssl.SSLContext | None = None
    ca: Sequence[int] | None = None           # held as a tuple

    def __post_init__(self) -> None:
        if isinstance(self.ca, Sequence) and not isinstance(self.ca, (str, bytes)):
            object.__setattr__(self, "ca", tuple(self.ca))     # one form to read: a tuple
        _check_types(self)
        for name, (kinds, _) in KINDS.items():      # a timer of inf or nan never runs out
            v = getattr(self, name)
            if float in kinds and isinstance(v, numbers.Real) and not math.isfinite(v):
                raise SettingsError(f"{name} {v!r}: a finite number of seconds")
        if not self.request_timeout > 0:
            raise SettingsError(f"request_timeout {self.request_timeout!r}: seconds > 0")
        if self.cot_size not in (1, 2) or self.ca_size not in (1, 2) or self.ioa_size not in (1, 2, 3):
            raise SettingsError("field sizes: COT and CA take 1 or 2 octets, IOA 1, 2 or 3")
        if self.gi_group is not None and not 1 <= self.gi_group <= 16:
            raise SettingsError(f"gi_group {self.gi_group}: groups are 1..16")
        if self.backoff_min <= 0 or self.backoff_max < self.backoff_min or self.backoff_reset < 0:
            raise SettingsError("backoff_min must be > 0 and <= backoff_max, backoff_reset >= 0")
        if not 0 <= self.qcc <= 255:
            raise SettingsError(f"qcc {self.qcc}: an octet (0..255)")
        if self.max_points < 1 or self.max_backlog < 1024:
            raise SettingsError("max_points must be >= 1 and max_backlog >= 1024 octets")
        for name in ("gi_interval", "ci_interval", "clock_sync_interval"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise SettingsError(f"{name} {v}: an interval in seconds > 0 (None: off)")
        if self.tz is not None:
            _check_tz(self.tz)
        if self.ca is not None:
            _check_cas(self.ca, self.ca_size)
        try:
            self.link_config()
        except ValueError as e:
            raise SettingsError(str(e)) from None

    def link_config(self) -> LinkConfig:
        return LinkConfig(t0=self.t0, t1=self.t1, t2=self.t2, t3=self.t3, k=self.k, w=self.w,
                          role="master")

    @property
    def sizes(self) -> FieldSizes:
        """The field sizes as the codec's keywords (``**settings.sizes``)."""
        return FieldSizes(cot_size=self.cot_size, ca_size=self.ca_size, ioa_size=self.ioa_size)

    @classmethod
    def of(cls, **kwargs: Any) -> "SessionSettings":
        names = {f.name for f in fields(cls)}
        unknown = set(kwargs) - names
        if unknown:
            raise SettingsError(f"unknown session settings: {', '.join(sorted(unknown))}")
        return cls(**kwargs)

    def overridden(self, given: dict[str, Any]) -> "SessionSettings":
        """These settings with those of ``given`` that say something: a value other than
        :data:`DEFAULT`, and other than None for a setting that cannot be None (what
        ``Master.connect``'s keywords mean)."""
        unknown = set(given) - set(KINDS)
        if unknown:
            raise SettingsError(f"unknown session settings: {', '.join(sorted(unknown))}")
        changes = {k: v for k, v in given.items()
                   if v is not DEFAULT and (v is not None or KINDS[k][1])}
        return replace(self, **changes) if changes else self


def _kinds() -> dict[str, tuple[tuple[type, ...], bool]]:
    """Each setting's types (None left out) and whether None is one of its values, from the
    annotations: the one place they are written."""
    out = {}
    for name, hint in typing.get_type_hints(SessionSettings).items():
        args = typing.get_args(hint) or (hint,)
        kinds = tuple(typing.get_origin(a) or a for a in args if a is not type(None))
        out[name] = (kinds, type(None) in args)         # Sequence[int]: a Sequence
    return out


KINDS: Final = _kinds()
"""setting -> (its types without None, whether it takes None): what target files and the
type checks read."""


def _of_kind(value: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False                    # True is no window size and no timer
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, kind)


def _check_types(s: SessionSettings) -> None:
    for name, (kinds, nullable) in KINDS.items():
        value = getattr(s, name)
        if value is None and nullable or any(_of_kind(value, k) for k in kinds):
            continue
        want = " or ".join(k.__name__ for k in kinds) + (" or None" if nullable else "")
        raise SettingsError(f"{name} {value!r}: expected {want}, got {type(value).__name__}")


def _check_cas(cas: Sequence[int], ca_size: int) -> None:
    top = broadcast_ca(ca_size) - 1             # CA 0 is not used, the broadcast is None
    if not isinstance(cas, tuple):              # text: no list of addresses
        raise SettingsError(f"ca {cas!r}: expected a list of common addresses or None")
    if not cas:
        raise SettingsError("ca (): name one common address or more (None: broadcast)")
    for c in cas:
        if not _of_kind(c, int) or not 1 <= c <= top:
            raise SettingsError(f"ca {c!r}: a common address of {ca_size} octet(s) is 1..{top}")
    if len(set(cas)) != len(cas):
        raise SettingsError(f"ca {list(cas)}: an address listed twice")


def _check_tz(tz: object) -> None:
    if not isinstance(tz, str):
        return                          # a tzinfo object
    if tz == "UTC":
        return
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"tz {tz!r}: not a known time zone (an IANA name such as "
                            "'Europe/Berlin', or None for UTC)") from None


def _seconds(name: str, value: object, most: float) -> float:
    # (nan fails the range test; inf is above it)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= most:
        raise SettingsError(f"{name} must be 0..{most:g} s, not {value!r}")
    return float(value)


def check_coalesce(value: object) -> float:
    """A Master's read coalescing (``coalesce``, s): 0 (off) to 1."""
    return _seconds("coalesce", value, 1)


def check_linger(value: object) -> float:
    """An event reader's ``linger`` (s): 0 (every read) to 60."""
    return _seconds("linger", value, 60)


def _count(name: str, value: object, also: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SettingsError(f"{name} must be {also}an int >= 1, not {value!r}")
    return int(value)


def check_max_rows(value: object) -> int | None:
    """An event reader's ``max_rows``: None (no bound) or an int >= 1 (0 would hand over empty
    batches without waiting, a negative count move the reader's cursor back)."""
    return None if value is None else _count("max_rows", value, "None or ")


def check_rotate_rows(value: object) -> int:
    """A sink's ``rotate_rows``: an int >= 1 (0 or less would write files for ever)."""
    return _count("rotate_rows", value)


def check_flush_interval(value: object) -> float:
    """A sink's ``flush_interval`` (s): above 0 (0 would wake it without pause) to 3600."""
    if value == 0:
        raise SettingsError(f"flush_interval must be above 0 s, not {value!r}")
    return _seconds("flush_interval", value, 3600)
