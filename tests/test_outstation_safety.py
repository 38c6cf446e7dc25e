"""The simulator refuses what a real controlled station must refuse, and stays bounded under a
hostile client: commands before STARTDT or in a frame with a wrong N(S), a select-before-operate
whose execute differs, an invalid clock sync, counters in a general interrogation, the
broadcast address of a 1-octet CA, a client that floods and never reads, a burst of GIs,
ASDUs too short for their data unit identifier, undefined qualifiers (QOI, QCC, QRP, DCS/RCS),
system commands with a cause other than activation, and a redundancy group's requeued stream.

Raw clients are crafted frames over ``asyncio.open_connection``; the c104 (lib60870-C) master
checks the cases it can send (see the notes at the end of the file for those it cannot).
"""
import asyncio
import logging
import socket
import struct
import time

import numpy as np
import pytest

import iec104
from iec104._codec import Decoder
from iec104._encode import encode_asdu, i_frame, s_frame, time_to_cp56, u_frame
from iec104.outstation import Outstation

from scripted_peer import i_frame as raw_i_frame
from waiting import wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)


STARTDT_ACT, STARTDT_CON, STOPDT_ACT, TESTFR_ACT, TESTFR_CON = 0x07, 0x0B, 0x13, 0x43, 0x83
POINTS_CSV = "ca,ioa,type,value,command_type,sbo\n1,1,M_SP_NA_1,0,C_SC_NA_1,no\n" \
             "1,2,M_DP_NA_1,1,C_DC_NA_1,yes\n1,3,M_ME_NC_1,12.5,C_SE_NC_1,yes\n" \
             "1,4,M_IT_NA_1,100,,\n2,1,M_ME_NB_1,-7,,\n"


