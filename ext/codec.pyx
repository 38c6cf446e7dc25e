# cython: language_level=3
"""APDU framing and ASDU decoding into POINT_DTYPE / FRAME_DTYPE rows.

One pass over the bytes: the scanner walks a pointer and a length, writes one ``frame_t``
per APDU and one ``point_t`` per information object into preallocated arrays, and never
creates a Python object per frame or per object.

APDU (IEC 60870-5-104, 5.1):

    0x68 | L (4..253) | C1 C2 C3 C4 | ASDU (L - 4 octets, I-format only)

    I: C1 C2 = N(S) << 1 (bit 0 of C1 = 0), C3 C4 = N(R) << 1
    S: C1 = 0x01, C2 = 0, C3 C4 = N(R) << 1 (bit 0 of C3 = 0)
    U: C1 = function bits | 0b11 (one of STARTDT/STOPDT/TESTFR act/con), C2..C4 = 0

ASDU: TypeID | VSQ (SQ bit 7, count 0..127) | COT (T bit 7, P/N bit 6, cause 0..5)
      [originator] | CA (1 or 2) | objects: IOA (1..3) + element (SQ=0), or one IOA and
      ``count`` elements at consecutive addresses (SQ=1).
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memchr, memcpy, memset

import threading
import time as _time

import numpy as np

from apdu cimport (
    data_of, empty_rows, wall_ns, point_t, frame_t, element_length, rd_u16, rd_i16, rd_u24, rd_u32, rd_f32, NO_TIME, START, LEN_MIN, LEN_MAX,
    FORMAT_I, FORMAT_S, FORMAT_U, ST_OK, ST_BAD_START, ST_BAD_LENGTH, ST_BAD_CONTROL,
    ST_SHORT_ASDU, ST_UNKNOWN_TYPE, ST_LENGTH_MISMATCH, ST_EMPTY, ST_TRUNCATED, ST_BAD_IOA, U_STARTDT_ACT,
    U_STARTDT_CON, U_STOPDT_ACT, U_STOPDT_CON, U_TESTFR_ACT, U_TESTFR_CON, FLAG_NEGATIVE,
    FLAG_TEST, FLAG_SQ, TF_SU, TF_CP24,
)
from cp56 cimport cp56_to_ms_cached, cp24_to_ms, cp24_place, MS_PER_HOUR
from iec104._codec cimport ctx_t

from iec104.types import FRAME_DTYPE, POINT_DTYPE

cdef enum:
    MAX_RECORD = 0xFFFF     # FRAME_DTYPE.length is 16 bits: longer garbage takes more rows

cdef inline void put_cp56(point_t* o, const uint8_t* p, ctx_t* c) noexcept nogil:
    cdef uint8_t f = 0
    cdef int64_t t = cp56_to_ms_cached(p, &f, &c.date_key, &c.date_days)
    if t != NO_TIME:
        t -= c.std_offset_ms + (c.dst_offset_ms if f & TF_SU else 0)
    o.time = t
    o.time_flags = f


cdef inline void put_cp24(point_t* o, const uint8_t* p, ctx_t* c) noexcept nogil:
    cdef uint8_t f = 0
    cdef int64_t t = cp24_to_ms(p, c.ref_local_ms, &f)
    if t != NO_TIME:
        t -= c.now_offset_ms
    o.time = t
    o.time_flags = f | TF_CP24


cdef inline double step_value(uint8_t b) noexcept nogil:
    cdef int v = b & 0x7F
    return v - 128 if v & 0x40 else v


cdef inline void read_element(int t, const uint8_t* p, point_t* o, ctx_t* c) noexcept nogil:
    """Decode one information element; the layout of each type is in its comment."""
    o.time = NO_TIME
    o.time_flags = 0
    o.extra = -1
    o.quality = 0
    o.value = 0
    if t == 13 or t == 14 or t == 36:               # IEEE float | QDS [| time]
        o.value = rd_f32(p)
        o.quality = p[4]
        if t == 14:
            put_cp24(o, p + 5, c)
        elif t == 36:
            put_cp56(o, p + 5, c)
    elif t == 1 or t == 2 or t == 30:               # SIQ: IV NT SB BL 0 0 0 SPI
        o.value = p[0] & 1
        o.quality = p[0] & 0xFE
        if t == 2:
            put_cp24(o, p + 1, c)
        elif t == 30:
            put_cp56(o, p + 1, c)
    elif t == 3 or t == 4 or t == 31:               # DIQ: IV NT SB BL 0 0 DPI
        o.value = p[0] & 3
        o.quality = p[0] & 0xFC
        if t == 4:
            put_cp24(o, p + 1, c)
        elif t == 31:
            put_cp56(o, p + 1, c)
    elif t == 5 or t == 6 or t == 32:               # VTI: T | value (signed 7 bit) | QDS
        o.value = step_value(p[0])
        # 0x02 carries the VTI's transient bit: the same (reserved) QDS bit as sent is dropped
        o.quality = (p[1] & 0xFD) | (0x02 if p[0] & 0x80 else 0)
        if t == 6:
            put_cp24(o, p + 2, c)
        elif t == 32:
            put_cp56(o, p + 2, c)
    elif t == 7 or t == 8 or t == 33:               # BSI (32 bits, LE) | QDS
        o.value = rd_u32(p)
        o.quality = p[4]
        if t == 8:
            put_cp24(o, p + 5, c)
        elif t == 33:
            put_cp56(o, p + 5, c)
    elif t == 9 or t == 10 or t == 34:              # NVA (int16 / 32768) | QDS
        o.value = rd_i16(p) / 32768.0
        o.quality = p[2]
        if t == 10:
            put_cp24(o, p + 3, c)
        elif t == 34:
            put_cp56(o, p + 3, c)
    elif t == 11 or t == 12 or t == 35:             # SVA (int16) | QDS
        o.value = rd_i16(p)
        o.quality = p[2]
        if t == 12:
            put_cp24(o, p + 3, c)
        elif t == 35:
            put_cp56(o, p + 3, c)
    elif t == 15 or t == 16 or t == 37:             # BCR: int32 | IV CA CY seq(5)
        o.value = <int32_t>rd_u32(p)
        o.quality = p[4]
        if t == 16:
            put_cp24(o, p + 5, c)
        elif t == 37:
            put_cp56(o, p + 5, c)
    elif t == 17 or t == 38:                        # SEP: IV NT SB BL EI 0 ES | CP16 elapsed
        o.value = p[0] & 3
        o.quality = p[0] & 0xFC
        o.extra = rd_u16(p + 1)
        if t == 17:
            put_cp24(o, p + 3, c)
        else:
            put_cp56(o, p + 3, c)
    elif t == 18 or t == 19 or t == 39 or t == 40:  # SPE or OCI | QDP | CP16 duration/operating
        o.value = p[0]
        o.quality = p[1]
        o.extra = rd_u16(p + 2)
        if t == 18 or t == 19:
            put_cp24(o, p + 4, c)
        else:
            put_cp56(o, p + 4, c)
    elif t == 20:                                   # SCD: ST (16) CD (16) | QDS
        o.value = rd_u16(p)
        o.extra = rd_u16(p + 2)
        o.quality = p[4]
    elif t == 21:                                   # NVA without quality
        o.value = rd_i16(p) / 32768.0
    elif t == 45 or t == 58:                        # SCO: S/E QU(5) 0 SCS
        o.value = p[0] & 1
        o.quality = p[0] & 0xFE
        if t == 58:
            put_cp56(o, p + 1, c)
    elif t == 46 or t == 47 or t == 59 or t == 60:  # DCO / RCO: S/E QU(5) DCS/RCS(2)
        o.value = p[0] & 3
        o.quality = p[0] & 0xFC
        if t >= 59:
            put_cp56(o, p + 1, c)
    elif t == 48 or t == 61:                        # NVA | QOS (S/E QL(7))
        o.value = rd_i16(p) / 32768.0
        o.quality = p[2]
        if t == 61:
            put_cp56(o, p + 3, c)
    elif t == 49 or t == 62:                        # SVA | QOS
        o.value = rd_i16(p)
        o.quality = p[2]
        if t == 62:
            put_cp56(o, p + 3, c)
    elif t == 50 or t == 63:                        # float | QOS
        o.value = rd_f32(p)
        o.quality = p[4]
        if t == 63:
            put_cp56(o, p + 5, c)
    elif t == 51 or t == 64:                        # BSI
        o.value = rd_u32(p)
        if t == 64:
            put_cp56(o, p + 4, c)
    elif t == 70 or t == 100 or t == 101 or t == 105 or t == 113:   # COI, QOI, QCC, QRP, QPA
        o.value = p[0]
    elif t == 103:                                  # CP56 clock
        put_cp56(o, p, c)
    elif t == 104 or t == 106:                      # FBP (0x55AA) / CP16 delay
        o.value = rd_u16(p)
    elif t == 107:                                  # TSC | CP56
        o.value = rd_u16(p)
        put_cp56(o, p + 2, c)
    elif t == 110:                                  # NVA | QPM
        o.value = rd_i16(p) / 32768.0
        o.quality = p[2]
    elif t == 111:                                  # SVA | QPM
        o.value = rd_i16(p)
        o.quality = p[2]
    elif t == 112:                                  # float | QPM
        o.value = rd_f32(p)
        o.quality = p[4]
    elif t == 120:                                  # NOF | LOF (24) | FRQ
        o.value = rd_u16(p)
        o.extra = rd_u24(p + 2)
        o.quality = p[5]
    elif t == 121:                                  # NOF | NOS | LOF (24) | SRQ
        o.value = rd_u16(p)
        o.extra = rd_u24(p + 3)
        o.quality = p[6]
    elif t == 122 or t == 123 or t == 124:          # NOF | NOS | SCQ / LSQ (+CHS) / AFQ
        o.value = rd_u16(p)
        o.extra = p[2]
        o.quality = p[3]
    elif t == 125:                                  # NOF | NOS | LOS | segment
        o.value = rd_u16(p)
        o.extra = p[2]
        o.quality = p[3]
    elif t == 126:                                  # NOF | LOF (24) | SOF | CP56
        o.value = rd_u16(p)
        o.extra = rd_u24(p + 2)
        o.quality = p[5]
        put_cp56(o, p + 6, c)
    elif t == 127:                                  # NOF | CP56 start | CP56 stop
        o.value = rd_u16(p)
        put_cp56(o, p + 2, c)


cdef inline uint32_t read_ioa(const uint8_t* p, int size) noexcept nogil:
    if size == 3:
        return rd_u24(p)
    if size == 2:
        return rd_u16(p)
    return p[0]


cdef int decode_asdu(const uint8_t* a, int alen, frame_t* f, point_t* pts, ctx_t* c) noexcept nogil:
    """Decode one ASDU into ``pts`` (room for 127 rows); returns the row count, with the
    frame's header fields and status set."""
    cdef int head = 2 + c.cot_size + c.ca_size
    if alen < head:
        f.status = ST_SHORT_ASDU
        return 0
    cdef int t = a[0]
    cdef int count = a[1] & 0x7F
    cdef bint sq = a[1] >> 7
    cdef uint8_t cot_octet = a[2]
    f.type_id = t
    f.sq = sq
    f.count = count
    f.cot = cot_octet & 0x3F
    f.negative = (cot_octet >> 6) & 1
    f.test = cot_octet >> 7
    f.originator = a[3] if c.cot_size == 2 else 0
    f.ca = rd_u16(a + 2 + c.cot_size) if c.ca_size == 2 else a[2 + c.cot_size]
    cdef int elen = element_length(t)
    if elen == -1:
        f.status = ST_UNKNOWN_TYPE
        return 0
    if count == 0:
        f.status = ST_EMPTY
        return 0
    cdef const uint8_t* p = a + head
    cdef int body = alen - head
    cdef int isz = c.ioa_size
    if elen == -2:                                  # F_SG_NA_1: one object, LOS in octet 3
        if count != 1 or body < isz + 4 or body != isz + 4 + p[isz + 3]:
            f.status = ST_LENGTH_MISMATCH
            return 0
        elen = body - isz
    if (sq and body != isz + count * elen) or (not sq and body != count * (isz + elen)):
        f.status = ST_LENGTH_MISMATCH
        return 0
    cdef uint8_t flags = (FLAG_SQ if sq else 0) | (FLAG_NEGATIVE if f.negative else 0) \
        | (FLAG_TEST if f.test else 0)
    cdef uint32_t ioa = read_ioa(p, isz) if sq else 0
    cdef int i
    cdef point_t* o
    if sq and <uint64_t>ioa + count - 1 > (<uint64_t>1 << (8 * isz)) - 1:
        f.status = ST_BAD_IOA                   # the run would name addresses past the field
        return 0
    if sq:
        p += isz
    for i in range(count):
        o = pts + i
        if sq:
            o.ioa = ioa + i
        else:
            o.ioa = read_ioa(p, isz)
            p += isz
        o.station = c.station
        o.ca = f.ca
        o.type_id = t
        o.cot = f.cot
        o.flags = flags
        o.originator = f.originator
        o.recv_ns = c.recv_ns
        read_element(t, p, o, c)
        p += elen
    f.status = ST_OK
    return count


