"""RTU fleets over Ray: many Masters, one per Ray actor, seen as one master.

::

    async with Cluster(workers=4) as cluster:          # a local Ray; address= joins a cluster
        for host in hosts:
            await cluster.connect(host, 2404, name=host, gi_interval=600)
        await cluster.interrogate()
        cluster.import_points("points.xlsx")           # read once, joined on every worker
        df = await cluster.parameters()                # one Polars frame for the fleet
        await cluster.command("rtu-7", 1, 5001, "C_SC_NA_1", 1, select=True)
        await cluster.export("fleet/")                 # a Parquet dataset, one part per worker

The Cluster (the driver) places each RTU on a worker (the least loaded, by expected load
then count) and gives it a fleet-wide station number; it keeps the placement and the point
lists, so that a worker Ray restarts (``max_restarts``) gets its RTUs back: a heartbeat
sees the new incarnation, reconnects and interrogates them, and ``outages()`` says which
RTUs were down and for how long. A command that was in flight on a worker that died fails
with :class:`ConnectionLostError`; Ray does not re-send it (``max_task_retries=0``).

What is in doubt (see :mod:`iec104.requests`) survives a restart: the driver mirrors each
RTU's in-doubt objects (its worker's word at every heartbeat, with the commands awaiting an
answer there, and at once each command whose call here timed out, was cancelled or lost its
worker). While an RTU is not back, a command to such an object is refused with
:class:`CommandInDoubt`; once back, its new session holds them as lost (no answer can come)
until :meth:`Cluster.clear_doubt`.

Needs the ``cluster`` extra (``pip install 'iec104[cluster]'``); ``import iec104`` does not
import Ray.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import polars as pl
import ray
from ray.exceptions import RayActorError

from iec104.cluster_worker import Raised, Worker
from iec104.export import RotatingWriter
from iec104.errors import (CommandInDoubt, ConfirmationTimeout, ConnectionLostError,
                           IEC104Error, InvalidRequestError, NotConnected)
from iec104.metadata import read_point_list
from iec104.requests import DoubtRecord, object_of
from iec104.settings import SessionSettings, check_coalesce, check_linger, check_max_rows
from iec104.store import RETRY_MAX
from iec104.types import TypeID

__all__ = ["Cluster", "RTU", "EventSink"]

log = logging.getLogger("iec104.cluster")


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _records(raw: Any) -> list[DoubtRecord] | None:
    """A worker's doubt records as DoubtRecords, or None if one is not (a wrong or foreign
    worker: its word is not taken, the driver keeps what it holds)."""
    try:
        return [(int(t), int(ca), int(ioa), str(what), bool(term),
                 None if m is None else (float(m[0]), int(m[1])))
                for t, ca, ioa, what, term, m in raw]
    except (TypeError, ValueError, IndexError):
        return None


def _frame(table: Any) -> pl.DataFrame:
    # an Arrow table from a worker, read in place from the object store where Polars can
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


@dataclasses.dataclass
class RTU:
    """Where an RTU is polled: its fleet station, its worker, what it was connected with."""

    name: str
    station: int
    worker: int
    host: str
    port: int
    load: float
    settings: SessionSettings
    given: dict[str, Any]                   # the keywords of connect, sent again on restart


class Cluster:
    """Many :class:`iec104.Master` on Ray actors, one per worker, with one view of the fleet.

    Parameters
    ----------
    workers : int
        Ray actors, each running one Master on its own uvloop event loop.
    address : str, optional
        A Ray cluster to join ("auto", "ray://head:10001"); None starts a local Ray instance
        (unless this process has one already) sized for ``workers``.
    cpus_per_worker : float
        CPUs Ray reserves for each worker (its placement: one core each by default).
    max_restarts : int
        How often Ray restarts a worker that died (-1: always).
    heartbeat : float
        Seconds between the status polls that also notice a restarted worker. A worker
        that does not answer one within 10 heartbeats is shown down (its RTUs too, its
        commands refused) until it answers again.
    event_capacity : int
        Each worker's event log (see :class:`iec104.Master`).
    coalesce : float
        Each worker's read coalescing, s (see :class:`iec104.Master`; 0: off).
    **settings
        Session settings for every :meth:`connect` (see :class:`iec104.SessionSettings`).
    """

    def __init__(self, workers: int = 2, address: str | None = None, *,
                 cpus_per_worker: float = 1.0, max_restarts: int = -1, heartbeat: float = 0.5,
                 event_capacity: int = 1_000_000, coalesce: float = 0.0, **settings: Any):
        if workers < 1:
            raise InvalidRequestError(f"workers={workers}: at least 1")
        SessionSettings.of(**settings)          # a bad setting fails here, not on a worker
        self._coalesce = check_coalesce(coalesce)
        self.settings = settings
        self.address, self.heartbeat = address, heartbeat
        self._options = dict(num_cpus=cpus_per_worker, max_restarts=max_restarts,
                             max_task_retries=0)    # a call to a dead worker is never re-sent
        self._count, self._event_capacity = workers, event_capacity
        self.actors: list[Any] = []
        self.rtus: dict[str, RTU] = {}
        self._stations = 0
        self._lists: list[tuple[int | None, Any]] = []
        self._pending: dict[int, Any] = {}      # worker -> its set_lists call in flight
        self._version = 0                       # of the lists: a late older call is ignored
        self._status: dict[str, dict[str, Any]] = {}
        self._rows: dict[int, int] = {}
        self._incarnation: dict[int, str] = {}
        self._down: dict[int, float] = {}       # worker -> when it was seen down
        self._missing: dict[str, float] = {}    # RTU of a restarted worker -> down since
        self._restoring: dict[int, list[asyncio.Task[None]]] = {}   # worker -> its tries
        self._outages: list[dict[str, Any]] = []
        # RTU -> its objects in doubt -> (record, when learned, monotonic): one per object
        self._doubts: dict[str, dict[tuple[int, int, int], tuple[DoubtRecord, float]]] = {}
        # RTU not back -> the (ca, ioa) of each clear_doubt since: its worker may get back what
        # was cleared (a connect try in flight took it), so they are cleared there once back
        self._cleared: dict[str, set[tuple[int | None, int | None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started_ray = False

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> "Cluster":
        if not ray.is_initialized():
            local = self.address is None
            # quiet (the poll's output stays the same); a local instance asked for loopback,
            # which Ray 2.x does not keep to: it resolves 127.0.0.1 to the machine's address,
            # and its GCS and raylet listen on every interface (no option confines them)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING,
                     _node_ip_address="127.0.0.1" if local else None,
                     num_cpus=math.ceil(self._count * self._options["num_cpus"]) if local
                     else None)
            self._started_ray = True
        remote = ray.remote(Worker).options(**self._options)
        self.actors = [remote.remote(i, self.settings, self._event_capacity, self._coalesce)
                       for i in range(self._count)]
        asked = time.monotonic()
        for i, hello in enumerate(await asyncio.gather(*(a.hello.remote() for a in self.actors))):
            self._seen(i, hello, asked)
        self._tasks = [asyncio.create_task(self._watch(i)) for i in range(self._count)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every session on every worker, then the workers (and Ray, if started here)."""
        tasks = [*self._tasks, *(t for ts in self._restoring.values() for t in ts)]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # bounded: a worker that hangs or restarts does not hold the driver's exit
        try:
            await asyncio.wait_for(asyncio.gather(*(a.close.remote() for a in self.actors),
                                                  return_exceptions=True), 10)
        except asyncio.TimeoutError:
            log.warning("workers not closed within 10 s: killed")
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        if self._started_ray:
            ray.shutdown()

    # ---- placement and sessions ------------------------------------------------------------

    def _place(self, load: float) -> int:
        # the least expected load, then the fewest RTUs; a worker down still counts its own
        def weight(i: int) -> tuple[float, int]:
            mine = [r for r in self.rtus.values() if r.worker == i]
            return sum(r.load for r in mine), len(mine)
        return min(range(len(self.actors)), key=weight)

    async def connect(self, host: str, port: int = 2404, *, name: str | None = None,
                      load: float = 1.0, worker: int | None = None, **settings: Any) -> RTU:
        """Open a session to an RTU on a worker and return its placement once data transfer
        has started (the settings as for :meth:`iec104.Master.connect`).

        ``load`` is the RTU's expected share of work (objects per second, or any unit used
        for every RTU alike); ``worker`` forces the placement.
        """
        name = name or f"{host}:{port}"
        if name in self.rtus:
            raise InvalidRequestError(f"{name}: an RTU of that name is in the fleet already")
        resolved = SessionSettings.of(**{**self.settings, **settings})
        rtu = RTU(name, self._stations, self._place(load) if worker is None else worker,
                  host, port, load, resolved, settings)
        self._stations += 1
        self.rtus[name] = rtu                   # placed now: connects at once stay balanced
        try:
            self._status[name] = await self._call(rtu.worker, "connect", rtu.station, host,
                                                  port, name, settings)
        except BaseException:
            del self.rtus[name]
            raise
        return rtu

    @property
    def sessions(self) -> list[RTU]:
        """Every RTU of the fleet, in station order (what Master.sessions is to a Master)."""
        return sorted(self.rtus.values(), key=lambda r: r.station)

    def placement(self) -> pl.DataFrame:
        """Which worker polls which RTU, with its expected load."""
        return pl.DataFrame([{k: getattr(r, k) for k in ("station", "name", "worker", "host",
                                                         "port", "load")} for r in self.sessions],
                            schema={"station": pl.UInt32, "name": pl.String, "worker": pl.UInt32,
                                    "host": pl.String, "port": pl.UInt16, "load": pl.Float64})

    async def interrogate(self, *names: str, timeout: float | None = None) -> dict[str, int]:
        """General interrogation of the named RTUs (default: all) at once, on every worker;
        returns objects received per RTU. The first failure is raised once all are done."""
        chosen = [self.rtus[n] for n in names] if names else self.sessions
        by_worker: dict[int, list[int]] = {}
        for r in chosen:
            by_worker.setdefault(r.worker, []).append(r.station)
        parts = await asyncio.gather(*(self._call(w, "interrogate", st, timeout)
                                       for w, st in by_worker.items()))
        out = {name: n for part in parts for name, n in part.items()}
        for name, n in out.items():
            if isinstance(n, Raised):
                raise n.error()
        return out

    async def command(self, name: str, ca: int, ioa: int, type: Any, value: Any, *,
                      select: bool = False, **options: Any) -> Any:
        """Send a command through the worker that polls ``name`` (see
        :meth:`iec104.Session.command`) and return its confirmation (a CommandResult)."""
        rtu = self.rtus[name]
        why = self._why_down(rtu)
        if why:
            held = self._doubts.get(name, {}).get((0, ca, ioa))   # (0: any command type)
            if held is not None:
                raise CommandInDoubt(
                    f"{name}: command to CA {ca} IOA {ioa} refused: an earlier {held[0][3]} "
                    f"was sent and its caller gave up before the answer (or its worker died); "
                    f"the RTU may have executed it. It is down ({why}): look at the RTU's "
                    f"state, then clear_doubt({name!r}, ca={ca}, ioa={ioa}) to send it again")
            raise NotConnected(f"command to {name}: {why}")
        try:
            return await self._call(rtu.worker, "command", rtu.station, (ca, ioa, type, value),
                                    {"select": select, **options}, what=f"command to {name}")
        except (ConfirmationTimeout, ConnectionLostError, asyncio.CancelledError):
            # it may have left: in doubt here at once, should its worker die before the next
            # heartbeat tells (a dead worker's command in flight too)
            self._note(name, ca, ioa, type)
            raise

    def _note(self, name: str, ca: int, ioa: int, type: Any) -> None:
        try:
            t = int(TypeID.parse(type))
        except (ValueError, TypeError):
            return                              # no command type: never built, never sent
        key = object_of((t, ca, ioa))
        cleared = self._cleared.get(name)
        if cleared:                             # a doubt newer than a clear: not cleared
            cleared -= {f for f in cleared if f[0] in (None, ca) and f[1] in (None, ioa)}
        mine = self._doubts.setdefault(name, {})
        record = mine[key][0] if key in mine else (
            t, ca, ioa, f"{TypeID(t).name} command CA {ca} IOA {ioa}", False, None)
        mine[key] = (record, time.monotonic())

    async def clear_doubt(self, name: str, ca: int | None = None,
                          ioa: int | None = None) -> list[str]:
        """:meth:`iec104.Session.clear_doubt` of ``name``: on its worker and in what the driver
        keeps of it (a worker that restarts gets back what is still in doubt here). Look at
        the RTU before a retry."""
        rtu = self.rtus[name]
        cleared = self._forget(name, ca, ioa)
        if name in self._missing:
            # not on its worker yet: it gets what is here, or what a connect try in flight
            # took before this clear (cleared there when it is back, see _back)
            self._cleared.setdefault(name, set()).add((ca, ioa))
            return cleared
        try:
            out: list[str] = await self._call(rtu.worker, "clear_doubt", rtu.station, ca, ioa,
                                              what=f"clear_doubt of {name}")
        except ConnectionLostError:
            return cleared                      # its worker died: the same
        return out or cleared                   # (a restart not seen yet: it has not the RTU)

    def _forget(self, name: str, ca: int | None, ioa: int | None) -> list[str]:
        """Drop the driver's records of ``name`` that match; returns what they were."""
        mine = self._doubts.get(name, {})
        gone = [o for o in mine if (ca is None or o[1] == ca) and (ioa is None or o[2] == ioa)]
        cleared = [mine.pop(o)[0][3] for o in gone]
        if not mine:
            self._doubts.pop(name, None)        # (thousands of RTUs: none kept empty)
        return cleared

    def _why_down(self, r: RTU) -> str | None:
        """Why an RTU is down because of its worker (None: it is not)."""
        since = self._down.get(r.worker)
        if since is not None:
            return f"its worker {r.worker} is down since {_clock(since)}"
        since = self._missing.get(r.name)
        if since is not None:
            return f"not back on worker {r.worker} (restarted) since {_clock(since)}"
        return None

    def status(self) -> list[dict[str, Any]]:
        """Every session's status (as of the last heartbeat) with its ``worker``; RTUs of a
        worker that is down, or not yet back on it after its restart, are shown down, why
        and since when, in ``last_error``, and their ``in_doubt`` is what the driver holds
        (the worker's last word, with what awaited an answer there and what failed here
        since), not the count of a session that is gone."""
        out = []
        for r in self.sessions:
            s = dict(self._status.get(r.name) or {"name": r.name, "station": r.station,
                                                  "worker": r.worker})
            why = self._why_down(r)
            if why or not s.get("tcp_state"):
                s.update(tcp_state="down", data_transfer="-", last_testfr_con=None, rtt=None,
                         last_error=why, in_doubt=len(self._doubts.get(r.name, ())))
                for k in ("devices", "points", "frames_in", "bad_frames", "reconnects"):
                    s.setdefault(k, 0)
            out.append(s)
        return out

    def __len__(self) -> int:
        """Parameters (latest-value rows) of the fleet, as of the last heartbeat."""
        return sum(self._rows.values())

    def outages(self) -> pl.DataFrame:
        """Each time an RTU was down because its worker died: from when the worker was seen
        down until the RTU was connected again on it (``up`` null: still down)."""
        schema = {"name": pl.String, "station": pl.UInt32, "worker": pl.UInt32,
                  "down": pl.Float64, "up": pl.Float64, "seconds": pl.Float64}
        open_ = [(r, self._down.get(r.worker, self._missing.get(r.name))) for r in self.sessions]
        rows = [*self._outages, *({"name": r.name, "station": r.station, "worker": r.worker,
                                   "down": since, "up": None, "seconds": None}
                                  for r, since in open_ if since is not None)]
        df = pl.DataFrame(rows, schema=schema)
        return df.with_columns(pl.from_epoch(pl.col(c) * 1e6, time_unit="us")
                               .dt.replace_time_zone("UTC") for c in ("down", "up"))

    # ---- point lists -----------------------------------------------------------------------

    def import_points(self, source: Any, *, station: int | str | None = None,
                      **options: Any) -> pl.DataFrame:
        """Read and check a point list here (all or nothing), once; every worker joins it
        with its values. ``station`` (a fleet station or an RTU's name) restricts it to one
        RTU; a list's own station column holds fleet stations."""
        if isinstance(station, str):
            station = self.rtus[station].station
        df = read_point_list(source, station=station, **options)
        self._lists = [(st, ref) for st, ref in self._lists if st != station]
        self._lists.append((station, ray.put(df)))
        # sent now; any later call to the worker waits for it (an async actor's calls may
        # overtake each other)
        self._version += 1
        self._pending = {i: a.set_lists.remote(self._version, self._lists)
                         for i, a in enumerate(self.actors)}
        return df

    # ---- tables ----------------------------------------------------------------------------

    async def _gather(self, method: str) -> pl.DataFrame:
        up = [i for i in range(len(self.actors)) if i not in self._down]
        tables = await asyncio.gather(*(self._call(i, method) for i in up),
                                      return_exceptions=True)
        frames = [_frame(t) for t in tables if not isinstance(t, BaseException)]
        for t in tables:
            if isinstance(t, BaseException) and not isinstance(t, ConnectionLostError):
                raise t
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    async def points(self) -> pl.DataFrame:
        """The latest value of every object of the fleet (Master.points with ``worker``);
        a worker that is down gives no rows (see :meth:`status`)."""
        return await self._gather("points")

    async def parameters(self) -> pl.DataFrame:
        """Master.parameters of every worker, as one frame in station, CA, IOA order."""
        df = await self._gather("parameters")
        return df.sort(["station", "ca", "ioa"], nulls_last=True) if len(df) else df

    async def export(self, path: str | Path, *, by: str = "worker") -> Path:
        """Write the fleet's parameters as one Parquet dataset, a directory partitioned by
        ``worker`` or ``station`` (``pl.scan_parquet(path)`` reads it as one table); written
        beside, then renamed into place."""
        if by not in ("worker", "station"):
            raise InvalidRequestError(f"by={by!r}: 'worker' or 'station'")
        path = Path(path)
        df = await self.parameters()
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            df.write_parquet(tmp, partition_by=by, mkdir=True)
            old = path.with_name(f".{path.name}.old") if path.exists() else None
            if old is not None:
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    async def events(self, *, wait: float = 1.0, **options: Any) -> AsyncIterator[pl.DataFrame]:
        """Batches (Polars frames) of every object received by any worker from now on, with
        ``session`` and ``worker``; ``options`` as for :meth:`iec104.Master.events`
        (``lossless=True``: a reader that falls behind pauses the RTUs). A worker that
        restarts loses what its RTUs sent while it was down; its batches resume after."""
        # here, not as a worker's error at the first batch
        for name, check in (("linger", check_linger), ("max_rows", check_max_rows)):
            if name in options:
                options = {**options, name: check(options[name])}
        key = uuid.uuid4().hex
        queue: asyncio.Queue[pl.DataFrame | BaseException] = asyncio.Queue(
            maxsize=2 * len(self.actors))

        async def pull(i: int) -> None:
            while True:
                try:
                    batch = await self._call(i, "events", key, options, wait)
                except ConnectionLostError:
                    await asyncio.sleep(self.heartbeat)
                    continue
                except Exception as e:          # the reader sees it, not a task nobody awaits
                    await queue.put(e)
                    return
                if batch is not None:
                    await queue.put(_frame(batch))

        pulls = [asyncio.create_task(pull(i)) for i in range(len(self.actors))]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in pulls:
                t.cancel()
            await asyncio.gather(*pulls, return_exceptions=True)
            await asyncio.gather(*(a.close_events.remote(key) for a in self.actors),
                                 return_exceptions=True)

    def sink(self, directory: str | Path, **options: Any) -> "EventSink":
        """Write every batch of :meth:`events` (lossless) to rotating Parquet files in
        ``directory``, what :class:`iec104.store.ParquetSink` is to a Master."""
        return EventSink(self, directory, **options)

    # ---- calls, heartbeat, restarts --------------------------------------------------------

    async def _call(self, worker: int, method: str, *args: Any, what: str | None = None) -> Any:
        """A call to a worker: a library error raised as itself, a worker that died as
        ConnectionLostError (nothing is re-sent)."""
        try:
            pending = self._pending.pop(worker, None)
            if pending is not None:
                await pending
            ref = getattr(self.actors[worker], method).remote(*args)
            try:
                out = await ref
            except asyncio.CancelledError:
                # the worker's task too (an async actor's: cancelled in its coroutine), so
                # that what the caller gave up is withdrawn there, never sent later
                ray.cancel(ref)
                raise
        except RayActorError as e:
            self._down.setdefault(worker, time.time())
            raise ConnectionLostError(
                f"{what or method}: worker {worker} died while it ran; not re-sent "
                f"(Ray: {type(e).__name__})") from None
        if isinstance(out, Raised):
            raise out.error()
        return out

    def _seen(self, worker: int, hello: dict[str, Any], asked: float) -> None:
        """A heartbeat's answer (``asked``: when it left, monotonic)."""
        self._incarnation[worker] = hello["incarnation"]
        self._rows[worker] = hello["rows"]
        # by fleet station, for the RTUs placed there only: a session the driver did not
        # place (a connect whose caller gave up) never speaks for an RTU of its name
        mine = {r.station: r.name for r in self.rtus.values() if r.worker == worker}
        for s in hello["status"]:
            name = mine.get(s["station"])
            if name is None:
                continue
            self._status[name] = s
            # the worker's word for its RTUs (not those not back yet: their records are here
            # only), but not over what a command learnt here after this heartbeat was asked
            records = _records(hello["doubts"].get(s["station"], ()))
            if records is None:
                log.warning("worker %d: what %s has in doubt is not readable: the driver "
                            "keeps its own", worker, name)
                continue
            later = {o: v for o, v in self._doubts.get(name, {}).items() if v[1] > asked}
            held = {**later, **{object_of(r[:3]): (r, asked) for r in records}}
            if held:
                self._doubts[name] = held
            else:
                self._doubts.pop(name, None)

    async def _watch(self, worker: int) -> None:
        """The heartbeat of one worker, until close(): an error of any kind in one beat is
        logged and the next beat follows (a watch that ended would never see a restart)."""
        failed = None                           # the last beat's error, said once
        while True:
            try:
                await self._beat(worker)
                if failed is not None:
                    log.info("worker %d: heartbeat works again", worker)
                failed = None
            except Exception as e:              # not CancelledError: close() ends the watch
                why = f"{type(e).__name__}: {e}"
                if why != failed:
                    log.warning("worker %d: heartbeat failed: %s", worker, why)
                failed = why
            await asyncio.sleep(self.heartbeat)

    async def _beat(self, worker: int) -> None:
        """One beat: the worker's status, and its RTUs back after a restart."""
        try:
            asked = time.monotonic()
            # not wait_for: on 3.11 it drops a cancel (close()) that comes with the answer
            async with asyncio.timeout(10 * self.heartbeat):
                hello = await self._call(worker, "hello")
        except (ConnectionLostError, TimeoutError):
            self._down.setdefault(worker, time.time())
            self._rows[worker] = 0
            return
        if hello["incarnation"] != self._incarnation[worker]:
            since = self._down.setdefault(worker, time.time())
            log.warning("worker %d restarted: reconnecting its %d RTU(s)", worker,
                        sum(r.worker == worker for r in self.rtus.values()))
            try:
                await self._call(worker, "set_lists", self._version, self._lists)
                asked = time.monotonic()
                hello = await self._call(worker, "hello")
            except ConnectionLostError:
                return                          # died again: the next beat sees it
            self._restore(worker, hello["incarnation"], since)
        elif worker in self._down:
            # the same incarnation: it was late (a loaded machine, a pause of its node), not
            # restarted; its sessions never stopped, so there is nothing to restore
            since = self._down.pop(worker)
            log.warning("worker %d answered again after %.1f s (late, not restarted)",
                        worker, time.time() - since)
        self._seen(worker, hello, asked)

    def _restore(self, worker: int, incarnation: str, since: float) -> None:
        """A restarted worker is up again; each of its RTUs is missing until it is connected
        again, tried on its own (with its back-off: one unreachable RTU keeps no other down),
        then interrogated."""
        for task in self._restoring.pop(worker, []):
            task.cancel()                       # an earlier incarnation's tries
        mine = [r for r in self.sessions if r.worker == worker]
        for r in mine:
            self._missing.setdefault(r.name, since)     # still down since the first death
        # the worker up and its RTUs missing in one step: outages() lists each RTU once
        del self._down[worker]
        self._restoring[worker] = [asyncio.create_task(self._back(r, incarnation))
                                   for r in mine]

    async def _back(self, r: RTU, incarnation: str) -> None:
        delay = r.settings.backoff_min
        while self._incarnation.get(r.worker) == incarnation:
            try:
                # what it had in doubt, back in its session before any command can reach it
                doubts = [rec for rec, _ in self._doubts.get(r.name, {}).values()]
                await self._call(r.worker, "connect", r.station, r.host, r.port, r.name,
                                 r.given, doubts)
                # cleared while that try was in flight: cleared there too, still refused here
                while cleared := self._cleared.get(r.name):
                    ca, ioa = next(iter(cleared))
                    self._forget(r.name, ca, ioa)   # (a heartbeat may have brought it back)
                    await self._call(r.worker, "clear_doubt", r.station, ca, ioa)
                    cleared.discard((ca, ioa))
                self._cleared.pop(r.name, None)
                break
            except ConnectionLostError:
                return                          # the worker died again: the heartbeat sees it
            except Exception as e:              # any kind (a Ray task error): a task that
                # ended here would leave the RTU missing for good
                log.warning("%s: not back yet on worker %d (%s)", r.name, r.worker, e)
                await asyncio.sleep(delay)
                delay = min(r.settings.backoff_max, delay * 2)
        else:
            return                              # restarted again: the new tries take over
        up = time.time()
        down = self._missing.pop(r.name)        # the outage ends and the RTU is back at once
        self._outages.append({"name": r.name, "station": r.station, "worker": r.worker,
                              "down": down, "up": up, "seconds": up - down})
        try:
            res = await self._call(r.worker, "interrogate", [r.station], None)
        except IEC104Error as e:
            res = {r.name: Raised(e)}
        for name, n in res.items():
            if isinstance(n, Raised):
                log.warning("%s: interrogation after the restart of worker %d failed: %s",
                            name, r.worker, n.error())


