"""The link core's rules, deterministic: a fake clock, frames built as numpy rows, no sockets."""
import time

import numpy as np
import pytest

from iec104.link import Link, LinkConfig, LinkEvent
from iec104.types import FRAME_DTYPE, FrameStatus, UFunction

from iec104 import decode_frames

ASDU = b"\x64\x01\x06\x00\x01\x00\x00\x00\x00\x14"


def frames(*specs):
    """specs: ("I", ns, nr) | ("S", nr) | ("U", fn) | ("BAD", status)."""
    out = np.zeros(len(specs), FRAME_DTYPE)
    for row, spec in zip(out, specs):
        kind = spec[0]
        if kind == "I":
            row["format"], row["ns"], row["nr"] = 0, spec[1], spec[2]
        elif kind == "S":
            row["format"], row["nr"] = 1, spec[1]
        elif kind == "U":
            row["format"], row["u_function"] = 2, spec[1]
        else:
            row["format"], row["status"] = 0, spec[1]
    return out


def sent(link):
    data = link.data_to_send()
    return decode_frames(data) if data else np.zeros(0, FRAME_DTYPE)


def started_master(**cfg):
    link = Link(LinkConfig(**cfg))
    link.connection_made(0.0)
    link.start(0.0)
    assert sent(link)["u_function"].tolist() == [UFunction.STARTDT_ACT]
    link.receive_frames(0.1, frames(("U", UFunction.STARTDT_CON)))
    assert link.take_events() == LinkEvent.STARTED
    return link


def test_config_is_validated():
    with pytest.raises(ValueError, match="t2"):
        LinkConfig(t1=5, t2=5)
    with pytest.raises(ValueError, match="w"):
        LinkConfig(k=12, w=9)
    with pytest.raises(ValueError, match="k"):
        LinkConfig(k=40000, w=8)
    LinkConfig(k=12, w=8)


def test_outstation_answers_startdt_and_testfr():
    link = Link(LinkConfig(role="outstation"))
    link.connection_made(0)
    link.receive_frames(1, frames(("U", UFunction.STARTDT_ACT), ("U", UFunction.TESTFR_ACT)))
    assert sent(link)["u_function"].tolist() == [UFunction.STARTDT_CON, UFunction.TESTFR_CON]
    ev = link.take_events()
    assert ev & LinkEvent.START_REQUESTED and link.data_transfer == "started"


def test_received_i_frames_are_acked_at_exactly_w():
    link = started_master(w=4, k=6)
    for i in range(3):                               # one frame per read
        link.receive_frames(1, frames(("I", i, 0)))
    assert len(sent(link)) == 0
    link.receive_frames(1, frames(("I", 3, 0)))
    s = sent(link)
    assert s["format"].tolist() == [1] and s["nr"].tolist() == [4]


def test_received_i_frames_are_acked_at_t2():
    link = started_master(t2=2.0, t1=5.0)
    link.receive_frames(10.0, frames(("I", 0, 0)))
    assert link.next_deadline() == pytest.approx(12.0)
    link.tick(11.9)
    assert len(sent(link)) == 0
    link.tick(12.0)
    assert sent(link)["nr"].tolist() == [1]


def test_wrong_send_sequence_number_closes():
    link = started_master()
    assert link.receive_frames(1, frames(("I", 0, 0), ("I", 2, 0), ("I", 3, 0))) == 1
    assert link.take_events() & LinkEvent.CLOSE
    assert "N(S)=2, expected 1" in link.close_reason and link.closed


def test_nr_acknowledging_unsent_frames_closes():
    link = started_master()
    link.send_asdu(ASDU, 1.0)
    assert link.receive_frames(2, frames(("S", 2))) == 0
    assert link.take_events() & LinkEvent.CLOSE and "unsent" in link.close_reason


def test_full_window_queues_asdus_until_acked():
    link = started_master(k=2, w=1)
    for i in range(5):
        link.send_asdu(bytes([45, 1, 6, 0, 1, 0, i, 0, 0, 1]), 1.0)
    out = sent(link)
    assert out["ns"].tolist() == [0, 1] and link.status()["queued"] == 3
    link.receive_frames(2, frames(("S", 2)))
    assert link.status()["unacked_sent"] == 2 and link.ack == 2
    assert sent(link)["ns"].tolist() == [2, 3]
    link.receive_frames(3, frames(("S", 4)))
    assert sent(link)["ns"].tolist() == [4] and link.status()["queued"] == 0


def test_t1_expiry_of_an_unacked_i_frame_closes():
    link = started_master(t1=3.0, t2=1.0)
    link.send_asdu(ASDU, 10.0)
    assert link.next_deadline() == pytest.approx(13.0)
    link.tick(12.99)
    assert not link.take_events()
    link.tick(13.0)
    assert link.take_events() & LinkEvent.CLOSE and "t1" in link.close_reason