class Raw:
    """A raw IEC 104 client: numbered I-frames out, decoded answers in (acknowledged)."""

    opened: list["Raw"] = []                # closed after each test (close_raw_clients)

    def __init__(self, reader, writer, sizes):
        self.r, self.w = reader, writer
        Raw.opened.append(self)
        self.decoder = Decoder(**sizes)
        self.sizes = sizes
        self.buf = bytearray()
        self.vs = self.vr = 0
        self.frames: list[tuple[dict, np.ndarray]] = []     # fields as ints, the points
        self.closed = False
        self.ack = True                     # False: never acknowledge (no S-frames)

    @classmethod
    async def connect(cls, port, *, start=True, **sizes):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w, sizes)
        if start:
            w.write(u_frame(STARTDT_ACT))
            await c.until(lambda: c.u(STARTDT_CON))
        return c

    def asdu(self, type_id, ca, ioa=0, value=0.0, quality=0, cot=6, **kw) -> bytes:
        return encode_asdu(type_id, ca, ioa, value, quality, cot=cot, **kw, **self.sizes)

    def send(self, asdu: bytes, ns: int | None = None) -> None:
        self.w.write(self.frame(asdu, ns))

    def frame(self, asdu: bytes, ns: int | None = None) -> bytes:
        data = i_frame(asdu, self.vs if ns is None else ns, self.vr)
        if ns is None:
            self.vs += 1
        return data

    def u(self, fn) -> int:
        return sum(1 for f, _ in self.frames if f["format"] == 2 and f["u_function"] == fn)

    def answers(self, type_id=None):
        """I-frames received: (type_id, cot, negative, points)."""
        return [(int(f["type_id"]), int(f["cot"]), bool(f["negative"]), p)
                for f, p in self.frames if f["format"] == 0
                and (type_id is None or f["type_id"] == type_id)]

    async def _read(self, timeout: float) -> None:
        try:
            data = await asyncio.wait_for(self.r.read(65536), timeout)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            self.w.close()
            return
        self.buf += data
        used = self.decoder.feed(bytes(self.buf))
        frames, points = self.decoder.frames.copy(), self.decoder.points.copy()
        del self.buf[:used]
        for f in frames:
            first = int(f["first_point"])
            row = {k: int(f[k]) for k in ("format", "u_function", "type_id", "cot", "negative")}
            self.frames.append((row, points[first:first + int(f["n_points"])]))
            if row["format"] == 0:
                self.vr += 1
        if self.ack and (frames["format"] == 0).any():
            self.w.write(s_frame(self.vr))

    async def until(self, predicate, timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if self.closed:
                raise AssertionError("connection closed while waiting")
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("condition not reached in time")
            try:
                await self._read(left)
            except asyncio.TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 3.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed and loop.time() < deadline:
            try:
                await self._read(deadline - loop.time())
            except asyncio.TimeoutError:
                pass
        return self.closed

    def close(self) -> None:
        self.w.close()


@pytest.fixture(autouse=True)
async def close_raw_clients():
    """Every raw client's socket closed before the test's loop is (no unclosed transports)."""
    yield
    while Raw.opened:
        w = Raw.opened.pop().w
        w.close()
        try:
            await w.wait_closed()
        except (ConnectionError, OSError):
            pass


def closes(out) -> int:
    """Connections the simulator closed, whatever the reason."""
    return sum(v for k, v in out.counts.items() if k.startswith("closed_"))


def command_asdu(c: Raw, type_id, ioa, value, *, select=False, qu=0, ca=1, cot=6, **kw):
    quality = (0x80 if select else 0) | qu
    return c.asdu(type_id, ca, ioa, value, quality, cot=cot, **kw)


# ---- 1. nothing is accepted before STARTDT ----------------------------------------------------

@pytest.mark.parametrize("type_id, ioa, value", [(45, 2, 1.0), (50, 1, 99.5), (100, 0, 20),
                                                 (101, 0, 5), (102, 3, 0), (103, 0, 0)])
async def test_requests_before_startdt_are_refused_and_the_connection_closed(type_id, ioa, value):
    async with Outstation(stations=1, points=20) as out:
        before = out.image.copy()
        c = await Raw.connect(out.port, start=False)
        kw = {"time_ms": int(time.time() * 1000) + 3_600_000} if type_id == 103 else {}
        c.send(c.asdu(type_id, 1, ioa, value, **kw))
        assert await c.wait_closed()
        assert not c.answers()                              # nothing answered, nothing done
        assert out.commands == [] and out.command_queue.empty()
        assert out.clock_offset_ms == 0
        np.testing.assert_array_equal(out.image, before)
        assert closes(out) == 1


async def test_a_command_ahead_of_startdt_in_one_segment_is_refused_one_after_it_runs():
    async with Outstation(stations=1, points=20) as out:
        late = await Raw.connect(out.port, start=False)
        late.w.write(late.frame(command_asdu(late, 45, 2, 1.0)) + u_frame(STARTDT_ACT))
        assert await late.wait_closed()
        assert out.commands == [] and not late.u(STARTDT_CON)
        ok = await Raw.connect(out.port, start=False)
        ok.w.write(u_frame(STARTDT_ACT) + ok.frame(command_asdu(ok, 45, 2, 1.0)))
        await ok.until(lambda: len(ok.answers(45)) >= 2)   # ActCon, ActTerm
        assert [c["result"] for c in out.commands] == ["executed"]
        ok.w.write(u_frame(STOPDT_ACT) + ok.frame(command_asdu(ok, 45, 2, 0.0)))
        assert await ok.wait_closed()                       # STOPDT act, then a command
        assert [c["result"] for c in out.commands] == ["executed"]
        assert closes(out) == 2


async def test_garbage_before_startdt_is_a_link_fault_not_an_early_i_frame():
    async with Outstation(stations=1, points=5) as out:
        c = await Raw.connect(out.port, start=False)
        c.w.write(b"\x00\x01\x02\x03" + u_frame(STARTDT_ACT))     # no start octet
        assert await c.wait_closed()
        assert out.counts["closed_on_fault"] == 1 and closes(out) == 1


# ---- 2. nothing in or after a frame the link refuses -----------------------------------------

async def test_a_command_with_a_wrong_send_sequence_number_is_not_executed():
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        before = out.image.copy()
        c.w.write(c.frame(command_asdu(c, 45, 2, 1.0), ns=5))   # expected N(S) = 0
        assert await c.wait_closed()
        assert out.commands == [] and not c.answers()
        np.testing.assert_array_equal(out.image, before)
        assert out.counts["closed_on_fault"] == 1


async def test_only_the_frames_before_the_sequence_error_are_acted_on():
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        good = c.frame(command_asdu(c, 45, 2, 1.0))                  # N(S) 0: fine
        bad = c.frame(command_asdu(c, 50, 1, 99.5), ns=7)            # N(S) 7: refused
        after = c.frame(command_asdu(c, 45, 12, 1.0), ns=8)          # after the fault
        c.w.write(good + bad + after)
        assert await c.wait_closed()
        # the frame before the fault may be acted on, or the whole batch dropped with the
        # connection (this simulator does that); never the refused frame or one after it
        assert {r["ioa"] for r in out.commands} <= {2}


# ---- 3. select-before-operate: the execute must be the one selected ---------------------------

@pytest.mark.parametrize("change, why", [
    ({"value": 1.0}, "value"),                       # select ON (2), execute OFF (1)
    ({"qu": 1 << 2}, "qualifier"),                   # QU: short pulse instead of none
    ({"type_id": 59}, "type"),                       # C_DC_TA_1 instead of C_DC_NA_1
])
async def test_an_execute_that_differs_from_its_select_is_refused(tmp_path, change, why):
    path = tmp_path / "points.csv"
    path.write_text(POINTS_CSV)
    async with Outstation(point_list=path) as out:
        c = await Raw.connect(out.port)
        before = out.image.copy()
        c.send(command_asdu(c, 46, 2, 2.0, select=True))
        await c.until(lambda: len(c.answers(46)) == 1)
        assert c.answers(46)[0][1:3] == (7, False)                   # select confirmed
        execute = {"type_id": 46, "value": 2.0, "qu": 0, **change}
        t = execute.pop("type_id")
        kw = {"time_ms": int(time.time() * 1000)} if t == 59 else {}
        c.send(command_asdu(c, t, 2, execute["value"], qu=execute["qu"], **kw))
        await c.until(lambda: len(c.answers(t)) >= (2 if t == 46 else 1))
        assert c.answers(t)[-1][1:3] == (7, True)                    # negative ActCon
        last = out.commands[-1]
        assert last["result"].startswith("refused") and why in last["result"]
        assert [r["result"] for r in out.commands].count("executed") == 0
        np.testing.assert_array_equal(out.image, before)             # no feedback, no change
        c.send(command_asdu(c, 46, 2, 2.0))                           # the selection is gone
        await c.until(lambda: len(c.answers(46)) >= (3 if t == 46 else 2))
        assert c.answers(46)[-1][1:3] == (7, True)
        assert out.commands[-1]["result"] == "refused: not selected"
        assert not c.closed


async def test_an_execute_equal_to_its_select_runs():
    async with Outstation(stations=1, points=20) as out:      # IOA 1: M_ME_NC_1 -> C_SE_NC_1
        c = await Raw.connect(out.port)
        c.send(command_asdu(c, 50, 1, 42.5, select=True))
        c.send(command_asdu(c, 50, 1, 42.5))
        await c.until(lambda: len(c.answers(50)) == 3)      # select con, execute con, term
        assert [r["result"] for r in out.commands] == ["selected", "executed"]
        assert out.image_of(1)["value"][0] == 42.5


# ---- 4. clock sync with an invalid time ------------------------------------------------------

def _clock_sync_asdu(cp56: bytes) -> bytes:
    return bytes([103, 1, 6, 0]) + struct.pack("<H", 1) + b"\x00\x00\x00" + cp56


@pytest.mark.parametrize("cp56", [
    time_to_cp56(int(time.time() * 1000) + 3_600_000, 1),          # IV bit set
    bytes([0, 0, 0, 0, 1, 0, 24]),                                   # month 0: no date
], ids=["invalid-bit", "month-0"])          # ids without the time of day: the same in every run
async def test_clock_sync_with_an_invalid_time_is_refused(cp56):
    async with Outstation(stations=1, points=5) as out:
        c = await Raw.connect(out.port)
        c.send(_clock_sync_asdu(cp56))
        await c.until(lambda: c.answers(103))
        assert c.answers(103)[0][1:3] == (7, True)
        assert out.clock_offset_ms == 0
        c.send(_clock_sync_asdu(time_to_cp56(int(time.time() * 1000) + 3_600_000)))
        await c.until(lambda: len(c.answers(103)) == 2)          # a valid one still works
        assert c.answers(103)[1][1:3] == (7, False)
        assert abs(out.clock_offset_ms - 3_600_000) < 5_000


# ---- 5. integrated totals only to a counter interrogation ------------------------------------

async def test_general_interrogation_sends_no_integrated_totals():
    async with Outstation(stations=2, points=40) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        counters = int(np.isin(out.image["type_id"], (15, 16, 37)).sum())
        assert counters > 0
        assert await rtu.interrogate() == len(out.image) - counters
        assert not set(m.points()["type_id"].to_list()) & {15, 16, 37}
        assert await rtu.counter_interrogation() == counters
        got = m.points()
        assert set(got.filter(got["type_id"] == 15)["cot"].to_list()) == {37}


async def test_group_interrogation_sends_no_integrated_totals():
    async with Outstation(stations=1, points=40) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(100, 1, 0, 20 + 8))                  # group 8: IOAs 8, 24, 40
        await c.until(lambda: any(a[1] == 10 for a in c.answers(100)))
        types = {int(t) for a in c.answers() if a[0] < 45 for t in a[3]["type_id"]}
        assert types and not types & {15, 16, 37}


