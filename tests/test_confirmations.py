"""Which answer confirms which request, against a hostile or buggy RTU (scripted peer on
loopback): only one that mirrors it (type, CA, IOA, value, qualifier, S/E; an interrogation's
QOI), with the right cause, in the right order; whatever else comes confirms nothing and is
counted, and a request whose answer may still come keeps its object in doubt."""
import asyncio
import struct

import pytest

import iec104
from iec104.errors import (
    CommandError, CommandInDoubt, ConfirmationTimeout, InvalidRequestError, NegativeConfirmation,
)

from scripted_peer import ScriptedPeer, asdu, float_objects
from waiting import round_trips, wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)


def sc(cot, *, on=True, select=False, ioa=100, ca=1, negative=False):
    """A C_SC_NA_1 answer as the RTU sends it: the SCO echoed (S/E, state)."""
    sco = (0x80 if select else 0) | (1 if on else 0)
    return asdu(45, cot, ca, struct.pack("<I", ioa)[:3] + bytes([sco]), negative=negative)


def gi(cot, qoi, ca=1):
    return asdu(100, cot, ca, b"\x00\x00\x00" + bytes([qoi]))


def commands(peer, type_id=45):
    return peer.received(fmt=0, type_id=type_id)


async def connected(peer, master):
    return await master.connect("127.0.0.1", peer.port, gi_on_start=False)


# ---- select before operate -------------------------------------------------------------------

@pytest.mark.parametrize("cot", [6, 9, 3])     # the select echoed back, a DeactCon, spontaneous
async def test_an_execute_goes_out_only_after_a_select_actcon(cot):
    """Only an ActCon (COT 7) confirms a select: an RTU or gateway that answers it with COT
    6 (the select echoed), 9 or 3 gets no execute."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, select=True,
                                                 timeout=0.3))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(cot, select=True))
        with pytest.raises((ConfirmationTimeout, CommandError)):
            await asyncio.wait_for(task, 2)
        await round_trips(rtu)
        # the select, then its break (COT 8: the RTU may hold it), never the execute
        assert [f["cot"] for f, _ in commands(peer)] == [6, 8], \
            "the execute went out without a select ActCon"
        assert rtu.status()["unmatched_answers"] == 1        # counted: it answered nothing


async def test_a_repeated_select_actcon_does_not_confirm_the_execute():
    """An answer must mirror its request, S/E included: the select's ActCon sent twice does
    not confirm the execute."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, select=True,
                                                 timeout=0.3))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7, select=True))                  # the select's ActCon
        await wait_for(lambda: len(commands(peer)) == 2, 2)
        peer.send_i(sc(7, select=True))                  # the same ActCon again (S/E = select)
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(task, 2)


async def test_an_actcon_for_another_value_does_not_confirm_a_command():
    """An ActCon that echoes another value (OFF to a command ON) confirms nothing."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, timeout=0.3))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7, on=False))
        with pytest.raises((ConfirmationTimeout, CommandError)):
            await asyncio.wait_for(task, 2)


async def test_a_time_tagged_retry_of_a_command_in_doubt_is_refused():
    """The doubt is the object's, not the type's: after C_SC_NA_1 to CA 1 IOA 100 timed out,
    the same command with a time tag (C_SC_TA_1, the same object) is refused, not sent."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        with pytest.raises(ConfirmationTimeout):
            await rtu.command(1, 100, "C_SC_NA_1", 1, timeout=0.1)
        with pytest.raises(CommandInDoubt):
            await rtu.command(1, 100, "C_SC_NA_1", 1, time=True, timeout=0.1)
        await round_trips(rtu)
        assert commands(peer, 58) == []


# ---- ActTerm ---------------------------------------------------------------------------------