def test_unanswered_startdt_closes_at_t1():
    link = Link(LinkConfig(t1=2.0, t2=1.0))
    link.connection_made(0.0)
    link.start(0.0)
    link.tick(2.0)
    assert link.take_events() & LinkEvent.CLOSE and "STARTDT_ACT" in link.close_reason


def test_t3_sends_testfr_and_con_gives_the_round_trip():
    link = started_master(t3=5.0)
    link.tick(5.05)
    assert len(sent(link)) == 0                      # a frame was received at 0.1
    link.tick(5.1)
    assert sent(link)["u_function"].tolist() == [UFunction.TESTFR_ACT]
    time.sleep(0.002)
    link.receive_frames(5.3, frames(("U", UFunction.TESTFR_CON)))
    assert link.take_events() == LinkEvent.TEST_CONFIRMED and link.last_testfr_con == 5.3
    # the round trip is measured with a monotonic ns clock, not the loop's (libuv counts
    # whole ms: a loopback round trip read 0.0): the 2 ms slept, not the fake clock's 0.2 s
    assert 0.002 <= link.rtt < 0.1


def test_any_received_frame_resets_t3():
    link = started_master(t3=5.0)
    link.receive_frames(4.0, frames(("S", 0)))
    link.tick(5.2)
    assert len(sent(link)) == 0
    assert link.next_deadline() == pytest.approx(9.0)


def test_sequence_numbers_wrap_at_32768():
    link = started_master(w=8)
    link.vr = 32766
    link.receive_frames(1, frames(("I", 32766, 0), ("I", 32767, 0), ("I", 0, 0), ("I", 1, 0)))
    assert link.vr == 2 and not link.take_events() & LinkEvent.CLOSE
    link.vs = link.ack = 32767
    link.send_asdu(ASDU, 1)
    link.send_asdu(ASDU, 1)
    assert sent(link)[-2:]["ns"].tolist() == [32767, 0]
    link.receive_frames(2, frames(("S", 1)))
    assert link.status()["unacked_sent"] == 0


def test_stopdt_acknowledges_everything_received_first():
    link = started_master(w=8)
    link.receive_frames(1, frames(("I", 0, 0), ("I", 1, 0)))
    link.stop(2)
    out = sent(link)
    assert out["format"].tolist() == [1, 2] and out["nr"][0] == 2
    assert out["u_function"][1] == UFunction.STOPDT_ACT
    link.receive_frames(3, frames(("U", UFunction.STOPDT_CON)))
    assert link.take_events() & LinkEvent.STOPPED and link.data_transfer == "stopped"


def test_outgoing_i_frame_piggybacks_the_ack():
    link = started_master(w=4, k=6, t2=2)
    for ns in range(3):                              # one frame per batch: no batch ack
        link.receive_frames(1, frames(("I", ns, 0)))
    link.send_asdu(ASDU, 1.5)
    out = sent(link)
    assert out["format"].tolist() == [0] and out["nr"].tolist() == [3]
    link.receive_frames(2, frames(("I", 3, 1)))
    assert len(sent(link)) == 0                      # the counter restarted at the I-frame
    assert link.next_deadline() == pytest.approx(4.0)


def test_framing_errors_close_but_bad_asdus_only_count():
    link = started_master()
    link.receive_frames(1, frames(("BAD", FrameStatus.UNKNOWN_TYPE)))
    assert link.vr == 1 and not link.take_events()
    link.receive_frames(1, frames(("BAD", FrameStatus.BAD_START)))
    assert link.take_events() & LinkEvent.CLOSE


def test_an_s_frame_with_reserved_bits_set_closes_as_malformed():
    link = started_master()
    assert link.receive_frames(1, decode_frames(bytes.fromhex("680405000000"))) == 0
    assert link.take_events() & LinkEvent.CLOSE
    assert link.close_reason == "malformed frame (BAD_CONTROL): framing lost"


def test_master_closes_on_i_frames_before_startdt():
    link = Link(LinkConfig())
    link.connection_made(0)
    assert link.receive_frames(1, frames(("I", 0, 0))) == 0
    assert link.take_events() & LinkEvent.CLOSE


def test_outstation_bulk_accounting_respects_k():
    link = Link(LinkConfig(role="outstation", k=4, w=2))
    link.connection_made(0)
    link.receive_frames(0, frames(("U", UFunction.STARTDT_ACT)))
    assert link.window_space() == 4
    ns, nr = link.account_sent(3, 1.0)
    assert (ns, nr, link.window_space()) == (0, 0, 1)
    with pytest.raises(ValueError):
        link.account_sent(2, 1.0)
    link.receive_frames(2, frames(("S", 3)))
    assert link.window_space() == 4 and link.vs == 3


