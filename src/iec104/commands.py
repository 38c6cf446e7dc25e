"""Control-direction requests: validate what the caller asked, build the ASDU, and the
bookkeeping that matches confirmations (ActCon/ActTerm) to the request that awaits them."""
from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from iec104._encode import encode_asdu
from iec104.errors import BY_COT, CommandError, NegativeConfirmation
from iec104.types import CP56_VARIANT, NO_TIME, Cot, TypeID

__all__ = ["CommandResult", "build_command", "Pending", "refusal", "to_ms"]
_SE = 0x80
NEGATIVE_GRACE = 0.05   # s to wait after a negative ActCon for the COT 44-47 that may follow


def to_ms(time) -> int:
    """Milliseconds since the epoch (UTC wall clock) of a datetime, a number of ms, or True (now)."""
    if time is True:
        return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    if isinstance(time, dt.datetime):
        if time.tzinfo is None:
            time = time.replace(tzinfo=dt.timezone.utc)
        return int(time.timestamp() * 1000)
    return int(time)


def build_command(type, ca: int, ioa: int, value, *, select: bool = False, qualifier: int = 0,
                  time=None, cot: int = Cot.ACTIVATION, sizes: dict) -> tuple[int, bytes]:
    """Validate a command and encode its ASDU; returns ``(type_id, asdu)``.

    ``qualifier`` is QU (0..31) for single, double and regulating step commands and QL
    (0..127) for setpoints; ``select`` sets S/E; ``time`` (datetime, ms or True for now)
    selects the time-tagged variant of the type.
    """
    t = int(TypeID.parse(type))
    if time is not None and 45 <= t <= 51:        # `time=` on a plain type: its CP56 variant
        t = CP56_VARIANT[t]
    if not (45 <= t <= 51 or 58 <= t <= 64):
        raise ValueError(f"{TypeID(t).name} is not a command type (45-51, 58-64)")
    base = t - 13 if t >= 58 else t
    if base in (45, 46, 47) and not 0 <= qualifier <= 31:
        raise ValueError(f"qualifier QU {qualifier} not in 0..31")
    if base in (48, 49, 50) and not 0 <= qualifier <= 127:
        raise ValueError(f"qualifier QL {qualifier} not in 0..127")
    se = _SE if select else 0
    if base == 45:
        if value not in (0, 1, True, False):
            raise ValueError(f"single command value {value!r}: 0 or 1")
        q = (qualifier << 2) | se
    elif base in (46, 47):
        if value not in (1, 2):
            raise ValueError(f"{TypeID(t).name} state {value!r}: 1 (off/lower) or 2 (on/higher)")
        q = (qualifier << 2) | se
    elif base == 48:
        if not -1.0 <= value <= 32767 / 32768:
            raise ValueError(f"normalized setpoint {value!r} not in -1..1")
        q = qualifier | se
    elif base == 49:
        if not -32768 <= value <= 32767 or value != int(value):
            raise ValueError(f"scaled setpoint {value!r} not an int16")
        q = qualifier | se
    elif base == 50:
        q = qualifier | se
    else:
        if select:
            raise ValueError("a bitstring command (C_BO) has no select/execute")
        if not 0 <= value <= 0xFFFFFFFF or value != int(value):
            raise ValueError(f"bitstring {value!r} not a 32-bit unsigned integer")
        q = 0
    time_ms = to_ms(time if time is not None else True) if t >= 58 else NO_TIME
    return t, encode_asdu(t, ca, ioa, float(value), q, cot=cot, time_ms=time_ms, **sizes)


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
    con: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    term: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _refusal: asyncio.TimerHandle | None = None

    def confirm(self, cot: int, negative: bool, ca: int) -> None:
        """Feed one answer (its cause, P/N bit and CA) to the futures."""
        err = refusal(self.type_id, ca, self.ioa, cot, negative)
        if cot == Cot.ACTIVATION_TERMINATION:
            if not self.term.done():
                self.term.set_result(ca)
            if not self.con.done():             # some RTUs skip ActCon of a terminated request
                self.con.set_result(cot)
            return
        if err is not None:
            if cot in BY_COT or self._refusal is not None:
                self._refuse(err)
            else:
                # lib60870 follows a negative ActCon with COT 44-47 naming the cause: give it
                # a moment so the caller gets the precise error
                self._refusal = asyncio.get_running_loop().call_later(
                    NEGATIVE_GRACE, self._refuse, err)
            return
        if not self.con.done():
            self.con.set_result(cot)

    def _refuse(self, err: Exception) -> None:
        if self._refusal is not None:
            self._refusal.cancel()
        for fut in (self.con, self.term):
            if not fut.done():
                fut.set_exception(err)
                fut.exception()                 # retrieved: nobody may await term

    def fail(self, exc: BaseException) -> None:
        for fut in (self.con, self.term):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()


def refusal(type_id, ca, ioa, cot, negative) -> CommandError | None:
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