# ---- 6. the broadcast address of the CA field's size -----------------------------------------

async def test_broadcast_with_a_one_octet_common_address_is_255():
    async with Outstation(stations=2, points=10, ca_size=1) as out:
        c = await Raw.connect(out.port, ca_size=1)
        c.send(c.asdu(100, 255, 0, 20))
        await c.until(lambda: sum(a[1] == 10 for a in c.answers(100)) == 2)
        gi = c.answers(100)
        assert not any(neg for _, _, neg, _ in gi)
        assert sorted(int(p["ca"][0]) for _, cot, _, p in gi if cot == 10) == [1, 2]
        data_cas = {int(ca) for a in c.answers() if a[0] < 45 for ca in a[3]["ca"]}
        assert data_cas == {1, 2}


async def test_255_is_an_ordinary_unknown_address_with_a_two_octet_ca():
    async with Outstation(stations=2, points=10) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(100, 255, 0, 20))
        await c.until(lambda: c.answers(100))
        assert c.answers(100)[0][1:3] == (46, True)         # unknown common address
        c.send(c.asdu(100, 0xFFFF, 0, 20))
        await c.until(lambda: sum(a[1] == 10 for a in c.answers(100)) == 2)


# ---- 7. a client that floods and never reads is closed; its backlog stays bounded -------------

