# cython: language_level=3
"""The latest-value table and the event log's ring, updated from a whole decoded batch in
one call (from Python, or in C by the link core: see ext/iec104/_store.pxd).

Table rows live in growable numpy columns (what Polars reads without copying); an
open-addressing hash table maps a key to a row:

    station (32 bits, its own slot field) + CA (16) | IOA (24) | family (8)

so station indexes never wrap. Only monitor-direction types (1..44) enter the table: the
mirrors of commands and system ASDUs are answers, not process values. A cap on the rows of
one station (``max_rows_per_station``) refuses new keys beyond it and counts them, so that
a peer inventing addresses cannot grow the table without bound.
"""
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy, memset

import numpy as np

from apdu cimport data_of, empty_rows, point_t, type_family
from iec104.types import POINT_DTYPE

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <xmmintrin.h>
    #define iec104_prefetch(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
    #else
    #define iec104_prefetch(p) __builtin_prefetch(p)
    #endif
    """
    void prefetch "iec104_prefetch" (const void* p) noexcept nogil

cdef enum:
    AHEAD = 8               # rows ahead whose hash slot is fetched while this one is written
    NOGIL_ROWS = 256        # batches of at least this many rows are applied without the GIL

_COLUMNS = [("station", np.uint32), ("ca", np.uint16), ("ioa", np.uint32),
            ("family", np.uint8), ("type_id", np.uint8), ("value", np.float64),
            ("quality", np.uint8), ("time", np.int64), ("time_flags", np.uint8),
            ("extra", np.int32), ("cot", np.uint8), ("recv_ns", np.int64),
            ("updates", np.uint32)]


cdef object _point_rows(points):
    """``points`` as a C-contiguous POINT_DTYPE array (what the C loops read)."""
    if points.dtype != POINT_DTYPE:
        raise TypeError(f"rows of POINT_DTYPE expected, got {points.dtype}")
    return np.ascontiguousarray(points)


cdef inline uint64_t make_key(uint16_t ca, uint32_t ioa, uint8_t family) noexcept nogil:
    return (<uint64_t>ca << 32) | (<uint64_t>(ioa & 0xFFFFFF) << 8) | family


cdef inline uint64_t mix(uint64_t x, uint32_t station) noexcept nogil:
    # splitmix64 finaliser: IOAs are dense and sequential, the slots must not be
    x ^= <uint64_t>station * <uint64_t>0x9E3779B97F4A7C15ULL
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cdef class LatestTable:
    """Latest value per (station, CA, IOA, type family); see the module docstring."""

    def __cinit__(self, Py_ssize_t capacity=1024):
        self.slots = NULL
        self.per_station = NULL

    def __init__(self, Py_ssize_t capacity=1024):
        self.n = 0
        self.cap = max(16, capacity)
        self.cols = {name: np.zeros(self.cap, dt) for name, dt in _COLUMNS}
        self._bind()
        self._rehash(self._slots_for(self.cap))

    def __dealloc__(self):
        free(self.slots)
        free(self.per_station)

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

    cdef int _rehash(self, Py_ssize_t nslots) except -1:
        cdef slot_t* slots = <slot_t*>malloc(nslots * sizeof(slot_t))
        if slots == NULL:
            raise MemoryError()
        free(self.slots)
        self.slots = slots
        cdef Py_ssize_t s, r
        for s in range(nslots):
            self.slots[s].row = -1
        self.mask = nslots - 1
        for r in range(self.n):
            self._insert_slot(make_key(self.c_ca[r], self.c_ioa[r], self.c_family[r]),
                              self.c_station[r], r)
        return 0

    cdef inline Py_ssize_t _insert_slot(self, uint64_t key, uint32_t station, Py_ssize_t row) noexcept nogil:
        cdef Py_ssize_t s = mix(key, station) & self.mask
        while self.slots[s].row >= 0:
            s = (s + 1) & self.mask
        self.slots[s].key = key
        self.slots[s].station = station
        self.slots[s].row = <int32_t>row
        return s

    cdef inline Py_ssize_t _find(self, uint64_t key, uint32_t station) noexcept nogil:
        cdef Py_ssize_t s = mix(key, station) & self.mask
        while self.slots[s].row >= 0:
            if self.slots[s].key == key and self.slots[s].station == station:
                return self.slots[s].row
            s = (s + 1) & self.mask
        return -1

    cdef int _grow(self) except -1:
        self.cap *= 2
        for name in self.cols:
            col = np.zeros(self.cap, self.cols[name].dtype)
            col[:self.n] = self.cols[name][:self.n]
            self.cols[name] = col
        self._bind()
        self._rehash(self._slots_for(self.cap))
        return 0

    cdef int _count_station(self, uint32_t station) except -1:
        """Make room in the rows-per-station counts for ``station``."""
        cdef Py_ssize_t n = max(16, self.n_stations)
        while n <= station:
            n *= 2
        cdef station_t* grown = <station_t*>realloc(self.per_station, n * sizeof(station_t))
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.n_stations, 0, (n - self.n_stations) * sizeof(station_t))
        self.per_station = grown
        self.n_stations = n
        return 0

    def __len__(self):
        return self.n

    def update(self, points) -> int:
        """Apply a POINT_DTYPE batch in order; returns the number of new rows."""
        if len(points) == 0:
            return 0
        points = _point_rows(points)
        return self.update_c(<point_t*>data_of(points, False), len(points))

    cdef Py_ssize_t update_c(self, const point_t* pv, Py_ssize_t total) except -1:
        """Apply ``total`` rows in order; returns the number of new rows. Without the GIL
        for large batches only: a trickle read's 1-3 rows cost less than releasing it."""
        cdef Py_ssize_t i = 0, added = 0
        while i < total:
            if total - i >= NOGIL_ROWS:
                with nogil:
                    i = self._apply(pv, i, total, &added)
            else:
                i = self._apply(pv, i, total, &added)
            if i < total:                       # grow with the GIL, then go on
                if pv[i].station >= self.n_stations:
                    self._count_station(pv[i].station)
                else:
                    self._grow()
        return added

    cdef Py_ssize_t _apply(self, const point_t* pv, Py_ssize_t i, Py_ssize_t total,
                           Py_ssize_t* added) noexcept nogil:
        """Rows from ``i`` until the end or one that needs the table or the station counts
        grown; returns where it stopped."""
        cdef Py_ssize_t row
        cdef station_t* st
        cdef const point_t* p
        cdef const point_t* q
        cdef uint64_t key
        cdef uint8_t fam
        while i < total:
            p = pv + i
            if i + AHEAD < total:               # the probe is a cache miss: start it early
                q = pv + i + AHEAD
                prefetch(&self.slots[mix(make_key(q.ca, q.ioa, <uint8_t>type_family(q.type_id)),
                                         q.station) & self.mask])
            if p.type_id == 0 or p.type_id > 44 or p.ioa > 0xFFFFFF:
                i += 1                          # not process data, or not an IOA of the wire
                continue
            fam = <uint8_t>type_family(p.type_id)
            key = make_key(p.ca, p.ioa, fam)
            row = self._find(key, p.station)
            if row < 0:
                if self.n >= self.cap or p.station >= self.n_stations:
                    return i
                st = self.per_station + p.station
                if st.cap and st.rows >= st.cap:
                    self.refused += 1           # a new key beyond the station's cap
                    i += 1
                    continue
                row = self.n
                self.n += 1
                added[0] += 1
                st.rows += 1
                self._insert_slot(key, p.station, row)
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
        return i

    def rows_of(self, Py_ssize_t station) -> int:
        """Rows held for one station index."""
        return self.per_station[station].rows if 0 <= station < self.n_stations else 0

    def set_cap(self, uint32_t station, uint32_t cap) -> None:
        """At most ``cap`` rows for ``station`` (0: no cap); new keys beyond it are refused
        and counted in ``refused``."""
        if station >= self.n_stations:
            self._count_station(station)
        self.per_station[station].cap = cap

    def lookup(self, station, ca, ioa, family) -> int:
        """Row of a key, or -1."""
        return self._find(make_key(ca, ioa, family), station)

    def columns(self) -> dict:
        """Views of the columns, trimmed to the rows in use (valid until the next update)."""
        return {name: col[:self.n] for name, col in self.cols.items()}

    def snapshot(self) -> dict:
        """Copies of the columns: they never change after return."""
        return {name: col[:self.n].copy() for name, col in self.cols.items()}

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