cdef inline uint8_t u_function(uint8_t c1) noexcept nogil:
    if c1 == U_STARTDT_ACT or c1 == U_STARTDT_CON or c1 == U_STOPDT_ACT \
            or c1 == U_STOPDT_CON or c1 == U_TESTFR_ACT or c1 == U_TESTFR_CON:
        return c1
    return 0


cdef inline void blank(frame_t* f, Py_ssize_t offset, Py_ssize_t length, uint8_t status) noexcept nogil:
    memset(f, 0, sizeof(frame_t))
    f.offset = <uint32_t>offset
    f.length = <uint16_t>length
    f.status = status


# Reads at least this long are decoded without the GIL (a capture, a GI's full buffer); a
# trickle read of one APDU keeps it: releasing and taking it again (two mutex pairs) cost more
# than the decode, 6-7% of the master's CPU at 50,000 one-APDU reads/s (perf)
cdef enum:
    NOGIL_OCTETS = 4096


cdef inline Py_ssize_t scan_from(const uint8_t* base, Py_ssize_t pos, Py_ssize_t n, bint final,
                                 ctx_t* c, frame_t* frames, Py_ssize_t fcap, Py_ssize_t* nf,
                                 point_t* pts, Py_ssize_t pcap, Py_ssize_t* npts) noexcept nogil:
    """One pass of :func:`scan` from ``pos``, frame offsets made relative to ``base``."""
    cdef Py_ssize_t nf0 = nf[0], i
    cdef Py_ssize_t used = scan(base + pos, n - pos, final, c, frames, fcap, nf, pts, pcap, npts)
    for i in range(nf0, nf[0]):
        frames[i].offset += <uint32_t>pos
    return used