def _backlog(conn) -> int:
    """What the simulator holds for one connection: the transport's write buffer, the
    I-frames queued behind the k window and any control frames held back."""
    t = conn.transport
    queued = sum(int(offsets[-1]) - int(offsets[first]) for _, offsets, first in conn.queue)
    return (t.get_write_buffer_size() if t is not None else 0) + queued + \
        len(getattr(conn, "ctrl", b""))


async def test_a_flooding_client_that_never_reads_is_closed_with_a_bounded_backlog():
    limit, slack = 256 << 10, 128 << 10         # slack: what one received buffer can add
    async with Outstation(stations=2, points=200, max_backlog=limit) as out, \
            iec104.Master(gi_on_start=False) as m:
        good = await m.connect("127.0.0.1", out.port)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", out.port))
        await loop.sock_sendall(sock, u_frame(STARTDT_ACT))
        await wait_for(lambda: len(out._conns) == 2)
        hostile = next(c for c in out._conns if c.peer == "%s:%s" % sock.getsockname()[:2])
        # the kernel would buffer ~4 MB before the simulator holds anything: keep it small
        hostile.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        gi = [encode_asdu(100, ca, 0, 20, 0, cot=6) for ca in (1, 2, 0xFFFF)]
        ns, peak, sent, rounds, closed = 0, 0, 0, 0, False
        try:
            while sent < 16 << 20:                  # 16 MB at most: it must close long before
                burst = bytearray(u_frame(TESTFR_ACT) * 1000)
                for i in range(200):
                    burst += i_frame(gi[i % 3], ns, 0)
                    ns += 1
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 2)
                sent += len(burst)
                rounds += 1
                await asyncio.sleep(0)
                peak = max(peak, _backlog(hostile))
                assert peak <= limit + slack, f"backlog {peak} octets"
                if hostile.transport is None or out.counts["closed_slow_reader"]:
                    closed = True
                    break
                if rounds % 10 == 0:                # the other client is served meanwhile
                    assert await asyncio.wait_for(good.interrogate(ca=1), 2) > 0
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        finally:
            sock.close()
        assert closed and out.counts["closed_slow_reader"] == 1
        assert peak <= limit + slack
        assert await asyncio.wait_for(good.interrogate(), 2) > 0
        await wait_for(lambda: len(out._conns) == 1)


