"""Request tracking without I/O: answers as plain values, no socket (the loop only holds the
callers' futures)."""
import asyncio

import numpy as np
import pytest

from iec104 import POINT_DTYPE
from iec104.errors import (
    CommandInDoubt, ConnectionLostError, NegativeConfirmation, UnknownCommonAddressError,
)
from iec104.requests import Interrogation, Requests
from iec104.types import Cot, TypeID

SC, GI = int(TypeID.C_SC_NA_1), int(TypeID.C_IC_NA_1)
BROADCAST = 0xFFFF


def rows(ca, cot, n):
    r = np.zeros(n, POINT_DTYPE)
    r["ca"], r["cot"], r["type_id"] = ca, cot, 13
    return r


async def test_a_confirmation_resolves_the_command_that_awaits_it():
    req = Requests("rtu", BROADCAST)
    p = req.begin((SC, 1, 100), "C_SC_NA_1 CA 1 IOA 100", False)
    req.confirmation(SC, 1, 101, Cot.ACTIVATION_CON, False)       # another object: not ours
    assert not p.con.done()
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False)
    assert p.con.result() == Cot.ACTIVATION_CON
    req.end((SC, 1, 100), p, gave_up=False, sent=True, what="x")
    assert not req.pending and not req.in_doubt


async def test_a_sent_request_given_up_is_in_doubt_until_its_late_answer():
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    p = req.begin(key, "execute", False)
    req.end(key, p, gave_up=True, sent=True, what="execute")
    with pytest.raises(CommandInDoubt, match="may have executed"):
        req.begin(key, "execute again", False)
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False)        # late: counted, not success
    assert req.late == 1 and not req.in_doubt and not p.con.done()
    req.begin(key, "execute again", False)


async def test_a_request_refused_before_its_caller_gave_up_is_not_in_doubt():
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    p = req.begin(key, "execute", False)
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, True)     # negative: its cause may follow
    req.end(key, p, gave_up=True, sent=True, what="execute")    # its caller's timeout meanwhile
    assert not req.in_doubt                                     # the RTU refused it: no doubt
    req.begin(key, "retry", False)


async def test_an_answer_must_mirror_the_request_value_and_qualifier():
    req = Requests("rtu", BROADCAST)
    p = req.begin((SC, 1, 100), "select", False, mirror=(1.0, 0x80))
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, 0.0, 0x80)     # another value
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, 1.0, 0)        # an execute's
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False)                # echoes nothing
    assert not p.con.done() and req.unmatched == 3
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, 1.0, 0x80)
    assert p.con.result() == Cot.ACTIVATION_CON


async def test_a_withdrawn_request_is_not_in_doubt():
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    p = req.begin(key, "execute", False)
    req.end(key, p, gave_up=True, sent=False, what="execute")      # it never left
    assert not req.in_doubt
    req.begin(key, "retry", False)


async def test_two_requests_to_one_object_at_once_are_refused():
    req = Requests("rtu", BROADCAST)
    req.begin((SC, 1, 100), "first", False)
    with pytest.raises(CommandInDoubt, match="already awaits"):
        req.begin((SC, 1, 100), "second", False)


async def test_closing_the_link_fails_everything_and_keeps_the_doubt_until_cleared():
    req = Requests("rtu", BROADCAST)
    p = req.begin((SC, 1, 100), "a", False)
    p2 = req.begin((SC, 1, 101), "b", False)
    req.end((SC, 1, 101), p2, gave_up=True, sent=True, what="b")
    gi = req.interrogations[(GI, 1)] = Interrogation(GI, 1, 20, set(), BROADCAST)
    req.fail_all(ConnectionLostError("gone"))
    assert isinstance(p.con.exception(), ConnectionLostError)
    assert isinstance(gi.done.exception(), ConnectionLostError)
    assert not req.pending and not req.interrogations
    # "a" was sent and lost with the link before its answer: it may have run, too
    req.end((SC, 1, 100), p, gave_up=True, sent=True, what="a", lost=True)
    with pytest.raises(CommandInDoubt, match=r"clear_doubt\(ca=1, ioa=101\)"):
        req.begin((SC, 1, 101), "b again", False)        # no answer can come: still in doubt
    assert req.clear_doubt(1, 101) == ["b"] and list(req.in_doubt) == [(0, 1, 100)]
    req.begin((SC, 1, 101), "b again", False)
    assert req.clear_doubt() == ["a"] and not req.in_doubt


async def test_clock_sync_and_the_test_command_are_never_in_doubt():
    req = Requests("rtu", BROADCAST)
    for t in (int(TypeID.C_CS_NA_1), int(TypeID.C_TS_TA_1)):
        p = req.begin((t, 1, 0), "harmless twice", False)
        req.end((t, 1, 0), p, gave_up=True, sent=True, what="harmless twice")
        req.begin((t, 1, 0), "again", False)


async def test_a_broadcast_gi_ends_when_the_rtu_terminates_it_with_the_broadcast_address():
    gi = Interrogation(GI, BROADCAST, 20, {1, 2}, BROADCAST)
    gi.answer(BROADCAST, Cot.ACTIVATION_CON, False)
    gi.count(rows(1, 20, 5))
    gi.answer(BROADCAST, Cot.ACTIVATION_TERMINATION, False)
    assert gi.done.result() == 5 and gi.stations() == set()        # 65535 is no station


