"""Request tracking without I/O: which answer belongs to which request.

A session registers what it sent (interrogations, commands, reads, clock sync, ...) and
feeds every confirmation (ActCon, ActTerm, negative answers, COT 44-47) and every answering
row here; this module resolves the callers' futures. Nothing here sends or reads a socket,
so every matching rule is tested with plain rows (tests/test_requests.py).

Safety rules kept here (ARCHITECTURE, rule 10):

- a request whose caller gave up (timeout, cancellation) after it was sent is *in doubt*:
  the RTU may have executed it. A new request to the same object is refused with
  :class:`~iec104.errors.CommandInDoubt` until the answer arrives (counted as late, never
  as success) or the connection is closed, so that a retry can never execute twice;
- devices are what answered positively: a refused interrogation leaves no device;
- a broadcast interrogation completes when every known station terminated it, or when the
  RTU terminated it with the broadcast address.
"""
from __future__ import annotations

import asyncio
import logging

import numpy as np

from iec104.commands import Pending, refusal
from iec104.errors import CommandInDoubt
from iec104.types import Cot, TypeID

__all__ = ["Interrogation", "Requests", "BROADCAST_SETTLE"]

log = logging.getLogger("iec104.requests")
BROADCAST_SETTLE = 0.2   # s without a new station's answer that ends a broadcast request
_Key = tuple[int, int, int]   # (type, ca, ioa) of a command or system request


class Interrogation:
    """A (counter) interrogation: ActCon and ActTerm per common address, objects counted."""

    def __init__(self, type_id: int, ca: int, qualifier: int, expect: set[int],
                 broadcast: int) -> None:
        self.type_id, self.ca, self.qualifier = type_id, ca, qualifier
        self.broadcast = broadcast
        self.expect = expect                    # broadcast: the devices known when it began
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.confirmed: set[int] = set()
        self.terminated: set[int] = set()
        self.refused: dict[int, Exception] = {}
        self.objects = 0
        self.token = None                       # the link's token while queued
        self._settle: asyncio.TimerHandle | None = None
        if type_id == TypeID.C_IC_NA_1:
            self.cots = (qualifier, qualifier)  # QOI 20..36 is also the data's COT
        else:
            rqt = qualifier & 0x3F              # 1..4: counter group, 5: general request
            self.cots = (37 + rqt, 37 + rqt) if 1 <= rqt <= 4 else (37, 37)

    @property
    def is_broadcast(self) -> bool:
        return self.ca == self.broadcast

    def count(self, points: np.ndarray) -> None:
        """Count the rows of a batch that answer this interrogation."""
        lo, hi = self.cots
        cot = points["cot"]
        mask = (cot >= lo) & (cot <= hi)
        if not self.is_broadcast:
            mask &= points["ca"] == self.ca
        self.objects += int(np.count_nonzero(mask))

    def answer(self, ca: int, cot: int, negative: bool) -> None:
        if self.done.done() or (not self.is_broadcast and ca != self.ca):
            return
        err = refusal(self.type_id, ca, 0, cot, negative)
        if err is not None:
            self.refused[ca] = err
        elif cot == Cot.ACTIVATION_CON:
            self.confirmed.add(ca)
        elif cot == Cot.ACTIVATION_TERMINATION:
            self.confirmed.add(ca)
            self.terminated.add(ca)
        else:
            return                              # not an answer to an activation
        if self._settle is not None:            # another station answered: not done yet
            self._settle.cancel()
            self._settle = None
        if not self.is_broadcast:
            if self.refused:
                self.done.set_exception(self.refused[ca])
            elif self.terminated:
                self.done.set_result(self.objects)
            return
        if ca == self.broadcast and ca in self.terminated:
            self._finish()                      # the RTU terminated it for all its stations
            return
        waiting = (self.confirmed | self.expect) - self.terminated - set(self.refused) - {self.broadcast}
        if not waiting and (self.terminated or self.refused):
            if self.expect:                     # every known station answered
                self._finish()
            else:
                # stations not known yet answer one by one: finish once no other station
                # has confirmed for a moment after the last termination
                self._settle = asyncio.get_running_loop().call_later(BROADCAST_SETTLE, self._finish)

    def stations(self) -> set[int]:
        """The stations that answered positively (the broadcast address is none)."""
        return (self.confirmed | self.terminated) - {self.broadcast} - set(self.refused)

    def _finish(self) -> None:
        if self.done.done():
            return
        if self.terminated:
            self.done.set_result(self.objects)
        else:
            self.done.set_exception(next(iter(self.refused.values())))

    def fail(self, exc: BaseException) -> None:
        if self._settle is not None:
            self._settle.cancel()
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()               # the caller may have gone: do not warn