async def test_a_testfr_flood_that_never_reads_is_not_read_either_and_stays_bounded():
    # with the default limit (4 MB) the simulator stops reading a client whose answers wait
    # (LinkProtocol.pause_writing) long before the limit: bounded, and t1/t3 close it later
    async with Outstation(stations=1, points=20) as out, \
            iec104.Master(gi_on_start=False) as m:
        good = await m.connect("127.0.0.1", out.port)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", out.port))
        await wait_for(lambda: len(out._conns) == 2)
        hostile = next(c for c in out._conns if c.peer == "%s:%s" % sock.getsockname()[:2])
        hostile.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        flood, sent, peak, blocked = u_frame(TESTFR_ACT) * 10_000, 0, 0, False
        try:
            while sent < 64 << 20 and hostile.transport is not None:
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, flood), 0.5)
                except asyncio.TimeoutError:
                    blocked = True                  # the simulator no longer reads it
                    break
                sent += len(flood)
                await asyncio.sleep(0)
                peak = max(peak, _backlog(hostile))
                assert peak <= 1 << 20, f"backlog {peak} octets"
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            sock.close()
        assert blocked or hostile.transport is None
        assert peak <= 1 << 20
        assert await asyncio.wait_for(good.interrogate(), 2) > 0


async def test_control_frames_wait_while_writing_is_paused():
    async with Outstation(stations=1, points=5) as out:
        c = await Raw.connect(out.port)
        conn = next(iter(out._conns))
        conn.pause_writing()                        # as the transport does above its high mark
        c.w.write(u_frame(TESTFR_ACT))
        with pytest.raises(AssertionError):         # nothing is written while paused
            await c.until(lambda: c.u(TESTFR_CON), timeout=0.2)
        conn.resume_writing()
        await c.until(lambda: c.u(TESTFR_CON) == 1)


# ---- 8. one connection's burst does not stall the others --------------------------------------

async def _testfr_rtt(port) -> float:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        t0 = time.perf_counter()
        w.write(u_frame(TESTFR_ACT))
        assert await asyncio.wait_for(r.readexactly(6), 3) == u_frame(TESTFR_CON)
        return time.perf_counter() - t0
    finally:
        w.close()


async def test_a_burst_of_2000_interrogations_does_not_stall_another_client():
    async with Outstation(stations=4, points=2000) as out:
        burst = await Raw.connect(out.port)
        other_r, other_w = await asyncio.open_connection("127.0.0.1", out.port)
        await wait_for(lambda: len(out._conns) == 2)
        data = b"".join(burst.frame(burst.asdu(100, 1, 0, 20)) for _ in range(2000))
        assert len(data) == 32_000
        burst.w.write(data)
        t0 = time.perf_counter()
        other_w.write(u_frame(TESTFR_ACT))
        assert await asyncio.wait_for(other_r.readexactly(6), 3) == u_frame(TESTFR_CON)
        assert time.perf_counter() - t0 < 1.0
        await burst.until(lambda: len(burst.answers(100)) >= 2000, timeout=4)
        gi = burst.answers(100)
        assert (gi[0][1], gi[0][2]) == (7, False)          # the first runs...
        refused = [a for a in gi if a[2]]
        assert len(refused) >= 1900 and {a[1] for a in refused} == {7}   # ...the others wait
        assert await _testfr_rtt(out.port) < 1.0
        other_w.close()


async def test_a_new_interrogation_runs_once_the_previous_one_terminated():
    async with Outstation(stations=1, points=30) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect("127.0.0.1", out.port)
        for _ in range(3):
            assert await rtu.interrogate(ca=1) == 27
            assert await rtu.counter_interrogation(ca=1) == 3


