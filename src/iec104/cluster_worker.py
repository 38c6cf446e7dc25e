"""One worker of a :class:`iec104.cluster.Cluster`: a Ray actor that runs one Master.

The Master lives on its own uvloop event loop in a thread of the actor's process: Ray runs the
actor's methods on its own loop, and each method hands its work to the Master's loop, so the
RTUs' I/O never waits on Ray's bookkeeping. The worker keeps no state a restart must
recover: the Cluster (the driver) holds the placement and the point lists, and a mirror of
what each RTU has in doubt (reported at every heartbeat), and sends them again to a worker
that Ray restarted.

Tables leave the worker as Arrow tables (Ray puts them in its object store, buffers and all)
with the fleet's station numbers: each Master numbers its own sessions from 0, the worker
maps them to the station the Cluster gave the RTU, and adds its own index (``worker``).
"""
from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Callable, Coroutine, TypeVar

import polars as pl
import pyarrow as pa

from iec104.errors import IEC104Error, NotConnected
from iec104.master import Master
from iec104.redundancy import RedundancyGroup
from iec104.requests import DoubtRecord
from iec104.session import Session
from iec104.store import EventStream

__all__ = ["Worker", "Raised"]

T = TypeVar("T")


class Raised:
    """A library error carried back to the driver as a value, so that the caller gets it as
    it was raised (an exception out of an actor reaches it wrapped in a RayTaskError); the
    errors pickle with their fields (IEC104Error.__reduce__)."""

    def __init__(self, error: BaseException):
        self._error = error

    def error(self) -> BaseException:
        return self._error


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Worker:
    """The actor's class (made a Ray actor by the Cluster, ``ray.remote(Worker)``)."""

    def __init__(self, index: int, defaults: dict[str, Any], event_capacity: int,
                 coalesce: float = 0.0):
        self.index = index
        self.incarnation = uuid.uuid4().hex     # new on every (re)start: how the driver tells
        self.loop = _new_loop()
        threading.Thread(target=self.loop.run_forever, name=f"iec104-worker-{index}",
                         daemon=True).start()
        self.master: Master = asyncio.run_coroutine_threadsafe(
            self._master(defaults, event_capacity, coalesce), self.loop).result()
        self.sessions: dict[int, Session | RedundancyGroup] = {}  # the fleet's station -> its session here
        self.lists: list[tuple[int | None, pl.DataFrame]] = []
        self.version = 0
        self.streams: dict[str, EventStream] = {}

    @staticmethod
    async def _master(defaults: dict[str, Any], event_capacity: int, coalesce: float) -> Master:
        return Master(event_capacity=event_capacity, coalesce=coalesce, **defaults)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T | Raised:
        """Run on the Master's loop; a library error comes back as a value (see Raised)."""
        try:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))
        except IEC104Error as e:
            return Raised(e)

    async def _do(self, fn: Callable[..., T], *args: Any) -> T | Raised:
        """A plain function of the Master's state, run on its loop (it is no thread-safe)."""
        async def call() -> T:
            return fn(*args)
        return await self._run(call())

    # ---- sessions ------------------------------------------------------------------------

    async def hello(self) -> dict[str, Any] | Raised:
        """The heartbeat: who this incarnation is, every session's status, the row count and
        what each RTU has in doubt (Session.doubt_records), by fleet station: only those
        with something in doubt (thousands of RTUs, few in doubt)."""
        return await self._do(self._hello)

    def _hello(self) -> dict[str, Any]:
        return {"incarnation": self.incarnation, "rows": len(self.master),
                "status": [self._status(st, s) for st, s in self.sessions.items()],
                "doubts": {st: d for st, s in self.sessions.items() if (d := s.doubt_records())}}

    def _status(self, station: int, s: Session | RedundancyGroup) -> dict[str, Any]:
        return {**s.status(), "station": station, "worker": self.index}

    async def connect(self, station: int, host: str, port: int, name: str,
                      settings: dict[str, Any],
                      doubts: list[DoubtRecord] | None = None) -> dict[str, Any] | Raised:
        """Open the RTU's session; ``doubts``: what it had in doubt on an earlier incarnation."""
        return await self._run(self._connect(station, host, port, name, settings, doubts or []))

    async def _connect(self, station: int, host: str, port: int, name: str,
                       settings: dict[str, Any], doubts: list[DoubtRecord]) -> dict[str, Any]:
        s = self.sessions.get(station)
        if s is None:                           # (else a retried connect: its answer was lost)
            s = await self.master.connect(host, port, name=name, **settings)
            self.sessions[station] = s
            self._apply_lists()
        # before this call returns: no command reaches the RTU before its records are back
        s.restore_doubt(doubts)
        return self._status(station, s)

    async def interrogate(self, stations: list[int],
                          timeout: float | None) -> dict[str, int | Raised] | Raised:
        """GI of the given stations at once: name -> objects received, or Raised."""
        return await self._run(self._interrogate(stations, timeout))

    async def _interrogate(self, stations: list[int],
                           timeout: float | None) -> dict[str, int | Raised]:
        chosen = [self._session(st) for st in stations]
        res = await asyncio.gather(*(s.interrogate(timeout=timeout) for s in chosen),
                                   return_exceptions=True)
        return {s.name: Raised(r) if isinstance(r, BaseException) else r
                for s, r in zip(chosen, res)}

    async def command(self, station: int, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        return await self._run(self._command(station, args, options))

    async def _command(self, station: int, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        return await self._session(station).command(*args, **options)

    def _session(self, station: int) -> Session | RedundancyGroup:
        s = self.sessions.get(station)
        if s is None:       # a restart the driver has not seen yet: the RTU is not back here
            raise NotConnected(f"station {station} is not on worker {self.index} "
                               f"(incarnation {self.incarnation[:8]}): not sent")
        return s

    async def clear_doubt(self, station: int, ca: int | None, ioa: int | None) -> Any:
        s = self.sessions.get(station)          # none: a restart whose RTU is not back yet
        return await self._do(s.clear_doubt if s is not None else lambda *_: [], ca, ioa)

    # ---- point lists ---------------------------------------------------------------------

    async def set_lists(self, version: int, lists: list[tuple[int | None, Any]]) -> None:
        """The fleet's point lists (station None: for every station), as references to the
        object store: fetched once per worker, put in force for the sessions here, unless
        a later version overtook this call."""
        frames = await asyncio.gather(*(ref for _, ref in lists))
        await self._do(self._set_lists, version, [(st, df) for (st, _), df in zip(lists, frames)])

    def _set_lists(self, version: int, lists: list[tuple[int | None, pl.DataFrame]]) -> None:
        if version >= self.version:
            self.version, self.lists = version, lists
            self._apply_lists()

    def _apply_lists(self) -> None:
        # fleet stations in the lists become this Master's; rows for RTUs elsewhere are dropped
        local = {st: s.station for st, s in self.sessions.items()}
        lists: dict[int | None, pl.DataFrame] = {}
        for st, df in self.lists:
            if st is not None and st not in local:
                continue
            df = df.filter(pl.col("station").is_null() | pl.col("station").is_in(list(local)))
            df = df.with_columns(pl.col("station").replace_strict(
                local, default=None, return_dtype=pl.UInt32))
            key = None if st is None else local[st]
            lists[key] = pl.concat([lists[key], df], how="diagonal_relaxed") if key in lists else df
        self.master.catalog.lists = lists

    # ---- tables --------------------------------------------------------------------------

    def _fleet(self, df: pl.DataFrame) -> pa.Table:
        fleet = {s.station: st for st, s in self.sessions.items()}
        df = df.with_columns(pl.col("station").replace_strict(fleet, default=None,
                                                               return_dtype=pl.UInt32))
        return df.insert_column(df.columns.index("session") + 1,
                                pl.lit(self.index, pl.UInt32).alias("worker")).to_arrow()

    async def points(self) -> pa.Table | Raised:
        return await self._do(lambda: self._fleet(self.master.points()))

    async def parameters(self) -> pa.Table | Raised:
        return await self._do(lambda: self._fleet(self.master.parameters()))

    async def events(self, key: str, options: dict[str, Any],
                     wait: float) -> pa.Table | None | Raised:
        """The next batch of the driver's event reader ``key`` (opened on first use, and
        again after a restart), or None after ``wait`` seconds without data."""
        return await self._run(self._events(key, options, wait))

    async def _events(self, key: str, options: dict[str, Any], wait: float) -> pa.Table | None:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = self.master.events(as_polars=True, **options)
        try:
            batch = await asyncio.wait_for(anext(stream), wait)
        except asyncio.TimeoutError:
            return None
        return self._fleet(self.master._named(batch))

    async def close_events(self, key: str) -> None:
        await self._do(self._close_events, key)

    def _close_events(self, key: str) -> None:
        stream = self.streams.pop(key, None)
        if stream is not None:
            stream.close()

    async def close(self) -> None:
        await self._run(self.master.close())
