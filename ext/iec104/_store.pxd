# Header of the store's classes, for the link core that updates them in C.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from apdu cimport point_t


cdef struct slot_t:
    uint64_t key            # CA | IOA | family; key, station and row side by side: one
    uint32_t station        # cache line per probe
    int32_t row             # -1: empty slot


cdef struct station_t:
    uint32_t rows
    uint32_t cap            # 0: no cap


cdef class LatestTable:
    cdef slot_t* slots
    cdef Py_ssize_t mask
    cdef public Py_ssize_t n
    cdef Py_ssize_t cap
    cdef dict cols
    cdef public uint64_t refused            # new keys refused by a station's cap
    cdef station_t* per_station             # rows and cap per station index
    cdef Py_ssize_t n_stations
    # raw pointers into the numpy columns, refreshed when they grow
    cdef uint32_t* c_station
    cdef uint16_t* c_ca
    cdef uint32_t* c_ioa
    cdef uint8_t* c_family
    cdef uint8_t* c_type
    cdef double* c_value
    cdef uint8_t* c_quality
    cdef int64_t* c_time
    cdef uint8_t* c_tflags
    cdef int32_t* c_extra
    cdef uint8_t* c_cot
    cdef int64_t* c_recv
    cdef uint32_t* c_updates
    cdef Py_ssize_t _slots_for(self, Py_ssize_t rows)
    cdef void _bind(self)
    cdef int _rehash(self, Py_ssize_t nslots) except -1
    cdef Py_ssize_t _insert_slot(self, uint64_t key, uint32_t station, Py_ssize_t row) noexcept nogil
    cdef Py_ssize_t _find(self, uint64_t key, uint32_t station) noexcept nogil
    cdef int _grow(self) except -1
    cdef int _count_station(self, uint32_t station) except -1
    cdef Py_ssize_t update_c(self, const point_t* pv, Py_ssize_t total) except -1
    cdef Py_ssize_t _apply(self, const point_t* pv, Py_ssize_t i, Py_ssize_t total,
                           Py_ssize_t* added) noexcept nogil


cdef class EventRing:
    cdef object _ring
    cdef point_t* p
    cdef public int64_t capacity
    cdef public int64_t total              # rows ever appended
    cdef public int64_t first              # oldest row still in the ring (readers start there)
    cdef public int64_t hold               # oldest row a lossless reader still needs (-1: none)
    cdef public int64_t high               # backlog of `hold` at which sessions pause
    cdef public uint64_t grown             # times the ring grew to keep a lossless reader whole
    cdef public bint notify                # a reader waits: tell Python when rows arrive,
    cdef public double wake_at             # at the first read from this loop time on
    cdef list _waiters                     # the readers' Waiters (EventLog.wait)
    cdef _bind(self)
    cdef int _grow_for(self, int64_t n) except -1
    cdef int append_c(self, const point_t* pv, int64_t n) except -1
    cpdef int wake(self) except -1


cdef class Waiter:
    cdef readonly object fut
    cdef object loop, timer
    cdef readonly double linger, due
    cdef readonly bint lingering           # its first rows came: due is set
    cdef cancel_timer(self)
