"""Request tracking without I/O: which answer belongs to which request.

A session registers what it sent (interrogations, commands, reads, clock sync, ...) and
feeds every confirmation (ActCon, ActTerm, negative answers, COT 44-47) and every answering
row here; this module resolves the callers' futures. Nothing here sends or reads a socket,
so every matching rule is tested with plain rows (tests/test_requests.py).

Safety rules kept here (ARCHITECTURE, rule 10):

- an answer is a request's only if it mirrors it: the same type, CA and IOA, and for a
  process command the same value and qualifier (S/E included: a select's ActCon never
  confirms the execute); for an interrogation the same QOI or QCC. ActCon is COT 7 only,
  and an ActTerm counts only after its ActCon; a negative answer is never turned into
  success by an answer after it. Any other answer is counted (``unmatched``) and ignored;
- a request whose caller gave up (timeout, cancellation) after it was sent is *in doubt*
  (also one whose ActCon came but not the ActTerm it waited for): the RTU may have executed
  it. A new request to the same object (a process command of any type: C_SC_NA_1 and
  C_SC_TA_1 operate the same object) is refused with
  :class:`~iec104.errors.CommandInDoubt` until its answer arrives (the ActTerm, if it
  waited for one; counted as late, never as success). Once its connection is lost no answer
  can come: it stays in doubt, across reconnects and redundancy switchovers, until the
  caller has looked at the RTU's state and says so (``Session.clear_doubt``). So a retry
  never executes twice blindly. Clock sync and the test command are not tracked: sent twice,
  they do no harm;
- a select the RTU may hold (confirmed, or in doubt) with no execute sent after it is broken
  (the same command with COT 8, IEC 60870-5-5): the break's answer is its DeactCon (COT 9),
  which never answers an activation (a negative one neither refuses a request nor ends its
  doubt), or a refusal, or an ActCon from RTUs that take the break for a new select; one
  after the answer of a select in doubt (answers come in the order sent). A break ends no
  doubt: the select's own answer does. An RTU that answers a break with an ActCon took it
  for a new select (c104 does): it gets no more breaks, which would only prolong a select;
- devices are what answered positively: a refused interrogation leaves no device;
- a broadcast interrogation completes when every known station terminated it, or when the
  RTU terminated it with the broadcast address.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from iec104.commands import Pending, refusal
from iec104.errors import BY_COT, CommandInDoubt
from iec104.types import Cot, TypeID

__all__ = ["Interrogation", "Requests", "BROADCAST_SETTLE"]

log = logging.getLogger("iec104.requests")
BROADCAST_SETTLE = 0.2   # s without a new station's answer that ends a broadcast request
_T = TypeVar("_T")
_Key = tuple[int, int, int]   # (type, ca, ioa) of a command or system request
_PROCESS_COMMANDS = frozenset((*range(45, 52), *range(58, 65)))
_HARMLESS_TWICE = frozenset((TypeID.C_CS_NA_1, TypeID.C_TS_TA_1))  # never in doubt


def object_of(key: _Key) -> _Key:
    """What a request acts on: every process command type to one (CA, IOA) is one object."""
    t, ca, ioa = key
    return (0, ca, ioa) if t in _PROCESS_COMMANDS else key


@dataclass
class _Doubt:
    """A request sent whose caller gave up before its answer (see Requests.end)."""

    type_id: int
    what: str
    until_term: bool                # only its ActTerm (or a refusal) clears it
    mirror: tuple[float, int] | None
    lost: bool = False              # its connection is gone: no answer can come any more


@dataclass
class Break:
    """The break (COT 8) of a select of ours that the RTU may hold, awaiting its answer."""

    obj: _Key
    type_id: int
    what: str
    mirror: tuple[float, int] | None
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


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

    def answer(self, ca: int, cot: int, negative: bool, qualifier: float | None = None) -> bool:
        """One ActCon/ActTerm/refusal; ``qualifier`` the QOI/QCC it mirrors (another
        request's answer, e.g. a late group's, is not this one's). Whether it was this
        request's (a DeactCon never is: an interrogation is never deactivated)."""
        if self.done.done() or (not self.is_broadcast and ca != self.ca) or (
                qualifier is not None and qualifier != self.qualifier) or (
                cot not in (Cot.ACTIVATION_CON, Cot.ACTIVATION_TERMINATION) and cot not in BY_COT):
            return False
        self._take(ca, cot, negative)
        return True

    def _take(self, ca: int, cot: int, negative: bool) -> None:
        err = refusal(self.type_id, ca, 0, cot, negative)
        if err is not None:
            self.refused[ca] = err
        elif cot == Cot.ACTIVATION_CON:
            self.confirmed.add(ca)
        else:                                   # (ActCon, ActTerm or COT 44-47 only here)
            self.confirmed.add(ca)
            self.terminated.add(ca)
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
        _fail(self.done, exc)                   # the caller may have gone: do not warn


class Requests:
    """Every request of one session that awaits an answer, and those in doubt."""

    def __init__(self, name: str, broadcast: int) -> None:
        self.name, self.broadcast = name, broadcast
        self.pending: dict[_Key, Pending] = {}              # object_of((type, ca, ioa)) -> it
        # (ca, ioa) -> the reads awaiting that object's answer, oldest first
        self.reads: dict[tuple[int, int], deque[asyncio.Future[np.void]]] = {}
        self.interrogations: dict[tuple[int, int], Interrogation] = {}  # (type, ca)
        self.in_doubt: dict[_Key, _Doubt] = {}              # object_of((type, ca, ioa)) -> it
        # confirmed requests whose ActTerm may still come (their callers did not wait for it)
        self.answered: dict[_Key, tuple[int, tuple[float, int] | None]] = {}
        self.breaks: list[Break] = []           # sent, awaiting their answer, oldest first
        # the RTU answered a break with an ActCon: it takes one for a new select (c104 does,
        # and restarts its select timeout), so a break would only prolong a select
        self.breaks_reselect = False
        self.late = 0
        self.unmatched = 0              # answers that mirror no request of ours

    def __bool__(self) -> bool:
        return bool(self.pending or self.reads or self.interrogations or self.in_doubt)

    # ---- commands and system requests --------------------------------------------------------

    def begin(self, key: _Key, what: str, want_term: bool,
              mirror: tuple[float, int] | None = None) -> Pending:
        """Register a request to (type, ca, ioa); refused while one to the same object is
        open or in doubt. ``mirror``: the (value, quality) its answers must echo."""
        obj = object_of(key)
        if obj in self.in_doubt:
            d = self.in_doubt[obj]
            raise CommandInDoubt(
                f"{self.name}: {what} refused: an earlier {d.what} was sent and its caller "
                "gave up before the answer; the RTU may have executed it. " + (
                    "Its connection was lost, so no answer will come: look at the RTU's state, "
                    f"then clear_doubt(ca={key[1]}, ioa={key[2]}) to send it again" if d.lost
                    else "Its answer clears this"))
        if obj in self.pending:
            raise CommandInDoubt(f"{self.name}: {what} refused: a request to the same object "
                                 f"({self.pending[obj].what}) already awaits its confirmation")
        t, ca, ioa = key
        p = self.pending[obj] = Pending(t, ca, ioa, want_term, what=what, mirror=mirror)
        return p

    def end(self, key: _Key, p: Pending, *, gave_up: bool, sent: bool, what: str,
            lost: bool = False) -> None:
        """The caller stopped waiting: done, or gave up (sent: the RTU may act on it; lost:
        with its connection, so no answer can come)."""
        obj = object_of(key)
        if self.pending.get(obj) is p:
            del self.pending[obj]
        if not gave_up and _confirmed(p.con) and not p.term.done():
            self.answered[obj] = (p.type_id, p.mirror)
        if not (gave_up and sent) or p.refused or p.type_id in _HARMLESS_TWICE:
            return                      # answered, never left, refused, or harmless again
        confirmed = _confirmed(p.con)
        if not confirmed or (p.want_term and not _confirmed(p.term)):
            self.in_doubt[obj] = _Doubt(p.type_id, what, confirmed or p.want_term, p.mirror, lost)
            log.warning("%s: %s sent, no %s: in doubt until %s", self.name, what,
                        "termination" if confirmed else "confirmation",
                        "clear_doubt() (its connection was lost)" if lost else "its answer")

    def begin_break(self, key: _Key, what: str, mirror: tuple[float, int] | None) -> Break:
        """Track the break of a select to (type, ca, ioa); its answer resolves ``done``."""
        b = Break(object_of(key), key[0], what, mirror)
        self.breaks.append(b)
        return b

    def end_break(self, b: Break) -> None:
        if b in self.breaks:
            self.breaks.remove(b)

    def _break_answer(self, obj: _Key, t: int, ca: int, ioa: int, cot: int, negative: bool,
                      value: float | None, quality: int | None) -> bool:
        """Whether the answer is that of a break awaiting one (see the module's rules)."""
        if cot not in (Cot.DEACTIVATION_CON, Cot.ACTIVATION_CON) and cot not in BY_COT:
            return False
        b = next((b for b in self.breaks if b.obj == obj and b.type_id == t and
                  not b.done.done() and _mirrors(b.mirror, value, quality)), None)
        if b is None:
            return False
        err = refusal(t, ca, ioa, cot, negative)
        if err is None:
            self.breaks_reselect |= cot == Cot.ACTIVATION_CON
            b.done.set_result(cot)
        else:
            _fail(b.done, err)
        return True

    def confirmation(self, t: int, ca: int, ioa: int, cot: int, negative: bool,
                     value: float | None = None, quality: int | None = None) -> int | None:
        """Feed one answering object of a control-direction ASDU (``value`` and ``quality``
        as decoded: what it mirrors). Returns the CA of an end of initialization
        (M_EI_NA_1), which asks for a general interrogation."""
        if t == TypeID.M_EI_NA_1:
            return ca
        if t in (TypeID.C_IC_NA_1, TypeID.C_CI_NA_1):
            took = [gi.answer(ca, cot, negative, value)
                    for gi in list(self.interrogations.values()) if gi.type_id == t]
            if not any(took) and cot == Cot.DEACTIVATION_CON:
                self._unmatched(t, ca, ioa, cot)
            return None
        if t == TypeID.C_RD_NA_1:
            err = refusal(t, ca, ioa, cot, negative)
            waiting = self.reads.get((ca, ioa))
            if err is not None and waiting:     # a read is answered by data, or refused
                waiting.popleft().set_exception(err)
            return None
        obj = object_of((t, ca, ioa))
        if cot == Cot.DEACTIVATION_CON and \
                self._break_answer(obj, t, ca, ioa, cot, negative, value, quality):
            return None                         # (before a new request's: it answers none)
        if obj not in self.pending and obj not in self.in_doubt and \
                t not in _PROCESS_COMMANDS and ca != self.broadcast:
            # a system request sent to the global address (a clock sync): RTUs answer it
            # with the global address or with their own
            obj = (t, self.broadcast, ioa)
        p = self.pending.get(obj)
        if p is not None and p.type_id == t and _mirrors(p.mirror, value, quality) and \
                p.confirm(cot, negative, ca):
            return None
        d = self.in_doubt.get(obj)
        if d is not None and d.type_id == t and cot != Cot.DEACTIVATION_CON and \
                _mirrors(d.mirror, value, quality):
            refused = refusal(t, ca, ioa, cot, negative) is not None
            if refused or cot in (Cot.ACTIVATION_CON, Cot.ACTIVATION_TERMINATION):
                self.late += 1
                ends = refused or cot == Cot.ACTIVATION_TERMINATION or not d.until_term
                if ends:
                    del self.in_doubt[obj]
                log.warning("%s: late answer (%s, COT %d) to %s, after its caller gave up: "
                            "counted as late, not as success%s", self.name,
                            "refused" if refused else "confirmed", cot, d.what,
                            "" if ends else "; in doubt until its termination")
            return None
        if self._break_answer(obj, t, ca, ioa, cot, negative, value, quality):
            return None
        a = self.answered.get(obj)
        if a is not None and a[0] == t and _mirrors(a[1], value, quality) and \
                cot == Cot.ACTIVATION_TERMINATION:
            del self.answered[obj]              # the ActTerm its caller did not wait for
            return None
        self._unmatched(t, ca, ioa, cot)
        return None

    def _unmatched(self, t: int, ca: int, ioa: int, cot: int) -> None:
        self.unmatched += 1
        if self.unmatched == 1 or self.unmatched % 1000 == 0:     # (a flood: not every one)
            log.warning("%s: an answer that mirrors no request of ours (%s CA %d IOA %d COT "
                        "%d; %d so far): ignored", self.name, TypeID(t).name
                        if t in TypeID._value2member_map_ else t, ca, ioa, cot, self.unmatched)

    def clear_doubt(self, ca: int | None = None, ioa: int | None = None) -> list[str]:
        """Forget the requests in doubt (to ``ca``, to its ``ioa``; None: every one): the
        caller has seen what the RTU did. Returns what was cleared."""
        gone = [o for o in self.in_doubt
                if (ca is None or o[1] == ca) and (ioa is None or o[2] == ioa)]
        what = [self.in_doubt.pop(o).what for o in gone]
        for w in what:
            log.warning("%s: %s no longer in doubt: cleared by the caller", self.name, w)
        return what

    def doubt_records(self) -> list[DoubtRecord]:
        """What is in doubt, and what would be if this session's process died now (a request
        awaiting its answer may have left), as plain tuples (type, ca, ioa, what, until_term,
        mirror): what :meth:`restore_doubt` takes in another process."""
        out = [(d.type_id, o[1], o[2], d.what, d.until_term, d.mirror)
               for o, d in self.in_doubt.items()]
        out += [(p.type_id, p.ca, p.ioa, p.what, p.want_term or _confirmed(p.con), p.mirror)
                for p in self.pending.values()
                if not p.refused and p.type_id not in _HARMLESS_TWICE]
        return out

    def restore_doubt(self, records: list[DoubtRecord]) -> None:
        """Put :meth:`doubt_records` of a session that is gone in doubt here, as lost: no
        answer can come over this connection, so only ``clear_doubt`` ends them. An object
        in doubt here already keeps its own record."""
        for t, ca, ioa, what, until_term, mirror in records:
            obj = object_of((t, ca, ioa))
            if obj not in self.in_doubt:
                self.in_doubt[obj] = _Doubt(t, what, until_term, mirror, lost=True)
                log.warning("%s: %s in doubt, carried over from a session that is gone: "
                            "until clear_doubt()", self.name, what)

    # ---- data that answers requests ----------------------------------------------------------

    def data(self, points: np.ndarray) -> None:
        """Rows with a COT that answers a request: interrogation objects, reads."""
        for gi in self.interrogations.values():
            gi.count(points)
        if self.reads:
            for row in points[points["cot"] == Cot.REQUEST]:
                waiting = self.reads.get((int(row["ca"]), int(row["ioa"])))
                if waiting:
                    waiting.popleft().set_result(row.copy())

    def fail_all(self, exc: BaseException) -> None:
        """The connection is gone: every open request fails; what is in doubt stays so (no
        answer can come now: ``clear_doubt``)."""
        for p in self.pending.values():
            p.fail(exc)
        for waiting in self.reads.values():
            for f in waiting:
                _fail(f, exc)
        for gi in self.interrogations.values():
            gi.fail(exc)
        for b in self.breaks:
            _fail(b.done, exc)
        self.breaks.clear()
        self.pending.clear()
        self.answered.clear()
        self.reads.clear()
        self.interrogations.clear()
        for d in self.in_doubt.values():
            d.lost = True


def _mirrors(mirror: tuple[float, int] | None, value: float | None,
             quality: int | None) -> bool:
    """Whether an answer's (value, quality) echo a request's (None: nothing to compare)."""
    return mirror is None or (value is not None and (value, quality) == mirror)


def _fail(fut: asyncio.Future[_T], exc: BaseException) -> None:
    """Fail a future whose waiter may be gone (closed): retrieved, so never warned of."""
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


def _confirmed(fut: asyncio.Future[int]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


# one request in doubt, as Requests.doubt_records gives it: (type, ca, ioa, what, until_term,
# mirror), plain values that pickle (a cluster worker's heartbeat, its restart)
DoubtRecord = tuple[int, int, int, str, bool, "tuple[float, int] | None"]
