"""Decoding captures: pcap/pcapng (or hex text) to a table of every information object.

The reader walks the file once with ``struct.unpack_from`` (no per-packet objects beyond a
tuple), reassembles each TCP direction in sequence order (retransmissions dropped,
out-of-order segments held, gaps counted and skipped: the decoder then resynchronises at
the next 0x68), and feeds each direction to the streaming decoder, stamping every object
with the capture time of the segment that completed its APDU.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from iec104._codec import Decoder, rebase_cp24
from iec104.errors import CaptureError
from iec104.settings import FieldSizes
from iec104.store import rows_frame
from iec104.types import FRAME_DTYPE, POINT_DTYPE

__all__ = ["read_capture", "write_points", "CaptureResult", "CaptureError"]


@dataclass
class CaptureResult:
    points: pl.DataFrame
    frames: pl.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


# ---- packets ---------------------------------------------------------------------------------

_Packet = tuple[int, int, memoryview]                  # (time_ns, linktype, data)
_End = tuple[bytes, int]                                # (address, port)
# (src, dst, sport, dport, seq, flags, payload)
_Segment = tuple[bytes, bytes, int, int, int, int, memoryview]


def _packets(buf: bytes, path: object) -> Iterator[_Packet]:
    """Yield (time_ns, linktype, data memoryview) of every packet."""
    if len(buf) < 24:
        raise CaptureError(f"{path}: too short for a capture file")
    magic = buf[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        yield from _pcapng(buf, path)
        return
    formats = {b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
               b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}
    if magic not in formats:
        raise CaptureError(f"{path}: not a pcap or pcapng file (magic {bytes(magic).hex()})")
    e, mult = formats[magic]
    linktype = struct.unpack_from(e + "I", buf, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(e + "IIII")
    pos, n = 24, len(buf)
    mv = memoryview(buf)
    while pos + 16 <= n:
        sec, frac, incl, _ = rec.unpack_from(buf, pos)
        pos += 16
        if pos + incl > n:
            raise CaptureError(f"{path}: packet at offset {pos - 16} runs past the end of the file")
        yield sec * 1_000_000_000 + frac * mult, linktype, mv[pos:pos + incl]
        pos += incl
    if pos != n:                                    # (uint32 seconds: no int64 overflow)
        raise CaptureError(f"{path}: the file ends inside the packet record header at offset "
                           f"{pos} ({n - pos} of its 16 octets)")


_NS_MAX = (1 << 63) - 1                             # capture times are int64 ns


def _pcapng(buf: bytes, path: object) -> Iterator[_Packet]:
    mv = memoryview(buf)
    n, pos = len(buf), 0
    e = "<"
    ifaces: list[tuple[int, int, int]] = []         # (linktype, ns = ticks * mul // div)
    while pos + 12 <= n:
        btype = struct.unpack_from(e + "I", buf, pos)[0]
        if btype == 0x0A0D0D0A:                     # section header: byte order
            bom = bytes(buf[pos + 8:pos + 12])
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise CaptureError(f"{path}: damaged pcapng section header at offset {pos} "
                                   f"(byte-order magic {bom.hex()})")
            e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack_from(e + "I", buf, pos + 4)[0]
        if blen < 12 or pos + blen > n:
            raise CaptureError(f"{path}: damaged pcapng block at offset {pos}")
        body = pos + 8
        if btype == 1:                              # interface description
            if blen < 20:
                raise CaptureError(f"{path}: pcapng interface block at offset {pos} is "
                                   f"{blen} octets, shorter than its 20-octet header")
            linktype = struct.unpack_from(e + "H", buf, body)[0]
            mul, div = 1000, 1                      # default: microseconds
            opt = body + 8
            while opt + 4 <= pos + blen - 4:
                code, olen = struct.unpack_from(e + "HH", buf, opt)
                if code == 0:
                    break
                if code == 9 and olen >= 1:         # if_tsresol: 10^-r or 2^-r seconds
                    r = buf[opt + 4]
                    if r & 0x80:
                        mul, div = 1_000_000_000, 1 << (r & 0x7F)
                    elif r <= 9:
                        mul, div = 10 ** (9 - r), 1
                    else:
                        mul, div = 1, 10 ** (r - 9)
                opt += 4 + (olen + 3) // 4 * 4
            ifaces.append((linktype, mul, div))
        elif btype == 6:                            # enhanced packet
            if blen < 32:
                raise CaptureError(f"{path}: pcapng packet block at offset {pos} is {blen} "
                                   "octets, shorter than its 32-octet header and trailer")
            iface, hi, lo, cap = struct.unpack_from(e + "IIII", buf, body)
            if iface >= len(ifaces):
                raise CaptureError(f"{path}: packet for unknown interface {iface} at offset {pos}")
            linktype, mul, div = ifaces[iface]
            t = ((hi << 32) | lo) * mul // div
            if t > _NS_MAX:
                raise CaptureError(f"{path}: packet at offset {pos} has a timestamp past the "
                                   "year 2262 (beyond int64 nanoseconds)")
            cap = min(cap, blen - 32)               # the data stays inside its block
            yield t, linktype, mv[body + 20:body + 20 + cap]
        elif btype == 3 and ifaces:                 # simple packet: no time
            if blen < 16:
                raise CaptureError(f"{path}: pcapng simple packet block at offset {pos} is "
                                   f"{blen} octets, shorter than its 16-octet header")
            orig = struct.unpack_from(e + "I", buf, body)[0]
            cap = min(orig, blen - 16)
            yield 0, ifaces[0][0], mv[body + 4:body + 4 + cap]
        pos += blen
    if pos != n:
        raise CaptureError(f"{path}: the file ends inside the pcapng block header at offset "
                           f"{pos} ({n - pos} of its 12 octets)")


_LOOPBACK_V4 = (2, 2 << 24)                         # AF_INET, either byte order
_LOOPBACK_V6 = (24, 28, 30, 24 << 24, 28 << 24, 30 << 24)   # AF_INET6 on the BSDs, macOS


def _tcp(linktype: int, d: memoryview) -> _Segment | None:
    """(src, dst, sport, dport, seq, flags, payload) of a TCP packet, or None."""
    off = 0
    if linktype == 1:                               # Ethernet, VLAN tags
        if len(d) < 14:
            return None
        etype = struct.unpack_from(">H", d, 12)[0]
        off = 14
        while etype in (0x8100, 0x88A8) and len(d) >= off + 4:
            etype = struct.unpack_from(">H", d, off + 2)[0]
            off += 4
    elif linktype == 113:                           # Linux cooked (SLL)
        if len(d) < 16:
            return None
        etype, off = struct.unpack_from(">H", d, 14)[0], 16
    elif linktype == 276:                           # SLL2
        if len(d) < 20:
            return None
        etype, off = struct.unpack_from(">H", d, 0)[0], 20
    elif linktype == 0:                             # BSD loopback: family in host order
        if len(d) < 4:
            return None
        fam = struct.unpack_from("<I", d, 0)[0]
        etype = 0x0800 if fam in _LOOPBACK_V4 else 0x86DD if fam in _LOOPBACK_V6 else 0
        off = 4
    elif linktype in (101, 228, 229, 12, 14):       # raw IP
        if not len(d):
            return None
        etype = {4: 0x0800, 6: 0x86DD}.get(d[0] >> 4, 0)
    else:
        return None
    if etype == 0x0800:
        if len(d) < off + 20 or d[off + 9] != 6:
            return None
        ihl = (d[off] & 0x0F) * 4
        if ihl < 20 or struct.unpack_from(">H", d, off + 6)[0] & 0x1FFF:
            return None                             # a bad header, or a later fragment
        total = struct.unpack_from(">H", d, off + 2)[0]
        src, dst = bytes(d[off + 12:off + 16]), bytes(d[off + 16:off + 20])
        end = off + total if total else len(d)
        off += ihl
    elif etype == 0x86DD:
        if len(d) < off + 40 or d[off + 6] != 6:    # no extension headers
            return None
        plen = struct.unpack_from(">H", d, off + 4)[0]
        src, dst = bytes(d[off + 8:off + 24]), bytes(d[off + 24:off + 40])
        off += 40
        end = off + plen
    else:
        return None
    if len(d) < off + 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", d, off)
    doff = (d[off + 12] >> 4) * 4
    if doff < 20:
        return None
    flags = d[off + 13]
    return src, dst, sport, dport, seq, flags, d[off + doff:min(end, len(d))]


def _addr(a: bytes, port: int) -> str:
    if len(a) == 4:
        return f"{'.'.join(map(str, a))}:{port}"
    import ipaddress
    return f"[{ipaddress.IPv6Address(a)}]:{port}"


_CHUNK = 1 << 28                                    # octets of a stream decoded at a time


class _Stream:
    """One direction of a TCP connection: its bytes in sequence order, with the capture time
    at which each stretch of them became readable. Decoded, in bounded chunks, when the
    capture has been read; each APDU takes the time of the segment that completed it."""

    def __init__(self, conn: str, direction: str, sizes: FieldSizes) -> None:
        self.conn, self.direction, self.sizes = conn, direction, sizes
        self.synced = False                     # next_seq set from a first segment
        self.next_seq = 0
        self.held: dict[int, tuple[int, bytes]] = {}
        self.buf = bytearray()
        self.ends: list[int] = []               # stream offset after each stretch
        self.times: list[int] = []              # and its capture time
        self.gaps = 0
        self.frames = np.zeros(0, FRAME_DTYPE)
        self.points = np.zeros(0, POINT_DTYPE)
        self.frame_times = np.zeros(0, np.int64)

    def segment(self, seq: int, t: int, payload: bytes | memoryview) -> None:
        if not self.synced:
            self.next_seq, self.synced = seq, True
        rel = (seq - self.next_seq) & 0xFFFFFFFF
        if rel >= 0x80000000:                       # before what we have: retransmission
            skip = (self.next_seq - seq) & 0xFFFFFFFF
            if skip >= len(payload):
                return
            payload, seq = payload[skip:], self.next_seq
            rel = 0
        if rel:
            self.held.setdefault(seq, (t, bytes(payload)))
            if len(self.held) > 1000:               # the gap will not be filled: skip it
                self.gaps += 1
                self.next_seq = min(self.held, key=lambda s: (s - self.next_seq) & 0xFFFFFFFF)
                self._drain(t)
            return
        self._take(t, payload)
        self._drain(t)

    def _drain(self, now: int) -> None:
        # held segments become readable when the gap before them fills: at ``now``
        while self.next_seq in self.held:
            t, p = self.held.pop(self.next_seq)
            self._take(max(t, now), p)

    def _take(self, t: int, payload: bytes | memoryview) -> None:
        if not len(payload):
            return
        self.next_seq = (self.next_seq + len(payload)) & 0xFFFFFFFF
        self.buf += payload
        self.ends.append(len(self.buf))
        self.times.append(t)

    def looks_like_iec104(self) -> bool:
        return bool(len(self.frames)) and bool((self.frames["status"] == 0).any())

    def finish(self) -> None:
        if self.held:                           # a gap never filled: skip it, decode the rest
            self.gaps += 1
            for s in sorted(self.held, key=lambda s: (s - self.next_seq) & 0xFFFFFFFF):
                t, p = self.held[s]
                self.next_seq = s
                self._take(t, p)
            self.held.clear()
        if not self.buf:
            return
        # in chunks: the decoder's arrays are sized from a chunk (a row per 5 octets, an APDU
        # per 6, grown when denser), not from the stream (47 octets of rows per octet)
        total = len(self.buf)
        step = max(_CHUNK, 256)                     # holds a whole APDU: each feed moves on
        size = min(total, step)
        d = Decoder(capacity=size // 5 + 16, frames=size // 6 + 1, **self.sizes)
        mv = memoryview(self.buf)
        frames, points, lasts = [], [], []
        pos = npts = 0
        while True:
            end = min(pos + step, total)
            final = end == total
            used = d.feed(mv[pos:end], 0, final=final)
            f, pt = d.frames, d.points              # views until the next feed
            if not final:
                f, pt = f.copy(), pt.copy()
            # offsets and first_point are uint32: exact times from int64 stream offsets
            lasts.append(f["offset"].astype(np.int64) + f["length"] + pos)
            if pos:
                f["offset"] += np.uint32(pos & 0xFFFFFFFF)
            if npts:
                f["first_point"] += np.uint32(npts & 0xFFFFFFFF)
            frames.append(f)
            points.append(pt)
            npts += len(pt)
            if final:
                break
            pos += used
        mv.release()
        one = len(frames) == 1                      # the decoder is ours alone: no copy
        self.frames = frames[0] if one else np.concatenate(frames)
        self.points = points[0] if one else np.concatenate(points)
        last = lasts[0] if one else np.concatenate(lasts)
        at = np.searchsorted(np.asarray(self.ends, np.int64), last, side="left")
        times = np.asarray(self.times, np.int64)
        self.frame_times = times[np.minimum(at, len(times) - 1)]
        self.points["recv_ns"] = np.repeat(self.frame_times, self.frames["n_points"])
        rebase_cp24(self.points)                    # decoded at time 0: the hour of 1970
        self.buf = bytearray()


def read_capture(path: str | os.PathLike[str], *, port: int | None = None, cot_size: int = 2, ca_size: int = 2,
                 ioa_size: int = 3) -> CaptureResult:
    """Every IEC 104 information object and APDU of a pcap/pcapng file or of a text file of
    hex APDUs (one per line, ``#`` comments).

    ``port`` keeps TCP connections with that port on either side; None keeps every TCP
    stream that holds IEC 104 frames (the outstation is the side that accepted the
    connection, or that uses port 2404, when the handshake was not captured).
    """
    path = Path(path)
    sizes = FieldSizes(cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size)
    try:
        with open(path, "rb") as f:
            buf = f.read()                          # one read; packets are views into it
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror}") from None
    if buf[:4] not in (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                       b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return _read_hex(path, sizes)
    streams: dict[tuple[bytes, int, bytes, int], _Stream] = {}
    servers: dict[frozenset[_End], _End] = {}       # connection -> (addr, port) accepting it
    stats = {"packets": 0, "tcp_segments": 0, "bytes": 0}
    for t, linktype, data in _packets(buf, path):
        stats["packets"] += 1
        seg = _tcp(linktype, data)
        if seg is None:
            continue
        src, dst, sport, dport, seq, flags, payload = seg
        if port is not None and port not in (sport, dport):
            continue
        stats["tcp_segments"] += 1
        ends = frozenset(((src, sport), (dst, dport)))
        if flags & 0x12 == 0x02:                    # SYN without ACK: dst accepts
            servers[ends] = (dst, dport)
        key = (src, sport, dst, dport)
        s = streams.get(key)
        if s is None:
            server = servers.get(ends) or _guess_server((src, sport), (dst, dport), port)
            client = (dst, dport) if server == (src, sport) else (src, sport)
            s = streams[key] = _Stream(f"{_addr(*server)}-{_addr(*client)}",
                                       "s2c" if server == (src, sport) else "c2s", sizes)
        if flags & 0x02:                            # SYN takes one sequence number
            s.next_seq, s.synced = (seq + 1) & 0xFFFFFFFF, True
            continue
        if len(payload):
            stats["bytes"] += len(payload)
            s.segment(seq, t, payload)
    for s in streams.values():
        s.finish()
    iec = [s for s in streams.values() if s.looks_like_iec104()]
    stats["connections"] = len({s.conn for s in iec})
    stats["other_streams"] = len(streams) - len(iec)
    stats["gaps"] = sum(s.gaps for s in iec)
    return _result(iec, stats)


def _guess_server(a: _End, b: _End, port: int | None) -> _End:
    for end in (a, b):
        if end[1] in (port, 2404):
            return end
    return min(a, b, key=lambda e: e[1])


def _read_hex(path: Path, sizes: FieldSizes) -> CaptureResult:
    s = _Stream("?", "?", sizes)
    s.synced = True
    n = 0
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.split("#", 1)[0].strip().replace(" ", "").replace(":", "")
        if not line:
            continue
        try:
            raw = bytes.fromhex(line)
        except ValueError:
            raise CaptureError(f"{path}: line {lineno} is not hex") from None
        s._take(0, raw)
        n += 1
    s.finish()
    return _result([s], {"lines": n, "connections": 1, "gaps": 0})


def _result(streams: list[_Stream], stats: dict[str, int]) -> CaptureResult:
    pts, frs = [], []
    for s in streams:
        p, f, ft = s.points, s.frames, s.frame_times
        df = rows_frame(p).drop("recv_time").with_columns(
            pl.Series("capture_time", p["recv_ns"]).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"))
        pts.append(df.with_columns(pl.lit(s.conn).alias("connection"),
                                   pl.lit(s.direction).alias("direction")))
        fd = pl.DataFrame({k: f[k] for k in FRAME_DTYPE.names or ()}).with_columns(
            pl.Series("capture_time", ft).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            pl.lit(s.conn).alias("connection"), pl.lit(s.direction).alias("direction"))
        frs.append(fd)
    front = ["connection", "direction", "capture_time"]
    points = pl.concat(pts, how="vertical_relaxed") if pts else pl.DataFrame()
    frames = pl.concat(frs, how="vertical_relaxed") if frs else pl.DataFrame()
    if len(points.columns):
        points = points.select(front + [c for c in points.columns if c not in front]).sort(
            "capture_time", maintain_order=True)
    if len(frames.columns):
        frames = frames.select(front + [c for c in frames.columns if c not in front]).sort(
            "capture_time", maintain_order=True)
    stats["apdus"] = len(frames)
    stats["objects"] = len(points)
    stats["bad_frames"] = int((frames["status"] != 0).sum()) if len(frames) else 0
    return CaptureResult(points, frames, stats)


def write_points(result: CaptureResult, path: str | Path) -> Path:
    """Write the objects of a capture (.parquet, .csv, .jsonl, .arrow), atomically."""
    from iec104.export import write_table
    return write_table(result.points, path)