class EventSink:
    """The fleet's event stream in rotating Parquet files (``files``, ``rows_written``);
    ``close()`` writes what has arrived here (batches still on their way are not waited for)."""

    def __init__(self, cluster: Cluster, directory: str | Path, *,
                 rotate_rows: int = 1_000_000, rotate_seconds: float | None = 60.0):
        self.writer = RotatingWriter(directory, rotate_rows=rotate_rows,
                                     rotate_seconds=rotate_seconds)
        self.rows_written = 0
        self.error: Exception | None = None     # the last write's, None once one succeeds
        self.failures = 0
        self._task = asyncio.create_task(self._run(cluster))

    @property
    def files(self) -> list[Path]:
        return self.writer.files

    async def _run(self, cluster: Cluster) -> None:
        async for batch in cluster.events(lossless=True):
            n, delay = len(batch), 0.1
            while True:
                try:
                    self.writer.write(batch)
                    break
                except Exception as e:          # a full disk: the writer keeps the rows
                    if self.error is None:
                        log.error("fleet event sink %s: %s; its rows are kept and written "
                                  "once it can (the RTUs pause meanwhile)", self.writer.dir, e)
                    self.error, self.failures = e, self.failures + 1
                    batch = batch.clear()       # (in the writer now: tried again without)
                    # no more batches taken meanwhile: the lossless stream pauses the RTUs
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX)
            if self.error is not None:
                log.warning("fleet event sink %s: writing again after %d failed write(s)",
                            self.writer.dir, self.failures)
                self.error = None
            self.rows_written += n

    def close(self) -> None:
        self._task.cancel()
        self.writer.close()
