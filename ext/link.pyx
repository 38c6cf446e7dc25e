# cython: language_level=3
"""The link core: the IEC 60870-5-104 APCI rules and one connection's receive path, in C.

Sans-I/O in the manner of h11: frames and the clock go in, bytes to send, a bitmask of events
and the deadline of the next timer come out. Nothing here reads the event loop's clock, owns
a socket or starts a task, so every timer and fault case is tested with a fake clock
(tests/test_link.py). ``iec104.link`` is its Python face; the session and the simulator are
the asyncio glue around a :class:`Channel`.

Link (IEC 60870-5-104, clause 5): N(S)/N(R) mod 32768, at most k unacknowledged sent
I-frames with their t1 deadlines, received I-frames acknowledged after w frames or t2, t3
and TESTFR, STARTDT/STOPDT in both roles. A fault closes the link (``EV_CLOSE`` and
``close_reason``): framing lost, a wrong N(S), an N(R) of frames never sent, an I-frame
while data transfer is stopped, t1 expiry.

Channel: the receive path of one connection. The receive buffer and the decoder's output
are shared by every connection of an event loop (the decode is synchronous inside
``buffer_updated``), so a connection carries only its partial APDU. Each batch is decoded,
validated by the link, and only then are the rows of the accepted frames stored: a frame
the link refuses, and every frame after it, never reaches the table or the event log.

Reader: the plain TCP connections of one event loop, read from an epoll of its own into
their channels (Linux); the loop sees one descriptor. TLS connections are read by their
transport, through the same Channel (``get_buffer``/``buffer_updated``).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

import collections
import os
import weakref

import numpy as np

from apdu cimport (
    wall_ns, frame_t, point_t, APDU_MAX, FORMAT_I, FORMAT_S, ST_BAD_START, ST_BAD_LENGTH,
    ST_BAD_CONTROL, U_STARTDT_ACT, U_STARTDT_CON, U_STOPDT_ACT, U_STOPDT_CON, U_TESTFR_ACT,
    U_TESTFR_CON,
)
from iec104._codec cimport Decoder, Workspace
from iec104._store cimport LatestTable, EventRing

cdef extern from *:
    """
    #define IEC104_INF (__builtin_inf())
    /* a monotonic clock in ns for the TESTFR round trip: the loop's clock (libuv) counts
       whole milliseconds, so a loopback or LAN round trip would read 0 */
    #ifdef _WIN32
    #include <windows.h>
    static int64_t iec104_mono_ns(void) {
        LARGE_INTEGER f, c;
        QueryPerformanceFrequency(&f);
        QueryPerformanceCounter(&c);
        return (int64_t)((double)c.QuadPart * 1e9 / (double)f.QuadPart);
    }
    #else
    #include <time.h>
    static int64_t iec104_mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    #endif
    """
    double INF "IEC104_INF"

cdef extern from *:
    """
    /* the Reader's epoll and recv (Linux; elsewhere every call fails with ENOSYS and the
       glue keeps the event loop's reads); at most as many sockets per wake-up as libuv reads
       (a nap of read coalescing serves them all) */
    #define IEC104_READ_EVENTS 1024
    #ifdef __linux__
    #include <errno.h>
    #include <sys/epoll.h>
    #include <sys/socket.h>
    #include <unistd.h>
    static int iec104_ep_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
    static int iec104_ep_ctl(int ep, int add, int fd) {
        struct epoll_event ev;
        ev.events = EPOLLIN;
        ev.data.u64 = 0;
        ev.data.fd = fd;
        return epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev) < 0 ? -errno : 0;
    }
    static int iec104_ep_wait(int ep, int *fds, int n) {
        struct epoll_event evs[IEC104_READ_EVENTS];
        int m = epoll_wait(ep, evs, n < IEC104_READ_EVENTS ? n : IEC104_READ_EVENTS, 0);
        for (int i = 0; i < m; i++)
            fds[i] = evs[i].data.fd;
        return m;
    }
    static Py_ssize_t iec104_recv(int fd, void *p, Py_ssize_t n) {
        Py_ssize_t r = recv(fd, p, (size_t)n, MSG_DONTWAIT);
        return r < 0 ? -(Py_ssize_t)errno : r;
    }
    static void iec104_ep_close(int ep) { close(ep); }
    #define IEC104_EAGAIN EAGAIN
    #define IEC104_EINTR EINTR
    #else
    #include <errno.h>
    static int iec104_ep_create(void) { return -1; }
    static int iec104_ep_ctl(int ep, int add, int fd) { return -ENOSYS; }
    static int iec104_ep_wait(int ep, int *fds, int n) { return 0; }
    static Py_ssize_t iec104_recv(int fd, void *p, Py_ssize_t n) { return -ENOSYS; }
    static void iec104_ep_close(int ep) { }
    #define IEC104_EAGAIN EAGAIN
    #define IEC104_EINTR EINTR
    #endif
    """
    int iec104_ep_create()
    int iec104_ep_ctl(int ep, int add, int fd)
    int iec104_ep_wait(int ep, int* fds, int n)
    Py_ssize_t iec104_recv(int fd, void* p, Py_ssize_t n)
    void iec104_ep_close(int ep)
    int IEC104_EAGAIN, IEC104_EINTR
    enum: IEC104_READ_EVENTS
    int64_t mono_ns "iec104_mono_ns"() nogil

cdef enum:
    MOD = 32768
    ASDU_MAX = 249          # APDU_MAX - start, length and four control octets
    DT_STOPPED = 0
    DT_STARTING = 1
    DT_STARTED = 2
    DT_STOPPING = 3

# what happened on the link since the last take_events() (iec104.link.LinkEvent mirrors it)
cdef enum:
    EV_STARTED = 1
    EV_STOPPED = 2
    EV_START_REQUESTED = 4
    EV_STOP_REQUESTED = 8
    EV_TEST_CONFIRMED = 16
    EV_CLOSE = 32

# what a batch asks of the glue (iec104.link.Batch mirrors it)
cdef enum:
    B_OUTPUT = 1            # the link has bytes to send
    B_EVENTS = 2            # take_events() is not empty
    B_FRAMES = 4            # frames arrived and the glue taps them (Channel.debug, .taps)
    B_IFRAMES = 8           # accepted I-frames (the simulator's requests)
    B_CONTROL = 16          # accepted control-direction or system ASDUs (type >= 45)
    B_REQUEST_DATA = 32     # rows that answer a request (COT other than 1, 2, 3)
    B_NEW_DEVICE = 64       # monitor data from a common address not seen on this connection
    B_PAUSE = 128           # a lossless reader of the event log is past its high-water mark
    B_BAD = 256             # malformed frames (counted in bad_frames)
    B_REFUSED = 512         # new rows refused by the station's cap
    B_WAKE = 1024           # rows arrived for a reader that waits (EventRing.notify)
    B_ACKED = 2048          # the peer acknowledged sent I-frames: room in the k window

_STATES = ("stopped", "starting", "started", "stopping")
_UNAMES = {U_STARTDT_ACT: "STARTDT_ACT", U_STOPDT_ACT: "STOPDT_ACT", U_TESTFR_ACT: "TESTFR_ACT"}
_STATUS_NAMES = {ST_BAD_START: "BAD_START", ST_BAD_LENGTH: "BAD_LENGTH",
                 ST_BAD_CONTROL: "BAD_CONTROL"}


cdef class Timers


cdef class Link:
    """State of one IEC 104 connection's APCI layer (either role); see the module docstring.

    ``config`` is an :class:`iec104.link.LinkConfig` (validated there).
    """

    cdef readonly object config
    cdef readonly bint master
    cdef int state
    cdef public int vs                  # V(S): next send sequence number
    cdef public int vr                  # V(R): next expected receive sequence number
    cdef public int ack                 # oldest unacknowledged sent I-frame
    cdef int k, w
    cdef double t1, t2, t3
    cdef double* sent                   # send times of unacknowledged I-frames, a ring of k
    cdef int sent_head, sent_n
    cdef list _queue                    # [token, asdu] waiting for the k window
    cdef int64_t _token
    cdef uint8_t* out
    cdef Py_ssize_t out_n, out_cap
    cdef int events
    cdef int unacked_rx                 # received I-frames not yet acknowledged
    cdef double t2_at, t3_at, u_at
    cdef int64_t u_ns                     # mono_ns() when the awaited U-frame was queued
    cdef int u_pending                  # U act awaiting its con (0: none)
    cdef readonly bint closed
    cdef bint acked                     # sent I-frames acknowledged since the last batch
    cdef bint stop_pending              # outstation: STOPDT act waits for our frames' ack
    cdef readonly str close_reason
    cdef public object last_testfr_con
    cdef public object rtt
    cdef uint64_t n_i_in, n_s_in, n_u_in, n_i_out, n_s_out, n_u_out, n_t1, n_seq, n_withdrawn
    cdef Timers timers                  # the loop's Timers that run this link (None: none)
    cdef Py_ssize_t tslot               # its place there

    def __cinit__(self, config):
        self.sent = NULL
        self.out = NULL
        self.tslot = -1

    def __init__(self, config):
        self.config = config
        self.master = config.role == "master"
        self.k, self.w = config.k, config.w
        self.t1, self.t2, self.t3 = config.t1, config.t2, config.t3
        self.sent = <double*>malloc(self.k * sizeof(double))
        self.out_cap = 64
        self.out = <uint8_t*>malloc(self.out_cap)
        if self.sent == NULL or self.out == NULL:
            raise MemoryError()
        self._queue = []
        self.t2_at = INF
        self.t3_at = INF
        self.close_reason = None

    def __dealloc__(self):
        free(self.sent)
        free(self.out)

    # ---- inputs ----------------------------------------------------------------------------

    def connection_made(self, double now):
        self.t3_at = now + self.t3
        self._sooner(self.t3_at)

    def connection_lost(self):
        self.closed = True
        self.state = DT_STOPPED

    def start(self, double now):
        """Master: send STARTDT act."""
        self.state = DT_STARTING
        self._send_u(U_STARTDT_ACT, now, True)

    def stop(self, double now):
        """Master: acknowledge everything received, then STOPDT act."""
        if self.unacked_rx:
            self._send_s()
        self.state = DT_STOPPING
        self._send_u(U_STOPDT_ACT, now, True)

    def test(self, double now):
        """TESTFR act now (on demand; t3 sends it by itself)."""
        if self.u_pending == 0:
            self._send_u(U_TESTFR_ACT, now, True)

    def send_asdu(self, asdu, double now) -> int:
        """Queue an ASDU; it goes out while started and the k window has room. Returns a
        token for :meth:`withdraw`."""
        asdu = bytes(asdu)
        if not 1 <= len(asdu) <= ASDU_MAX:
            raise ValueError(f"an ASDU takes 1..{ASDU_MAX} octets (got {len(asdu)})")
        self._token += 1
        self._queue.append([self._token, asdu])
        self._flush_queue(now)
        return self._token

    def withdraw(self, int64_t token) -> bool:
        """Take a queued ASDU back before it is sent; False if it already went out."""
        for i, item in enumerate(self._queue):
            if item[0] == token:
                del self._queue[i]
                self.n_withdrawn += 1
                return True
        return False

    def queued(self) -> int:
        return len(self._queue)

    cpdef int window_space(self):
        """I-frames that may be sent now (0 unless data transfer is started)."""
        if self.state != DT_STARTED and not (self.master and self.state == DT_STOPPING):
            return 0
        return max(0, self.k - self.sent_n - len(self._queue))

    def account_sent(self, int count, double now):
        """Bulk sending (the simulator): reserve ``count`` I-frames, returns ``(ns, nr)`` to
        stamp them with (frames ns, ns+1, ...); the caller writes them itself, right away.
        ``count`` must not exceed :meth:`window_space`."""
        if count > self.window_space():
            raise ValueError("bulk send beyond the k window")
        cdef int ns = self.vs, i
        self.vs = (self.vs + count) % MOD
        for i in range(count):
            self._push_sent(now)
        self._acked_by_us()
        self.n_i_out += count
        return ns, self.vr

    def receive_frames(self, double now, frames) -> int:
        """Process a batch of received frames (FRAME_DTYPE rows) in order; returns how many
        leading frames were accepted. A frame the link refuses (and every frame after it:
        the link is then closed) must not reach the store or be acted on."""
        if len(frames) == 0:
            return 0
        cdef const frame_t[::1] fv = np.ascontiguousarray(frames)
        return self.accept(now, &fv[0], fv.shape[0])

    cdef Py_ssize_t accept(self, double now, const frame_t* f, Py_ssize_t n) except -1:
        """The C entry of receive_frames."""
        if n == 0 or self.closed:
            return 0
        self.t3_at = now + self.t3
        cdef Py_ssize_t i = 0, n_i = 0
        while i < n:
            if not self._one(now, f + i):
                break
            if f[i].format == FORMAT_I:
                n_i += 1
            i += 1
        if n_i * 2 >= self.w and self.unacked_rx and not self.closed:
            # a bulk transfer (half a w in one read): acknowledge per batch, so that the
            # peer's k window stays open and a GI at k = 12 / w = 8 runs at the loop's round
            # trip. A trickle of small reads waits for w (an S-frame is a send syscall).
            self._send_s()
        self._flush_queue(now)
        return i

    cpdef tick(self, double now):
        """Timers: t1 (sent I-frames, U act), t2 (ack received), t3 (idle: TESTFR)."""
        if self.closed:
            return
        if self.sent_n and now >= self.sent[self.sent_head] + self.t1:
            self.n_t1 += 1
            self._fail(f"t1 expired: I-frame N(S)={self.ack} unacknowledged for {self.t1:g} s")
            return
        if self.u_pending and now >= self.u_at + self.t1:
            self.n_t1 += 1
            self._fail(f"t1 expired: no answer to {_UNAMES.get(self.u_pending, self.u_pending)} "
                       f"in {self.t1:g} s")
            return
        if now >= self.t2_at:
            self._send_s()
        if now >= self.t3_at and self.u_pending == 0:
            self._send_u(U_TESTFR_ACT, now, True)
            self.t3_at = now + self.t3

    cdef double deadline(self) noexcept:
        if self.closed:
            return INF
        # t3 waits while a U act is pending (no second TESTFR act): its t1 is the deadline
        cdef double d = self.t3_at if self.t3_at < self.t2_at and not self.u_pending else self.t2_at
        if self.sent_n and self.sent[self.sent_head] + self.t1 < d:
            d = self.sent[self.sent_head] + self.t1
        if self.u_pending and self.u_at + self.t1 < d:
            d = self.u_at + self.t1
        return d

    def next_deadline(self):
        """The earliest time at which ``tick`` has something to do (None: no timer)."""
        cdef double d = self.deadline()
        return None if d == INF else d

    # ---- outputs ---------------------------------------------------------------------------

    cpdef bytes data_to_send(self):
        cdef bytes b = (<char*>self.out)[:self.out_n]
        self.out_n = 0
        return b

    @property
    def has_output(self) -> bool:
        return self.out_n > 0

    def take_events(self) -> int:
        """The events (a LinkEvent bitmask) since the last call."""
        cdef int ev = self.events
        self.events = 0
        return ev

    @property
    def data_transfer(self) -> str:
        return _STATES[self.state]

    @property
    def counts(self) -> dict:
        return {"i_in": self.n_i_in, "s_in": self.n_s_in, "u_in": self.n_u_in,
                "i_out": self.n_i_out, "s_out": self.n_s_out, "u_out": self.n_u_out,
                "t1_expiries": self.n_t1, "sequence_errors": self.n_seq,
                "withdrawn": self.n_withdrawn}

    def status(self) -> dict:
        return {"data_transfer": self.data_transfer, "vs": self.vs, "vr": self.vr,
                "ack": self.ack, "unacked_sent": self.sent_n,
                "unacked_received": self.unacked_rx, "queued": len(self._queue),
                "last_testfr_con": self.last_testfr_con, "rtt": self.rtt, **self.counts}

    # ---- internals -------------------------------------------------------------------------

    cdef int _one(self, double now, const frame_t* f) except -1:
        """One frame; returns 0 when it closed the link."""
        cdef int st = f.status
        if st == ST_BAD_START or st == ST_BAD_LENGTH or st == ST_BAD_CONTROL:
            self._fail(f"malformed frame ({_STATUS_NAMES[st]}): framing lost")
            return 0
        if f.format == FORMAT_I:
            if self.state == DT_STOPPED or (self.state == DT_STOPPING and not self.master):
                # 5.3: no I-frames while data transfer is stopped (lib60870 closes too); an
                # outstation that received STOPDT act takes no more requests either
                self._fail("I-frame received while data transfer is stopped")
                return 0
            if self.state == DT_STARTING and self.master:
                self._fail("I-frame received before STARTDT con")   # (5.3: not started yet)
                return 0
            if f.ns != self.vr:
                self.n_seq += 1
                self._fail(f"sequence error: N(S)={f.ns}, expected {self.vr}")
                return 0
            if not self._check_nr(f.nr):
                return 0
            self.vr = (self.vr + 1) % MOD
            self.n_i_in += 1
            if self.unacked_rx == 0:
                self.t2_at = now + self.t2
                self._sooner(self.t2_at)
            self.unacked_rx += 1
            if self.unacked_rx >= self.w or (self.master and self.state == DT_STOPPING):
                # stopping: the outstation confirms STOPDT only once all it sent is acked
                self._send_s()
            return 1
        if f.format == FORMAT_S:
            self.n_s_in += 1
            return self._check_nr(f.nr)
        self.n_u_in += 1
        self._receive_u(now, f.u_function)
        return 1

    cdef void _receive_u(self, double now, int fn):
        if fn == U_TESTFR_ACT:
            self._send_u(U_TESTFR_CON, now, False)
        elif fn == U_TESTFR_CON:
            if self.u_pending == U_TESTFR_ACT:
                self.rtt = (mono_ns() - self.u_ns) / 1e9
                self.last_testfr_con = now
                self.u_pending = 0
                self._sooner(self.t3_at)        # t3 counts again (see deadline)
                self.events |= EV_TEST_CONFIRMED
        elif fn == U_STARTDT_CON and self.master:
            if self.u_pending == U_STARTDT_ACT:
                self.u_pending = 0
                self._sooner(self.t3_at)        # t3 counts again (see deadline)
                self.state = DT_STARTED
                self.events |= EV_STARTED
        elif fn == U_STOPDT_CON and self.master:
            if self.u_pending == U_STOPDT_ACT:
                self.u_pending = 0
                self._sooner(self.t3_at)        # t3 counts again (see deadline)
                self.state = DT_STOPPED
                self.events |= EV_STOPPED
        elif fn == U_STARTDT_ACT and not self.master:
            self._send_u(U_STARTDT_CON, now, False)
            if self.state != DT_STARTED:
                self.state = DT_STARTED
                self.stop_pending = False
                self.events |= EV_START_REQUESTED | EV_STARTED
        elif fn == U_STOPDT_ACT and not self.master:
            self.stop_pending = True
            self.state = DT_STOPPING
            self.events |= EV_STOP_REQUESTED
            self._maybe_confirm_stop()
        # anything else (a con we did not ask for) is ignored, as lib60870 does

    cdef void _maybe_confirm_stop(self):
        if self.stop_pending and not self.sent_n:
            if self.unacked_rx:
                self._send_s()
            self._send_u(U_STOPDT_CON, 0.0, False)
            self.stop_pending = False
            self.state = DT_STOPPED
            self.events |= EV_STOPPED

    cdef int _check_nr(self, int nr) except -1:
        """Acknowledge sent I-frames up to N(R); an N(R) outside the window is fatal."""
        cdef int outstanding = (self.vs - self.ack + MOD) % MOD
        cdef int acked = (nr - self.ack + MOD) % MOD
        if acked > outstanding:
            self.n_seq += 1
            self._fail(f"sequence error: N(R)={nr} acknowledges unsent frames (V(S)={self.vs}, "
                       f"oldest unacknowledged {self.ack})")
            return 0
        if acked:
            self.sent_head = (self.sent_head + acked) % self.k
            self.sent_n -= acked
            self.ack = nr
            self.acked = True
            self._maybe_confirm_stop()
        return 1

    cdef inline void _push_sent(self, double now):
        self.sent[(self.sent_head + self.sent_n) % self.k] = now
        self.sent_n += 1
        if self.sent_n == 1:                    # t1 starts
            self._sooner(now + self.t1)

    cdef int _flush_queue(self, double now) except -1:
        if self.closed or self.state != DT_STARTED or not self._queue:
            return 0                    # (a closed link keeps its queue: still withdrawable)
        cdef bytes asdu
        cdef Py_ssize_t n
        cdef uint8_t* p
        while self._queue and self.sent_n < self.k:
            asdu = self._queue.pop(0)[1]
            n = len(asdu)
            p = self._reserve(n + 6)
            p[0] = 0x68
            p[1] = <uint8_t>(n + 4)
            p[2] = (self.vs << 1) & 0xFF
            p[3] = (self.vs >> 7) & 0xFF
            p[4] = (self.vr << 1) & 0xFF
            p[5] = (self.vr >> 7) & 0xFF
            memcpy(p + 6, <const char*>asdu, n)
            self._push_sent(now)
            self.vs = (self.vs + 1) % MOD
            self.n_i_out += 1
            self._acked_by_us()
        return 0

    cdef inline void _acked_by_us(self):
        # an I-frame carries N(R): it acknowledges everything received so far
        self.unacked_rx = 0
        self.t2_at = INF

    cdef uint8_t* _reserve(self, Py_ssize_t n) except NULL:
        cdef Py_ssize_t cap = self.out_cap
        while self.out_n + n > cap:
            cap *= 2
        if cap != self.out_cap:
            p = <uint8_t*>realloc(self.out, cap)
            if p == NULL:
                raise MemoryError()
            self.out = p
            self.out_cap = cap
        p = self.out + self.out_n
        self.out_n += n
        return p

    cdef void _send_s(self):
        cdef uint8_t* p = self._reserve(6)
        p[0] = 0x68
        p[1] = 4
        p[2] = 1
        p[3] = 0
        p[4] = (self.vr << 1) & 0xFF
        p[5] = (self.vr >> 7) & 0xFF
        self.n_s_out += 1
        self._acked_by_us()

    cdef void _send_u(self, int fn, double now, bint awaits_con):
        cdef uint8_t* p = self._reserve(6)
        p[0] = 0x68
        p[1] = 4
        p[2] = fn
        p[3] = 0
        p[4] = 0
        p[5] = 0
        self.n_u_out += 1
        if awaits_con:
            if not self.u_pending:      # t1 of an act still unanswered runs on (5.2)
                self.u_at = now
                self.u_ns = mono_ns()
                self._sooner(now + self.t1)
            self.u_pending = fn

    cdef inline void _sooner(self, double d) noexcept:
        # the Timers keep a lower bound of every link's deadline (a later one is found when
        # it is reached): only a deadline that moved earlier is told
        if self.timers is not None and d < self.timers.due[self.tslot]:
            self.timers.due[self.tslot] = d

    cdef void _fail(self, str reason):
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.events |= EV_CLOSE


cdef class RecvBuffer:
    """The receive buffer shared by the connections of one event loop.

    A read goes in after the reading connection's partial APDU, copied to the front by
    :meth:`Channel.get_buffer`; the batch is decoded and stored before the next read.
    """

    cdef bytearray buf
    cdef uint8_t* p
    cdef Py_ssize_t size
    cdef object view
    # read coalescing (iec104.protocol.coalesce): called after the first read of a loop
    # iteration while ``armed`` is false; the glue naps once the iteration's reads are done,
    # unless a read was ``urgent``: it carried answers to a request (COT > 3: interrogation
    # data, ActCon/ActTerm, read and counter answers) or a control type, which must not
    # wait a nap per window (a GI at k = 12) or per confirmation
    cdef public object on_read
    cdef public bint armed, urgent

    def __init__(self, Py_ssize_t size=1 << 16):
        self.size = max(size, 2 * APDU_MAX)
        self.buf = bytearray(self.size)
        self.p = <uint8_t*>(<char*>self.buf)
        self.view = memoryview(self.buf)


cdef class Channel:
    """One connection's receive path: the shared buffer, its decoder, its link, and (for a
    master) the store. ``received`` returns a Batch bitmask of what the glue must do; the
    rows of the batch are ``points()`` (accepted frames only) until the next read.

    Parameters
    ----------
    link, decoder, buffer : Link, Decoder, RecvBuffer
    table, ring : LatestTable, EventRing, optional
        Where accepted rows go (None: nowhere, as in the simulator).
    broadcast_ca : int
        The global address of this CA size: never a device.
    want : int
        The Batch bits the glue acts on (the others are not returned).
    """

    cdef readonly Link link
    cdef readonly Decoder decoder
    cdef RecvBuffer rb
    cdef LatestTable table
    cdef EventRing ring
    cdef uint8_t carry[APDU_MAX]
    cdef int carry_n
    cdef int want
    cdef int broadcast_ca
    cdef Py_ssize_t used, n_frames, n_accepted, n_points
    cdef public list taps                # hooks that see every read's octets (on_receive)
    cdef public list send_taps           # hooks that see every octet string sent (on_send)
    cdef public bint debug               # the glue logs every frame
    cdef uint16_t* cas                   # common addresses seen with monitor data
    cdef int n_cas, cap_cas
    cdef list _new_cas
    cdef object _clock, _on_batch, _write, _is_closing
    cdef readonly uint64_t frames_in, points_in, bad_frames, refused_rows
    cdef readonly uint64_t bytes_out     # octets the channel wrote itself (see bind_write)
    cdef int rfd                         # the socket a Reader reads for it (-1: none)
    cdef bint rpaused
    cdef object _read_closed, _read_closing

    def __cinit__(self, *args, **kwargs):
        self.cas = NULL
        self.rfd = -1

    def __init__(self, Link link, Decoder decoder, RecvBuffer buffer, LatestTable table=None,
                 EventRing ring=None, *, int broadcast_ca=0xFFFF, int want=0x7FFFFFFF):
        self.link, self.decoder, self.rb = link, decoder, buffer
        self.table, self.ring = table, ring
        self.broadcast_ca, self.want = broadcast_ca, want
        self._new_cas = []

    def __dealloc__(self):
        free(self.cas)

    def bind(self, clock, on_batch, closed=None):
        """Be the protocol's read path: ``buffer_updated`` reads ``clock()`` (the loop's time)
        and calls ``on_batch(flags)`` when a batch asks for something. The glue sets its
        protocol's ``get_buffer``/``buffer_updated`` to the channel's, so that a read runs no
        Python frame at all (uvloop takes them once, when the transport is made).
        ``closed(exc, socket_error)`` ends the connection when a batch that no read of the
        transport ran (a :class:`Reader`'s, a timer's) raised ``exc``; see :class:`Reader`."""
        self._clock, self._on_batch = clock, on_batch
        if closed is not None:
            self._read_closed = closed

    def bind_write(self, write, is_closing=None):
        """The transport's ``write`` and ``is_closing`` (None once it is gone): a batch that
        asks only for its link's output (an S-frame after w I-frames or t2, a TESTFR con) is
        then written from C, without ``on_batch``, unless the glue taps or logs what it
        sends (``send_taps``, ``debug``); those octets are counted in ``bytes_out``. Nothing
        is written to a transport that is closing (as LinkProtocol.write). No backlog check
        is needed: these frames follow reads, which stop while writing is paused, or a timer
        (an S-frame per t2, a TESTFR act per t3, and t1 closes a link whose con is not read)."""
        self._write, self._is_closing = write, is_closing

    cdef int _dispatch(self, int flags) except -1:
        cdef bytes data
        if flags & B_WAKE and self.ring is not None:
            flags &= ~B_WAKE            # a reader's wake-up: the ring's, in C (no glue)
            self.ring.wake()
        if flags == B_OUTPUT and self._write is not None and not self.debug and \
                (self.send_taps is None or not len(self.send_taps)):
            data = self.link.data_to_send()
            if self._is_closing is None or not self._is_closing():
                self.bytes_out += len(data)
                self._write(data)
        elif flags and self._on_batch is not None:
            self._on_batch(flags)
        return 0

    def buffer_updated(self, Py_ssize_t nbytes):
        self._after_read(nbytes, self._clock())

    cdef int _after_read(self, Py_ssize_t nbytes, double now) except -1:
        cdef int flags = self.received(nbytes, now)
        cdef RecvBuffer rb = self.rb
        if rb.on_read is not None and not rb.armed:
            rb.armed = True
            rb.on_read()
        return self._dispatch(flags)

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Where the next read goes: after this connection's partial APDU, and no more
        octets than the event log has room for rows (a row takes at least one octet)."""
        cdef RecvBuffer rb = self.rb
        cdef Py_ssize_t limit = self._prepare_read()
        if self.carry_n == 0 and limit == rb.size:
            return rb.view
        return rb.view[self.carry_n:self.carry_n + limit]

    cdef Py_ssize_t _prepare_read(self) noexcept:
        # the partial APDU to the front of the shared buffer; returns the room after it
        cdef RecvBuffer rb = self.rb
        cdef Py_ssize_t limit = rb.size - self.carry_n
        cdef int64_t room
        if self.carry_n:
            memcpy(rb.p, self.carry, self.carry_n)
        if self.ring is not None and self.ring.hold >= 0:
            room = self.ring.capacity - (self.ring.total - self.ring.hold) - self.carry_n
            if room < limit:
                limit = room if room > 1 else 1
        return limit

    cpdef int received(self, Py_ssize_t nbytes, double now) except -1:
        """Decode, validate and store the ``nbytes`` just read; returns the Batch bits."""
        cdef RecvBuffer rb = self.rb
        cdef Link link = self.link
        cdef Py_ssize_t n = self.carry_n + nbytes, nf, acc, npts = 0, i, rest
        cdef Workspace ws
        cdef const frame_t* f
        cdef const point_t* p
        cdef int flags = 0, bad = 0
        cdef uint64_t before
        self.used = self.decoder.feed_c(rb.p, n, wall_ns(), False)
        ws = self.decoder.workspace
        f = ws.f
        nf = self.decoder.n_frames
        acc = link.accept(now, f, nf)
        for i in range(nf):
            if f[i].status:
                bad += 1
            if i < acc and f[i].format == FORMAT_I:
                flags |= B_IFRAMES
                npts = f[i].first_point + f[i].n_points
                if f[i].type_id >= 45:
                    flags |= B_CONTROL
        if bad:
            flags |= B_BAD
            self.bad_frames += bad
        self.frames_in += acc
        self.n_frames, self.n_accepted, self.n_points = nf, acc, npts
        if npts:
            self.points_in += npts
            if self.table is not None:
                before = self.table.refused
                self.table.update_c(ws.p, npts)
                if self.table.refused != before:
                    flags |= B_REFUSED
                    self.refused_rows += self.table.refused - before
            if self.ring is not None:
                self.ring.append_c(ws.p, npts)
                if self.ring.hold >= 0 and self.ring.total - self.ring.hold >= self.ring.high:
                    flags |= B_PAUSE
                if self.ring.notify and now >= self.ring.wake_at:
                    flags |= B_WAKE
            for i in range(npts):
                p = ws.p + i
                if p.cot > 3:
                    flags |= B_REQUEST_DATA
                if p.type_id <= 44 and p.ca != self.broadcast_ca and self._new_ca(p.ca):
                    flags |= B_NEW_DEVICE
        if link.acked:
            link.acked = False
            flags |= B_ACKED
        if nf and (self.debug or (self.taps is not None and len(self.taps))):
            flags |= B_FRAMES
        if flags & (B_REQUEST_DATA | B_CONTROL):
            rb.urgent = True
        rest = n - self.used
        if link.closed or rest <= 0:
            self.carry_n = 0
        elif rest > APDU_MAX:                   # the decoder leaves at most a partial APDU
            link._fail("receive buffer: more than one partial APDU left")
            self.carry_n = 0
        else:
            memcpy(self.carry, rb.p + self.used, rest)
            self.carry_n = <int>rest
        return (flags | self._link_flags()) & self.want

    cdef int _new_ca(self, uint16_t ca) except -1:
        cdef int i
        if self.n_cas and self.cas[self.n_cas - 1] == ca:
            return 0
        for i in range(self.n_cas):
            if self.cas[i] == ca:
                return 0
        if self.n_cas == self.cap_cas:
            self.cap_cas = max(4, self.cap_cas * 2)
            grown = <uint16_t*>realloc(self.cas, self.cap_cas * sizeof(uint16_t))
            if grown == NULL:
                raise MemoryError()
            self.cas = grown
        self.cas[self.n_cas] = ca
        self.n_cas += 1
        self._new_cas.append(ca)
        return 1

    cdef int _link_flags(self) noexcept:
        cdef int flags = 0
        if self.link.out_n:
            flags |= B_OUTPUT
        if self.link.events:
            flags |= B_EVENTS
        return flags

    def tick(self, double now) -> int:
        """The timer fired: run the link's timers; returns the Batch bits."""
        self.link.tick(now)
        return self._link_flags() & self.want

    def pending(self) -> int:
        """The Batch bits for what the link holds now (after a send or a stop)."""
        return self._link_flags() & self.want

    def deadline(self) -> float:
        return self.link.deadline()

    def new_devices(self) -> list:
        """Common addresses first seen (with monitor data) since the last call."""
        new, self._new_cas = self._new_cas, []
        return new

    def points(self):
        """The rows of the accepted frames of the last batch (a view, valid until the next
        read of any connection on this loop)."""
        return self.decoder.workspace.points[:self.n_points]

    def frames(self):
        """Every frame of the last batch (a view); the first ``accepted`` were accepted."""
        return self.decoder.workspace.frames[:self.n_frames]

    @property
    def accepted(self) -> int:
        return self.n_accepted

    def raw(self):
        """The octets of the last batch's frames (a view of the shared buffer)."""
        return self.rb.view[:self.used]


