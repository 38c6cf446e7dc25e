"""Redundancy groups (IEC 60870-5-104 edition 2, redundant connections): one logical RTU
reached over several addresses.

Every connection of the group is kept up (each is a :class:`~iec104.session.Session` that
reconnects) and tested with TESTFR; exactly one is in STARTDT, the *active* one. When it
fails (t1 expiry, a close, a TCP error) the group sends STARTDT on a standby connection that
is up, runs a general interrogation and records the switch (:meth:`RedundancyGroup.status`,
``history``, ``on_switch``). All connections share the master's station number, store and
event log, so nothing received before the failure is lost. Requests in flight on the failed
connection fail with :class:`~iec104.errors.ConnectionLostError` (the session's rule) and are
never sent again; a request made while the group switches waits up to t1 for the new
connection, so it leaves at most once, on the connection that is active when it is sent.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
from typing import Any, Awaitable, Callable, Concatenate, ParamSpec, TypeVar

from iec104.errors import ConnectError, NotConnected
from iec104.requests import DoubtRecord, object_of
from iec104.session import Session
from iec104.settings import SessionSettings

__all__ = ["RedundancyGroup"]

log = logging.getLogger("iec104.redundancy")

P = ParamSpec("P")
R = TypeVar("R")

# the status() figures that add up over the group's connections
_SUMMED = ("frames_in", "points", "bad_frames", "refused_rows", "reconnects", "link_closes",
           "requests", "withdrawn", "late_answers", "unmatched_answers", "bytes_out", "tls_failures")


def _on_active(method: Callable[Concatenate[Session, P], Awaitable[R]]
               ) -> Callable[Concatenate["RedundancyGroup", P], Awaitable[R]]:
    """A Session request run on the group's active connection."""
    @functools.wraps(method)
    async def call(self: "RedundancyGroup", *args: P.args, **kwargs: P.kwargs) -> R:
        return await method(await self._active_session(), *args, **kwargs)
    return call