# ---- 9. an ASDU shorter than its data unit identifier ----------------------------------------

@pytest.mark.parametrize("size", [0, 1, 2, 3, 5])
async def test_a_too_short_asdu_is_a_logged_close_without_a_traceback(size, caplog):
    caplog.set_level(logging.INFO)
    async with Outstation(stations=1, points=5) as out:
        c = await Raw.connect(out.port)
        c.w.write(raw_i_frame(bytes([100, 1, 6, 0, 1])[:size], 0, 0))   # length octet 4..9
        assert await c.wait_closed()
        await asyncio.sleep(0.05)
        assert out.counts["closed_malformed"] == 1
        other = await Raw.connect(out.port)                 # the simulator carries on
        other.send(other.asdu(100, 1, 0, 20))
        await other.until(lambda: any(a[1] == 10 for a in other.answers(100)))
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR
           or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]
    assert any("malformed" in r.getMessage() or "too short" in r.getMessage()
               for r in caplog.records if r.name == "iec104.outstation")


# ---- 10. interrogation qualifiers: only the defined ones, counter freeze and reset -----------

def _con(c: Raw, type_id):
    return [a for a in c.answers(type_id) if a[1] == 7]


@pytest.mark.parametrize("type_id,qualifier", [(100, 0), (100, 5), (100, 37),
                                               (101, 0), (101, 6), (101, 0x40), (101, 0xBF)])
async def test_an_interrogation_with_an_undefined_qualifier_is_refused(type_id, qualifier):
    """A C_IC_NA_1 whose QOI is not 20..36 (0 "not used", 1..19 and 37..63 reserved), a
    C_CI_NA_1 whose request (QCC & 0x3F) is not 1..5: a negative ActCon and no data."""
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(type_id, 1, 0, qualifier))
        await c.until(lambda: c.answers(type_id))
        assert not await c.wait_closed(0.2)
        assert _con(c, type_id) and all(a[2] for a in _con(c, type_id))
        assert [a for a in c.answers() if a[0] < 100] == []


async def _counter_interrogation(c: Raw, qcc: int) -> list[float]:
    """The integrated totals a counter interrogation returned (after its ActTerm)."""
    n0 = len(c.answers())
    c.send(c.asdu(101, 1, 0, qcc))
    await c.until(lambda: any(a[0] == 101 and a[1] == 10 for a in c.answers()[n0:]))
    return [float(v) for a in c.answers()[n0:] if a[0] == 15 for v in a[3]["value"]]


async def test_a_counter_reset_then_freeze_then_read_returns_zeros():
    """QCC FRZ=3 resets the counters, FRZ=1 freezes them (neither sends totals), and a read
    (FRZ=0) returns the frozen zeros."""
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        assert await _counter_interrogation(c, 0xC5) == []     # FRZ=3 reset, RQT=5 general
        assert await _counter_interrogation(c, 0x45) == []     # FRZ=1 freeze without reset
        values = await _counter_interrogation(c, 0x05)         # FRZ=0 read
        assert values and values == [0.0] * len(values)


async def test_a_counter_freeze_keeps_what_a_read_returns():
    """FRZ=1 freezes without reset: a read returns the frozen totals although the counters
    change after it; FRZ=2 freezes (a read returns those totals) and zeroes the counters."""
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        ctr = out.image["type_id"] == 15
        old = out.image["value"][ctr].tolist()
        assert await _counter_interrogation(c, 0x45) == []     # freeze
        out.image["value"][ctr] += 7                           # the counters go on
        assert await _counter_interrogation(c, 0x05) == old
        assert await _counter_interrogation(c, 0x85) == []     # freeze with reset
        assert (out.image["value"][ctr] == 0).all()
        assert await _counter_interrogation(c, 0x05) == [v + 7 for v in old]


# ---- 11. system commands: activation only, QRP 0 refused --------------------------------------