async def test_the_actterm_of_an_earlier_command_does_not_confirm_the_next():
    """An ActTerm is no ActCon: the late ActTerm of a command ON (its caller returned at the
    ActCon) does not confirm the command OFF sent after it."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        first = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, timeout=2))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7, on=True))
        await asyncio.wait_for(first, 2)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 0, timeout=0.3))
        await wait_for(lambda: len(commands(peer)) == 2, 2)
        peer.send_i(sc(10, on=True))                     # the first's ActTerm, late
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(task, 2)


async def test_a_retry_after_an_actterm_timeout_is_not_completed_by_the_first_actterm():
    """A command whose ActCon came but not the ActTerm it waited for is in doubt: the retry is
    refused (it used to go out, and the first's late ActTerm completed it)."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        first = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, wait_term=True,
                                                  timeout=0.2))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7))
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(first, 2)
        retry = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, wait_term=True,
                                                  timeout=0.3))
        await wait_for(lambda: retry.done() or len(commands(peer)) == 2, 2)
        if not retry.done():
            peer.send_i(sc(10))                          # the first's ActTerm, late
        with pytest.raises((CommandInDoubt, ConfirmationTimeout)):
            await asyncio.wait_for(retry, 2)


async def test_a_late_actcon_does_not_end_the_doubt_before_the_actterm():
    """A command that waited for its ActTerm stays in doubt at its late ActCon, until the
    ActTerm: the retry is refused meanwhile."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        with pytest.raises(ConfirmationTimeout):
            await rtu.command(1, 100, "C_SC_NA_1", 1, wait_term=True, timeout=0.1)
        peer.send_i(sc(7))                               # late ActCon of the first
        await wait_for(lambda: rtu.status()["late_answers"] == 1, 2)
        retry = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, wait_term=True,
                                                  timeout=0.3))
        await wait_for(lambda: retry.done() or len(commands(peer)) == 2, 2)
        if not retry.done():
            peer.send_i(sc(10))                          # the first's ActTerm
        with pytest.raises((CommandInDoubt, ConfirmationTimeout)):
            await asyncio.wait_for(retry, 2)


# ---- negative ActCon -------------------------------------------------------------------------

@pytest.mark.parametrize("then", [7, 10])
async def test_a_negative_actcon_is_not_turned_into_success_by_a_later_answer(then):
    """A negative ActCon is final: a positive ActCon or ActTerm in the moment after it (while
    a COT 44-47 naming the cause may still come) does not turn it into success."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, timeout=1))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7, negative=True))
        peer.send_i(sc(then))
        with pytest.raises(NegativeConfirmation):
            await asyncio.wait_for(task, 2)


# ---- interrogations --------------------------------------------------------------------------

async def test_an_interrogation_behind_another_group_keeps_its_timeout():
    """A group interrogation started beside a GI waits for it within its own timeout, and
    both end when the RTU never answers (it used to hang for ever)."""
    async with ScriptedPeer(auto_gi=False) as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        g1 = asyncio.ensure_future(rtu.interrogate(ca=1, timeout=0.2))
        await wait_for(lambda: len(commands(peer, 100)) == 1, 2)
        g2 = asyncio.ensure_future(rtu.interrogate(ca=1, group=2, timeout=0.2))
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(g1, 2)
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(g2, 2)


async def test_a_late_group_actterm_does_not_complete_a_general_interrogation():
    """An interrogation's answers must echo its QOI: the late ActCon/ActTerm of a timed-out
    group 1 interrogation do not complete the station interrogation sent after it."""
    async with ScriptedPeer(auto_gi=False) as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        with pytest.raises(ConfirmationTimeout):
            await rtu.interrogate(ca=1, group=1, timeout=0.1)
        task = asyncio.ensure_future(rtu.interrogate(ca=1, timeout=0.3))
        await wait_for(lambda: len(commands(peer, 100)) == 2, 2)
        peer.send_i(gi(7, 21))
        peer.send_i(asdu(13, 21, 1, float_objects(1, [1.0])))
        peer.send_i(gi(10, 21))
        with pytest.raises(ConfirmationTimeout):
            await asyncio.wait_for(task, 2)