def test_outstation_closes_on_i_frames_before_startdt():
    # 5.3: no I-frames while data transfer is stopped; the frame is refused, not processed
    link = Link(LinkConfig(role="outstation"))
    link.connection_made(0)
    assert link.receive_frames(1, frames(("I", 0, 0))) == 0
    assert link.take_events() & LinkEvent.CLOSE and "stopped" in link.close_reason


def test_a_bulk_batch_is_acknowledged_at_its_end():
    # half a w or more in one read: an S-frame at the end keeps the peer's k window open
    link = started_master(w=8)
    link.receive_frames(1, frames(*[("I", ns, 0) for ns in range(4)]))
    s = sent(link)
    assert s["format"].tolist() == [1] and s["nr"].tolist() == [4]
    link.receive_frames(2, frames(("I", 4, 0), ("I", 5, 0), ("I", 6, 0)))   # a trickle: w or t2
    assert len(sent(link)) == 0
    link.receive_frames(3, frames(*[("I", ns, 0) for ns in range(7, 11)]))
    assert sent(link)["nr"].tolist() == [11]           # a bulk read again: acked at its end


def test_a_withdrawn_asdu_never_leaves():
    link = started_master(k=2, w=1)
    link.send_asdu(ASDU, 1.0)
    first = link.send_asdu(ASDU, 1.0)
    queued = link.send_asdu(ASDU[:-1] + b"\x15", 1.0)
    assert len(sent(link)) == 2 and link.queued() == 1
    assert link.withdraw(queued) and not link.withdraw(queued)
    assert not link.withdraw(first)                  # it already went out
    link.receive_frames(2, frames(("S", 2)))
    assert len(sent(link)) == 0 and link.counts["withdrawn"] == 1


def test_an_asdu_too_long_for_an_apdu_is_refused():
    link = started_master()
    with pytest.raises(ValueError, match="249"):
        link.send_asdu(bytes(250), 1.0)
    with pytest.raises(ValueError):
        link.send_asdu(b"", 1.0)


def test_an_i_frame_received_while_stopping_is_acknowledged_at_once():
    # the outstation withholds STOPDT con until its frames are acked: no wait for w or t2
    link = started_master(w=8)
    link.stop(1.0)
    assert sent(link)["u_function"].tolist() == [UFunction.STOPDT_ACT]
    link.receive_frames(1.1, frames(("I", 0, 0)))
    s = sent(link)
    assert s["format"].tolist() == [1] and s["nr"].tolist() == [1]


def test_a_link_closed_mid_batch_emits_no_queued_i_frame():
    """A batch [S-frame that opens the k window, I-frame with a wrong N(S)]: the link closes
    and sends nothing more; the queued ASDU stays queued, so it can be withdrawn (it used to
    be numbered and written to the dead link, and the session took it for sent: in doubt)."""
    link = started_master(k=2, w=1)
    link.send_asdu(ASDU, 1.0)
    link.send_asdu(ASDU, 1.0)
    queued = link.send_asdu(ASDU, 1.0)
    assert len(sent(link)) == 2 and link.queued() == 1
    assert link.receive_frames(2.0, frames(("S", 2), ("I", 5, 0))) == 1
    assert link.closed
    out = sent(link)
    assert not (out["format"] == 0).any(), "an I-frame was built on a closed link"
    assert link.withdraw(queued), "the never-sent request cannot be withdrawn"


def test_an_unconfirmed_testfr_act_closes_at_its_own_t1_when_stopdt_follows():
    """t1 runs for every U act sent (5.2): a TESTFR act left unanswered closes the link t1
    after it was sent, even when a STOPDT act (or STARTDT act) follows it meanwhile (the
    later act's t1 used to replace it: 6 s instead of 4.1 s)."""
    link = started_master(t1=3.0, t2=1.0, t3=1.0)   # the last frame came in at 0.1
    link.tick(1.1)
    assert sent(link)["u_function"].tolist() == [UFunction.TESTFR_ACT]
    link.stop(3.0)                                   # STOPDT act; the TESTFR act is 1.9 s old
    sent(link)
    link.tick(4.1)                                   # the TESTFR act is t1 old: unanswered
    assert link.closed and link.take_events() & LinkEvent.CLOSE


def test_a_pending_testfr_act_makes_its_t1_the_deadline_not_the_t3_that_has_passed():
    """While a TESTFR act awaits its con, a t3 that passes meanwhile is no deadline (no
    second act goes out): the loop's Timers used to run this link at every tick until the
    con or t1."""
    link = started_master(t1=3.0, t2=1.0, t3=2.0)   # the last frame came in at 0.1
    link.test(0.5)                                   # TESTFR act on demand: t1 until 3.5
    assert sent(link)["u_function"].tolist() == [UFunction.TESTFR_ACT]
    link.tick(2.5)                                   # t3 (2.1) has passed, the act pending
    assert len(sent(link)) == 0 and link.next_deadline() == 3.5
