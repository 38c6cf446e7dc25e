"""Control-direction requests: validate what the caller asked, build the ASDU, and the
bookkeeping that matches confirmations (ActCon/ActTerm) to the request that awaits them.

Nothing operates that the caller did not mean: :func:`build_command` refuses, with
:class:`~iec104.errors.InvalidRequestError` and before anything is encoded, an address that
does not fit its field (:func:`check_address`), a value outside its type's range, NaN or
infinity, a qualifier out of range and a time tag that CP56Time2a cannot carry. Booleans are
taken as a value by single commands only (True/False is what a single command means); every
other type wants a number, so that ``True`` never becomes "off" of a double command or 1 of a
setpoint by accident.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iec104._codec import decode
from iec104._encode import encode_asdu
from iec104.errors import BY_COT, CommandError, InvalidRequestError, NegativeConfirmation
from iec104.types import CP56_VARIANT, NO_TIME, Cot, TypeID, broadcast_ca

__all__ = ["CommandResult", "build_command", "check_address", "is_int", "mirror_of", "Pending",
           "refusal", "to_ms"]
_SE = 0x80
NEGATIVE_GRACE = 0.05   # s to wait after a negative ActCon for the COT 44-47 that may follow
FLOAT32_MAX = 3.4028234663852886e38
# CP56Time2a carries the year as 0..99, read as 2000..2099 (see ext/cp56.pxd)
_CP56_FIRST = int(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
_CP56_END = int(dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _is_bool(x: object) -> bool:
    return isinstance(x, bool) or type(x).__name__ == "bool_"      # numpy's too


def is_int(x: object) -> bool:
    """An integer that is not a bool (numpy integers count, floats do not)."""
    return isinstance(x, numbers.Integral) and not _is_bool(x)


def _octets(n: int) -> str:
    return f"{n} octet{'s' if n != 1 else ''}"


def check_address(ca: Any, ioa: Any, sizes: Mapping[str, Any], *,
                  broadcast: bool = False) -> tuple[int, int]:
    """Refuse a CA or IOA that the ASDU would not carry as given; returns ``(ca, ioa)`` as ints.

    ``sizes`` holds ``ca_size`` (1 or 2 octets, default 2) and ``ioa_size`` (1-3, default 3).
    CA must be an int in 1..2**(8*ca_size)-1: CA 0 is not used (IEC 60870-5-101, 7.2.4) and
    the global address (:func:`iec104.types.broadcast_ca`: 255 or 65535) is refused unless
    ``broadcast=True`` (interrogation, clock sync and the other system requests; never a
    process command). IOA must be an int in 0..2**(8*ioa_size)-1. Raises
    :class:`InvalidRequestError` naming the field, its size and its range.
    """
    ca_size, ioa_size = sizes.get("ca_size", 2), sizes.get("ioa_size", 3)
    if ca_size not in (1, 2) or ioa_size not in (1, 2, 3):
        raise InvalidRequestError(f"field sizes: CA takes 1 or 2 octets (not {ca_size!r}), "
                                  f"IOA 1, 2 or 3 (not {ioa_size!r})")
    glob = broadcast_ca(ca_size)
    top = glob if broadcast else glob - 1
    where = f"a CA of {_octets(ca_size)} takes 1..{top}"
    if not is_int(ca):
        raise InvalidRequestError(f"CA {ca!r} is not an integer ({where})")
    if ca == 0:
        raise InvalidRequestError(f"CA 0 is not used by the standard ({where})")
    if ca == glob and not broadcast:
        raise InvalidRequestError(f"CA {ca} is the broadcast address of a CA of "
                                  f"{_octets(ca_size)}: a command to every station is refused "
                                  f"(one station: 1..{top})")
    if not 1 <= ca <= glob:
        raise InvalidRequestError(f"CA {ca} does not fit: {where}")
    top = (1 << (8 * ioa_size)) - 1
    where = f"an IOA of {_octets(ioa_size)} takes 0..{top}"
    if not is_int(ioa):
        raise InvalidRequestError(f"IOA {ioa!r} is not an integer ({where})")
    if not 0 <= ioa <= top:
        raise InvalidRequestError(f"IOA {ioa} does not fit: {where}")
    return int(ca), int(ioa)


def to_ms(time: Any) -> int:
    """Milliseconds since the epoch (UTC wall clock) of a datetime (naive: UTC), a number of
    ms (int), or True (now). CP56Time2a carries the years 2000..2099: any other time, and
    anything that is not a time, raises :class:`InvalidRequestError`."""
    if time is True:
        return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    if isinstance(time, dt.datetime):
        if time.tzinfo is None:
            time = time.replace(tzinfo=dt.timezone.utc)
        ms = int(time.timestamp() * 1000)
    elif is_int(time):
        ms = int(time)
    else:
        raise InvalidRequestError(f"time {time!r}: a datetime, ms since the epoch (int) or "
                                  "True (now)")
    if not _CP56_FIRST <= ms < _CP56_END:
        raise InvalidRequestError(f"time {time!r}: CP56Time2a carries 2000..2099 only")
    return ms


def _number(value: Any, what: str) -> float:
    """A finite real number (int, float, numpy scalar; not bool, not str) as float."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise InvalidRequestError(f"{what} value {value!r} is not a number")
    try:
        f = float(value)
    except OverflowError:                     # an int beyond any float
        raise InvalidRequestError(f"{what} value {value!r} is out of range") from None
    if not math.isfinite(f):
        raise InvalidRequestError(f"{what} value {value!r} is not a finite number")
    return f


