"""The store: latest values (a Cython table) and the event log of every object received.

The event log is a ring of POINT_DTYPE rows (``EventRing``, appended to in C by the link
core). Each consumer reads it from its own cursor; a consumer that falls behind by more than
the ring loses the oldest rows, and that loss is counted (``Consumer.lost``,
``EventStream.lost``, ``EventLog.lost``), never hidden. A *lossless* consumer
(``events(lossless=True)``, the Parquet sink) loses nothing whatever the capacity: the ring
never overwrites a row it has not taken (``EventRing.hold``), each read from a socket is
bounded to the room left, and the store asks sessions to pause reading when its backlog
passes the high-water mark and to resume at the low-water mark: TCP then pushes back on
the RTUs, which is what k/w flow control is for.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import polars as pl

from iec104._store import EventRing, LatestTable
from iec104.export import rotation_name, write_table
from iec104.settings import (
    check_flush_interval, check_linger, check_max_rows, check_rotate_rows,
)
from iec104.types import NO_TIME, TypeID

__all__ = ["Store", "EventLog", "Consumer", "EventStream", "ParquetSink", "points_frame",
           "rows_frame"]

log = logging.getLogger("iec104.store")
RETRY_MAX = 10.0
"""The longest wait (s) between a failed write of :class:`ParquetSink` and the next try (the
sessions may be paused meanwhile: it bounds how long they stay so once the disk has room)."""
_TYPE_NAMES = {int(t): t.name for t in TypeID}


def _time_column(values: np.ndarray, unit: Literal["ms", "ns"]) -> pl.Series:
    s = pl.Series(values)
    s = s.set(s == NO_TIME, None) if unit == "ms" else s
    return s.cast(pl.Datetime(unit)).dt.replace_time_zone("UTC")


def rows_frame(rows: np.ndarray) -> pl.DataFrame:
    """:func:`points_frame` of POINT_DTYPE rows (the event log's, a decoded batch)."""
    return points_frame({k: rows[k] for k in rows.dtype.names or ()})


def points_frame(cols: Mapping[str, np.ndarray]) -> pl.DataFrame:
    """A Polars frame of store/event columns: times as UTC datetimes, type names, flags."""
    tf = cols["time_flags"]
    type_id = cols["type_id"]
    frame: dict[str, np.ndarray | pl.Series] = {k: cols[k] for k in ("station", "ca", "ioa")
                                                if k in cols}
    if "family" in cols:
        frame["family"] = cols["family"]
    frame.update({
        "type_id": type_id,
        "type": pl.Series(type_id).replace_strict(_TYPE_NAMES, default=None, return_dtype=pl.String),
        "value": cols["value"], "quality": cols["quality"],
        "time": _time_column(cols["time"], "ms"),
        "time_invalid": (tf & 0x01).astype(bool), "summer_time": (tf & 0x02).astype(bool),
        "extra": cols["extra"], "cot": cols["cot"],
    })
    for k in ("flags", "originator"):
        if k in cols:
            frame[k] = cols[k]
    frame["recv_time"] = _time_column(cols["recv_ns"], "ns")
    if "updates" in cols:
        frame["updates"] = cols["updates"]
    return pl.DataFrame(frame)


class Consumer:
    """One reader of the event log: its cursor, its losses, whether it holds the store back."""

    def __init__(self, log_: "EventLog", lossless: bool):
        self.log = log_
        self.cursor = log_.total
        self.lost = 0
        self.lossless = lossless

    @property
    def backlog(self) -> int:
        return self.log.total - self.cursor

    def take(self, max_rows: int | None = None) -> np.ndarray:
        """Everything appended since the last take (copied), counting rows lost to overrun."""
        lg = self.log
        ring = lg.ring
        oldest = ring.first
        if self.cursor < oldest:
            lost = oldest - self.cursor
            self.lost += lost
            lg.lost += lost
            log.warning("event consumer fell behind: %d rows lost", lost)
            self.cursor = oldest
        end = ring.total if max_rows is None else min(ring.total, self.cursor + max_rows)
        out = ring.slice(self.cursor, end)
        self.cursor = end
        if self.lossless:                       # a lossy reader neither holds nor resumes
            lg.consumed(self)
        return out

    def close(self) -> None:
        self.log.consumers.discard(self)
        self.log.consumed(self)


class EventLog:
    """A bounded ring of every row received, read by any number of consumers."""

    def __init__(self, capacity: int = 1_000_000, *, high_water: float = 0.75,
                 low_water: float = 0.25):
        self.ring = EventRing(capacity)
        self.ring.high = max(1, int(capacity * high_water))
        # resumed at a backlog <= low, paused at >= high: low < high, or it would oscillate
        self.low = max(0, min(int(capacity * low_water), self.ring.high - 1))
        self.consumers: set[Consumer] = set()
        self.paused = False
        self.lost = 0                           # rows lost by lossy consumers, all told
        self.on_pause: list[Callable[[], None]] = []
        self.on_resume: list[Callable[[], None]] = []
        self.closed = False
        self._waits: set[asyncio.Future[None]] = set()   # what close() wakes

    @property
    def capacity(self) -> int:
        return self.ring.capacity

    @property
    def total(self) -> int:
        """Rows ever appended."""
        return self.ring.total

    def append(self, points: np.ndarray) -> None:
        """Append rows from Python (sessions append and wake the readers in C)."""
        if len(points):
            self.ring.append(points)
            self.appended()

    def appended(self) -> None:
        """Rows arrived from Python: wake the readers that are due (``EventRing.wake``,
        which the link core calls itself for its rows: Batch.WAKE), pause the sessions past
        the high-water mark (Batch.PAUSE)."""
        ring = self.ring
        ring.wake()
        if not self.paused and ring.hold >= 0 and ring.total - ring.hold >= ring.high:
            self.paused = True
            for cb in self.on_pause:
                cb()

    def _lossless_backlog(self) -> int:
        return max((c.backlog for c in self.consumers if c.lossless), default=0)

    def consumed(self, consumer: Consumer) -> None:
        held = [c.cursor for c in self.consumers if c.lossless]
        self.ring.hold = min(held) if held else -1
        # <=, not <: a low of 0 (a small log) resumes once the readers caught up, and with
        # no lossless reader left the backlog is 0
        if self.paused and self._lossless_backlog() <= self.low:
            self.paused = False
            for cb in self.on_resume:
                cb()

    def slice(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) by absolute position (they must still be in the ring)."""
        return self.ring.slice(start, end)

    def snapshot(self) -> np.ndarray:
        """Every row still held, oldest first."""
        return self.ring.slice(self.ring.first, self.ring.total)

    def consumer(self, *, lossless: bool = False) -> Consumer:
        c = Consumer(self, lossless)
        if self.closed:                         # a reader of a closed log ends at once
            return c
        self.consumers.add(c)
        if lossless:
            self.consumed(c)
        return c

    async def wait(self, timeout: float | None = None, linger: float = 0.0) -> None:
        """Until rows arrive (then ``linger`` s more, see ``EventRing.add_waiter``), or
        ``timeout`` s have passed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = self.ring.add_waiter(fut, linger)
        self._waits.add(fut)
        try:
            if timeout is None:                 # a reader's usual wait: nothing more to set up
                await fut
            else:
                # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that comes
                # together with the result, and the reader would never end
                async with asyncio.timeout(timeout):
                    await fut
        except TimeoutError:
            pass
        finally:
            self.ring.remove_waiter(entry)
            self._waits.discard(fut)

    def close(self) -> None:
        """End every reader: each is closed (none holds the log back any more) and those
        waiting for rows are woken (their ``async for`` ends)."""
        self.closed = True
        for c in list(self.consumers):
            c.close()
        for fut in self._waits:
            if not fut.done():
                fut.set_result(None)


class EventStream:
    """Async iterator of batches of every row received from now on (see
    :meth:`Store.events`); ``lost`` counts the rows this reader lost to overrun (always 0
    when lossless)."""

    def __init__(self, store: "Store", *, as_polars: bool, lossless: bool,
                 max_rows: int | None, idle: float | None, linger: float):
        self._log = store.log
        self._consumer = store.log.consumer(lossless=lossless)
        self._as_polars, self._max_rows, self._idle = as_polars, max_rows, idle
        self._linger = linger

    @property
    def lost(self) -> int:
        return self._consumer.lost

    @property
    def backlog(self) -> int:
        return self._consumer.backlog

    def __aiter__(self) -> "EventStream":
        return self

    # numpy POINT_DTYPE rows, or a Polars frame with as_polars: Any, since which one is the
    # caller's as_polars (a union would make every reader narrow what it asked for)
    async def __anext__(self) -> Any:
        c, lg = self._consumer, self._log
        if c not in lg.consumers:
            raise StopAsyncIteration
        while c.backlog == 0:
            before = lg.total
            await lg.wait(self._idle, self._linger)
            if c not in lg.consumers:           # closed meanwhile (Store.close)
                raise StopAsyncIteration
            if self._idle is not None and lg.total == before:
                self.close()
                raise StopAsyncIteration
        batch = c.take(self._max_rows)
        if self._as_polars:
            return rows_frame(batch)
        return batch

    def close(self) -> None:
        """Stop reading (a lossless reader no longer holds the store back)."""
        self._consumer.close()

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._consumer.close()
        except Exception:
            pass


class Store:
    """Latest values and the event log, updated together from each decoded batch."""

    def __init__(self, *, event_capacity: int = 1_000_000):
        self.table = LatestTable()
        self.log = EventLog(event_capacity)
        self._sinks: list["ParquetSink"] = []

    def update(self, points: np.ndarray) -> None:
        """Apply a batch from Python (sessions update the table and ring in C)."""
        self.table.update(points)
        self.log.append(points)

    def __len__(self) -> int:
        return len(self.table)

    def to_numpy(self) -> dict[str, np.ndarray]:
        return self.table.columns()

    def points(self, *, station: int | None = None) -> pl.DataFrame:
        """The latest-value table as a Polars frame (one row per station, CA, IOA, family),
        a snapshot: later batches never change it."""
        df = points_frame(self.table.snapshot())
        return df if station is None else df.filter(pl.col("station") == station)

    def counts_by_station(self) -> np.ndarray:
        return self.table.count_by_station()

    def counts_by_device(self) -> dict[tuple[int, int], int]:
        return self.table.count_by_device()

    def event_frame(self) -> pl.DataFrame:
        """The event log held in memory, oldest first."""
        snap = self.log.snapshot()
        return rows_frame(snap)

    def events(self, *, as_polars: bool = False, lossless: bool = False,
               max_rows: int | None = None, idle: float | None = None,
               linger: float = 0.005) -> EventStream:
        """Batches of every row received from now on: numpy POINT_DTYPE (or Polars frames).

        ``lossless=True`` loses nothing: the sessions pause reading while this reader is
        behind; otherwise rows overwritten before they were read are counted in the
        stream's ``lost``. ``idle`` ends the iteration after that many seconds without data.
        ``linger`` (s) is how long a batch waits for more rows after its first: with many RTUs
        each sending an object now and then, waking the reader once per row would cost more
        than the rest of the receive path; 0 wakes it for every read. The batch is handed
        over by the first read after that (no wake-up of the loop of its own), or at twice
        ``linger`` when no more rows come. A batch costs about the same however few rows it
        holds: with 100 quiet RTUs (1,000 APDUs/s) the default cost 9-15 us of CPU per APDU,
        0.02 s about 2 (benchmarks/README.md, round 9).
        """
        return EventStream(self, as_polars=as_polars, lossless=lossless,
                           max_rows=check_max_rows(max_rows), idle=idle,
                           linger=check_linger(linger))

    def add_sink(self, sink: "ParquetSink") -> "ParquetSink":
        sink.start(self)
        self._sinks.append(sink)
        return sink

    def close(self) -> None:
        """Close every sink (each writes what it holds), then every reader of the event log;
        the first error of a sink is raised after that, so that one failing sink keeps no
        other from writing."""
        error: BaseException | None = None
        for s in self._sinks:
            try:
                s.close()
            except Exception as e:
                error = error or e
        self._sinks.clear()
        self.log.close()
        if error is not None:
            raise error


class ParquetSink:
    """Writes every row of the event log to rotating Parquet files, each complete on its
    own (written under a temporary name, then renamed), so that a pipeline can pick them up
    while polling goes on. Lossless: a slow disk pauses the sessions instead of losing rows.
    A write that fails (disk full, directory removed) keeps its rows and is tried again,
    backing off from ``flush_interval`` to :data:`RETRY_MAX` s; meanwhile ``error`` holds
    the error (None once a write succeeds again) and ``failures`` counts the failed writes.
    """

    def __init__(self, directory: str | Path, *, prefix: str = "events",
                 rotate_rows: int = 1_000_000, rotate_seconds: float | None = 60.0,
                 flush_interval: float = 1.0):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.rotate_rows = prefix, check_rotate_rows(rotate_rows)
        self.rotate_seconds = rotate_seconds
        self.flush_interval = check_flush_interval(flush_interval)
        self.files: list[Path] = []
        self.rows_written = 0
        self.error: Exception | None = None
        self.failures = 0
        self._tag = os.urandom(4).hex()
        # numpy rows until a file is due, not a Polars frame per read (about 1 ms each)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._opened = time.monotonic()
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, store: Store) -> None:
        self._consumer = store.log.consumer(lossless=True)
        self._task = asyncio.get_running_loop().create_task(self._run(store))

    async def _run(self, store: Store) -> None:
        delay = self.flush_interval
        while True:
            if self.error is None:
                await store.log.wait(self.flush_interval)
            else:                               # not at every row: the disk needs time
                await asyncio.sleep(delay)
            try:
                self._collect()
            except Exception as e:              # OSError, or Polars' own on a full disk
                if self.error is None:          # once per failure, not per retry
                    log.error("event sink %s: %s; its rows are kept and written once it "
                              "can (the sessions pause meanwhile)", self.dir, e)
                    delay = self.flush_interval
                else:
                    delay = min(2 * delay, max(RETRY_MAX, self.flush_interval))
                self.error, self.failures = e, self.failures + 1
            else:
                if self.error is not None:
                    log.warning("event sink %s: writing again after %d failed write(s)",
                                self.dir, self.failures)
                self.error = None

    def _collect(self) -> None:
        if self._consumer is None:              # closed
            return
        if self.error is not None:
            # what failed first, and no more taken until it is written: the rows wait in
            # the event log, whose lossless hold pauses the sessions (memory stays bounded)
            self._flush_due()
        batch = self._consumer.take()
        if len(batch):
            self._pending.append(batch)
            self._pending_rows += len(batch)
        self._flush_due()

    def _flush_due(self) -> None:
        while self._pending_rows >= self.rotate_rows:
            self._write(self.rotate_rows)
        if self._pending_rows and self.rotate_seconds is not None and \
                time.monotonic() - self._opened >= self.rotate_seconds:
            self._write(self._pending_rows)

    def _write(self, n: int) -> None:
        rows = np.concatenate(self._pending)
        name = rotation_name(self.prefix, len(self.files), self._tag, "parquet")
        self.files.append(write_table(rows_frame(rows[:n]), self.dir / name))
        # dropped once in their file: a failed write keeps them for the next try
        self._pending = [rows[n:]] if len(rows) > n else []
        self._pending_rows = len(rows) - n
        self.rows_written += n
        self._opened = time.monotonic()

    def close(self) -> None:
        """Write what is pending and stop (called again, it tries again to write what a
        failed write left)."""
        if self._task is not None:
            self._task.cancel()
        try:
            self._collect()
            if self._pending_rows:
                self._write(self._pending_rows)
        finally:                                # released even when the disk refuses
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