@pytest.mark.parametrize("cot", [3, 8])
async def test_reset_process_with_a_cause_other_than_activation_is_unknown_cause(cot):
    """A C_RP_NA_1 (as the other system commands 104..113) with a COT other than activation
    is answered COT 45 (unknown cause) with P/N set."""
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(105, 1, 0, 1, cot=cot))
        await c.until(lambda: c.answers(105))
        assert c.answers(105)[0][1:3] == (45, True)


@pytest.mark.parametrize("qrp, negative", [(0, True), (1, False), (2, False)])
async def test_reset_process_qualifier_0_is_refused(qrp, negative):
    """A C_RP_NA_1 with QRP 0 ("not used") gets a negative ActCon; 1 and 2 a positive one."""
    async with Outstation(stations=1, points=20) as out:
        c = await Raw.connect(out.port)
        c.send(c.asdu(105, 1, 0, qrp))
        await c.until(lambda: c.answers(105))
        assert c.answers(105)[0][1:3] == (7, negative)


# ---- 12. double and step commands with a "not permitted" state --------------------------------

@pytest.mark.parametrize("type_id, ioa, state", [(46, 4, 0), (46, 4, 3), (47, 9, 0), (47, 9, 3)])
async def test_a_double_or_step_command_with_a_not_permitted_state_is_refused(type_id, ioa, state):
    """A C_DC_NA_1 with DCS 0 or 3, or a C_RC_NA_1 with RCS 0 or 3 ("not permitted",
    IEC 60870-5-101 7.2.6.16/17) gets a negative ActCon and leaves the point alone."""
    async with Outstation(stations=1, points=20) as out:
        before = out.image.copy()
        c = await Raw.connect(out.port)
        c.send(command_asdu(c, type_id, ioa, state))
        await c.until(lambda: _con(c, type_id))
        assert _con(c, type_id)[0][2]
        np.testing.assert_array_equal(out.image["value"], before["value"])


# ---- 13. a redundancy group's requeued stream stays within max_backlog ------------------------

async def test_a_group_stream_requeued_past_max_backlog_does_not_lock_out_the_next_master():
    """The frames a failed group connection had not delivered (its queue, up to max_backlog,
    plus its k unacknowledged ones) go back to the group's queue bounded at max_backlog, the
    oldest dropped and counted (group_dropped): the next master to take STARTDT gets the
    stream and is not closed as a slow reader."""
    async with Outstation(stations=1, points=50, rate=5000, standby_ports=[0],
                          max_backlog=4000) as out:
        a = await Raw.connect(out.port)
        a.ack = False                                      # master A never acknowledges
        await wait_for(lambda: out.counts["frames_dropped"] > 0, 3)    # A's queue is full
        a.close()
        await wait_for(lambda: not out._conns, 3)
        assert out.counts["group_dropped"] > 0
        b = await Raw.connect(out.ports[1], start=False)
        b.w.write(u_frame(STARTDT_ACT))
        assert not await b.wait_closed(0.5), "master B closed: %s" % dict(out.counts)
        assert b.u(STARTDT_CON)
        assert out.counts["closed_slow_reader"] == 0


# ---- the same checks from a real master: lib60870-C through c104 ------------------------------
# c104 cannot send: an execute that differs from its select (SELECT_AND_EXECUTE sends select
# and execute from one value and qualifier; there is no select-only call), a clock sync with
# the IV bit or an undecodable time (it sends the OS clock), a wrong N(S) or a short ASDU
# (lib60870 numbers and encodes its frames itself), a 1-octet common address (c104 does not
# expose the CA field size), and it reads everything it receives (no slow reader).

@pytest.mark.interop
async def test_c104_command_and_gi_while_muted_are_refused():
    import c104
    from c104_peer import c104_client
    async with Outstation(stations=1, points=20) as out:
        def body():
            client, conn, _ = c104_client(out.port, unmute=False)   # no STARTDT act
            try:
                # lib60870 sends I-frames on a muted connection: GI first (no waiting) ...
                conn.interrogation(common_address=1, wait_for_response=False)
                deadline = time.monotonic() + 3
                while closes(out) == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                client.stop()
            # the command is never confirmed (the simulator closes at once, closes() below):
            # c104 waits out its command timeout, 0.2 s, before transmit returns False
            client, conn, _ = c104_client(out.port, unmute=False, command_timeout_ms=200)
            try:                                    # ... then a command on a fresh connection
                sc = conn.add_station(common_address=1).add_point(
                    io_address=2, type=c104.Type.C_SC_NA_1)
                sc.value = True
                return sc.transmit(cause=c104.Cot.ACTIVATION)
            finally:
                client.stop()
        t0 = time.monotonic()
        confirmed = await asyncio.get_running_loop().run_in_executor(None, body)
        assert confirmed is False and time.monotonic() - t0 < 5
        assert out.commands == [] and closes(out) == 2