async def test_a_broadcast_gi_waits_for_every_known_station():
    gi = Interrogation(GI, BROADCAST, 20, {1, 2}, BROADCAST)
    for ca in (1, 2):
        gi.answer(ca, Cot.ACTIVATION_CON, False)
    gi.count(rows(1, 20, 3))
    gi.count(rows(2, 3, 4))                                        # spontaneous: not counted
    gi.answer(1, Cot.ACTIVATION_TERMINATION, False)
    assert not gi.done.done()
    gi.answer(2, Cot.ACTIVATION_TERMINATION, False)
    assert gi.done.result() == 3 and gi.stations() == {1, 2}


async def test_a_refused_interrogation_names_the_cause_and_no_station():
    gi = Interrogation(GI, 9, 20, set(), BROADCAST)
    gi.answer(9, Cot.UNKNOWN_CA, True)
    assert isinstance(gi.done.exception(), UnknownCommonAddressError)
    assert gi.stations() == set()


async def test_a_deactivation_answer_neither_refuses_nor_confirms_an_interrogation():
    """We never deactivate an interrogation: a (negative) DeactCon, COT 9, for one is another
    request's answer or the RTU's error, counted as unmatched; the GI runs on to its ActTerm."""
    req = Requests("rtu", BROADCAST)
    gi = req.interrogations[(GI, 1)] = Interrogation(GI, 1, 20, set(), BROADCAST)
    req.confirmation(GI, 1, 0, Cot.ACTIVATION_CON, False, 20)
    req.confirmation(GI, 1, 0, Cot.DEACTIVATION_CON, True, 20)
    assert not gi.done.done() and req.unmatched == 1
    req.confirmation(GI, 1, 0, Cot.ACTIVATION_TERMINATION, False, 20)
    assert gi.done.result() == 0


async def test_a_group_interrogation_counts_only_its_cause():
    gi = Interrogation(GI, 1, 22, set(), BROADCAST)                 # group 2: COT 22
    gi.count(rows(1, 22, 4))
    gi.count(rows(1, 20, 7))
    gi.count(rows(2, 22, 9))                                       # another station
    assert gi.objects == 4


# ---- the break of a select (COT 8): its DeactCon (COT 9) is its answer -----------------------

SELECT_ON = (1.0, 0x80)                 # (value, qualifier with S/E) a select's answers mirror


async def test_a_break_takes_the_deactcon_that_mirrors_it():
    req = Requests("rtu", BROADCAST)
    b = req.begin_break((SC, 1, 100), "break", SELECT_ON)
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, False, 0.0, 0x80)     # another value
    assert not b.done.done() and req.unmatched == 1
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, False, *SELECT_ON)
    assert b.done.result() == Cot.DEACTIVATION_CON and req.unmatched == 1
    req.end_break(b)
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, False, *SELECT_ON)   # a second one
    assert req.unmatched == 2


async def test_a_break_refused_or_lost_fails_its_answer():
    req = Requests("rtu", BROADCAST)
    b = req.begin_break((SC, 1, 100), "break", SELECT_ON)
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, True, *SELECT_ON)    # nothing held
    assert isinstance(b.done.exception(), NegativeConfirmation) and req.unmatched == 0
    b2 = req.begin_break((SC, 1, 101), "break", SELECT_ON)
    req.fail_all(ConnectionLostError("gone"))
    assert isinstance(b2.done.exception(), ConnectionLostError) and not req.breaks


async def test_a_select_in_doubt_takes_its_late_actcon_and_its_break_the_deactcon():
    """Answers come in the order of their requests: a late ActCon is the select's (late, its
    doubt ends), the DeactCon after it the break's."""
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    p = req.begin(key, "select", False, SELECT_ON)
    req.end(key, p, gave_up=True, sent=True, what="select")
    b = req.begin_break(key, "break", SELECT_ON)
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, *SELECT_ON)
    assert req.late == 1 and not req.in_doubt and not b.done.done()
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, False, *SELECT_ON)
    assert b.done.result() == Cot.DEACTIVATION_CON and req.unmatched == 0


async def test_a_break_answered_as_a_select_takes_that_actcon():
    """lib60870 (c104) takes a deactivated select for a new select: its ActCon (COT 7) is the
    break's answer, not an unmatched one."""
    req = Requests("rtu", BROADCAST)
    b = req.begin_break((SC, 1, 100), "break", SELECT_ON)
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, *SELECT_ON)
    assert b.done.result() == Cot.ACTIVATION_CON and req.unmatched == 0


async def test_a_negative_deactcon_of_a_break_does_not_refuse_a_new_select_after_it():
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    b = req.begin_break(key, "break", SELECT_ON)
    p = req.begin(key, "select again", False, SELECT_ON)
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, True, *SELECT_ON)
    assert b.done.exception() is not None and not p.refused and not p.con.done()
    req.confirmation(SC, 1, 100, Cot.ACTIVATION_CON, False, *SELECT_ON)
    assert p.con.result() == Cot.ACTIVATION_CON


async def test_a_negative_deactcon_neither_refuses_an_activation_nor_ends_its_doubt():
    """A DeactCon answers a deactivation only: negative, it says nothing of an execute."""
    req = Requests("rtu", BROADCAST)
    key = (SC, 1, 100)
    p = req.begin(key, "execute", False, (1.0, 0))
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, True, 1.0, 0)
    assert not p.refused and not p.con.done()
    req.end(key, p, gave_up=True, sent=True, what="execute")
    req.confirmation(SC, 1, 100, Cot.DEACTIVATION_CON, True, 1.0, 0)
    assert list(req.in_doubt) == [(0, 1, 100)] and req.late == 0 and req.unmatched == 2