class RedundancyGroup:
    """One RTU over several connections, the first preferred at start; made by
    ``Master.connect(host, port, standby=[(host, port), ...])``.

    It answers the requests of a :class:`~iec104.session.Session` (``interrogate``,
    ``command``, ``read``...) on its active connection. ``history`` lists every activation:
    when, which address, the one it replaced, why, the switch time (from the failure to
    STARTDT con) and the GI that followed.
    """

    def __init__(self, members: list[Session], *, name: str):
        if len(members) < 2:
            raise ValueError("a redundancy group takes two connections or more")
        self.members = members
        self.name = name
        self.station = members[0].station
        self.settings: SessionSettings = members[0].settings
        self.active: Session | None = None
        self.devices: dict[int, dict[str, Any]] = {}
        self.learned_commands: dict[tuple[int, ...], dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.on_switch: list[Callable[[dict[str, Any]], None]] = []
        self._failure: tuple[float, Session, str] | None = None   # loop time, connection, why
        self._ready: set[Session] = set()       # standbys up and tested since they connected
        self._changed = asyncio.Event()
        self._has_active = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        in_doubt = members[0]._requests.in_doubt
        for m in members:
            # the group interrogates after each activation (per CA); a member's own GI at
            # start would be a second one
            m.settings = dataclasses.replace(m.settings, gi_on_start=False)
            m.hold_start = True
            m.devices = self.devices             # one device table and command memory
            m.learned_commands = self.learned_commands
            # and one record of what is in doubt: a switchover is no licence to retry
            m._requests.in_doubt = in_doubt
            m.on_link.append(self._on_link)

    def __repr__(self) -> str:
        return f"<RedundancyGroup {self.name} active={_address(self.active)} station={self.station}>"

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect every address (standby) and start data transfer on the first that is up;
        ConnectError if none is. Addresses down at start keep being tried."""
        results = await asyncio.gather(*(m.start(keep_trying=True) for m in self.members),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if len(failed) == len(self.members):
            await self.close()
            raise ConnectError(f"{self.name}: no connection of the group is up: "
                               + "; ".join(str(e) for e in failed))
        for r in failed:
            if not isinstance(r, ConnectError):
                await self.close()
                raise r
        try:
            await self._activate_one("start")
            if self._closing:
                raise ConnectError(f"{self.name}: closed while connecting")
        except BaseException:                   # given up (a timeout, Ctrl-C): nothing left up
            await self.close()
            raise
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"iec104 {self.name} redundancy")

    async def close(self) -> None:
        self._closing = True
        self._changed.set()                     # (a supervisor whose cancel was lost sees it)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self.settings.t1)
        await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)
        self.active = None                      # (status: none of them is active any more)
        self._has_active.clear()

    async def reconnect(self) -> None:
        """Try every connection that is down again now; returns once one is active."""
        down = [m for m in self.members if m.tcp_state != "connected"]
        await asyncio.gather(*(m.reconnect() for m in down), return_exceptions=True)
        await self._active_session()

    # ---- switching -------------------------------------------------------------------------

    def _on_link(self, session: Session, what: str) -> None:
        if what == "ready":
            self._ready.add(session)
        elif what == "lost":
            self._ready.discard(session)
            session.hold_start = True           # it comes back as a standby
            if session is self.active and not self._closing:
                self.active = None
                self._has_active.clear()
                self._failure = (asyncio.get_running_loop().time(), session,
                                 session.last_error or "connection lost")
                log.warning("%s: the active connection %s failed: %s", self.name,
                            _address(session), self._failure[2])
        self._changed.set()

    def _candidate(self, after: Session | None) -> Session | None:
        """The next standby that is up and tested, in the group's order after ``after``."""
        i = self.members.index(after) + 1 if after is not None else 0
        for m in self.members[i:] + self.members[:i]:
            if m in self._ready and m.data_transfer == "stopped":
                return m
        return None

    async def _activate_one(self, reason: str) -> None:
        """STARTDT on a standby (waiting for one to be up); records the activation."""
        loop = asyncio.get_running_loop()
        failure = self._failure
        previous = failure[1] if failure is not None else None
        while self.active is None:
            if self._closing:
                return
            cand = self._candidate(previous)
            if cand is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                await cand.activate()
            except (ConnectError, NotConnected) as e:
                log.warning("%s: STARTDT on %s failed: %s", self.name, _address(cand), e)
                continue
            if cand.data_transfer == "started":  # not lost again on the way
                self.active = cand
        self._has_active.set()
        rec: dict[str, Any] = {
            "time": time.time(), "active": _address(self.active), "previous": _address(previous),
            "reason": failure[2] if failure is not None else reason,
            "switch_time": loop.time() - failure[0] if failure is not None else None,
            "gi_objects": None, "gi_time": None, "gi_error": None}
        self._failure = None
        self.history.append(rec)
        if previous is not None:
            log.warning("%s: switched from %s to %s in %.3f s (%s)", self.name, rec["previous"],
                        rec["active"], rec["switch_time"], rec["reason"])

    async def _supervise(self) -> None:
        """For the group's life: the GI after each activation, a new one after a failure."""
        while not self._closing:
            if self.active is None:
                await self._activate_one("failure")
            rec, active = self.history[-1], self.active
            if active is not None and self.settings.gi_on_start and rec["gi_objects"] is None \
                    and rec["gi_error"] is None:
                t0 = asyncio.get_running_loop().time()
                try:                            # each of the RTU's CAs, or the broadcast
                    rec["gi_objects"] = sum([await active.interrogate(ca=ca)
                                             for ca in self.settings.ca or (None,)])
                    rec["gi_time"] = asyncio.get_running_loop().time() - t0
                except Exception as e:          # the new connection failed too: next round
                    rec["gi_error"] = str(e)
                for hook in self.on_switch:
                    try:
                        hook(rec)
                    except Exception:           # a hook's fault must not end the failover
                        log.exception("%s: an on_switch hook failed", self.name)
            if self.active is not None and not self._closing:
                self._changed.clear()
                await self._changed.wait()

    async def _active_session(self) -> Session:
        """The active connection; while the group switches, waits for it up to t1."""
        if self.active is None:
            try:
                async with asyncio.timeout(self.settings.t1):   # (wait_for: EventLog.wait)
                    await self._has_active.wait()
            except TimeoutError:
                pass
        if self.active is None:
            raise NotConnected(f"{self.name}: no connection of the group is in data transfer")
        return self.active

    # ---- requests: those of a Session, on the active connection ----------------------------

    interrogate = _on_active(Session.interrogate)
    counter_interrogation = _on_active(Session.counter_interrogation)
    command = _on_active(Session.command)
    read = _on_active(Session.read)
    clock_sync = _on_active(Session.clock_sync)
    test_command = _on_active(Session.test_command)
    reset_process = _on_active(Session.reset_process)
    test = _on_active(Session.test)

    def clear_doubt(self, ca: int | None = None, ioa: int | None = None) -> list[str]:
        """:meth:`Session.clear_doubt` (the group's connections share what is in doubt)."""
        return self.members[0].clear_doubt(ca, ioa)

    def doubt_records(self) -> list[DoubtRecord]:
        """:meth:`Session.doubt_records` of the group, one record per object (its members
        share what is in doubt; each has its own requests awaiting an answer)."""
        return list({object_of(r[:3]): r for m in self.members for r in m.doubt_records()}.values())

    def restore_doubt(self, records: list[DoubtRecord]) -> None:
        """:meth:`Session.restore_doubt`, for every connection of the group."""
        self.members[0].restore_doubt(records)

    def import_points(self, source: Any, **options: Any) -> Any:
        return self.members[0].import_points(source, **options)

    async def import_points_async(self, source: Any = None, **options: Any) -> Any:
        return await self.members[0].import_points_async(source, **options)

    # ---- what operators look at ------------------------------------------------------------

    @property
    def host(self) -> str:
        return (self.active or self.members[0]).host

    @property
    def port(self) -> int:
        return (self.active or self.members[0]).port

    @property
    def tcp_state(self) -> str:
        return self.active.tcp_state if self.active is not None else "switching"

    @property
    def data_transfer(self) -> str:
        return self.active.data_transfer if self.active is not None else "-"

    @property
    def frame_log(self) -> collections.deque[dict[str, Any]]:
        return (self.active or self.members[0]).frame_log

    @property
    def counts(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for m in self.members:
            total.update(m.counts)
        return total

    def set_reading(self, on: bool) -> None:
        for m in self.members:
            m.set_reading(on)

    def enable_debug(self, on: bool = True) -> None:
        for m in self.members:
            m.enable_debug(on)

    @property
    def debug(self) -> bool:
        return any(m.debug for m in self.members)

    def set_schedules(self, **schedules: float | None) -> None:
        """:meth:`Session.set_schedules` on every connection (the one with data transfer
        started runs them); a bad value raises SettingsError and changes none."""
        for m in self.members:
            m.set_schedules(**schedules)
        # the schedules only: the members' gi_on_start is off (the group runs that GI)
        self.settings = dataclasses.replace(
            self.settings, **{k: getattr(self.members[0].settings, k) for k in schedules})

    def status(self) -> dict[str, Any]:
        """The active connection's status (see :meth:`Session.status`) with counts over the
        group, which address is active, since when and why, and every connection's state."""
        states = [m.status() for m in self.members]
        active = self.active
        out = dict(states[self.members.index(active)] if active is not None else states[0])
        for key in _SUMMED:
            out[key] = sum(s[key] for s in states)
        last = self.history[-1] if self.history else {}
        out.update(
            name=self.name, tcp_state=self.tcp_state, data_transfer=self.data_transfer,
            devices=len(self.devices), active=_address(active),
            active_since=last.get("time"), active_reason=last.get("reason"),
            switches=sum(1 for h in self.history if h["previous"] is not None),
            last_switch=last or None,
            connections=[{"address": _address(m), "role": "active" if m is active else "standby",
                          "tcp_state": s["tcp_state"], "data_transfer": s["data_transfer"],
                          "rtt": s["rtt"], "last_testfr_con": s["last_testfr_con"],
                          "last_error": s["last_error"], "tls": s["tls"]}
                         for m, s in zip(self.members, states)])
        return out


def _address(s: Session | None) -> str | None:
    return f"{s.host}:{s.port}" if s is not None else None