@pytest.mark.interop
async def test_c104_gi_has_no_counters_and_counter_interrogation_has_them():
    import c104
    from c104_peer import run_c104
    async with Outstation(stations=1, points=30) as out:
        seen = {}

        def body(conn, wire):
            st = conn.add_station(common_address=1)
            pts = {int(r["ioa"]): st.add_point(io_address=int(r["ioa"]),
                                               type=c104.Type(int(r["type_id"])))
                   for r in out.image_of(1)}
            created = {i: p.processed_at for i, p in pts.items()}   # c104 sets it on add

            def received(ioas):
                return {i: pts[i].processed_at != created[i] for i in ioas}
            counters = [i for i, p in pts.items() if p.type == c104.Type.M_IT_NA_1]
            others = [i for i in pts if i not in counters]
            assert wire.answered(conn.interrogation(common_address=1), 100, 1)
            deadline = time.monotonic() + 4
            while not all(received(others).values()) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            seen["after_gi"] = received(pts)
            assert wire.answered(conn.counter_interrogation(common_address=1), 101, 1)
            deadline = time.monotonic() + 4
            while not all(received(counters).values()) and time.monotonic() < deadline:
                time.sleep(0.02)
            seen["after_ci"] = received(counters)
            seen["values"] = {i: int(getattr(pts[i].value, "counter", pts[i].value))
                              for i in counters}
            seen["counters"] = counters
        await asyncio.get_running_loop().run_in_executor(None, lambda: run_c104(out.port, body))
    counters = seen["counters"]
    assert counters and not any(seen["after_gi"][i] for i in counters)
    assert all(v for i, v in seen["after_gi"].items() if i not in counters)
    assert all(seen["after_ci"].values())
    assert seen["values"] == {i: i * 10 for i in counters}


@pytest.mark.interop
async def test_c104_master_is_answered_while_a_raw_client_bursts_interrogations():
    from c104_peer import run_c104
    async with Outstation(stations=4, points=5000) as out:
        burst = await Raw.connect(out.port)
        data = b"".join(burst.frame(burst.asdu(100, 1, 0, 20)) for _ in range(2000))
        loop = asyncio.get_running_loop()

        def body(conn, wire):
            assert wire.answered(conn.test(common_address=1), 107, 1)
            loop.call_soon_threadsafe(burst.w.write, data)
            time.sleep(0.05)                        # the burst is in the simulator's loop
            t0 = time.monotonic()
            conn.test(common_address=1)             # C_TS_TA_1; its ActCon timed on the wire:
            deadline = t0 + 3                       # c104's own result misses some (Wire)
            while (at := wire.confirmed_at(107, 1, since=t0)) is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            return None if at is None else at - t0
        rtt = await loop.run_in_executor(None, lambda: run_c104(out.port, body))
        assert rtt is not None and rtt < 1.0


async def test_a_flood_of_commands_keeps_the_simulators_records_bounded(monkeypatch):
    """Every command is counted, but only the last COMMAND_RECORDS are kept (in ``commands``
    and in the queue nobody reads): a master that floods commands grows no memory."""
    from iec104 import outstation
    monkeypatch.setattr(outstation, "COMMAND_RECORDS", 4)
    async with Outstation(stations=1, points=20) as out, \
            iec104.Master(gi_on_start=False) as master:
        rtu = await master.connect("127.0.0.1", out.port)
        ioa = next(i for (ca, i, fam), n in out.index.items() if fam == 1)
        for v in range(20):
            await rtu.command(1, ioa, "C_SC_NA_1", v % 2)
        assert out.stats()["commands"] == 20
        assert 4 <= len(out.commands) <= 8 and out.commands[-1]["value"] == 1
        assert out.command_queue.qsize() <= 4