cdef class Timers:
    """The link deadlines of every connection of one event loop, checked in C.

    The glue runs :meth:`tick` every ``resolution`` s from one loop timer, instead of a loop
    timer per connection re-armed from Python whenever its next deadline moved earlier (each
    I-frame that starts t2): with thousands of RTUs each sending now and then, that re-arming
    cost more than the reads. A deadline runs at most ``resolution`` late: a twentieth of the
    shortest timer of any link here (a tenth of t1 - t2 if less), between ``finest`` and
    ``coarsest`` s. With the standard's timers (t1 = 15 s, t2 = 10 s; they count whole
    seconds) that is 0.5 s: 2 wake-ups of the loop a second instead of 20, each of which cost
    40-150 us of CPU on an idle loop.
    """

    cdef list channels
    cdef double* due                      # by slot: a lower bound of each link's deadline
    cdef Py_ssize_t cap
    cdef readonly double resolution, finest, coarsest
    cdef dict wants                       # a link's resolution -> how many links want it
    cdef public object handle             # the glue's loop timer (None: not running)
    cdef Py_ssize_t ticking               # the slot tick() is at (-1: not ticking)
    cdef bint moved_back                  # a discard moved a link behind it meanwhile

    def __cinit__(self, *args, **kwargs):
        self.due = NULL
        self.ticking = -1

    def __init__(self, double finest=0.05, double coarsest=0.5):
        self.channels, self.wants = [], {}
        self.finest, self.coarsest = finest, max(finest, coarsest)
        self.resolution = self.coarsest

    cdef double _wanted(self, Link link):
        # a twentieth of its shortest timer, and a tenth of the margin t1 - t2 that an ack
        # after t2 has before the peer's t1 (if the peer's t1 is ours) runs out
        cdef double r = min(min(link.t1, link.t2, link.t3) / 20, (link.t1 - link.t2) / 10)
        return min(max(r, self.finest), self.coarsest)

    def __dealloc__(self):
        free(self.due)

    def __len__(self):
        return len(self.channels)

    def add(self, Channel ch) -> bool:
        """Run ``ch``'s link deadlines from now on; True if that made ``resolution`` finer
        (the glue's loop timer, set for the coarser one, is then set again)."""
        cdef Link link = ch.link
        cdef Py_ssize_t n = len(self.channels)
        cdef double* grown
        cdef double r = self._wanted(link), before = self.resolution
        if link.tslot >= 0:
            return False
        if n == self.cap:
            self.cap = max(64, 2 * self.cap)
            grown = <double*>realloc(self.due, self.cap * sizeof(double))
            if grown == NULL:
                raise MemoryError()
            self.due = grown
        self.channels.append(ch)
        link.timers, link.tslot = self, n
        self.due[n] = link.deadline()
        self.wants[r] = self.wants.get(r, 0) + 1
        self.resolution = min(self.resolution, r)
        return self.resolution < before

    def discard(self, Channel ch):
        cdef Link link = ch.link
        cdef Channel last
        cdef Py_ssize_t slot = link.tslot
        if slot < 0 or link.timers is not self:
            return
        last = self.channels.pop()
        if last is not ch:
            self.channels[slot] = last
            last.link.tslot = slot
            self.due[slot] = self.due[len(self.channels)]
            if slot < self.ticking:             # behind tick(): it would wait a resolution
                self.moved_back = True
        link.timers, link.tslot = None, -1
        r = self._wanted(link)
        if self.wants[r] == 1:
            del self.wants[r]
            self.resolution = min(self.wants, default=self.coarsest)
        else:
            self.wants[r] -= 1

    def tick(self, double now) -> int:
        """Run the link timers of each channel whose deadline has come, then what that asks
        for (an S-frame after t2: the channel's own write, see ``Channel.bind_write``; the
        rest: its glue's ``on_batch``); returns how many channels were due. Only the links
        whose lower bound has come are looked at: with 10,000 RTUs a look at every link
        took 0.3-0.7 ms per tick, 20 times a second."""
        cdef Channel ch
        cdef Link link
        cdef int due = 0
        cdef Py_ssize_t i = 0
        cdef double d
        cdef object unhandled = None
        self.moved_back = False
        while True:
            if i >= len(self.channels):
                if not self.moved_back:
                    break
                # a callback moved a link behind us (a discard of another): look once more
                # (those ticked already are not due again)
                i, self.moved_back = 0, False
                continue
            self.ticking = i                    # (a callback may add or discard channels)
            if self.due[i] > now:
                i += 1
                continue
            ch = <Channel>self.channels[i]
            link = ch.link
            d = link.deadline()
            if d > now:                         # it moved later meanwhile: now we know
                self.due[i] = d
                i += 1
                continue
            due += 1
            try:
                link.tick(now)
                self.due[i] = link.deadline()
                ch._dispatch(ch._link_flags() & ch.want)
            except Exception as exc:            # one connection's fault is its own: the
                self.discard(ch)                # others' deadlines still run
                if ch._read_closed is None:
                    unhandled = exc if unhandled is None else unhandled
                else:
                    ch._read_closed(exc, False)
            if link.tslot == i:                 # (else discarded: the last one is in its place)
                i += 1
        self.ticking = -1
        if unhandled is not None:               # (a channel without glue: its caller's)
            raise unhandled
        return due


