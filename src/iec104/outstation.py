"""The simulator: a real IEC 104 controlled station (server), driven by a point list or by
generated points, fast enough to load-test the master.

Each connection has its own Link (role "outstation") and decoder. Everything it sends goes
through one queue of pre-encoded I-frames (control answers and bulk data alike, so their
order is kept), stamped with sequence numbers only when the client's k window has room.
Bulk data (GI images, spontaneous changes) is one ``encode_points`` call per batch.

Rules the simulator follows, for tests and users to rely on:

- Stations are common addresses 1..N (or those of the point list).
- Generated points: IOA 1..``points`` per station, types cycling through GENERATED_TYPES.
- Interrogation groups: a point belongs to group ((IOA - 1) % 16) + 1.
- Command points accept their command family at the same IOA (C_SC for a single point,
  C_DC double, C_RC step position, C_SE_NA/NB/NC for normalized/scaled/float, C_BO
  bitstring), with or without time tag; generated stations: every point of those types.
  The monitored point at that IOA is the feedback: it takes the commanded value and is sent
  with COT 11 (return information, remote command). ``sbo_only`` points (point-list column
  ``sbo``) refuse an execute that was not selected first (negative ActCon). An execute must
  be the command selected: same type, value and qualifier (QU/QL), or it is refused (negative
  ActCon) and the selection is gone; any command to a selected point other than a new select
  ends the selection. A deactivation (COT 8) of the command selected (S/E set) breaks the
  selection (IEC 60870-5-5): positive DeactCon (COT 9); any other deactivation (no selection
  held, past ``select_timeout``, another command, an execute's) gets a negative one.
- Requests are acted on only from frames the link core accepted: an I-frame while data
  transfer is stopped (before STARTDT act) closes the connection, and nothing in a batch
  with a frame the link refuses (a wrong N(S)) is done.
- General interrogation sends no integrated totals (M_IT_*): they answer a counter
  interrogation only. A (counter) interrogation of a station whose previous one on this
  connection has not sent its ActTerm yet is refused with a negative ActCon.
- Undefined qualifiers are refused with a negative ActCon and nothing done: a QOI outside
  20..36, a QCC request outside 1..5, a QRP of 0, a DCS or RCS of 0 or 3 ("not permitted").
  A counter interrogation's QCC FRZ bits are honoured: 1 freeze, 2 freeze and reset, 3 reset
  (ActCon and ActTerm, no totals sent), 0 read: the totals at the last freeze, or the running
  ones if never frozen. System commands (104..113) are accepted with COT 6 only (45 else), and
  a parameter activation (P_AC_NA_1) with COT 8 too (a positive COT 9).
- A clock synchronisation with an invalid time (CP56 IV, or no valid date) gets a negative
  ActCon and leaves the clock alone.
- The broadcast common address is that of the CA field size: 255 (1 octet) or 65535.
- Bounded per connection: at most ``max_backlog`` octets wait for a client (write buffer and
  I-frames behind the k window); a client past it is closed as a slow reader, and one that
  does not read what it asked for is not read either until it does (LinkProtocol).
  Spontaneous data that does not fit is dropped instead.
- An I-frame whose ASDU is shorter than its data unit identifier closes the connection (there
  is no cause or address to answer to).
- A redundancy group (``standby_ports``: IEC 60870-5-104 edition 2, redundant connections):
  every port serves the same image, and the group's stream (spontaneous data and command
  feedback) goes to one connection, the last to receive STARTDT. While none is started the
  stream is queued for the group (up to ``max_backlog`` octets, beyond which it is dropped and
  counted); when the started one fails or another takes STARTDT, what it had not delivered
  (queued behind its k window, or sent and not acknowledged) goes back to the head of the
  group's queue and is sent on the connection that gets STARTDT next: an object may arrive
  twice across a switch. The group's queue stays within ``max_backlog`` (and within the room
  the joining connection has): past it the oldest frames are dropped (``group_dropped``).
  Answers to a connection's own requests (a GI) stay with that connection.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np
import polars as pl

from iec104._codec import Decoder
from iec104._encode import encode_asdu, encode_points, i_frame, stamp
from iec104.link import Batch, Channel, Link, LinkConfig, LinkEvent
from iec104.protocol import MAX_BACKLOG, LinkProtocol, shared_buffers
from iec104 import tls as _tls
from iec104.settings import FieldSizes
from iec104.types import (CP56_VARIANT, NO_TIME, POINT_DTYPE, Cot, FrameStatus, TimeFlag,
                          TypeID, broadcast_ca, family_of)

if TYPE_CHECKING:
    from iec104.metadata import PointListSource

__all__ = ["Outstation", "GENERATED_TYPES"]

log = logging.getLogger("iec104.outstation")

GENERATED_TYPES = (13, 1, 13, 3, 11, 13, 9, 15, 5, 7)
# monitor family -> the command family that sets it
COMMAND_FOR = {1: 45, 3: 46, 5: 47, 7: 51, 9: 48, 11: 49, 13: 50}
# type id -> its family (the plain type), as a table numpy can index with a whole column
FAMILY = np.array([family_of(t) for t in range(256)], np.uint8)
TIME_OF = np.array([CP56_VARIANT.get(int(FAMILY[t]), t) for t in range(256)], np.uint8)
MONITOR_FOR = {c: m for m, c in COMMAND_FOR.items()}      # command family -> its feedback
_COUNTERS = 15                      # the integrated totals' family: M_IT_NA_1, M_IT_TA_1, M_IT_TB_1
# the transport pauses us above this many octets (and we stop reading that client until it
# resumes us below the low mark); what waits beyond that is bounded by Outstation.max_backlog
_WRITE_HIGH, _WRITE_LOW = 256 << 10, 64 << 10


def _initial_values(type_ids: np.ndarray, ioas: np.ndarray) -> np.ndarray:
    """Each point's first value, from its type family and IOA (whole columns: a Python call
    per point took 0.6 s for 100,000 points)."""
    fam, ioa = FAMILY[type_ids], ioas.astype(np.int64)
    by_family = {1: ioa % 2, 3: 1 + ioa % 2, 5: ioa % 32 - 16, 7: ioa * 2654435761 % 2**32,
                 9: ((ioa % 200) - 100) / 128.0, 11: ioa % 2000 - 1000, 15: ioa * 10}
    return np.select([fam == f for f in by_family], list(by_family.values()),
                     np.round(100.0 + (ioa % 97) * 1.5, 3))


# the Batch bits a connection acts on: requests, acks (room to send), output, events, timer
_WANT = int(Batch.IFRAMES | Batch.OUTPUT | Batch.EVENTS | Batch.ACKED)
_IFRAMES, _EVENTS, _OUTPUT = int(Batch.IFRAMES), int(Batch.EVENTS), int(Batch.OUTPUT)
_CLOSE, _STARTED, _STOPPED = int(LinkEvent.CLOSE), int(LinkEvent.STARTED), int(LinkEvent.STOPPED)


class _GroupEntry(list[Any]):
    """A queue entry ([data, offsets, first]) of a redundancy group's stream."""