cdef Py_ssize_t scan(const uint8_t* buf, Py_ssize_t n, bint final, ctx_t* c,
                     frame_t* frames, Py_ssize_t fcap, Py_ssize_t* nf,
                     point_t* pts, Py_ssize_t pcap, Py_ssize_t* npts) noexcept nogil:
    """Decode whole APDUs from buf[0:n]; returns the octets consumed. Stops before a
    partial APDU (unless ``final``: then it is a TRUNCATED frame) or when the output has no
    room for another frame and 127 objects (the caller grows it and calls again)."""
    cdef Py_ssize_t pos = 0, skip, length
    cdef const uint8_t* q
    cdef const uint8_t* a
    cdef frame_t* f
    cdef uint8_t c1
    cdef int got
    while pos < n:
        if nf[0] >= fcap or npts[0] + 127 > pcap:
            break
        f = frames + nf[0]
        if buf[pos] != START:
            q = <const uint8_t*>memchr(buf + pos, START, n - pos)
            skip = min((q - (buf + pos)) if q != NULL else n - pos, MAX_RECORD)
            blank(f, pos, skip, ST_BAD_START)
            nf[0] += 1
            pos += skip
            continue
        if n - pos < 2:
            if final:
                blank(f, pos, n - pos, ST_TRUNCATED)
                nf[0] += 1
                pos = n
            break
        length = buf[pos + 1]
        if length < LEN_MIN or length > LEN_MAX:
            # resynchronise at the next start octet; the octets skipped belong to this record
            q = <const uint8_t*>memchr(buf + pos + 1, START, n - pos - 1)
            skip = min((q - (buf + pos)) if q != NULL else n - pos, MAX_RECORD)
            blank(f, pos, skip, ST_BAD_LENGTH)
            nf[0] += 1
            pos += skip
            continue
        if n - pos < length + 2:
            if final:
                blank(f, pos, n - pos, ST_TRUNCATED)
                nf[0] += 1
                pos = n
            break
        a = buf + pos + 2
        blank(f, pos, length + 2, ST_OK)
        f.first_point = <uint32_t>npts[0]
        c1 = a[0]
        if c1 & 1 == 0:
            f.format = FORMAT_I
            f.ns = rd_u16(a) >> 1
            f.nr = rd_u16(a + 2) >> 1
            got = decode_asdu(a + 4, <int>length - 4, f, pts + npts[0], c)
            f.n_points = got
            npts[0] += got
        elif c1 & 3 == 1:
            f.format = FORMAT_S
            f.nr = rd_u16(a + 2) >> 1
            # 5.1: C1 = 0x01, C2 = 0 and bit 0 of C3 = 0 are fixed; a set reserved bit is not
            # an S-frame the standard defines (the link closes on it as on any bad control)
            if length != 4 or c1 != 0x01 or a[1] != 0 or a[2] & 1:
                f.status = ST_BAD_CONTROL
        else:
            f.format = FORMAT_U
            f.u_function = u_function(c1)
            if length != 4 or f.u_function == 0 or a[1] != 0 or a[2] != 0 or a[3] != 0:
                f.status = ST_BAD_CONTROL
        nf[0] += 1
        pos += length + 2
    return pos