# ---- reads -----------------------------------------------------------------------------------

async def test_two_reads_of_one_object_both_get_their_answer():
    """Two reads of one object at once each get an answer, in order."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        r1 = asyncio.ensure_future(rtu.read(1, 5, timeout=0.5))
        r2 = asyncio.ensure_future(rtu.read(1, 5, timeout=0.5))
        await wait_for(lambda: len(commands(peer, 102)) == 2, 2)
        peer.send_i(asdu(13, 5, 1, float_objects(5, [1.0])))
        peer.send_i(asdu(13, 5, 1, float_objects(5, [2.0])))
        rows = await asyncio.wait_for(asyncio.gather(r1, r2), 2)
        assert sorted(float(r["value"]) for r in rows) == [1.0, 2.0]


async def test_the_actterm_a_caller_did_not_wait_for_is_no_stray_answer():
    """A command returns at its ActCon; the ActTerm that most RTUs send after it is expected,
    not counted as an answer that mirrors nothing; an ActCon to nothing we sent is."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.command(1, 100, "C_SC_NA_1", 1, timeout=2))
        await wait_for(lambda: len(commands(peer)) == 1, 2)
        peer.send_i(sc(7))
        await asyncio.wait_for(task, 2)
        peer.send_i(sc(10))                              # its ActTerm
        await round_trips(rtu)
        assert rtu.status()["unmatched_answers"] == 0
        peer.send_i(sc(7, ioa=101))                      # an ActCon to nothing we sent
        await wait_for(lambda: rtu.status()["unmatched_answers"] == 1, 2)
        assert rtu.status()["late_answers"] == 0


async def test_a_broadcast_clock_sync_is_confirmed_by_a_station_that_answers_with_its_own_ca():
    """RTUs answer a request to the global address with it or with their own CA: either
    confirms the clock sync (it used to time out and leave every later one in doubt)."""
    async with ScriptedPeer() as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        task = asyncio.ensure_future(rtu.clock_sync(timeout=1))
        await wait_for(lambda: len(commands(peer, 103)) == 1, 2)
        cp56 = commands(peer, 103)[0][1][-7:]            # the time it sent, mirrored
        peer.send_i(asdu(103, 7, 1, b"\x00\x00\x00" + cp56))
        await asyncio.wait_for(task, 2)
        assert rtu.status()["in_doubt"] == 0 and rtu.status()["unmatched_answers"] == 0


async def test_a_station_interrogation_waits_for_a_running_broadcast_one():
    """The ActCon/ActTerm of CA 1 answer a broadcast GI and a GI to CA 1 alike: the second
    waits until the first ended (both at once let CA 1's answers to one end the other)."""
    async with ScriptedPeer(auto_gi=False) as peer, iec104.Master() as master:
        rtu = await connected(peer, master)
        for ca in (1, 2):                                # two devices known
            peer.send_i(asdu(13, 3, ca, float_objects(1, [1.0])))
        await wait_for(lambda: len(rtu.devices) == 2, 2)
        everyone = asyncio.ensure_future(rtu.interrogate(timeout=2))
        one = asyncio.ensure_future(rtu.interrogate(ca=1, timeout=2))
        await wait_for(lambda: len(commands(peer, 100)) == 1, 2)
        await round_trips(rtu)
        assert len(commands(peer, 100)) == 1, "a GI to CA 1 went out beside the broadcast"
        for ca in (1, 2):
            peer.send_i(gi(7, 20, ca))
            peer.send_i(gi(10, 20, ca))
        await asyncio.wait_for(everyone, 2)
        await wait_for(lambda: len(commands(peer, 100)) == 2, 2)
        peer.send_i(gi(7, 20, 1))
        peer.send_i(gi(10, 20, 1))
        await asyncio.wait_for(one, 2)
