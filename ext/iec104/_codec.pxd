# Header of the decoder's classes, for the extensions that decode in C (the link core).
# Named by its module (iec104._codec) so that a cimport finds the module at run time.
from libc.stdint cimport uint8_t, uint32_t, int64_t, uint64_t

from apdu cimport point_t, frame_t


cdef struct ctx_t:
    int cot_size
    int ca_size
    int ioa_size
    uint32_t station
    int64_t std_offset_ms     # local standard time - UTC
    int64_t dst_offset_ms     # added when a CP56 has SU set
    int64_t now_offset_ms     # offset in force now, for CP24 resolution
    int64_t recv_ns
    int64_t ref_local_ms      # receive time as local wall clock, for CP24
    uint32_t date_key         # the last CP56 date seen and its day number (a cache)
    int64_t date_days


cdef class Workspace:
    cdef object _points
    cdef object _frames
    cdef point_t* p
    cdef frame_t* f
    cdef Py_ssize_t pcap
    cdef Py_ssize_t fcap
    cdef _bind(self)
    cdef int _grow(self, Py_ssize_t keep_frames, Py_ssize_t keep_points, bint frames, bint points) except -1


cdef class Decoder:
    cdef ctx_t ctx
    cdef readonly Workspace workspace
    cdef object _tz
    cdef double _tz_checked
    cdef public Py_ssize_t n_points
    cdef public Py_ssize_t n_frames
    cdef public uint64_t total_frames
    cdef public uint64_t total_points
    cdef public uint64_t bad_frames
    cdef public object status_counts
    cdef void _set_clock(self, int64_t recv_ns)
    cdef Py_ssize_t feed_c(self, const uint8_t* base, Py_ssize_t n, int64_t recv_ns, bint final) except -1