cdef class Workspace:
    """The arrays a decoder writes: frames and points of one ``feed``.

    One workspace can serve every connection of an event loop (the decode is synchronous
    inside ``buffer_updated`` and its rows are stored before the next read), so that a
    session carries no output arrays of its own. It grows when a batch needs more rows.
    """

    def __init__(self, Py_ssize_t points=4096, Py_ssize_t frames=0):
        self._points = np.zeros(max(points, 128), POINT_DTYPE)
        self._frames = np.zeros(max(frames or points // 8, 16), FRAME_DTYPE)
        self._bind()

    cdef _bind(self):
        self.p = <point_t*>data_of(self._points)
        self.f = <frame_t*>data_of(self._frames)
        self.pcap = len(self._points)
        self.fcap = len(self._frames)

    cdef int _grow(self, Py_ssize_t keep_frames, Py_ssize_t keep_points, bint frames,
                   bint points) except -1:
        """Double the frame or point array, keeping the rows already written."""
        if frames:
            new = np.zeros(self.fcap * 2, FRAME_DTYPE)
            memcpy(data_of(new), self.f, keep_frames * sizeof(frame_t))
            self._frames = new
        if points:
            new = np.zeros(self.pcap * 2, POINT_DTYPE)
            memcpy(data_of(new), self.p, keep_points * sizeof(point_t))
            self._points = new
        self._bind()
        return 0

    @property
    def points(self):
        return self._points

    @property
    def frames(self):
        return self._frames


cdef class Decoder:
    """Streaming decoder of one direction of an IEC 104 connection.

    ``feed(data)`` decodes every complete APDU at the start of ``data`` (bytes, bytearray or a
    memoryview of the session's receive buffer, read in place) and returns the octets
    consumed; a partial APDU at the end is left for the caller to keep. After each call,
    ``points`` and ``frames`` are views of this call's rows, valid until the next call (of
    any decoder sharing the same ``workspace``).

    Parameters
    ----------
    cot_size, ca_size, ioa_size : int
        Field sizes in octets (standard IEC 104: 2, 2, 3).
    station : int
        Written to every point's ``station``.
    tz : str, datetime.tzinfo or None
        Time zone of the RTU's clock for CP56Time2a/CP24Time2a (None: UTC).
    capacity : int
        Points the decoder's own workspace holds at first (it grows as needed).
    workspace : Workspace, optional
        Output arrays shared with other decoders (see :class:`Workspace`).
    """

    def __init__(self, *, int cot_size=2, int ca_size=2, int ioa_size=3, station=0, tz=None,
                 Py_ssize_t capacity=4096, Workspace workspace=None, Py_ssize_t frames=0):
        if cot_size not in (1, 2) or ca_size not in (1, 2) or ioa_size not in (1, 2, 3):
            raise ValueError(f"field sizes COT {cot_size}, CA {ca_size}, IOA {ioa_size}: "
                             "COT and CA take 1 or 2 octets, IOA 1, 2 or 3")
        self.ctx.cot_size = cot_size
        self.ctx.ca_size = ca_size
        self.ctx.ioa_size = ioa_size
        self.ctx.station = station
        self._tz = _resolve_tz(tz)
        self._tz_checked = -1e9
        self.workspace = workspace if workspace is not None else Workspace(capacity, frames)
        self.n_points = 0
        self.n_frames = 0
        self.status_counts = None

    @property
    def station(self):
        return self.ctx.station

    @station.setter
    def station(self, value):
        self.ctx.station = value

    @property
    def points(self):
        return self.workspace._points[:self.n_points]

    @property
    def frames(self):
        return self.workspace._frames[:self.n_frames]

    cdef void _set_clock(self, int64_t recv_ns):
        self.ctx.recv_ns = recv_ns
        if self._tz is not None and recv_ns / 1e9 - self._tz_checked > 60.0:
            self._tz_checked = recv_ns / 1e9
            std, dst, now = _offsets(self._tz, recv_ns)
            self.ctx.std_offset_ms = std
            self.ctx.dst_offset_ms = dst
            self.ctx.now_offset_ms = now
        self.ctx.ref_local_ms = recv_ns // 1000000 + self.ctx.now_offset_ms

    def feed(self, const uint8_t[::1] data, recv_ns=None, *, bint final=False):
        """Decode the complete APDUs at the start of ``data``; returns octets consumed.

        ``recv_ns`` is the receive time (ns since the epoch; default now). With
        ``final=True`` trailing octets that do not make a whole APDU become a TRUNCATED
        frame instead of being left unconsumed.
        """
        cdef Py_ssize_t n = data.shape[0]
        return self.feed_c(&data[0] if n > 0 else NULL, n,
                           wall_ns() if recv_ns is None else recv_ns, final)

    cdef Py_ssize_t feed_c(self, const uint8_t* base, Py_ssize_t n, int64_t recv_ns,
                           bint final) except -1:
        self._set_clock(recv_ns)
        cdef Workspace ws = self.workspace
        cdef Py_ssize_t pos = 0, used, nf = 0, npts = 0, i, bad = 0
        while pos < n:
            if n - pos >= NOGIL_OCTETS:
                with nogil:
                    used = scan_from(base, pos, n, final, &self.ctx, ws.f, ws.fcap, &nf,
                                     ws.p, ws.pcap, &npts)
            else:
                used = scan_from(base, pos, n, final, &self.ctx, ws.f, ws.fcap, &nf,
                                 ws.p, ws.pcap, &npts)
            pos += used
            if nf < ws.fcap and npts + 127 <= ws.pcap:
                break                           # stopped at a partial APDU (or the end)
            ws._grow(nf, npts, nf >= ws.fcap, npts + 127 > ws.pcap)
        self.n_frames = nf
        self.n_points = npts
        self.total_frames += nf
        self.total_points += npts
        for i in range(nf):
            if ws.f[i].status:
                bad += 1
                if self.status_counts is None:
                    self.status_counts = np.zeros(16, np.uint64)
                self.status_counts[ws.f[i].status] += 1
        self.bad_frames += bad
        return pos


def _resolve_tz(tz):
    if tz is None or tz == "UTC":
        return None
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo
        return ZoneInfo(tz)
    return tz


def _offsets(tz, int64_t recv_ns):
    """(standard offset, summer-time delta, offset now) of ``tz`` in ms."""
    import datetime as dt
    now = dt.datetime.fromtimestamp(recv_ns / 1e9, tz)
    utc = now.utcoffset() or dt.timedelta(0)
    dst = now.dst() or dt.timedelta(0)
    std = utc - dst
    delta = dst
    if not delta:                               # find the zone's summer delta, if any
        for month in (1, 7):
            probe = dt.datetime(now.year, month, 1, tzinfo=tz).dst()
            if probe:
                delta = probe
    ms = lambda d: int(d.total_seconds() * 1000)
    return ms(std), ms(delta), ms(utc)


cdef object _copy_points(const point_t* p, Py_ssize_t n):
    # numpy copies a packed structured array field by field (~0.5 GB/s): memcpy instead
    out = empty_rows(POINT_DTYPE, n)
    if n:
        memcpy(data_of(out), p, n * sizeof(point_t))
    return out


cdef object _copy_frames(const frame_t* f, Py_ssize_t n):
    out = empty_rows(FRAME_DTYPE, n)
    if n:
        memcpy(data_of(out), f, n * sizeof(frame_t))
    return out


_local = threading.local()          # per thread: the decode runs without the GIL
SMALL = 1 << 12                     # inputs up to this size reuse a decoder and copy out


def decode_all(data, *, int cot_size=2, int ca_size=2, int ioa_size=3, station=0, tz=None,
               recv_ns=None):
    """Decode a buffer of whole APDUs; returns ``(frames, points)``, arrays of their own.

    A small input (one APDU, a few) is decoded by a decoder kept per thread and its rows
    copied out, which costs what a reused :class:`Decoder` costs; a large one into arrays
    sized from the input (a row takes at least one octet, an APDU six), returned without
    a copy.
    """
    if not isinstance(data, (bytes, bytearray)):
        data = memoryview(data).cast("B")
    cdef Py_ssize_t n = len(data)
    cdef Decoder d
    key = (cot_size, ca_size, ioa_size, tz)
    if n <= SMALL and (tz is None or isinstance(tz, str)):
        cache = getattr(_local, "decoders", None)
        if cache is None:
            cache = _local.decoders = {}
        d = cache.get(key)
        if d is None:
            d = cache[key] = Decoder(cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size,
                                     tz=tz, capacity=SMALL // 5 + 16, frames=SMALL // 6 + 1)
        d.ctx.station = station
        d.n_frames = d.n_points = 0
        if n:
            d.feed(data, recv_ns, final=True)
        return _copy_frames(d.workspace.f, d.n_frames), _copy_points(d.workspace.p, d.n_points)
    d = Decoder(cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size, station=station, tz=tz,
                capacity=n // 5 + 16, frames=n // 6 + 1)
    if n:
        d.feed(data, recv_ns, final=True)
    return d.frames, d.points                   # views of this decoder's own arrays


def decode(data, *, int cot_size=2, int ca_size=2, int ioa_size=3, station=0, tz=None,
           recv_ns=None):
    """Every information object of a buffer of whole APDUs, as a POINT_DTYPE array."""
    return decode_all(data, cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size,
                      station=station, tz=tz, recv_ns=recv_ns)[1]


def decode_frames(data, *, int cot_size=2, int ca_size=2, int ioa_size=3, tz=None,
                  recv_ns=None):
    """One FRAME_DTYPE row per APDU (and per run of octets that is not one)."""
    return decode_all(data, cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size, tz=tz,
                      recv_ns=recv_ns)[0]


def rebase_cp24(points):
    """Place the CP24Time2a times of POINT_DTYPE rows (UTC) again, each in the hour of its own
    ``recv_ns``, in place: for rows decoded against another receive time (a capture is decoded
    in one pass, then each object stamped with the time of its packet)."""
    cdef point_t[::1] pv = points
    cdef Py_ssize_t i
    cdef int64_t in_hour
    with nogil:
        for i in range(pv.shape[0]):
            if pv[i].time_flags & TF_CP24 and pv[i].time != NO_TIME:
                in_hour = pv[i].time % MS_PER_HOUR      # C remainder: negative before 1970
                if in_hour < 0:
                    in_hour += MS_PER_HOUR
                pv[i].time = cp24_place(in_hour, pv[i].recv_ns // 1000000)


def struct_sizes():
    """sizeof(point_t), sizeof(frame_t): the dtypes must match (tests check)."""
    return sizeof(point_t), sizeof(frame_t)


def element_lengths():
    """{type id: octets of one element} for every id the decoder knows (-2: variable)."""
    return {t: element_length(t) for t in range(256) if element_length(t) != -1}
