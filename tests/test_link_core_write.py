"""The channel's own write (Channel.bind_write): a batch that asks only for its link's output
(the S-frame after w I-frames, or after t2 from the loop's Timers) is written from C, never
through on_batch; anything else, or a glue that taps or logs what it sends, goes to on_batch.
No sockets, a fake clock, but for a session on 127.0.0.1 and the loop timer's test (a
real loop)."""
import asyncio
import struct

import iec104
from iec104.outstation import Outstation
from waiting import run_and_close, wait_for

from iec104._codec import Decoder, Workspace
from iec104._store import EventRing, LatestTable
from iec104.link import Batch, Channel, Link, LinkConfig, RecvBuffer, Timers
from iec104.protocol import LinkProtocol, loop_timers

import test_channel
from scripted_peer import u_frame
from test_channel import STARTDT_CON, gi_data

SESSION_WANT = ~(Batch.IFRAMES | Batch.ACKED) & 0xFFFF     # what a master's session asks for
TESTFR_ACT, TESTFR_CON = u_frame(0x43), u_frame(0x83)


def channel():
    """A started master-side channel that has seen CA 1 (no NEW_DEVICE left to report)."""
    link = Link(LinkConfig())
    link.connection_made(0.0)
    link.start(0.0)
    link.data_to_send()
    ch = Channel(link, Decoder(workspace=Workspace(256)), RecvBuffer(4096),
                 LatestTable(), EventRing(1000), want=SESSION_WANT)
    ch.bind(lambda: 1.0, lambda flags: None)
    read(ch, STARTDT_CON)
    link.take_events()
    return ch


def bound(ch):
    """The glue's bindings, recorded: on_batch's flags and the octets written."""
    calls, written = [], []
    ch.bind(lambda: 1.0, calls.append)
    ch.bind_write(written.append)
    return calls, written


def read(ch, data: bytes) -> None:
    buf = ch.get_buffer()
    buf[:len(data)] = data
    ch.buffer_updated(len(data))


def s_frame_nr(octets: bytes) -> int:
    assert len(octets) == 6 and octets[2] == 0x01, octets.hex()
    return struct.unpack_from("<H", octets, 4)[0] >> 1


def test_the_s_frame_after_w_i_frames_is_written_without_on_batch():
    ch = channel()
    calls, written = bound(ch)
    for ns in range(7):                         # one APDU per read, w = 8: not yet
        read(ch, gi_data(ns))
    assert written == [] and calls == [Batch.NEW_DEVICE]     # CA 1: first seen
    calls.clear()
    read(ch, gi_data(7))
    assert [s_frame_nr(w) for w in written] == [8] and calls == []
    read(ch, b"".join(gi_data(ns) for ns in range(8, 12)))  # a read of w/2 (a GI): acked
    assert [s_frame_nr(w) for w in written] == [8, 12] and calls == []
    assert ch.bytes_out == 12 and ch.link.status()["s_out"] == 2


def test_t2_s_frame_from_the_timers_is_written_by_the_channel():
    ch = channel()
    calls, written = bound(ch)
    read(ch, gi_data(0))
    calls.clear()
    timers = Timers()
    timers.add(ch)
    assert timers.tick(1.0 + 9.0) == 0 and written == []    # t2 = 10 s
    timers.tick(1.0 + 10.1)
    assert [s_frame_nr(w) for w in written] == [1] and calls == []


def test_a_glue_that_taps_or_logs_its_sends_gets_on_batch():
    for setup in (lambda ch: setattr(ch, "send_taps", [print]),
                  lambda ch: setattr(ch, "debug", True)):
        ch = channel()
        calls, written = bound(ch)
        setup(ch)
        read(ch, b"".join(gi_data(ns) for ns in range(8)))
        assert written == [] and ch.bytes_out == 0
        assert calls and calls[-1] & Batch.OUTPUT
        assert s_frame_nr(ch.link.data_to_send()) == 8


def test_without_a_write_or_with_more_to_do_on_batch_gets_it():
    ch = channel()
    calls, written = bound(ch)
    read(ch, gi_data(0))
    ch.bind_write(None)                         # the transport is gone
    read(ch, b"".join(gi_data(ns) for ns in range(1, 8)))
    assert written == [] and calls[-1] == Batch.OUTPUT
    ch.link.data_to_send()
    ch.bind_write(written.append)
    read(ch, TESTFR_ACT)                        # its con: output only, written
    assert written == [TESTFR_CON]
    read(ch, b"".join(gi_data(ns, ca=2) for ns in range(8, 16)))   # a new CA with the S-frame
    assert calls[-1] == Batch.OUTPUT | Batch.NEW_DEVICE and written == [TESTFR_CON]