def _integral(value: Any, what: str, lo: int, hi: int) -> float:
    f = _number(value, what)
    if f != int(f) or not lo <= int(value) <= hi:
        raise InvalidRequestError(f"{what} value {value!r} is not an integer in {lo}..{hi}")
    return f


def _check_value(t: int, value: Any) -> float:
    """The value of command type ``t`` (45-51, 58-64) as the encoder takes it."""
    base = t - 13 if t >= 58 else t
    name = TypeID(t).name
    if base == 45:
        if _is_bool(value):
            return float(value)
        f = _number(value, f"single command {name}")
        if f not in (0.0, 1.0):
            raise InvalidRequestError(f"single command {name} value {value!r}: 0 (off) or 1 (on)")
        return f
    if base in (46, 47):
        what = "double command" if base == 46 else "regulating step command"
        f = _number(value, f"{what} {name}")
        if f not in (1.0, 2.0):
            raise InvalidRequestError(f"{what} {name} value {value!r}: 1 (off/lower) or "
                                      "2 (on/higher)")
        return f
    if base == 48:
        f = _number(value, f"normalized setpoint {name}")
        if not -1.0 <= f <= 32767 / 32768:
            raise InvalidRequestError(f"normalized setpoint {name} value {value!r} not in "
                                      "-1..32767/32768")
        return f
    if base == 49:
        return _integral(value, f"scaled setpoint {name}", -32768, 32767)
    if base == 50:
        f = _number(value, f"float setpoint {name}")
        if not -FLOAT32_MAX <= f <= FLOAT32_MAX:
            raise InvalidRequestError(f"float setpoint {name} value {value!r} beyond the "
                                      f"float32 range (+-{FLOAT32_MAX:.7g})")
        return f
    return _integral(value, f"bitstring command {name}", 0, 0xFFFFFFFF)


def _check_qualifier(t: int, qualifier: Any, select: object) -> int:
    """The qualifier octet: QU (0..31) with S/E for 45-47, QL (0..127) with S/E for 48-50,
    none for a bitstring (51)."""
    base = t - 13 if t >= 58 else t
    name = TypeID(t).name
    se = _SE if select else 0
    if base == 51:
        if select:
            raise InvalidRequestError(f"a bitstring command ({name}) has no select/execute")
        if not is_int(qualifier) or qualifier != 0:
            raise InvalidRequestError(f"a bitstring command ({name}) has no qualifier "
                                      f"(qualifier {qualifier!r})")
        return 0
    kind, hi = ("QU", 31) if base <= 47 else ("QL", 127)
    if not is_int(qualifier) or not 0 <= qualifier <= hi:
        raise InvalidRequestError(f"qualifier {kind} {qualifier!r} of {name} is not an "
                                  f"integer in 0..{hi}")
    return (int(qualifier) << 2) | se if base <= 47 else int(qualifier) | se