cdef class EventRing:
    """The event log's ring of POINT_DTYPE rows, appended to in C.

    ``hold`` is the oldest absolute row a lossless reader has not taken yet (-1: no such
    reader). An append that would overwrite it grows the ring instead (counted in
    ``grown``): sessions pause reading at the high-water mark and bound each read to the
    room left, so this is a safety net, never the way it works. ``first`` is the oldest
    absolute row still in the ring: rows [first, total) are what a reader can take.
    """

    def __init__(self, int64_t capacity):
        self.capacity = max(capacity, 1)
        self._waiters = []
        self._ring = np.zeros(self.capacity, POINT_DTYPE)
        self._bind()
        self.total = 0
        self.first = 0
        self.hold = -1
        self.high = self.capacity

    cdef _bind(self):
        self.p = <point_t*>data_of(self._ring)

    @property
    def ring(self):
        return self._ring

    def room(self) -> int:
        """Rows that may be appended without overwriting what a lossless reader needs."""
        return self.capacity if self.hold < 0 else self.capacity - (self.total - self.hold)

    cdef int _grow_for(self, int64_t n) except -1:
        cdef int64_t keep = self.total - self.hold, cap = self.capacity, start = self.first
        while cap - keep < n:
            cap *= 2
        new = np.zeros(cap, POINT_DTYPE)
        # every row still in the ring, not only the held ones: a lossy reader behind the
        # lossless one reads them too; in order, at their positions modulo the new capacity
        old = self.slice(start, self.total)
        cdef int64_t rows = self.total - start, s = start % cap
        first = min(rows, cap - s)
        new[s:s + first] = old[:first]
        if first < rows:
            new[:rows - first] = old[first:]
        self._ring = new
        self.capacity = cap
        self._bind()
        self.grown += 1
        return 0

    cdef int append_c(self, const point_t* pv, int64_t n) except -1:
        if n <= 0:
            return 0
        if self.hold >= 0 and self.total + n - self.hold > self.capacity:
            self._grow_for(n)
        cdef int64_t cap = self.capacity, skip = 0, start, first
        if n > cap:                             # only the newest rows fit
            skip = n - cap
            self.total += skip
            pv += skip
            n = cap
        start = self.total % cap
        first = min(n, cap - start)
        memcpy(self.p + start, pv, first * sizeof(point_t))
        if first < n:
            memcpy(self.p, pv + first, (n - first) * sizeof(point_t))
        self.total += n
        # not total - capacity after a growth: the positions below what was copied are empty
        self.first = max(self.first, self.total - cap)
        return 0

    def append(self, points) -> None:
        if len(points) == 0:
            return
        points = _point_rows(points)
        self.append_c(<point_t*>data_of(points, False), len(points))

    def slice(self, int64_t start, int64_t end):
        """Rows [start, end) by absolute position (a copy; they must still be held)."""
        cdef int64_t n = end - start, cap = self.capacity, s, first
        out = empty_rows(POINT_DTYPE, max(n, 0))
        if n <= 0:
            return out
        # memcpy: numpy copies a packed structured array field by field (~0.5 GB/s)
        cdef point_t* v = <point_t*>data_of(out)
        s = start % cap
        first = min(n, cap - s)
        memcpy(v, self.p + s, first * sizeof(point_t))
        if first < n:
            memcpy(v + first, self.p, (n - first) * sizeof(point_t))
        return out

    # ---- the readers that wait for rows (EventLog.wait) ---------------------------------------

    def add_waiter(self, fut, double linger):
        """A reader waits for rows: ``fut`` is set once rows came and ``linger`` s passed
        since the first of them (handed over by the first read from then on, or by a timer at
        twice ``linger`` if none follows); 0 wakes it at the next rows. No timer per batch:
        that was a wake-up of the loop per batch (100 RTUs at 1,000 APDUs/s: 53 us of master
        CPU per APDU with it, 43-46 without)."""
        w = Waiter(fut, linger)
        self._waiters.append(w)
        # the link core says when rows arrive: the next ones, which start this wait's linger
        self.notify, self.wake_at = True, 0.0
        return w

    def remove_waiter(self, Waiter w):
        """The wait ended (woken, timed out or cancelled)."""
        w.cancel_timer()
        if w in self._waiters:
            self._waiters.remove(w)
            if not self._waiters:
                self.notify = False

    @property
    def waiters(self) -> int:
        return len(self._waiters)

    cpdef int wake(self) except -1:
        """Rows arrived (the link core calls it once the loop time reaches ``wake_at``):
        wake the readers that are due, start the linger of those that see their first rows.
        In C: with RTUs that send now and then, this runs twice per reader batch."""
        cdef Waiter w
        cdef double now, wake_at = 0.0
        cdef list waiting = []
        for w in self._waiters:
            if w.fut.done():
                continue
            now = w.loop.time()
            if not w.lingering and w.linger > 0:    # its first rows: the batch fills meanwhile
                w.lingering, w.due = True, now + w.linger
                w.timer = w.loop.call_later(2 * w.linger, w.wake)
            elif not w.lingering or now >= w.due:
                w.wake()
                continue
            waiting.append(w)
            if wake_at == 0.0 or w.due < wake_at:
                wake_at = w.due
        self._waiters = waiting
        self.notify, self.wake_at = len(waiting) > 0, wake_at
        return 0


cdef class Waiter:
    """One reader's wait (see EventRing.add_waiter)."""

    def __init__(self, fut, double linger):
        self.fut, self.loop, self.linger = fut, fut.get_loop(), linger
        self.timer = None

    cdef cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def wake(self):
        self.cancel_timer()
        if not self.fut.done():
            self.fut.set_result(None)
