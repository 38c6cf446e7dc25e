"""The control station: many sessions in one event loop, one store, one point catalog."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import tzinfo
from pathlib import Path
from ssl import SSLContext
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import polars as pl

from iec104.errors import InvalidRequestError
from iec104.export import write_table
from iec104.metadata import Catalog, PointListSource
from iec104.protocol import hold_coalesce, release_coalesce
from iec104.redundancy import RedundancyGroup
from iec104.session import Session
from iec104.settings import DEFAULT, Default, SessionSettings, check_coalesce
from iec104.store import EventStream, Store
from iec104.tls import TLS

__all__ = ["Master", "run"]

log = logging.getLogger("iec104.master")

_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(SessionSettings))
_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T], *, debug: bool = False) -> _T:
    """Run a coroutine on uvloop when installed (plain asyncio otherwise)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main, debug=debug)
    return uvloop.run(main, debug=debug)


class Master:
    """An IEC 104 master: sessions to many RTUs, their latest values and event log.

    Parameters
    ----------
    event_capacity : int
        Rows the in-memory event log keeps for consumers that read it (``events()``).
    coalesce : float
        Read coalescing of the event loop, s (0: off): after a loop iteration that read
        data, the loop naps this long so that one wake-up serves every RTU that sent
        meanwhile. For thousands of RTUs sending small APDUs it divides the loop's wake-ups
        by the RTUs per nap; spontaneous data and timers on the loop wait up to that long
        more; answers to requests (a GI, confirmations) do not (see
        :func:`iec104.protocol.coalesce`). A few ms suits polling; off by default.
    **defaults
        Session settings applied to every :meth:`connect` (see :class:`SessionSettings`).

    Examples
    --------
    >>> async with iec104.Master() as master:
    ...     rtu = await master.connect("127.0.0.1", 2404, name="substation-7")
    ...     await rtu.interrogate()
    ...     df = master.parameters()
    """

    def __init__(self, *, event_capacity: int = 1_000_000, coalesce: float = 0.0,
                 **defaults: Any) -> None:
        self.coalesce = check_coalesce(coalesce)
        self.defaults = SessionSettings.of(**defaults)
        self.store = Store(event_capacity=event_capacity)
        self.catalog = Catalog()
        # a station whose first connect failed keeps its number: None in its place
        self.sessions: list[Session | RedundancyGroup | None] = []
        self._by_name: dict[str, Session | RedundancyGroup] = {}
        self._unnamed: dict[str, int] = {}     # host:port -> sessions named after it
        # a lossless consumer of the event log that falls behind pushes back on the RTUs
        self.store.log.on_pause.append(lambda: self._reading(False))
        self.store.log.on_resume.append(lambda: self._reading(True))

    def _reading(self, on: bool) -> None:
        for s in self.sessions:
            if s is not None:
                s.set_reading(on)

    async def __aenter__(self) -> "Master":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(
        self, host: str, port: int = 2404, standby: Sequence[tuple[str, int]] = (), *,
        name: str | None = None,
        t0: float | None = None, t1: float | None = None, t2: float | None = None,
        t3: float | None = None, k: int | None = None, w: int | None = None,
        cot_size: int | None = None, ca_size: int | None = None, ioa_size: int | None = None,
        tz: str | tzinfo | None | Default = DEFAULT, gi_on_start: bool | None = None,
        gi_interval: float | None | Default = DEFAULT, gi_group: int | None | Default = DEFAULT,
        ci_interval: float | None | Default = DEFAULT, qcc: int | None = None,
        clock_sync_interval: float | None | Default = DEFAULT, reconnect: bool | None = None,
        backoff_min: float | None = None, backoff_max: float | None = None,
        backoff_reset: float | None = None, request_timeout: float | None = None,
        debug_frames: int | None = None, max_points: int | None = None,
        max_backlog: int | None = None, tls: TLS | SSLContext | None | Default = DEFAULT,
        ca: Sequence[int] | None | Default = DEFAULT,
    ) -> Session | RedundancyGroup:
        """Open a session to an RTU and return it once data transfer has started.

        The general interrogation at start runs in the background (``await
        session.interrogate()`` to wait for a complete image).

        Parameters
        ----------
        host, port : str, int
            The RTU's address.
        standby : sequence of (host, port), optional
            More addresses of the same RTU: a redundancy group
            (:class:`iec104.redundancy.RedundancyGroup`), one connection in data transfer,
            the others kept up and tested, switched to when it fails.
        name : str, optional
            The session's name in tables and logs, unique in this master (one in use raises
            :class:`InvalidRequestError`). Default ``"host:port"``, then ``"host:port #2"``...
            for more sessions to the same address.
        t0, t1, t2, t3 : float, optional
            Connect timeout, acknowledgement timeout, acknowledgement delay, idle test (s).
        k, w : int, optional
            Send window; acknowledge after ``w`` received I-frames.
        cot_size, ca_size, ioa_size : int, optional
            Field sizes in octets, for non-standard devices.
        tz : str, tzinfo or None, optional
            Time zone of the RTU's clock; None: UTC.
        gi_on_start, reconnect : bool, optional
            Interrogate after each STARTDT; reconnect after a lost link.
        gi_interval, ci_interval, clock_sync_interval : float or None, optional
            Schedules, s between requests; None: off.
        gi_group : int or None, optional
            The group (1..16) of the scheduled interrogations; None: the station.
        qcc : int, optional
            Qualifier of the counter interrogations.
        backoff_min, backoff_max, backoff_reset, request_timeout : float, optional
            Reconnect back-off (s) and the default timeout of requests (s).
        debug_frames, max_points, max_backlog : int, optional
            Frames kept for the debug view, latest-value rows, octets written but unread.
        tls : iec104.tls.TLS, ssl.SSLContext or None, optional
            TLS (IEC 62351-3) to the RTU; None: plain TCP.
        ca : sequence of int or None, optional
            The common addresses of the RTU's stations: the GI at start, the scheduled
            interrogations and the clock sync go to each; None: to the broadcast address.

        Every keyword but ``name`` is a setting of :class:`iec104.SessionSettings` (which
        says more). One left out, or None, takes the value the master was made with (its
        ``**defaults``, else the standard's). For the settings where None is a value (``tz``,
        ``gi_interval``, ``ci_interval``, ``clock_sync_interval``, ``gi_group``, ``ca``,
        ``tls``), None sets
        it, and only leaving the keyword out (its default :data:`iec104.settings.DEFAULT`)
        takes the master's.

        Raises
        ------
        SettingsError
            A setting out of range or of the wrong type; nothing is opened.
        InvalidRequestError
            ``name`` is another session's; nothing is opened.
        ConnectError
            The first connection attempt failed.
        """
        given = {key: value for key, value in locals().items() if key in _SETTING_NAMES}
        settings = self.defaults.overridden(given)
        name = self._new_name(name, f"{host}:{port}")
        if self.coalesce:
            hold_coalesce(asyncio.get_running_loop(), self, self.coalesce)
        addresses = [(host, port), *standby]
        members = [Session(h, p, name=f"{name} via {h}:{p}" if standby else name,
                           station=len(self.sessions), settings=settings, store=self.store,
                           catalog=self.catalog) for h, p in addresses]
        s = RedundancyGroup(members, name=name) if standby else members[0]
        if self.store.log.paused:               # on_pause fired before this session existed
            s.set_reading(False)
        self.sessions.append(s)
        self._by_name[name] = s
        try:
            await s.start()
        except BaseException:
            self.sessions[s.station] = None     # keep station numbers stable
            del self._by_name[name]
            raise
        return s

    def _new_name(self, name: str | None, address: str) -> str:
        """A name no open session has: ``name`` (refused if taken: commands and tables go
        by name), else the address, numbered from its second session on."""
        if name is not None:
            if name in self._by_name:
                raise InvalidRequestError(f"a session named {name!r} exists already: "
                                          "give each RTU its own name")
            return name
        n = self._unnamed.get(address, 0)
        while (numbered := address if n == 0 else f"{address} #{n + 1}") in self._by_name:
            n += 1
        self._unnamed[address] = n + 1
        return numbered

    def session(self, name_or_station: str | int) -> Session | RedundancyGroup:
        """The session of that name, or of that station number (KeyError: none)."""
        s = self._by_name.get(name_or_station) if isinstance(name_or_station, str) else (
            self.sessions[name_or_station]
            if 0 <= name_or_station < len(self.sessions) else None)
        if s is None:
            raise KeyError(name_or_station)
        return s

    async def close(self) -> None:
        """Stop data transfer and close every session, then the event log's consumers."""
        await asyncio.gather(*(s.close() for s in self.sessions if s is not None),
                             return_exceptions=True)
        try:
            self.store.close()                  # a sink's error, raised once all is closed
        finally:
            release_coalesce(asyncio.get_running_loop(), self)

    # ---- tables ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """The total number of parameters (latest-value rows)."""
        return len(self.store)

    def _named(self, df: pl.DataFrame) -> pl.DataFrame:
        # the RTU's name beside its station number: "session", as in devices(), since
        # "name" in parameters() is the point's name from the list
        names = {s.station: s.name for s in self.sessions if s is not None}
        session = df["station"].replace_strict(names, default=None, return_dtype=pl.String)
        return df.insert_column(df.columns.index("station") + 1, session.alias("session"))

    def points(self, *, station: int | None = None) -> pl.DataFrame:
        """The latest value of every (station, CA, IOA, type family), as received, with the
        session's name (``session``) beside its station."""
        return self._named(self.store.points(station=station))

    def parameters(self) -> pl.DataFrame:
        """Live values left-joined with the point list: engineering values, names, units,
        readable quality; rows the list does not know ("unknown") and rows never received
        ("missing") included; the session's name (``session``) beside its station."""
        # the connected stations too: a silent one's listed points show as missing
        stations = [s.station for s in self.sessions if s is not None]
        return self._named(self.catalog.parameters(self.store.points(), stations=stations))

    def command_points(self) -> pl.DataFrame:
        """IOAs that accept commands: from the point list, and learned from confirmations."""
        learned = [dict(station=k[0], ca=k[1], ioa=k[2], type_id=k[3],
                        last_result=v["last_result"])
                   for s in self.sessions if s is not None
                   for k, v in s.learned_commands.items()]
        return self.catalog.command_points(learned=learned)

    def devices(self) -> pl.DataFrame:
        """One row per common address seen behind each session."""
        counts = self.store.counts_by_device()
        rows: list[dict[str, Any]] = []
        for s in self.sessions:
            if s is None:
                continue
            for ca, dev in sorted(s.devices.items()):
                rows.append({"station": s.station, "session": s.name, "ca": ca,
                             "objects": int(counts.get((s.station, ca), 0)),
                             "last_gi": dev.get("last_gi"), "gi_state": dev.get("gi_state"),
                             "tcp_state": s.tcp_state, "data_transfer": s.data_transfer})
        schema = {"station": pl.UInt32, "session": pl.String, "ca": pl.UInt16,
                  "objects": pl.UInt32, "last_gi": pl.Float64, "gi_state": pl.String,
                  "tcp_state": pl.String, "data_transfer": pl.String}
        df = pl.DataFrame(rows, schema=schema)
        return df.with_columns(pl.from_epoch(pl.col("last_gi") * 1000, time_unit="ms")
                               .dt.replace_time_zone("UTC"))

    def status(self) -> list[dict[str, Any]]:
        """Each session's state and counts (see :meth:`Session.status`), with the event
        log's rows lost by lossy readers (``events_lost``, master-wide)."""
        lost = self.store.log.lost
        return [{**s.status(), "events_lost": lost} for s in self.sessions if s is not None]

    async def interrogate_device(self, station: int, ca: int, *, group: int | None = None) -> int:
        """Force a (group) interrogation of one device: a common address behind a session."""
        return await self.session(station).interrogate(ca=ca, group=group)

    # ---- point lists -------------------------------------------------------------------------

    def import_points(self, source: PointListSource, *, station: int | None = None,
                      **options: Any) -> pl.DataFrame:
        """Read a point list (CSV/XLSX path or DataFrame) now; all or nothing."""
        return self.catalog.load(source, station=station, **options)

    def metadata(self) -> pl.DataFrame:
        """The point lists in force, as imported (``catalog.status`` says how the last
        import went)."""
        return self.catalog.table()

    async def import_points_async(self, source: PointListSource | None = None, *,
                                  station: int | None = None, **options: Any) -> pl.DataFrame:
        """Import off the event loop (large lists, import hooks); ``catalog.status`` shows
        its progress while it runs."""
        if "password" in options:               # never a plain string in a traceback's frames
            from iec104.importhooks import Secret
            options["password"] = Secret(options["password"])
        return await self.catalog.import_points(source, station=station, **options)

    # ---- export ------------------------------------------------------------------------------

    def export(self, path: str | Path) -> Path:
        """Write the parameter table (.parquet, .csv, .arrow, .jsonl), atomically."""
        return write_table(self.parameters(), path)

    def export_events(self, path: str | Path) -> Path:
        """Write the event log held in memory, atomically."""
        return write_table(self._named(self.store.event_frame()), path)

    def events(self, **options: Any) -> EventStream:
        """Async iterator of batches of every object received (see :meth:`Store.events`);
        its ``lost`` counts what a lossy reader lost."""
        return self.store.events(**options)