def build_command(type: Any, ca: int, ioa: int, value: Any, *, select: bool = False,
                  qualifier: int = 0, time: Any = None, cot: int = Cot.ACTIVATION,
                  sizes: Mapping[str, Any]) -> tuple[int, bytes]:
    """Validate a command and encode its ASDU; returns ``(type_id, asdu)``.

    ``qualifier`` is QU (0..31) for single, double and regulating step commands and QL
    (0..127) for setpoints; ``select`` sets S/E; ``time`` (datetime, ms or True for now)
    selects the time-tagged variant of the type. Values: single 0/1 (or a bool), double
    and regulating step 1/2, normalized -1..32767/32768, scaled an int16, float a finite
    float32, bitstring a uint32; never NaN or infinity. ``sizes`` holds ``cot_size``,
    ``ca_size``, ``ioa_size``; the address is checked with :func:`check_address` (no CA 0,
    no broadcast). Anything refused raises :class:`InvalidRequestError`; nothing is encoded.
    """
    try:
        if not (isinstance(type, str) or is_int(type)):
            raise ValueError
        t = int(TypeID.parse(type))
    except ValueError:
        raise InvalidRequestError(f"unknown type {type!r}: a command type is C_SC_NA_1, "
                                  "C_DC_NA_1, C_SE_NC_1, ... or its number (45-51, 58-64)") from None
    if time is not None and 45 <= t <= 51:        # `time=` on a plain type: its CP56 variant
        t = CP56_VARIANT[t]
    if not (45 <= t <= 51 or 58 <= t <= 64):
        raise InvalidRequestError(f"{TypeID(t).name} is not a command type (45-51, 58-64)")
    ca, ioa = check_address(ca, ioa, sizes, broadcast=False)
    f = _check_value(t, value)
    q = _check_qualifier(t, qualifier, select)
    time_ms = to_ms(time if time is not None else True) if t >= 58 else NO_TIME
    return t, encode_asdu(t, ca, ioa, f, q, cot=cot, time_ms=time_ms, **sizes)


def mirror_of(asdu: bytes, sizes: Mapping[str, Any]) -> tuple[float, int]:
    """The (value, quality) of a command's object as the decoder reads them: what its
    ActCon and ActTerm echo (the standard's mirror), decoded the same way."""
    rows = decode(b"\x68" + bytes([len(asdu) + 4]) + bytes(4) + asdu, **sizes)
    return float(rows["value"][0]), int(rows["quality"][0])


@dataclass
class CommandResult:
    """What the outstation answered to a request."""

    type_id: int
    ca: int
    ioa: int
    value: float
    con_cot: int | None = None
    terminated: bool = False
    rtt: float | None = None


@dataclass
class Pending:
    """A request waiting for its ActCon and, if asked, its ActTerm."""

    type_id: int
    ca: int
    ioa: int
    want_term: bool
    what: str = ""
    mirror: tuple[float, int] | None = None     # (value, quality) its answers echo
    con: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    term: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _refusal: asyncio.TimerHandle | None = None
    refused: bool = False           # a negative answer or COT 44-47 came: never a success
    left: bool = False              # it was sent (not withdrawn): the RTU has it

    def confirm(self, cot: int, negative: bool, ca: int) -> bool:
        """Feed one answer that mirrors this request (its cause, P/N bit and CA); False if
        it answers nothing of it."""
        if cot == Cot.DEACTIVATION_CON:         # a deactivation's answer, even a negative one
            return False
        err = refusal(self.type_id, ca, self.ioa, cot, negative)
        if self.refused:
            if err is not None and cot in BY_COT:   # the precise cause after the negative
                self._refuse(err)
            return err is not None
        if err is not None:
            self.refused = True
            if cot in BY_COT:
                self._refuse(err)
            else:
                # lib60870 follows a negative ActCon with COT 44-47 naming the cause: give it
                # a moment so the caller gets the precise error
                self._refusal = asyncio.get_running_loop().call_later(
                    NEGATIVE_GRACE, self._refuse, err)
        elif cot == Cot.ACTIVATION_CON and not self.con.done():
            self.con.set_result(cot)
        elif cot == Cot.ACTIVATION_TERMINATION and self.con.done() and not self.term.done():
            self.term.set_result(ca)            # (before its ActCon it is not this one's)
        else:
            # another cause (the request echoed with COT 6, spontaneous data) or a second
            # ActCon: it confirms no activation
            return False
        return True

    def _refuse(self, err: Exception) -> None:
        if self._refusal is not None:
            self._refusal.cancel()
            self._refusal = None
        for fut in (self.con, self.term):
            if not fut.done():
                fut.set_exception(err)
                fut.exception()                 # retrieved: nobody may await term

    def fail(self, exc: BaseException) -> None:
        for fut in (self.con, self.term):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()


def refusal(type_id: int, ca: int, ioa: int, cot: int, negative: bool) -> CommandError | None:
    """The typed error for an answer with P/N set or COT 44-47; None for a positive one."""
    name = TypeID(type_id).name if type_id in TypeID._value2member_map_ else str(type_id)
    if cot in BY_COT:
        cls = BY_COT[cot]
        return cls(f"{name} CA {ca} IOA {ioa}: {Cot(cot).name.lower().replace('_', ' ')}"
                   f" (COT {cot})", type_id=type_id, ca=ca, ioa=ioa, cot=cot, negative=negative)
    if negative:
        return NegativeConfirmation(f"{name} CA {ca} IOA {ioa}: negative confirmation (COT {cot})",
                                    type_id=type_id, ca=ca, ioa=ioa, cot=cot)
    return None
