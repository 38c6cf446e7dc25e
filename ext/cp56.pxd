# CP56Time2a / CP24Time2a <-> milliseconds since the Unix epoch. Header only (inline).
#
# CP56Time2a, 7 octets:        CP24Time2a is the first three.
#   0-1  milliseconds 0..59999 (seconds * 1000 + ms), little-endian
#   2    IV(7) RES1/GEN(6) minutes(0..5)
#   3    SU(7) RES2(5..6) hours(0..4)
#   4    day of week(5..7) day of month(0..4)
#   5    RES3(4..7) month(0..3)
#   6    RES4(7) year 0..99(0..6)    -- years are taken as 2000..2099
from libc.stdint cimport uint8_t, uint32_t, int64_t
from apdu cimport rd_u16, TF_IV, TF_SU, TF_GEN, NO_TIME

cdef enum:
    MS_PER_MIN = 60000
    MS_PER_HOUR = 3600000
    MS_PER_DAY = 86400000

cdef inline int64_t days_from_civil(int64_t y, int m, int d) noexcept nogil:
    # Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468

cdef inline void civil_from_days(int64_t z, int* y, int* m, int* d) noexcept nogil:
    z += 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    d[0] = <int>(doy - (153 * mp + 2) // 5 + 1)
    m[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    y[0] = <int>(yoe + era * 400 + (m[0] <= 2))

cdef inline int days_in_month(int year, int month) noexcept nogil:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31


cdef inline int64_t cp56_to_ms_cached(const uint8_t* p, uint8_t* flags, uint32_t* date_key,
                                      int64_t* date_days) noexcept nogil:
    """cp56_to_ms with the day number of the previous date kept by the caller: objects of
    one ASDU almost always share their date, and the calendar is the costly part."""
    cdef int ms = rd_u16(p)
    cdef int minute = p[2] & 0x3F
    cdef int hour = p[3] & 0x1F
    cdef int day = p[4] & 0x1F
    cdef int month = p[5] & 0x0F
    cdef uint32_t key = day | (month << 5) | ((p[6] & 0x7F) << 9) | 0x10000
    flags[0] = (TF_IV if p[2] & 0x80 else 0) | (TF_SU if p[3] & 0x80 else 0) | (TF_GEN if p[2] & 0x40 else 0)
    if month < 1 or month > 12 or day < 1 or minute > 59 or hour > 23 or ms > 59999 or \
            (p[6] & 0x7F) > 99 or day > days_in_month(2000 + (p[6] & 0x7F), month):
        flags[0] |= TF_IV                       # (31 February, year 100: no such date)
        return NO_TIME
    if key != date_key[0]:
        date_key[0] = key
        date_days[0] = days_from_civil(2000 + (p[6] & 0x7F), month, day)
    return date_days[0] * MS_PER_DAY + hour * MS_PER_HOUR + minute * MS_PER_MIN + ms


cdef inline int64_t cp56_to_ms(const uint8_t* p, uint8_t* flags) noexcept nogil:
    """Wall-clock milliseconds (as if UTC) of a CP56Time2a; flags gets IV, SU and GEN.
    Out-of-range fields (month 0, day 0, 31 April, year 100) give NO_TIME with IV set,
    never garbage."""
    cdef uint32_t key = 0
    cdef int64_t days = 0
    return cp56_to_ms_cached(p, flags, &key, &days)


cdef inline void ms_to_cp56(int64_t t, uint8_t flags, uint8_t* p) noexcept nogil:
    """Write wall-clock milliseconds as CP56Time2a. Day of week is left 0 (not used), as
    lib60870 does: receivers must not depend on it."""
    cdef int64_t days = t // MS_PER_DAY
    cdef int64_t rem = t - days * MS_PER_DAY
    cdef int y, m, d
    civil_from_days(days, &y, &m, &d)
    cdef int ms = <int>(rem % MS_PER_MIN)
    cdef int minute = <int>((rem // MS_PER_MIN) % 60)
    cdef int hour = <int>(rem // MS_PER_HOUR)
    p[0] = ms & 0xFF
    p[1] = (ms >> 8) & 0xFF
    p[2] = minute | (0x80 if flags & TF_IV else 0) | (0x40 if flags & TF_GEN else 0)
    p[3] = hour | (0x80 if flags & TF_SU else 0)
    p[4] = d
    p[5] = m
    p[6] = (y - 2000) & 0x7F

cdef inline int64_t cp24_place(int64_t in_hour, int64_t ref_ms) noexcept nogil:
    """A time ``in_hour`` ms into an hour, placed in the hour of ref_ms, or the hour before
    when that would lie more than a minute after ref_ms (a time tag is never from the future
    beyond clock skew)."""
    cdef int64_t t = ref_ms - (ref_ms % MS_PER_HOUR) + in_hour
    if t > ref_ms + MS_PER_MIN:
        t -= MS_PER_HOUR
    return t

cdef inline int64_t cp24_to_ms(const uint8_t* p, int64_t ref_ms, uint8_t* flags) noexcept nogil:
    """CP24Time2a (ms within the minute, minutes) placed by :func:`cp24_place`."""
    cdef int ms = rd_u16(p)
    cdef int minute = p[2] & 0x3F
    flags[0] = (TF_IV if p[2] & 0x80 else 0) | (TF_GEN if p[2] & 0x40 else 0)
    if minute > 59 or ms > 59999:
        flags[0] |= TF_IV
        return NO_TIME
    return cp24_place(minute * MS_PER_MIN + ms, ref_ms)
