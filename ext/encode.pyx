# cython: language_level=3
"""APDU encoding: the exact mirror of codec.pyx.

``encode_asdu`` writes one information object of any standard type from the same fields a
decoded POINT_DTYPE row holds (value, quality, time, extra); ``encode_points`` packs a whole
array of monitor rows into full I-frames in one pass (the simulator's hot path), and
``stamp`` writes their sequence numbers when the k window lets them go.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t
from libc.string cimport memset
from libc.math cimport llround

import numpy as np

from apdu cimport (point_t, element_length, wr_u16, wr_u24, wr_u32, wr_f32, NO_TIME, TF_IV, TF_SU,
                   FLAG_NEGATIVE, FLAG_TEST, LEN_MAX)
from cp56 cimport ms_to_cp56, cp56_to_ms

cdef int64_t _NO_TIME = NO_TIME
cdef int64_t CP56_FIRST_MS = 946684800000       # 2000-01-01: CP56Time2a's years are 0..99
cdef int64_t CP56_END_MS = 4102444800000        # 2100-01-01


cdef inline long long clamp(double v, long long lo, long long hi) noexcept nogil:
    # the double clamped before rounding: lround of inf or of 1e19 is LONG_MIN (a sign flip),
    # and a cast past a field's width wraps (a step position of 64 would be -64)
    if v != v:
        return 0                                # NaN (commands refuse it before this)
    if v >= <double>hi:
        return hi
    if v <= <double>lo:
        return lo
    return llround(v)


cdef inline int clamp16(double v) noexcept nogil:
    return <int>clamp(v, -32768, 32767)


cdef inline int nva(double v) noexcept nogil:
    return clamp16(v * 32768.0)


cdef inline void put_time(uint8_t* p, int64_t t, uint8_t tf, bint cp24) noexcept nogil:
    cdef uint8_t buf[7]
    if t == NO_TIME or t < CP56_FIRST_MS or t >= CP56_END_MS:
        # no time known, or one CP56Time2a cannot carry (its year would wrap): zero fields,
        # IV set
        memset(buf, 0, 7)
        buf[2] = 0x80
        buf[4] = 1
        buf[5] = 1
    else:
        ms_to_cp56(t, tf, buf)
    p[0] = buf[0]
    p[1] = buf[1]
    p[2] = buf[2]
    if not cp24:
        p[3] = buf[3]
        p[4] = buf[4]
        p[5] = buf[5]
        p[6] = buf[6]


cdef int write_element(int t, uint8_t* p, double value, uint8_t q, int64_t tm, uint8_t tf,
                       int32_t extra) noexcept nogil:
    """Write one element (without IOA); returns its length, -1 for an unknown type."""
    cdef int n = element_length(t)
    cdef uint32_t u
    cdef int v
    if n == -2:                                 # F_SG_NA_1: 4 octets plus the segment
        n = 4
    elif n < 0:
        return -1
    if t == 13 or t == 14 or t == 36 or t == 50 or t == 63 or t == 112:
        wr_f32(p, <float>value)
        p[4] = q
        if t == 14:
            put_time(p + 5, tm, tf, True)
        elif t == 36 or t == 63:
            put_time(p + 5, tm, tf, False)
    elif t == 1 or t == 2 or t == 30 or t == 45 or t == 58:
        p[0] = (q & 0xFE) | (<int>value & 1)
        if t == 2:
            put_time(p + 1, tm, tf, True)
        elif t == 30 or t == 58:
            put_time(p + 1, tm, tf, False)
    elif t == 3 or t == 4 or t == 31 or t == 46 or t == 47 or t == 59 or t == 60:
        p[0] = (q & 0xFC) | (<int>value & 3)
        if t == 4:
            put_time(p + 1, tm, tf, True)
        elif t == 31 or t == 59 or t == 60:
            put_time(p + 1, tm, tf, False)
    elif t == 5 or t == 6 or t == 32:
        v = <int>clamp(value, -64, 63)          # VTI: a 7-bit step position
        p[0] = (v & 0x7F) | (0x80 if q & 0x02 else 0)
        p[1] = q & 0xFD
        if t == 6:
            put_time(p + 2, tm, tf, True)
        elif t == 32:
            put_time(p + 2, tm, tf, False)
    elif t == 7 or t == 8 or t == 33 or t == 51 or t == 64:
        u = <uint32_t>(<long long>value)
        wr_u32(p, u)
        if t == 51 or t == 64:
            if t == 64:
                put_time(p + 4, tm, tf, False)
        else:
            p[4] = q
            if t == 8:
                put_time(p + 5, tm, tf, True)
            elif t == 33:
                put_time(p + 5, tm, tf, False)
    elif t == 9 or t == 10 or t == 34 or t == 48 or t == 61 or t == 110 or t == 21:
        wr_u16(p, <uint16_t>nva(value))
        if t != 21:
            p[2] = q
        if t == 10:
            put_time(p + 3, tm, tf, True)
        elif t == 34 or t == 61:
            put_time(p + 3, tm, tf, False)
    elif t == 11 or t == 12 or t == 35 or t == 49 or t == 62 or t == 111:
        wr_u16(p, <uint16_t>clamp16(value))
        p[2] = q
        if t == 12:
            put_time(p + 3, tm, tf, True)
        elif t == 35 or t == 62:
            put_time(p + 3, tm, tf, False)
    elif t == 15 or t == 16 or t == 37:
        wr_u32(p, <uint32_t>(<int32_t>clamp(value, -2147483648, 2147483647)))   # BCR
        p[4] = q
        if t == 16:
            put_time(p + 5, tm, tf, True)
        elif t == 37:
            put_time(p + 5, tm, tf, False)
    elif t == 17 or t == 38:
        p[0] = (q & 0xFC) | (<int>value & 3)
        wr_u16(p + 1, <uint16_t>(extra if extra > 0 else 0))
        put_time(p + 3, tm, tf, t == 17)
    elif t == 18 or t == 19 or t == 39 or t == 40:
        p[0] = <uint8_t>(<int>value)
        p[1] = q
        wr_u16(p + 2, <uint16_t>(extra if extra > 0 else 0))
        put_time(p + 4, tm, tf, t == 18 or t == 19)
    elif t == 20:
        wr_u16(p, <uint16_t>(<int>value))
        wr_u16(p + 2, <uint16_t>(extra if extra > 0 else 0))
        p[4] = q
    elif t == 70 or t == 100 or t == 101 or t == 105 or t == 113:
        p[0] = <uint8_t>(<int>value)
    elif t == 103:
        put_time(p, tm, tf, False)
    elif t == 104 or t == 106:
        wr_u16(p, <uint16_t>(<int>value))
    elif t == 107:
        wr_u16(p, <uint16_t>(<int>value))
        put_time(p + 2, tm, tf, False)
    elif t == 120 or t == 126:
        wr_u16(p, <uint16_t>(<int>value))
        wr_u24(p + 2, <uint32_t>(extra if extra > 0 else 0))
        p[5] = q
        if t == 126:
            put_time(p + 6, tm, tf, False)
    elif t == 121:
        wr_u16(p, <uint16_t>(<int>value))
        p[2] = 0
        wr_u24(p + 3, <uint32_t>(extra if extra > 0 else 0))
        p[6] = q
    elif t == 122 or t == 123 or t == 124 or t == 125:
        wr_u16(p, <uint16_t>(<int>value))
        p[2] = <uint8_t>(extra if extra > 0 else 0)
        p[3] = q
        if t == 123:
            p[4] = 0                            # checksum
        elif t == 125:
            memset(p + 4, 0, q)                 # LOS octets of (zero) segment
            n += q
    elif t == 127:
        wr_u16(p, <uint16_t>(<int>value))
        put_time(p + 2, tm, tf, False)
        put_time(p + 9, tm, tf, False)
    return n


cdef inline int write_ioa(uint8_t* p, uint32_t ioa, int size) noexcept nogil:
    p[0] = ioa & 0xFF
    if size >= 2:
        p[1] = (ioa >> 8) & 0xFF
    if size == 3:
        p[2] = (ioa >> 16) & 0xFF
    return size


cdef int write_header(uint8_t* p, int t, int vsq, int cot, bint negative, bint test,
                      int originator, int ca, int cot_size, int ca_size) noexcept nogil:
    p[0] = t
    p[1] = vsq
    p[2] = (cot & 0x3F) | (0x40 if negative else 0) | (0x80 if test else 0)
    cdef int n = 3
    if cot_size == 2:
        p[3] = originator
        n = 4
    p[n] = ca & 0xFF
    if ca_size == 2:
        p[n + 1] = (ca >> 8) & 0xFF
    return n + ca_size


def _check_sizes(int cot_size, int ca_size, int ioa_size):
    if cot_size not in (1, 2) or ca_size not in (1, 2) or ioa_size not in (1, 2, 3):
        raise ValueError("field sizes: COT and CA take 1 or 2 octets, IOA 1, 2 or 3")


cdef inline long long field_max(int size) noexcept nogil:
    return (1LL << (8 * size)) - 1


def _field_error(str what, long long value, int size):
    return OverflowError(f"{what} {value} does not fit in {size} octet{'s' if size > 1 else ''}"
                         f" (0..{field_max(size)})")


def u_frame(int function):
    """A U-frame (STARTDT/STOPDT/TESTFR act or con: a UFunction value)."""
    if function not in (0x07, 0x0B, 0x13, 0x23, 0x43, 0x83):
        raise ValueError(f"not a U-frame function: {function:#x}")
    return bytes((0x68, 4, function, 0, 0, 0))


def s_frame(int nr):
    """An S-frame acknowledging up to N(R)."""
    nr = (nr % 32768) << 1
    return bytes((0x68, 4, 1, 0, nr & 0xFF, nr >> 8))


def i_frame(asdu, int ns, int nr):
    """Wrap an ASDU into an I-frame with N(S), N(R) (mod 32768)."""
    cdef Py_ssize_t n = len(asdu)
    if not 1 <= n <= LEN_MAX - 4:
        raise ValueError(f"ASDU of {n} octets: an APDU carries 1..249")
    ns = (ns % 32768) << 1
    nr = (nr % 32768) << 1
    return bytes((0x68, n + 4, ns & 0xFF, ns >> 8, nr & 0xFF, nr >> 8)) + bytes(asdu)


def encode_asdu(int type_id, long long ca, long long ioa, double value=0.0, int quality=0, *,
                int cot, time_ms=None, int time_flags=0, int extra=-1, bint negative=False,
                bint test=False, int originator=0, int cot_size=2, int ca_size=2,
                int ioa_size=3):
    """One ASDU with one information object of any standard type.

    ``value``, ``quality``, ``extra``, ``time_ms`` mean what they mean in a decoded
    POINT_DTYPE row (see iec104.types), so that decode(encode(row)) == row. A time-tagged
    type without ``time_ms`` gets a CP56Time2a with IV set (fields zero, 1 January 2000).
    A CA or IOA that does not fit its field raises OverflowError: never truncated (which CA
    and IOA a request may address is iec104.commands.check_address's business).
    """
    _check_sizes(cot_size, ca_size, ioa_size)
    if not 0 <= ca <= field_max(ca_size):
        raise _field_error("CA", ca, ca_size)
    if not 0 <= ioa <= field_max(ioa_size):
        raise _field_error("IOA", ioa, ioa_size)
    if element_length(type_id) == -1:
        raise ValueError(f"type id {type_id} is not a type of the standard")
    if not 0 <= quality <= 255:
        raise ValueError(f"qualifier {quality} is not an octet")
    cdef int64_t tm = _NO_TIME if time_ms is None else <int64_t>time_ms
    cdef uint8_t buf[512]
    cdef int n = write_header(buf, type_id, 1, cot, negative, test, originator, ca, cot_size, ca_size)
    n += write_ioa(buf + n, <uint32_t>ioa, ioa_size)
    n += write_element(type_id, buf + n, value, <uint8_t>quality, tm, <uint8_t>time_flags, extra)
    return bytes(buf[:n])


cdef inline bint same_asdu(const point_t* r, const point_t* r0, bint own_cot,
                           bint own_originator) noexcept nogil:
    """Whether row ``r`` fits the ASDU header of row ``r0``."""
    return r.type_id == r0.type_id and r.ca == r0.ca and (not own_cot or r.cot == r0.cot) \
        and (r.flags ^ r0.flags) & (FLAG_NEGATIVE | FLAG_TEST) == 0 \
        and (not own_originator or r.originator == r0.originator)


def encode_points(points, *, cot=None, int cot_size=2, int ca_size=2, int ioa_size=3,
                  originator=None):
    """Pack POINT_DTYPE rows into complete I-frames (N(S) = N(R) = 0, to be stamped).

    ``cot`` and ``originator`` (None: each row's own) set those fields of every frame.
    Consecutive rows of the same (ca, type_id, cot, flags, originator) share an ASDU, up to
    127 objects and 253 octets; a run of consecutive IOAs is sent with SQ=1. Returns
    ``(data, offsets)``: frame i is ``data[offsets[i]:offsets[i+1]]``. A row whose CA or IOA
    does not fit its field, or an originator above 255, raises OverflowError (nothing is
    truncated).
    """
    _check_sizes(cot_size, ca_size, ioa_size)
    cdef const point_t[::1] pv = np.ascontiguousarray(points) if len(points) else \
        np.zeros(1, points.dtype)
    cdef Py_ssize_t n = len(points)
    cdef long long ca_max = field_max(ca_size), ioa_max = field_max(ioa_size)
    cdef Py_ssize_t bad = -1
    with nogil:
        for bad in range(n):
            if pv[bad].ca > ca_max or pv[bad].ioa > ioa_max:
                break
        else:
            bad = -1
    if bad >= 0:
        err = _field_error("CA", pv[bad].ca, ca_size) if pv[bad].ca > ca_max else \
            _field_error("IOA", pv[bad].ioa, ioa_size)
        raise OverflowError(f"row {bad}: {err}")
    cdef int fixed_cot = -1 if cot is None else int(cot)
    if originator is not None and not 0 <= originator <= 0xFF:
        raise OverflowError(f"originator address {originator} does not fit one octet")
    cdef int fixed_org = -1 if originator is None else int(originator)
    # with a one-octet COT there is no originator octet, nothing to split ASDUs on
    cdef bint own_org = fixed_org < 0 and cot_size == 2
    cdef int head = 2 + cot_size + ca_size
    # worst case: one row per APDU, each at most 6 + head + ioa + 16 octets
    data = bytearray(max(n, 1) * (6 + head + ioa_size + 16) + 64)
    offsets = np.empty(n + 1, np.uint32)
    cdef uint8_t[::1] out = data
    cdef uint32_t[::1] off = offsets
    cdef Py_ssize_t i = 0, j, pos = 0, nf = 0, start
    cdef int t, c, elen, per, count, room, sq
    cdef uint8_t fl
    cdef const point_t* r
    cdef const point_t* r0
    cdef uint8_t* a
    with nogil:
        while i < n:
            r0 = &pv[i]
            t = r0.type_id
            elen = element_length(t)
            if elen < 0:
                with gil:
                    raise ValueError(f"row {i}: type id {t} cannot be batch-encoded")
            c = fixed_cot if fixed_cot >= 0 else r0.cot
            fl = r0.flags & (FLAG_NEGATIVE | FLAG_TEST)
            room = (LEN_MAX - 4 - head)
            # SQ=1 when the next rows continue the IOA run
            sq = i + 1 < n and pv[i + 1].ioa == r0.ioa + 1 \
                and same_asdu(&pv[i + 1], r0, fixed_cot < 0, own_org)
            if sq:
                room -= ioa_size                # one IOA for the run, none per element
            per = elen if sq else elen + ioa_size
            count = 0
            j = i
            while j < n and count < 127 and room >= per:
                r = &pv[j]
                if not same_asdu(r, r0, fixed_cot < 0, own_org) or (sq and r.ioa != r0.ioa + count):
                    break
                room -= per
                count += 1
                j += 1
            start = pos
            off[nf] = <uint32_t>pos
            a = &out[pos]
            a[0] = 0x68
            a[2] = 0
            a[3] = 0
            a[4] = 0
            a[5] = 0
            pos += 6
            pos += write_header(&out[pos], t, count | (0x80 if sq else 0), c,
                                fl & FLAG_NEGATIVE, fl & FLAG_TEST,
                                fixed_org if fixed_org >= 0 else r0.originator, r0.ca,
                                cot_size, ca_size)
            if sq:
                pos += write_ioa(&out[pos], r0.ioa, ioa_size)
            for j in range(i, i + count):
                r = &pv[j]
                if not sq:
                    pos += write_ioa(&out[pos], r.ioa, ioa_size)
                pos += write_element(t, &out[pos], r.value, r.quality, r.time, r.time_flags, r.extra)
            out[start + 1] = <uint8_t>(pos - start - 2)
            nf += 1
            i += count
        off[nf] = <uint32_t>pos
    del out
    del data[pos:]
    return data, offsets[:nf + 1].copy()


def stamp(data, offsets, Py_ssize_t first, Py_ssize_t count, int ns, int nr):
    """Write I-frame control fields of frames first..first+count-1 in place; returns the next
    N(S)."""
    cdef uint8_t[::1] out = data
    cdef const uint32_t[::1] off = offsets
    if first < 0 or count < 0 or first + count > off.shape[0] - 1:
        raise IndexError("frames out of range")
    cdef Py_ssize_t i
    cdef uint32_t p
    cdef int s = ns % 32768, r = (nr % 32768) << 1
    with nogil:
        for i in range(first, first + count):
            p = off[i]
            out[p + 2] = (s << 1) & 0xFF
            out[p + 3] = (s << 1) >> 8
            out[p + 4] = r & 0xFF
            out[p + 5] = r >> 8
            s = (s + 1) % 32768
    return s


def time_to_cp56(time_ms, int time_flags=0):
    """CP56Time2a octets of a wall-clock time in ms since the epoch."""
    cdef uint8_t buf[7]
    put_time(buf, <int64_t>time_ms, <uint8_t>time_flags, False)
    return bytes(buf[:7])


def cp56_to_time(b):
    """(ms since the epoch, time flags) of CP56Time2a octets."""
    cdef const uint8_t[::1] v = b
    if v.shape[0] < 7:
        raise ValueError("CP56Time2a takes 7 octets")
    cdef uint8_t f = 0
    cdef int64_t t = cp56_to_ms(&v[0], &f)
    return t, f