def test_nothing_is_written_to_a_transport_that_is_closing():
    """The timers run until the glue hears connection_lost: an S-frame due meanwhile is
    dropped, as LinkProtocol.write drops it, not written into an aborted transport."""
    ch = channel()
    calls, written = [], []
    ch.bind(lambda: 1.0, calls.append)
    ch.bind_write(written.append, lambda: True)
    for ns in range(8):
        read(ch, gi_data(ns))
    assert written == [] and ch.bytes_out == 0 and not ch.link.has_output


async def test_a_session_counts_what_its_channel_writes_and_hooks_see_every_s_frame():
    async with Outstation(stations=1, points=50, rate=400) as out, iec104.Master() as master:
        quiet = await master.connect("127.0.0.1", out.port, gi_on_start=False)
        hooked = await master.connect("127.0.0.1", out.port, gi_on_start=False)
        seen = []
        hooked.on_send.append(seen.append)
        await wait_for(lambda: min(s.status()["link"]["s_out"] for s in (quiet, hooked)) >= 3, 10)
        st = quiet.status()
        # STARTDT act (a U-frame, from Python) and every S-frame (from the channel): 6 each
        assert st["bytes_out"] == 6 * (st["link"]["u_out"] + st["link"]["s_out"])
        assert quiet.counts["bytes_out"] == st["bytes_out"]
        s_frames = [d for d in seen if len(d) == 6 and d[2] == 0x01]
        assert len(s_frames) == hooked.status()["link"]["s_out"] > 0


class Glue(LinkProtocol):
    def on_batch(self, flags):
        pass                            # (no transport: the TESTFR act goes nowhere)


async def test_a_link_with_short_timers_sets_the_loops_timer_finer():
    """The loop's Timers tick every 0.5 s for standard links; a link with short timers that
    joins later must not wait for the coarse tick: its arm() sets the loop timer again."""
    loop = asyncio.get_running_loop()
    std = Glue(loop, test_channel.channel())
    std.arm()
    timers = loop_timers(loop)
    coarse = timers.handle
    assert timers.resolution == 0.5 and coarse.when() - loop.time() > 0.4
    short = Glue(loop, test_channel.channel(config=LinkConfig(t1=0.3, t2=0.2, t3=0.5)))
    short.arm()
    assert timers.resolution == 0.05 and coarse.cancelled()
    assert timers.handle.when() - loop.time() <= 0.05 + 1e-3
    await wait_for(lambda: short.channel.link.closed, timeout=5)      # t3: TESTFR; t1: no con
    assert "t1 expired" in short.channel.link.close_reason and not std.channel.link.closed
    short.stop_timer()
    std.stop_timer()
    assert len(timers) == 0


def test_a_loop_closed_soon_after_its_last_connection_is_freed():
    """The loop timer of the Timers goes with the last connection: left armed (up to 0.5 s),
    it kept a loop closed meanwhile (``async with Master()`` at the end of ``asyncio.run``)
    alive, since the handle holds the loop and ``_timers`` holds the handle."""
    async def one_connection():
        glue = Glue(asyncio.get_running_loop(), test_channel.channel())
        glue.arm()                          # connection_made
        glue.stop_timer()                   # connection_lost

    refs = [run_and_close(one_connection) for _ in range(3)]
    assert [r() for r in refs] == [None, None, None]


async def test_an_on_send_hook_that_raises_on_a_timer_send_does_not_stop_every_links_timers():
    """What one connection's timer batch raises (here its ``on_send`` hook, on the TESTFR act
    of t3) ends that connection and reaches the loop's exception handler; the loop timer
    still runs every other link's t1, t2 and t3 (it used to stop for good: ``tick`` raised
    before ``_tick`` set the loop timer again)."""
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda loop_, context: errors.append(context))
    async with Outstation(stations=1, points=5) as out, \
            iec104.Master(reconnect=False, t1=1.0, t2=0.5, t3=0.2) as master:
        careless = await master.connect("127.0.0.1", out.port, gi_on_start=False)
        other = await master.connect("127.0.0.1", out.port, gi_on_start=False)

        def hook(data):
            if data[2] == 0x43:                 # TESTFR act: only the timers send it
                raise RuntimeError("a careless hook")
        careless.on_send.append(hook)
        sent = other.status()["link"]["u_out"]
        # t3 = 0.2 s: a TESTFR act of the other session every 0.2-0.25 s
        await wait_for(lambda: other.status()["link"]["u_out"] >= sent + 4, 3)
        await wait_for(lambda: careless.tcp_state != "connected", 3)
        assert other.tcp_state == "connected"
        assert any(isinstance(c.get("exception"), RuntimeError) for c in errors)

