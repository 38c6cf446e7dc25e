# cython: language_level=3
"""The latest-value table: one row per (station, CA, IOA, type family), updated from a
whole decoded batch in one call.

Rows live in growable numpy columns (what Polars reads without copying); an open-addressing
hash table maps a 64-bit key to a row:

    key = station (16 bits) | CA (16) | IOA (24) | family (8)

so a master holds up to 65,536 sessions. Only monitor-direction types (1..44) enter the
table: the mirrors of commands and system ASDUs are answers, not process values.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, free

import numpy as np

from apdu cimport point_t, type_family

cdef extern from *:
    void prefetch "__builtin_prefetch" (const void* p) noexcept nogil

cdef enum:
    AHEAD = 8               # rows ahead whose hash slot is fetched while this one is written

cdef uint64_t EMPTY = <uint64_t>0xFFFFFFFFFFFFFFFFULL

cdef struct slot_t:
    uint64_t key            # key and row side by side: one cache line per probe
    int64_t row

_COLUMNS = [("station", np.uint32), ("ca", np.uint16), ("ioa", np.uint32),
            ("family", np.uint8), ("type_id", np.uint8), ("value", np.float64),
            ("quality", np.uint8), ("time", np.int64), ("time_flags", np.uint8),
            ("extra", np.int32), ("cot", np.uint8), ("recv_ns", np.int64),
            ("updates", np.uint32)]


cdef inline uint64_t make_key(uint32_t station, uint16_t ca, uint32_t ioa, uint8_t family) noexcept nogil:
    return (<uint64_t>(station & 0xFFFF) << 48) | (<uint64_t>ca << 32) \
        | (<uint64_t>(ioa & 0xFFFFFF) << 8) | family


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    # splitmix64 finaliser: IOAs are dense and sequential, the slots must not be
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cdef class LatestTable:
    """Latest value per (station, CA, IOA, type family); see the module docstring."""

    cdef slot_t* slots
    cdef Py_ssize_t mask
    cdef public Py_ssize_t n
    cdef Py_ssize_t cap
    cdef dict cols
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

    def __cinit__(self, Py_ssize_t capacity=1024):
        self.slots = NULL

    def __init__(self, Py_ssize_t capacity=1024):
        self.n = 0
        self.cap = max(16, capacity)
        self.cols = {name: np.zeros(self.cap, dt) for name, dt in _COLUMNS}
        self._bind()
        self._rehash(self._slots_for(self.cap))

    def __dealloc__(self):
        free(self.slots)

    cdef Py_ssize_t _slots_for(self, Py_ssize_t rows):
        cdef Py_ssize_t s = 16
        while s < rows * 2:
            s <<= 1
        return s

    cdef void _bind(self):
        cdef uint32_t[::1] a = self.cols["station"]
        self.c_station = &a[0]
        cdef uint16_t[::1] b = self.cols["ca"]
        self.c_ca = &b[0]
        cdef uint32_t[::1] c = self.cols["ioa"]
        self.c_ioa = &c[0]
        cdef uint8_t[::1] d = self.cols["family"]
        self.c_family = &d[0]
        cdef uint8_t[::1] e = self.cols["type_id"]
        self.c_type = &e[0]
        cdef double[::1] f = self.cols["value"]
        self.c_value = &f[0]
        cdef uint8_t[::1] g = self.cols["quality"]
        self.c_quality = &g[0]
        cdef int64_t[::1] h = self.cols["time"]
        self.c_time = &h[0]
        cdef uint8_t[::1] i = self.cols["time_flags"]
        self.c_tflags = &i[0]
        cdef int32_t[::1] j = self.cols["extra"]
        self.c_extra = &j[0]
        cdef uint8_t[::1] k = self.cols["cot"]
        self.c_cot = &k[0]
        cdef int64_t[::1] l = self.cols["recv_ns"]
        self.c_recv = &l[0]
        cdef uint32_t[::1] m = self.cols["updates"]
        self.c_updates = &m[0]

    cdef void _rehash(self, Py_ssize_t nslots):
        free(self.slots)
        self.slots = <slot_t*>malloc(nslots * sizeof(slot_t))
        if self.slots == NULL:
            raise MemoryError()
        cdef Py_ssize_t s, r
        for s in range(nslots):
            self.slots[s].key = EMPTY
        self.mask = nslots - 1
        for r in range(self.n):
            self._insert_slot(make_key(self.c_station[r], self.c_ca[r], self.c_ioa[r],
                                       self.c_family[r]), r)

    cdef inline Py_ssize_t _insert_slot(self, uint64_t key, Py_ssize_t row) noexcept nogil:
        cdef Py_ssize_t s = mix(key) & self.mask
        while self.slots[s].key != EMPTY:
            s = (s + 1) & self.mask
        self.slots[s].key = key
        self.slots[s].row = row
        return s

    cdef inline Py_ssize_t _find(self, uint64_t key) noexcept nogil:
        cdef Py_ssize_t s = mix(key) & self.mask
        while self.slots[s].key != EMPTY:
            if self.slots[s].key == key:
                return self.slots[s].row
            s = (s + 1) & self.mask
        return -1

    cdef void _grow(self):
        self.cap *= 2
        for name in self.cols:
            self.cols[name] = np.resize(self.cols[name], self.cap)
        self._bind()
        self._rehash(self._slots_for(self.cap))

    def __len__(self):
        return self.n

    def update(self, points) -> int:
        """Apply a POINT_DTYPE batch in order; returns the number of new rows."""
        if len(points) == 0:
            return 0
        cdef const point_t[::1] pv = np.ascontiguousarray(points)
        cdef Py_ssize_t i = 0, total = pv.shape[0], row, added = 0
        cdef const point_t* p
        cdef const point_t* q
        cdef uint64_t key
        cdef uint8_t fam
        while i < total:
            with nogil:
                while i < total:
                    p = &pv[i]
                    if i + AHEAD < total:       # the probe is a cache miss: start it early
                        q = &pv[i + AHEAD]
                        prefetch(&self.slots[mix(make_key(q.station, q.ca, q.ioa,
                                                          <uint8_t>type_family(q.type_id))) & self.mask])
                    if p.type_id == 0 or p.type_id > 44:
                        i += 1
                        continue
                    fam = <uint8_t>type_family(p.type_id)
                    key = make_key(p.station, p.ca, p.ioa, fam)
                    row = self._find(key)
                    if row < 0:
                        if self.n >= self.cap:
                            break                   # grow with the GIL, then go on
                        row = self.n
                        self.n += 1
                        added += 1
                        self._insert_slot(key, row)
                        self.c_station[row] = p.station
                        self.c_ca[row] = p.ca
                        self.c_ioa[row] = p.ioa
                        self.c_family[row] = fam
                        self.c_updates[row] = 0
                    self.c_type[row] = p.type_id
                    self.c_value[row] = p.value
                    self.c_quality[row] = p.quality
                    self.c_time[row] = p.time
                    self.c_tflags[row] = p.time_flags
                    self.c_extra[row] = p.extra
                    self.c_cot[row] = p.cot
                    self.c_recv[row] = p.recv_ns
                    self.c_updates[row] += 1
                    i += 1
            if i < total:
                self._grow()
        return added

    def lookup(self, station, ca, ioa, family) -> int:
        """Row of a key, or -1."""
        return self._find(make_key(station, ca, ioa, family))

    def columns(self) -> dict:
        """Views of the columns, trimmed to the rows in use (valid until the next update)."""
        return {name: col[:self.n] for name, col in self.cols.items()}

    def count_by_station(self):
        """Rows per station index (array indexed by station)."""
        return np.bincount(self.cols["station"][:self.n])

    def count_by_device(self) -> dict:
        """{(station, ca): rows}."""
        if self.n == 0:
            return {}
        key = (self.cols["station"][:self.n].astype(np.uint64) << 16) | self.cols["ca"][:self.n]
        uniq, counts = np.unique(key, return_counts=True)
        return {(int(k >> 16), int(k & 0xFFFF)): int(c) for k, c in zip(uniq, counts)}