class Requests:
    """Every request of one session that awaits an answer, and those in doubt."""

    def __init__(self, name: str, broadcast: int) -> None:
        self.name, self.broadcast = name, broadcast
        self.pending: dict[_Key, Pending] = {}              # (type, ca, ioa) -> command
        self.reads: dict[tuple[int, int], asyncio.Future[np.void]] = {}   # (ca, ioa) -> row
        self.interrogations: dict[tuple[int, int], Interrogation] = {}  # (type, ca)
        self.in_doubt: dict[_Key, str] = {}                 # (type, ca, ioa) -> what
        self.late = 0

    def __bool__(self) -> bool:
        return bool(self.pending or self.reads or self.interrogations or self.in_doubt)

    # ---- commands and system requests --------------------------------------------------------

    def begin(self, key: _Key, what: str, want_term: bool) -> Pending:
        """Register a request to (type, ca, ioa); refused while one is open or in doubt."""
        if key in self.in_doubt:
            raise CommandInDoubt(
                f"{self.name}: {what} refused: an earlier {self.in_doubt[key]} was sent and "
                "its caller gave up before the answer; the RTU may have executed it. The "
                "answer, or closing the link, clears this")
        if key in self.pending:
            raise CommandInDoubt(f"{self.name}: {what} refused: the same request already "
                                 "awaits its confirmation")
        t, ca, ioa = key
        p = self.pending[key] = Pending(t, ca, ioa, want_term)
        return p

    def end(self, key: _Key, p: Pending, *, gave_up: bool, sent: bool, what: str) -> None:
        """The caller stopped waiting: done, or gave up (sent: the RTU may act on it)."""
        if self.pending.get(key) is p:
            del self.pending[key]
        if gave_up and sent and not p.con.done():
            self.in_doubt[key] = what
            log.warning("%s: %s sent, no confirmation: in doubt until its answer arrives",
                        self.name, what)

    def confirmation(self, t: int, ca: int, ioa: int, cot: int, negative: bool) -> int | None:
        """Feed one answering object of a control-direction ASDU. Returns the CA of an
        end of initialization (M_EI_NA_1), which asks for a general interrogation."""
        if t == TypeID.M_EI_NA_1:
            return ca
        if t in (TypeID.C_IC_NA_1, TypeID.C_CI_NA_1):
            for gi in list(self.interrogations.values()):
                if gi.type_id == t:
                    gi.answer(ca, cot, negative)
            return None
        key = (t, ca, ioa)
        p = self.pending.get(key)
        if p is not None:
            p.confirm(cot, negative, ca)
        elif key in self.in_doubt and (refusal(t, ca, ioa, cot, negative) is not None or cot in (
                Cot.ACTIVATION_CON, Cot.DEACTIVATION_CON, Cot.ACTIVATION_TERMINATION)):
            what = self.in_doubt.pop(key)
            self.late += 1
            outcome = "refused" if negative or cot >= 44 else "confirmed"
            log.warning("%s: late answer (%s, COT %d) to %s, after its caller gave up: "
                        "counted as late, not as success", self.name, outcome, cot, what)
        err = refusal(t, ca, ioa, cot, negative) if t == TypeID.C_RD_NA_1 else None
        if err is not None:
            fut = self.reads.pop((ca, ioa), None)           # a read is answered by data, or refused
            if fut is not None and not fut.done():
                fut.set_exception(err)
        return None

    # ---- data that answers requests ----------------------------------------------------------

    def data(self, points: np.ndarray) -> None:
        """Rows with a COT that answers a request: interrogation objects, reads."""
        for gi in self.interrogations.values():
            gi.count(points)
        if self.reads:
            for row in points[points["cot"] == Cot.REQUEST]:
                fut = self.reads.pop((int(row["ca"]), int(row["ioa"])), None)
                if fut is not None and not fut.done():
                    fut.set_result(row.copy())

    def fail_all(self, exc: BaseException) -> None:
        """The connection is gone: every open request fails, nothing stays in doubt."""
        for p in self.pending.values():
            p.fail(exc)
        for f in self.reads.values():
            if not f.done():
                f.set_exception(exc)
                f.exception()
        for gi in self.interrogations.values():
            gi.fail(exc)
        self.pending.clear()
        self.reads.clear()
        self.interrogations.clear()
        self.in_doubt.clear()