class _Connection(LinkProtocol):
    """One client: its channel (link core and decoder) and queue of frames to send."""

    def __init__(self, out: "Outstation") -> None:
        rb, ws = shared_buffers(out.loop)
        super().__init__(out.loop, Channel(Link(out.link_config), Decoder(workspace=ws, **out.sizes),
                                           rb, broadcast_ca=out.broadcast, want=_WANT))
        self.out = out
        self.queue: collections.deque[list[Any]] = collections.deque()  # [data, offsets, first]
        self.queued = 0
        # (ca, ioa) -> (deadline, type, value, qualifier)
        self.selected: dict[tuple[int, int], tuple[float, int, float, int]] = {}
        self.peer = "?"
        self.dropped = 0
        self.max_backlog = out.max_backlog
        self.queued_bytes = 0
        self.enqueued = 0                       # I-frames queued since the connection began
        self.frames_sent = 0                    # I-frames written since the connection began
        self.running: dict[tuple[int, int], int] = {}   # (type, ca) -> I-frames at its ActTerm
        self.port = 0                           # the local port: which address of a group
        # a group's active connection: the last k I-frames written, [(entry, first, n)], so
        # that those not acknowledged when it fails are sent again on the next one
        self.written: collections.deque[tuple[list[Any], int, int]] = collections.deque()
        self.written_n = 0

    @property
    def link(self) -> Link:
        return self.channel.link

    # ---- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        out = self.out
        # a stream connection's transport (TCP or TLS): the write buffer limits below
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer = "%s:%s" % transport.get_extra_info("peername")[:2]
        self.port = transport.get_extra_info("sockname")[1]
        transport.set_write_buffer_limits(high=_WRITE_HIGH, low=_WRITE_LOW)
        out._conns.add(self)
        out.counts["connections"] += 1
        self.link.connection_made(self.loop.time())
        self.read_with_reader(transport)
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.out._leave_group(self)
        self.out._conns.discard(self)
        self.stop_timer()
        self.stop_reader()
        self.transport = None

    def on_batch(self, flags: int) -> None:
        ch = self.channel
        if flags & _EVENTS and not self._events(ch.link.take_events()):
            return
        if flags & _IFRAMES and self.transport is not None:
            frames, points, raw = ch.frames()[:ch.accepted], ch.points(), ch.raw()
            for f in frames[frames["format"] == 0]:     # requests are few: one at a time
                if self.transport is None:              # a request closed the connection
                    return
                off, first = int(f["offset"]), int(f["first_point"])
                self.out._request(self, f, bytes(raw[off:off + int(f["length"])]),
                                  points[first:first + int(f["n_points"])])
        self.flush()

    def peer_name(self) -> str:
        return self.peer

    def abort(self, reason: str) -> None:
        # LinkProtocol.write: the transport's buffer passed max_backlog
        self.out._drop(self, reason, "closed_slow_reader")

    def resume_writing(self) -> None:
        super().resume_writing()
        self.flush()

    # ---- sending -----------------------------------------------------------------------------

    def enqueue(self, data: bytearray, offsets: np.ndarray, droppable: bool = False,
                group: bool = False) -> None:
        """Queue I-frames; ``droppable`` (spontaneous data) ones are dropped rather than
        passing the backlog limit, the others close a client that lets them pile up;
        ``group``: the redundancy group's stream (moves to the next connection on failure)."""
        n = len(offsets) - 1
        if n <= 0 or self.transport is None:
            return
        size = int(offsets[-1]) - int(offsets[0])
        if droppable and self.out.backlog(self) + size > self.out.max_backlog:
            self.dropped += n
            self.out.counts["frames_dropped"] += n
            return
        self.queue.append(_GroupEntry([data, offsets, 0]) if group else [data, offsets, 0])
        self.queued += n
        self.queued_bytes += size
        self.enqueued += n
        self.out._check_backlog(self)

    def enqueue_asdu(self, asdu: bytes) -> None:
        frame = bytearray(i_frame(asdu, 0, 0))
        self.enqueue(frame, np.array([0, len(frame)], np.uint32))

    def flush(self, flags: int = _OUTPUT) -> None:
        """Write the link's output and the queued I-frames the k window lets out (``flags``:
        unused, the link is asked whether it has output)."""
        if self.transport is None:
            return
        link = self.link
        if link.has_output:
            self.write(link.data_to_send())
        now = self.loop.time()
        while self.queue and not self.write_paused and self.transport is not None:
            space = link.window_space()
            if space <= 0:
                break
            entry = self.queue[0]
            data, offsets, first = entry
            n = min(space, len(offsets) - 1 - first)
            ns, nr = link.account_sent(n, now)
            stamp(data, offsets, first, n, ns, nr)
            self.out.counts["frames_out"] += n
            self.queued -= n
            self.frames_sent += n
            self.queued_bytes -= int(offsets[first + n]) - int(offsets[first])
            if first + n == len(offsets) - 1:
                self.queue.popleft()
            else:
                entry[2] = first + n
            if self is self.out._active:
                self._written(entry, first, n)
            self.write(memoryview(data)[offsets[first]:offsets[first + n]])

    def _written(self, entry: list[Any], first: int, n: int) -> None:
        self.written.append((entry, first, n))
        self.written_n += n
        while self.written_n - self.written[0][2] >= self.out.link_config.k:
            self.written_n -= self.written.popleft()[2]

    def undelivered(self) -> list[_GroupEntry]:
        """The group's frames this connection has not delivered, in order, as queue entries:
        those written but not acknowledged, then those behind the k window."""
        unacked = self.link.status()["unacked_sent"]
        back: list[_GroupEntry] = []
        for entry, first, n in reversed(self.written):
            if unacked <= 0:
                break
            take = min(n, unacked)
            unacked -= take
            if isinstance(entry, _GroupEntry):
                back.append(_GroupEntry([entry[0], entry[1][first + n - take:first + n + 1], 0]))
        back.reverse()
        back += [_GroupEntry([e[0], e[1][e[2]:], 0]) for e in self.queue
                 if isinstance(e, _GroupEntry)]
        self.written.clear()
        self.written_n = 0
        return back

    def _events(self, ev: int) -> bool:
        """Link events; False when the link closes."""
        if ev & _CLOSE:
            self.out._drop(self, self.link.close_reason or "link fault", "closed_on_fault")
            return False
        if ev & _STARTED and self.out.send_ei:
            for ca in self.out.stations:
                self.enqueue_asdu(self.out._asdu(TypeID.M_EI_NA_1, ca, 0, 0, Cot.INITIALIZED))
        if ev & (_STARTED | _STOPPED):
            # by the state reached: STOPDT act and STARTDT act in one read come as one mask
            if self.link.data_transfer == "started":
                if self.out.group:
                    self.out._join_group(self)
            else:
                self.out._leave_group(self)
        return True


