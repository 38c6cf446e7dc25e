# Declarations shared by the extensions: the packed records that mirror POINT_DTYPE and
# FRAME_DTYPE (src/iec104/types.py), the constants of the standard, and little-endian readers.
# Header only: nothing here needs a module at run time.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int16_t, int32_t, int64_t
from libc.string cimport memcpy
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

cdef packed struct point_t:
    uint32_t station
    uint16_t ca
    uint32_t ioa
    uint8_t type_id
    uint8_t cot
    uint8_t flags
    uint8_t originator
    double value
    uint8_t quality
    int64_t time
    uint8_t time_flags
    int32_t extra
    int64_t recv_ns

cdef packed struct frame_t:
    uint32_t offset
    uint16_t length
    uint8_t format
    uint8_t status
    uint16_t ns
    uint16_t nr
    uint8_t u_function
    uint8_t type_id
    uint8_t sq
    uint8_t count
    uint8_t cot
    uint8_t negative
    uint8_t test
    uint8_t originator
    uint16_t ca
    uint32_t first_point
    uint16_t n_points

cdef enum:
    START = 0x68
    APDU_MAX = 255          # start + length octet + 253
    APCI_LEN = 6
    LEN_MIN = 4
    LEN_MAX = 253
    SEQ_MOD = 32768

cdef enum FrameFormat:
    FORMAT_I = 0
    FORMAT_S = 1
    FORMAT_U = 2

cdef enum FrameStatus:
    ST_OK = 0
    ST_BAD_START = 1
    ST_BAD_LENGTH = 2
    ST_BAD_CONTROL = 3
    ST_SHORT_ASDU = 4
    ST_UNKNOWN_TYPE = 5
    ST_LENGTH_MISMATCH = 6
    ST_EMPTY = 7
    ST_TRUNCATED = 8
    ST_BAD_IOA = 9

cdef enum UFunction:
    U_NONE = 0
    U_STARTDT_ACT = 0x07
    U_STARTDT_CON = 0x0B
    U_STOPDT_ACT = 0x13
    U_STOPDT_CON = 0x23
    U_TESTFR_ACT = 0x43
    U_TESTFR_CON = 0x83

cdef enum PointFlag:
    FLAG_NEGATIVE = 0x01
    FLAG_TEST = 0x02
    FLAG_SQ = 0x04

cdef enum TimeFlag:
    TF_IV = 0x01
    TF_SU = 0x02
    TF_CP24 = 0x04
    TF_GEN = 0x08

cdef extern from *:
    """
    #define IEC104_NO_TIME ((int64_t)(-9223372036854775807LL - 1))
    """
    int64_t NO_TIME "IEC104_NO_TIME"

cdef inline uint16_t rd_u16(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))

cdef inline int16_t rd_i16(const uint8_t* p) noexcept nogil:
    return <int16_t>(p[0] | (p[1] << 8))

cdef inline uint32_t rd_u24(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)

cdef inline uint32_t rd_u32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline float rd_f32(const uint8_t* p) noexcept nogil:
    cdef uint32_t u = rd_u32(p)
    cdef float f
    memcpy(&f, &u, 4)
    return f

cdef inline void wr_u16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF

cdef inline void wr_u24(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF

cdef inline void wr_u32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF

cdef inline void wr_f32(uint8_t* p, float f) noexcept nogil:
    cdef uint32_t u
    memcpy(&u, &f, 4)
    wr_u32(p, u)

# The type families of src/iec104/types.py (family_of), which holds the one table: a family
# is a point's plain type and its time-tagged variants. Written out by tests/test_tables.py,
# which fails, printing this block, when the two differ. 0: the type is its own family.
cdef extern from *:
    """
    static const uint8_t iec104_family[256] = {
        [2] = 1, [4] = 3, [6] = 5, [8] = 7, [10] = 9, [12] = 11, [14] = 13, [16] = 15,
        [21] = 9, [30] = 1, [31] = 3, [32] = 5, [33] = 7, [34] = 9, [35] = 11, [36] = 13,
        [37] = 15, [38] = 17, [39] = 18, [40] = 19, [58] = 45, [59] = 46, [60] = 47, [61] = 48,
        [62] = 49, [63] = 50, [64] = 51, [107] = 104,
    };
    """
    const uint8_t FAMILY "iec104_family"[256]

cdef inline int type_family(int t) noexcept nogil:
    """The family (base type) joining a type and its time-tagged variants."""
    if t < 0 or t > 255 or FAMILY[t] == 0:
        return t
    return FAMILY[t]


cdef inline int element_length(int t) noexcept nogil:
    """Octets of one information element (after the IOA); -1 for a type not of the
    standard, -2 for F_SG_NA_1 whose length is in the element."""
    if t == 1 or t == 3 or t == 45 or t == 46 or t == 47 or t == 70 or t == 100 \
            or t == 101 or t == 105 or t == 113:
        return 1
    if t == 5 or t == 21 or t == 104 or t == 106:
        return 2
    if t == 9 or t == 11 or t == 48 or t == 49 or t == 110 or t == 111:
        return 3
    if t == 2 or t == 4 or t == 51:
        return 4
    if t == 6 or t == 7 or t == 13 or t == 15 or t == 20 or t == 50 or t == 112 or t == 123:
        return 5
    if t == 10 or t == 12 or t == 17 or t == 120:
        return 6
    if t == 18 or t == 19 or t == 103 or t == 121:
        return 7
    if t == 8 or t == 14 or t == 16 or t == 30 or t == 31 or t == 58 or t == 59 or t == 60:
        return 8
    if t == 32 or t == 107:
        return 9
    if t == 34 or t == 35 or t == 38 or t == 61 or t == 62:
        return 10
    if t == 39 or t == 40 or t == 64:
        return 11
    if t == 33 or t == 36 or t == 37 or t == 63:
        return 12
    if t == 126:
        return 13
    if t == 127:
        return 16
    if t == 102:
        return 0
    if t == 122 or t == 124:
        return 4
    if t == 125:
        return -2
    return -1


cdef extern from *:
    """
    #include <time.h>
    /* the wall clock in ns since the epoch: C11 timespec_get (glibc, macOS, MSVC) */
    static int64_t iec104_wall_ns(void) {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    """
    int64_t iec104_wall_ns() nogil


cdef inline int64_t wall_ns() noexcept nogil:
    """The wall clock in ns since the epoch (what time.time_ns() reads), without the GIL."""
    return iec104_wall_ns()


cdef inline void* data_of(object array, bint writable=True) except? NULL:
    """The data pointer of a C-contiguous array (valid while it lives). A typed memoryview
    of a structured dtype checks its format string at every acquisition (microseconds):
    the hot path takes the plain buffer instead."""
    cdef Py_buffer b
    PyObject_GetBuffer(array, &b, PyBUF_SIMPLE | (PyBUF_WRITABLE if writable else 0))
    cdef void* p = b.buf
    PyBuffer_Release(&b)
    return p


cdef extern from *:
    """
    /* numpy.frombuffer, looked up once per extension module (empty_rows) */
    static PyObject* iec104_frombuffer = NULL;
    """
    PyObject* iec104_frombuffer


cdef inline object empty_rows(object dtype, Py_ssize_t n):
    """``n`` rows of a structured dtype (POINT_DTYPE, FRAME_DTYPE), not initialised, over a
    bytearray: numpy 2's ``np.empty(n, dtype)`` builds and frees a zero-fill traversal of
    every field on each call (2x the time hot), and with cold caches (a reader's ``take``
    after a wake-up) every import, attribute lookup and numpy call here costs microseconds:
    one call of a cached ``frombuffer`` remains."""
    global iec104_frombuffer
    if iec104_frombuffer == NULL:
        import numpy
        fb = numpy.frombuffer
        Py_INCREF(fb)
        iec104_frombuffer = <PyObject*>fb
    return (<object>iec104_frombuffer)(
        PyByteArray_FromStringAndSize(NULL, n * dtype.itemsize), dtype)