cdef class Reader:
    """Reads the plain TCP connections of one event loop from an epoll of its own (Linux).

    The loop watches the epoll's one descriptor; each wake-up reads every ready socket into
    the shared buffer and runs its channel, in C: no loop handle, protocol call or buffer
    object per read, which cost more than the decode and the store of a small APDU. A read
    of less than the buffer leaves the socket empty (level-triggered: anything left is
    reported again). Writes stay with the transport, whose own reading is paused; TLS
    connections keep the loop's reads.

    ``closed(exc, socket_error)`` of a channel is called once its reads end: ``exc`` None
    at end of file, an OSError of the socket, or what its batch raised; ``is_closing()``
    (its transport's) is asked before each read: a closing transport receives nothing more.
    """

    cdef int ep
    cdef dict chans                     # fd -> Channel
    cdef object _loop                   # a weak reference: the loop keeps its reader, not
                                        # the reverse (the epoll closes with the loop)

    def __cinit__(self, *args, **kwargs):
        self.ep = -1

    def __init__(self, loop):
        self.ep = iec104_ep_create()
        if self.ep < 0:
            raise OSError("no epoll here")
        self._loop, self.chans = weakref.ref(loop), {}

    def __dealloc__(self):
        if self.ep >= 0:
            iec104_ep_close(self.ep)

    def __len__(self):
        return len(self.chans)

    def fileno(self) -> int:
        return self.ep

    def add(self, int fd, Channel ch, closed, is_closing):
        """Read socket ``fd`` for ``ch`` from now on."""
        cdef int r
        if not self.chans:
            self._loop().add_reader(self.ep, self.ready)  # (a loop that cannot: it raises)
        r = iec104_ep_ctl(self.ep, 1, fd)
        if r < 0:
            if not self.chans:
                self._loop().remove_reader(self.ep)
            raise OSError(-r, os.strerror(-r))
        self.chans[fd] = ch
        ch.rfd, ch.rpaused, ch._read_closing = fd, False, is_closing
        if closed is not None:                  # (None: the one given to Channel.bind)
            ch._read_closed = closed

    def pause(self, Channel ch):
        if self.chans.get(ch.rfd) is ch and not ch.rpaused:
            ch.rpaused = True
            iec104_ep_ctl(self.ep, 0, ch.rfd)

    def resume(self, Channel ch):
        cdef int r
        if self.chans.get(ch.rfd) is ch and ch.rpaused:
            r = iec104_ep_ctl(self.ep, 1, ch.rfd)
            if r < 0:
                self.discard(ch)
                ch._read_closed(OSError(-r, os.strerror(-r)), True)
            else:
                ch.rpaused = False

    def discard(self, Channel ch):
        """Stop reading for ``ch`` (its socket may be closed already: epoll then forgot it;
        its number may even serve a new connection, which stays)."""
        if ch.rfd < 0 or self.chans.get(ch.rfd) is not ch:
            return
        del self.chans[ch.rfd]
        if not ch.rpaused:
            iec104_ep_ctl(self.ep, 0, ch.rfd)
        ch.rfd = -1
        loop = self._loop()
        if not self.chans and loop is not None:
            loop.remove_reader(self.ep)

    def ready(self):
        """The loop's callback: read every ready socket once."""
        cdef int fds[IEC104_READ_EVENTS]
        cdef int m = iec104_ep_wait(self.ep, fds, IEC104_READ_EVENTS), i
        cdef double now
        cdef Channel ch
        if m <= 0:
            return
        now = self._loop().time()
        for i in range(m):
            obj = self.chans.get(fds[i])
            if obj is None:
                continue
            ch = <Channel>obj
            if ch.rpaused:                  # by a batch before it in this wake-up (the
                continue                    # master's high-water mark): not read
            try:
                self._read(ch, fds[i], now)
            except Exception as exc:        # one connection's fault is its own
                self.discard(ch)
                ch._read_closed(exc, False)

    cdef int _read(self, Channel ch, int fd, double now) except -1:
        cdef Py_ssize_t limit, n
        if ch._read_closing():
            self.discard(ch)                # closing: nothing more is received
            return 0
        limit = ch._prepare_read()
        n = iec104_recv(fd, ch.rb.p + ch.carry_n, limit)
        if n > 0:
            return ch._after_read(n, now)
        if n == -IEC104_EAGAIN or n == -IEC104_EINTR:
            return 0
        self.discard(ch)
        ch._read_closed(None if n == 0 else OSError(-n, os.strerror(-n)), True)
        return 0