COMMAND_RECORDS = 10_000      # commands an Outstation keeps (``commands``, ``command_queue``)


class Outstation:
    """An IEC 104 server with one or more stations (common addresses) and their points.

    Parameters
    ----------
    stations, points : int
        Generated image: stations CA 1..``stations``, ``points`` objects each.
    point_list : path or polars.DataFrame, optional
        Columns ca, ioa, type, value (initial), command_type, sbo (instead of generated points).
    port : int
        0 picks a free port; ``.port`` tells which after start.
    rate : float
        Spontaneous changes per second (COT 3), over all stations.
    with_time : bool
        Spontaneous changes with CP56Time2a (M_ME_TF_1...) instead of without.
    k, w, t1, t2, t3 : link parameters of every connection.
    send_ei : bool
        Send M_EI_NA_1 (end of initialization) per station after STARTDT.
    max_backlog : int
        Octets that may wait for one client (its write buffer and the I-frames queued behind
        its k window); past it the client is closed as a slow reader
        (``counts["closed_slow_reader"]``).
    standby_ports : sequence of int
        More ports (0: a free one) on ``host`` that serve the same stations as a redundancy
        group with ``port``; ``.ports`` tells which after start (see the rules above).
    tls : iec104.tls.TLS or ssl.SSLContext, optional
        Serve TLS (IEC 62351-3): a client certificate is required unless ``verify=False``;
        a client that fails the handshake (or the allow-list) is closed and counted
        (``counts["tls_failures"]``), the others are not disturbed.

    Examples
    --------
    >>> async with iec104.Outstation(stations=2, points=100, rate=1000) as out:
    ...     print(out.port)
    """

    def __init__(self, *, stations: int = 2, points: int = 100,
                 point_list: PointListSource | None = None,
                 host: str = "127.0.0.1", port: int = 0, rate: float = 0.0,
                 with_time: bool = False, k: int = LinkConfig.k, w: int = LinkConfig.w,
                 t1: float = LinkConfig.t1, t2: float = LinkConfig.t2,
                 t3: float = LinkConfig.t3, send_ei: bool = False,
                 select_timeout: float = 10.0, seed: int = 0, cot_size: int = 2,
                 ca_size: int = 2, ioa_size: int = 3, tick: float = 0.01,
                 max_backlog: int = MAX_BACKLOG, tls: _tls.TLS | ssl.SSLContext | None = None,
                 tls_handshake_timeout: float = 10.0, standby_ports: Sequence[int] = ()) -> None:
        self.host, self.port = host, port
        self.ports = [port, *standby_ports]
        self.group = bool(standby_ports)
        self._active: _Connection | None = None     # a group's started connection
        self._held: collections.deque[_GroupEntry] = collections.deque()  # the group's stream
        self._held_bytes = 0
        self.tls, self.tls_handshake_timeout = tls, tls_handshake_timeout
        self.rate, self.with_time, self.send_ei = rate, with_time, send_ei
        self.select_timeout, self.tick = select_timeout, tick
        self.link_config = LinkConfig(t1=t1, t2=t2, t3=t3, k=k, w=w, role="outstation")
        self.sizes = FieldSizes(cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size)
        self.broadcast = broadcast_ca(ca_size)
        self.max_backlog = max_backlog
        self.rng = np.random.default_rng(seed)
        self.image, self.command_points = self._build(stations, points, point_list)
        # the counters' values at their last freeze (QCC FRZ 1/2), which a counter read returns;
        # NaN: never frozen, a read returns the running value
        self._frozen = np.full(len(self.image), np.nan)
        self.stations = sorted(set(self.image["ca"].tolist()))
        self.index: dict[tuple[int, int, int], int] = {key: i for i, key in enumerate(zip(
            self.image["ca"].tolist(), self.image["ioa"].tolist(),
            FAMILY[self.image["type_id"]].tolist()))}
        # the last COMMAND_RECORDS commands (a flood of them keeps memory bounded) and
        # those nobody took from the queue yet, the oldest dropped first
        self.commands: list[dict[str, Any]] = []
        self.command_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(COMMAND_RECORDS)
        self._n_commands = 0
        self.on_command: list[Callable[[dict[str, Any]], object]] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.clock_offset_ms = 0
        self._cursor = 0
        self._conns: set[_Connection] = set()
        self._servers: dict[int, asyncio.Server | _tls.TLSServer] = {}  # port -> its listener
        self._closed_servers: list[asyncio.Server | _tls.TLSServer] = []  # to wait for at close()
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the image ---------------------------------------------------------------------------

    def _build(self, stations: int, points: int, point_list: PointListSource | None
               ) -> tuple[np.ndarray, dict[tuple[int, int, int], bool]]:
        if point_list is None:
            n = stations * points
            img = np.zeros(n, POINT_DTYPE)
            img["ca"] = np.repeat(np.arange(1, stations + 1), points)
            img["ioa"] = np.tile(np.arange(1, points + 1), stations)
            img["type_id"] = np.array(GENERATED_TYPES)[(img["ioa"] - 1) % len(GENERATED_TYPES)]
            img["value"] = _initial_values(img["type_id"], img["ioa"])
            cmds = {(ca, ioa, COMMAND_FOR[t]): False for ca, ioa, t in zip(
                img["ca"].tolist(), img["ioa"].tolist(), img["type_id"].tolist()) if t in COMMAND_FOR}
        else:
            from iec104.metadata import SBO_WORDS, read_point_list
            df = read_point_list(point_list)
            mon = df.filter(pl.col("type_id").is_not_null() & (pl.col("type_id") <= 40))
            img = np.zeros(len(mon), POINT_DTYPE)
            img["ca"], img["ioa"], img["type_id"] = mon["ca"], mon["ioa"], mon["type_id"]
            values = mon["value"].cast(pl.Float64, strict=False) if "value" in mon.columns else None
            initial = _initial_values(img["type_id"], img["ioa"])
            img["value"] = initial if values is None else \
                np.where(values.is_null().to_numpy(), initial, values.fill_null(0).to_numpy())
            sbo = df["sbo"].cast(pl.String).str.to_lowercase().is_in(SBO_WORDS) \
                if "sbo" in df.columns else pl.Series([False] * len(df))
            cmds = {(int(ca), int(ioa), family_of(int(c))): bool(s) for ca, ioa, c, s in zip(
                df["ca"], df["ioa"], df["command_type"], sbo) if c is not None}
        img["time"] = NO_TIME
        img["extra"] = -1
        img["cot"] = Cot.SPONTANEOUS
        order = np.lexsort((img["ioa"], FAMILY[img["type_id"]], img["ca"]))
        return img[order], cmds

    def image_of(self, ca: int) -> np.ndarray:
        """The current image of a station (a copy), in IOA order."""
        rows: np.ndarray = self.image[self.image["ca"] == ca]
        return rows[np.argsort(rows["ioa"], kind="stable")]

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the simulator serves on (set by :meth:`start`)."""
        if self._loop is None:
            raise RuntimeError("the simulator is not started: await start() first")
        return self._loop

    async def start(self) -> "Outstation":
        self._loop = asyncio.get_running_loop()
        self.ports = [await self._listen(p) for p in self.ports]
        self.port = self.ports[0]
        if self.rate > 0:
            self._ticker = self.loop.create_task(self._spontaneous())
        return self

    async def _listen(self, port: int) -> int:
        factory = lambda: _Connection(self)
        context, tls = _tls.context_of(self.tls, server=True)
        server: asyncio.Server | _tls.TLSServer
        if context is not None:
            allowed = tls.fingerprints if tls is not None else None

            def failed(reason: str, peer: str) -> None:
                self.counts["tls_failures"] += 1
                log.warning("simulator: TLS client %s refused: %s", peer, reason)

            server = await _tls.TLSServer(
                self.loop, context, factory, failed, allowed, self.tls_handshake_timeout,
            ).listen(self.host, port)
        else:
            server = await self.loop.create_server(factory, self.host, port, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        self._servers[port] = server
        return port

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for port in list(self._servers):
            self.fail_port(port)
        for c in list(self._conns):
            if c.transport is not None:
                c.transport.abort()
        while self._closed_servers:
            await self._closed_servers.pop().wait_closed()

    def fail_port(self, port: int) -> None:
        """Stop listening on ``port`` and abort its connections now, as an address of a
        group that fails (nothing queued for them is written); :meth:`open_port` serves it
        again."""
        server = self._servers.pop(port, None)
        if server is not None:
            server.close()
            self._closed_servers.append(server)
        for c in list(self._conns):
            if c.port == port and c.transport is not None:
                c.transport.abort()

    async def open_port(self, port: int) -> None:
        """Listen on ``port`` again (after :meth:`fail_port`)."""
        if port not in self._servers:
            await self._listen(port)

    async def __aenter__(self) -> "Outstation":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, int]:
        return {"connections_open": len(self._conns), **self.counts,
                "commands": self._n_commands}

    # ---- connections -------------------------------------------------------------------------

    def backlog(self, conn: _Connection) -> int:
        """Octets waiting for a client: the transport's write buffer and the I-frames queued
        behind its k window. (Control frames need no room of their own: while writing is
        paused the client is not read, LinkProtocol.pause_writing.)"""
        t = conn.transport
        return (t.get_write_buffer_size() if t is not None else 0) + conn.queued_bytes

    def pending(self) -> int:
        """I-frames not yet delivered: waiting for a group connection to start, queued behind
        a client's k window, or written and not yet acknowledged. 0: every client has
        confirmed everything the simulator sent (a barrier for "all is delivered")."""
        held: int = sum(len(e[1]) - 1 - e[2] for e in self._held)      # [data, offsets, first]
        sent: int = sum(c.queued + c.link.status()["unacked_sent"] for c in self._conns
                        if c.transport is not None)
        return held + sent

    def _check_backlog(self, conn: _Connection) -> None:
        if conn.transport is not None and self.backlog(conn) > self.max_backlog:
            self._drop(conn, f"slow reader: {self.backlog(conn)} octets waiting "
                             f"(limit {self.max_backlog})", "closed_slow_reader")

    def _drop(self, conn: _Connection, reason: str, counter: str) -> None:
        """Close a connection now (abort: what is queued for it is dropped), logged and
        counted; nothing more is read from it, queued for it or written to it."""
        t = conn.transport
        if t is None:
            return
        log.info("closing %s: %s", conn.peer, reason)
        self.counts[counter] += 1
        self._leave_group(conn)
        conn.transport = None
        conn.queue.clear()
        conn.queued = conn.queued_bytes = 0
        conn.stop_timer()
        t.abort()

    # ---- a redundancy group's stream ---------------------------------------------------------

    def _publish(self, data: bytearray, offsets: np.ndarray, droppable: bool) -> None:
        """Spontaneous data or feedback: to every started client, or to the group."""
        if not self.group:
            targets = [c for c in self._conns if c.link.data_transfer == "started"]
            for i, c in enumerate(targets):
                c.enqueue(data if i == len(targets) - 1 else bytearray(data), offsets, droppable)
                c.flush()
            return
        active = self._active
        if active is not None and active.transport is not None:
            active.enqueue(data, offsets, droppable, group=True)
            active.flush()
            return
        size = int(offsets[-1]) - int(offsets[0])
        if self._held_bytes + size > self.max_backlog:
            self.counts["frames_dropped"] += len(offsets) - 1
            return
        self._held.append(_GroupEntry([data, offsets, 0]))
        self._held_bytes += size
        self.counts["group_queued"] += len(offsets) - 1

    def _leave_group(self, conn: _Connection) -> None:
        """The active connection failed or lost STARTDT to another: what it had not
        delivered goes back to the head of the group's queue."""
        if conn is not self._active:
            return
        self._active = None
        back = conn.undelivered()
        for e in reversed(back):
            self._held.appendleft(e)
            self._held_bytes += int(e[1][-1]) - int(e[1][0])
        self.counts["group_requeued"] += sum(len(e[1]) - 1 for e in back)
        # its queue (up to max_backlog) plus its k unacknowledged frames can pass the bound
        # the group's queue keeps: unbounded, the next master would be handed more than it
        # may hold and closed as a slow reader, and so every master after it
        self._trim_held(self.max_backlog)

    def _trim_held(self, limit: int) -> None:
        """Drop the oldest frames of the group's queue until at most ``limit`` octets wait
        (counted in ``counts["group_dropped"]``): the newest values matter most."""
        while self._held and self._held_bytes > limit:
            entry = self._held[0]
            offsets, first = entry[1], entry[2]
            # the fewest frames of this entry whose octets cover the excess
            end = int(np.searchsorted(offsets, int(offsets[first]) + self._held_bytes - limit))
            end = min(end, len(offsets) - 1)
            self._held_bytes -= int(offsets[end]) - int(offsets[first])
            self.counts["group_dropped"] += end - first
            if end == len(offsets) - 1:
                self._held.popleft()
            else:
                entry[2] = end

    def _join_group(self, conn: _Connection) -> None:
        """STARTDT on ``conn``: it takes the group's stream, first what waited for it."""
        if self._active is not None and self._active is not conn:
            self._leave_group(self._active)
        if self._active is not conn:
            self.counts["group_switches"] += 1
        self._active = conn
        if conn.transport is not None:
            # what the group kept must fit beside what this connection already waits with
            # (its M_EI_NA_1, say), or taking the stream would close it as a slow reader
            self._trim_held(max(0, self.max_backlog - self.backlog(conn)))
        while self._held and conn.transport is not None:
            data, offsets, first = self._held.popleft()
            self._held_bytes -= int(offsets[-1]) - int(offsets[first])
            conn.enqueue(data, offsets[first:], group=True)

    # ---- requests ----------------------------------------------------------------------------

    def _asdu(self, type_id: int, ca: int, ioa: int, value: float, cot: int, quality: int = 0,
              negative: bool = False, time_ms: int | None = None) -> bytes:
        return encode_asdu(int(type_id), ca, ioa, value, quality, cot=int(cot), time_ms=time_ms,
                           negative=negative, **self.sizes)

    @staticmethod
    def _mirror(raw: bytes, cot: int, negative: bool = False) -> bytes:
        asdu = bytearray(raw[6:])
        asdu[2] = (asdu[2] & 0x80) | (0x40 if negative else 0) | cot
        return bytes(asdu)

    def _request(self, conn: _Connection, f: np.void, raw: bytes, rows: np.ndarray) -> None:
        t, ca, cot, status = int(f["type_id"]), int(f["ca"]), int(f["cot"]), int(f["status"])
        self.counts["requests"] += 1
        if status == FrameStatus.SHORT_ASDU:
            # no complete type, cause and common address: nothing to answer to
            self._drop(conn, f"malformed I-frame: ASDU of {int(f['length']) - 6} octets is too "
                             f"short for its data unit identifier", "closed_malformed")
            return
        if status == FrameStatus.UNKNOWN_TYPE or t not in TypeID._value2member_map_:
            conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_TYPE_ID, True))
            return
        if status != FrameStatus.OK:
            return
        cas = self.stations if ca == self.broadcast else [ca]
        if ca != self.broadcast and ca not in self.stations:
            conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_CA, True))
            return
        if t in (TypeID.C_IC_NA_1, TypeID.C_CI_NA_1):
            if cot != Cot.ACTIVATION:
                conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_CAUSE, True))
                return
            qualifier = int(rows["value"][0])
            # QOI 20..36 (station, groups 1..16) and QCC request 1..5 (groups 1..4, general)
            # are the defined ones; the rest ("not used", reserved) are refused, no data sent
            if not (20 <= qualifier <= 36 if t == TypeID.C_IC_NA_1 else 1 <= qualifier & 0x3F <= 5):
                self.counts["interrogations_refused_qualifier"] += len(cas)
                for c in cas:
                    conn.enqueue_asdu(self._for_station(raw, c, Cot.ACTIVATION_CON, True))
                return
            # A station interrogated again before its ActTerm went out refuses (negative
            # ActCon) and goes on with the running one, as RTUs commonly do (the standard
            # leaves it to the device): the master retries after the ActTerm. Queueing every
            # repeat instead would let one client's burst of 2,000 GIs occupy the loop with
            # 2,000 image encodes (and their memory) while every other client waits.
            run = [c for c in cas if conn.running.get((t, c), 0) <= conn.frames_sent]
            for c in cas:                       # every station confirms, then answers
                conn.enqueue_asdu(self._for_station(raw, c, Cot.ACTIVATION_CON, c not in run))
            if len(run) < len(cas):
                self.counts["interrogations_refused_running"] += len(cas) - len(run)
            for c in run:
                self._interrogation(conn, raw, c, qualifier,
                                    counters=t == TypeID.C_CI_NA_1)
                conn.running[(t, c)] = conn.enqueued
        elif t == TypeID.C_RD_NA_1:
            self._read(conn, raw, ca, int(rows["ioa"][0]))
        elif t == TypeID.C_CS_NA_1:
            self._clock_sync(conn, raw, cot, rows[0])
        elif 45 <= t <= 64:
            self._command(conn, raw, t, ca, cot, rows[0])
        elif t in (104, 105, 106, 107, 110, 111, 112, 113):
            # only an activation is a request (COT 45 otherwise, as for the other commands),
            # or the deactivation of a parameter activation (IEC 60870-5-101 7.3.5.4); a reset
            # process qualifier (QRP) of 0 is "not used": refused
            deactivation = t == TypeID.P_AC_NA_1 and cot == Cot.DEACTIVATION
            if cot != Cot.ACTIVATION and not deactivation:
                conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_CAUSE, True))
            elif deactivation:                  # (no parameters here to act on)
                conn.enqueue_asdu(self._mirror(raw, Cot.DEACTIVATION_CON))
            else:
                refused = t == TypeID.C_RP_NA_1 and int(rows["value"][0]) == 0
                conn.enqueue_asdu(self._mirror(raw, Cot.ACTIVATION_CON, refused))
        else:
            conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_TYPE_ID, True))

    def _for_station(self, raw: bytes, ca: int, cot: int, negative: bool = False) -> bytes:
        """The mirror of a request with the station's own CA (answers to a broadcast)."""
        asdu = bytearray(self._mirror(raw, cot, negative))
        at = 2 + self.sizes["cot_size"]
        asdu[at:at + self.sizes["ca_size"]] = ca.to_bytes(self.sizes["ca_size"], "little")
        return bytes(asdu)

    def _interrogation(self, conn: _Connection, raw: bytes, ca: int, qualifier: int, *,
                       counters: bool) -> None:
        # the image is sorted by station, family and IOA: a station is one slice, and its
        # rows with their plain types are already in the (type, IOA) order of the ASDUs
        lo, hi = np.searchsorted(self.image["ca"], (ca, ca + 1))
        img = self.image[lo:hi]
        fam = FAMILY[img["type_id"]]
        if counters:
            group, frz = qualifier & 0x3F, qualifier >> 6
            mask = fam == _COUNTERS
            if 1 <= group <= 4:
                mask &= ((img["ioa"] - 1) % 4) + 1 == group
            data_cot = 37 + group if 1 <= group <= 4 else 37
            if frz:
                # FRZ 1 freeze, 2 freeze and reset, 3 reset: acted on, nothing sent (a later
                # read, FRZ 0, returns what was frozen); img is a view of the image
                live, frozen = img["value"], self._frozen[lo:hi]
                if frz in (1, 2):
                    frozen[mask] = live[mask]
                if frz in (2, 3):
                    live[mask] = 0
                conn.enqueue_asdu(self._for_station(raw, ca, Cot.ACTIVATION_TERMINATION))
                return
        else:                                   # integrated totals only on counter interrogation
            mask = fam != _COUNTERS
            group = qualifier - 20
            if 1 <= group <= 16:
                mask &= ((img["ioa"] - 1) % 16) + 1 == group
            data_cot = qualifier
        rows = img[mask]                        # a copy: boolean indexing
        rows["type_id"] = fam[mask]
        rows["time"] = NO_TIME
        if counters:
            frozen = self._frozen[lo:hi][mask]
            rows["value"] = np.where(np.isnan(frozen), rows["value"], frozen)
        if len(rows):
            data, offsets = encode_points(rows, cot=data_cot, **self.sizes)
            conn.enqueue(data, offsets)
        conn.enqueue_asdu(self._for_station(raw, ca, Cot.ACTIVATION_TERMINATION))

    def _read(self, conn: _Connection, raw: bytes, ca: int, ioa: int) -> None:
        hits = np.flatnonzero((self.image["ca"] == ca) & (self.image["ioa"] == ioa))
        if not len(hits):
            conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_IOA, True))
            return
        row = self.image[hits[:1]].copy()
        row["type_id"] = family_of(int(row["type_id"][0]))
        data, offsets = encode_points(row, cot=Cot.REQUEST, **self.sizes)
        conn.enqueue(data, offsets)

    def _clock_sync(self, conn: _Connection, raw: bytes, cot: int, row: np.void) -> None:
        ms, flags = int(row["time"]), int(row["time_flags"])
        if cot != Cot.ACTIVATION:
            conn.enqueue_asdu(self._mirror(raw, Cot.UNKNOWN_CAUSE, True))
        elif ms == NO_TIME or flags & TimeFlag.IV:
            log.info("%s: clock synchronisation refused: invalid time", conn.peer)
            self.counts["clock_sync_refused"] += 1
            conn.enqueue_asdu(self._mirror(raw, Cot.ACTIVATION_CON, True))
        else:
            self.clock_offset_ms = ms - int(time.time() * 1000)
            conn.enqueue_asdu(self._mirror(raw, Cot.ACTIVATION_CON))

    def _command(self, conn: _Connection, raw: bytes, t: int, ca: int, cot: int,
                 row: np.void) -> None:
        fam = family_of(t)
        ioa = int(row["ioa"])
        select = fam != 51 and bool(int(row["quality"]) & 0x80)
        qualifier = int(row["quality"]) & 0x7F          # QU / QL, without S/E
        value = float(row["value"])
        record: dict[str, Any] = {"time": time.time(), "connection": conn.peer, "type_id": t,
                  "type": TypeID(t).name, "ca": ca, "ioa": ioa, "value": value,
                  "qualifier": int(row["quality"]), "select": select, "cot": cot}
        key = (ca, ioa, fam)
        # a selection is of a point (IOA); anything but a new select to it ends it
        held = None if select and cot == Cot.ACTIVATION else conn.selected.pop((ca, ioa), None)
        if held is not None and held[0] < self.loop.time():
            held = None                                 # select timeout passed
        if cot not in (Cot.ACTIVATION, Cot.DEACTIVATION):
            answer, result = (Cot.UNKNOWN_CAUSE, True), "unknown cause"
        elif key not in self.command_points:
            answer, result = (Cot.UNKNOWN_IOA, True), "unknown IOA"
        elif cot == Cot.DEACTIVATION:
            broken = select and held is not None and held[1:] == (t, value, qualifier)
            answer = (Cot.DEACTIVATION_CON, not broken)
            result = "select broken" if broken else "refused: no such selection to break"
        elif fam in (46, 47) and value not in (1, 2):
            # DCS / RCS 0 and 3 are "not permitted" (IEC 60870-5-101 7.2.6.16/17): neither
            # selected nor executed, or a double point would go indeterminate
            answer, result = (Cot.ACTIVATION_CON, True), f"refused: state {value:g} not permitted"
        elif select:
            conn.selected[(ca, ioa)] = (self.loop.time() + self.select_timeout, t, value,
                                        qualifier)
            answer, result = (Cot.ACTIVATION_CON, False), "selected"
        elif held is not None and held[1:] != (t, value, qualifier):
            _, st, sv, sq = held
            why = (f"type {TypeID(t).name}, selected {TypeID(st).name}" if st != t else
                   f"value {value:g}, selected {sv:g}" if sv != value else
                   f"qualifier {qualifier}, selected {sq}")
            answer = (Cot.ACTIVATION_CON, True)
            result = f"refused: execute differs from select ({why})"
        elif held is None and self.command_points[key]:
            answer, result = (Cot.ACTIVATION_CON, True), "refused: not selected"
        else:
            answer, result = (Cot.ACTIVATION_CON, False), "executed"
        record["result"] = result
        self._n_commands += 1
        self.commands.append(record)
        if len(self.commands) > 2 * COMMAND_RECORDS:        # (amortised: half at a time)
            del self.commands[:-COMMAND_RECORDS]
        if self.command_queue.full():
            self.command_queue.get_nowait()
        self.command_queue.put_nowait(record)
        for cb in self.on_command:
            cb(record)
        conn.enqueue_asdu(self._mirror(raw, answer[0], answer[1]))
        if result != "executed":
            return
        term = self._mirror(raw, Cot.ACTIVATION_TERMINATION)
        conn.enqueue_asdu(term)
        self._feedback(ca, ioa, fam, value)

    def _feedback(self, ca: int, ioa: int, command_family: int, value: float) -> None:
        monitor = MONITOR_FOR.get(command_family)
        i = None if monitor is None else self.index.get((ca, ioa, monitor))
        if i is None:
            return
        if monitor == 5:                        # regulating step: 1 lower, 2 higher
            value = self.image["value"][i] + (1 if value == 2 else -1)
        self.image["value"][i] = value
        row = self.image[i:i + 1].copy()
        row["type_id"] = family_of(int(row["type_id"][0]))
        data, offsets = encode_points(row, cot=Cot.RETURN_REMOTE, **self.sizes)
        self._publish(data, offsets, False)

    # ---- spontaneous traffic -----------------------------------------------------------------

    def changes(self, n: int) -> np.ndarray:
        """Apply ``n`` changes to the image; returns them as rows to send (COT 3).

        The changes walk the image as a rolling window (the image is kept sorted by station,
        type and IOA), so that a batch needs no sorting and packs into full ASDUs; the values
        take a random walk."""
        img = self.image
        n = min(n, len(img))
        idx = (self._cursor + np.arange(n)) % len(img)
        self._cursor = int((self._cursor + n) % len(img))
        fam = FAMILY[img["type_id"][idx]]
        v = img["value"][idx]
        step = self.rng.normal(0, 1, len(idx))
        v = np.where(fam == 13, v + step, v)
        v = np.where(fam == 11, np.clip(np.round(v + step * 10), -32768, 32767), v)
        v = np.where(fam == 9, np.clip(v + step / 256, -1, 32767 / 32768), v)
        v = np.where(fam == 1, 1 - v, v)
        v = np.where(fam == 3, 3 - v, v)
        v = np.where(fam == 15, v + 1, v)
        img["value"][idx] = v
        rows = img[idx].copy()
        rows["cot"] = Cot.SPONTANEOUS
        if self.with_time:
            rows["type_id"] = TIME_OF[rows["type_id"]]
            rows["time"] = int(time.time() * 1000) + self.clock_offset_ms
        else:
            rows["type_id"] = fam
            rows["time"] = NO_TIME
        return rows

    async def _spontaneous(self) -> None:
        owed = 0.0
        last = self.loop.time()
        while True:
            await asyncio.sleep(self.tick)
            now = self.loop.time()
            owed += self.rate * (now - last)
            last = now
            n = int(owed)
            if n <= 0:
                continue
            owed -= n
            if not self.group and not any(c.link.data_transfer == "started" for c in self._conns):
                continue                # a group queues its stream while none is started
            rows = self.changes(n)
            data, offsets = encode_points(rows, **self.sizes)
            self.counts["spontaneous_objects"] += len(rows)
            self._publish(data, offsets, True)
