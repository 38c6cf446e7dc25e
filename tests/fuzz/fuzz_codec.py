"""Coverage-guided fuzzing of the Cython codec and the link core's receive path (atheris).

Run: make fuzz   (builds the instrumented extensions, then runs this for 60 s)
 or: .venv/bin/python tests/fuzz/fuzz_codec.py build/fuzz/corpus tests/fuzz/corpus -max_total_time=60

Native coverage: ``make fuzz`` builds the extensions with clang, ``-fsanitize=address,
fuzzer-no-link`` (setup.py, IEC104_FUZZ=1) into ``build/fuzz/iec104/`` next to a copy of
``src/iec104/*.py``, so that the .so files of ``src/iec104`` (the test suite's) stay as they
are. This script puts ``build/fuzz`` first on sys.path and, if ASan+libFuzzer is not loaded
yet, re-executes itself with ``LD_PRELOAD=<atheris.path()>/asan_with_fuzzer.so`` (atheris's
"Using Atheris with native extensions"): libFuzzer then steers by the C edges of the codec,
the link core and the store as well as by the Python lines. ``IEC104_FUZZ_LIB=none`` fuzzes
the ordinary build (Python coverage only), for comparison.

Input: octet 0 selects the field sizes (low 4 bits mod 12; 0 is the standard COT 2, CA 2,
IOA 3) and options (0x10 renumber I-frames N(S) 0, 1, ... and N(R) for the link, 0x20 no
STARTDT con: data transfer stopped, 0x40 a lossless reader of the event log, 0x80 the link
sent three I-frames first); octet 1 seeds the split points, its bit 7 makes the link an
outstation's (the stream then comes from a master; nothing is stored); the rest is the octet
stream. Invariants checked (an AssertionError is a finding):

* decode_all: every octet is in exactly one frame record, in order; objects only from frames
  with status OK, numbered in order, with their frame's type and CA, every IOA in its field;
  TRUNCATED only last.
* Decoder.feed streaming in pieces (split anywhere, the unconsumed tail carried as a
  transport does, ``final`` at the end) gives the same objects and OK frames as one call,
  and never leaves more than a partial APDU unconsumed.
* batch re-encoding of the monitor objects decodes back to the same addresses.
* Channel (two of them sharing one RecvBuffer and Workspace, reads interleaved): every
  ``get_buffer()`` has room for at least one octet; per read, the rows are exactly those of
  the accepted frames, a refused frame closes the link, nothing is accepted once closed; in
  total the rows stored equal those of the frames a Link accepts from the whole stream in one
  batch (so never a row of a frame at or after a refused one); the event log and a lossless
  reader of it see those rows in order; the latest-value table holds one row per (CA, IOA,
  type family) with the last value.

Found so far (tests/test_fuzz_findings.py, fixed in 22c4da2): an SQ run past the largest IOA
of its field decoded to IOAs beyond the field, and the table keyed IOAs by their low 24 bits,
so that such a row overwrote IOA 0. Both are invariants here (IOAs in their field, one table
row per address).
"""
import os
import random
import sys
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
LIB = os.environ.get("IEC104_FUZZ_LIB", str(ROOT / "build" / "fuzz"))
NATIVE = LIB != "none" and any((Path(LIB) / "iec104").glob("_codec*.so"))
PRELOAD = os.path.join(atheris.path(), "asan_with_fuzzer.so")

if NATIVE:
    if "asan_with_fuzzer" not in os.environ.get("LD_PRELOAD", ""):
        if not os.path.exists(PRELOAD):
            sys.exit(f"fuzz_codec: {PRELOAD} missing (atheris installed without it); "
                     "use IEC104_FUZZ_LIB=none for Python-only coverage")
        env = dict(os.environ, LD_PRELOAD=PRELOAD)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0")   # CPython's own allocations
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    sys.path.insert(0, LIB)

import numpy as np  # noqa: E402

with atheris.instrument_imports(include=["iec104"]):
    import iec104
    from iec104 import Decoder, decode_all
    from iec104._codec import Workspace
    from iec104._encode import encode_points
    from iec104._store import EventRing, LatestTable
    from iec104.link import Batch, Channel, Link, LinkConfig, RecvBuffer
    from iec104.types import FrameStatus, family_of

if NATIVE:
    assert iec104._codec.__file__.startswith(LIB), iec104._codec.__file__
    print(f"fuzz_codec: instrumented extensions from {Path(LIB) / 'iec104'}", file=sys.stderr)
else:
    print(f"fuzz_codec: ordinary extensions ({iec104._codec.__file__}): Python coverage only",
          file=sys.stderr)

MONITOR = set(range(1, 22)) | set(range(30, 41))
SIZES = [dict(cot_size=c, ca_size=a, ioa_size=i) for c in (2, 1) for a in (2, 1) for i in (3, 2, 1)]
RECV = 1_700_000_000_000_000_000          # a fixed receive time: CP24 resolves the same way
OK, TRUNCATED = FrameStatus.OK, FrameStatus.TRUNCATED
B_BAD = int(Batch.BAD)
STARTDT_CON = bytes([0x68, 4, 0x0B, 0, 0, 0])
SENT = b"\x64\x01\x06\x00\x01\x00\x00\x00\x00\x14"        # a GI (C_IC_NA_1) to CA 1
RENUMBER, STOPPED, LOSSLESS, OUTSTANDING = 0x10, 0x20, 0x40, 0x80
OUTSTATION = 0x100                                         # octet 1's bit 7


def renumbered(data: bytes, nr: int) -> bytes:
    """The stream with the N(S) of each I-frame that parses as one 0, 1, 2... and every
    I- and S-frame's N(R) = nr, so that mutated frames get past the sequence checks."""
    b, pos, ns = bytearray(data), 0, 0
    while pos + 6 <= len(b):
        length = b[pos + 1]
        if b[pos] != 0x68 or length < 4 or pos + 2 + length > len(b):
            pos += 1
            continue
        c1 = b[pos + 2]
        if c1 & 1 == 0:
            b[pos + 2:pos + 4] = ((ns << 1) & 0xFFFF).to_bytes(2, "little")
            ns += 1
        if c1 & 1 == 0 or c1 & 3 == 1:
            b[pos + 4:pos + 6] = ((nr << 1) & 0xFFFF).to_bytes(2, "little")
        pos += 2 + length
    return bytes(b)


def pieces(n: int, rng: random.Random, most: int = 8) -> list:
    """Cut points splitting n octets into 1..most pieces (pieces may be empty)."""
    cuts = sorted(rng.randint(0, n) for _ in range(rng.randint(0, most - 1)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, n])]


def comparable(points) -> bytes:
    """Rows with what depends on the wall clock (receive time, CP24) and station zeroed."""
    a = np.array(points, copy=True)
    a["recv_ns"] = 0
    a["station"] = 0
    a["time"][(a["time_flags"] & 4) != 0] = 0
    return a.tobytes()


def covered(frames, base=0) -> set:
    """The octets of the non-OK frame records."""
    out = set()
    for f in frames[frames["status"] != OK]:
        out.update(range(base + int(f["offset"]), base + int(f["offset"]) + int(f["length"])))
    return out


# ---- the decoder ------------------------------------------------------------------------

def check_decode_all(payload: bytes, sizes: dict):
    frames, points = decode_all(payload, recv_ns=RECV, **sizes)
    lengths = frames["length"].astype(np.int64)
    assert int(lengths.sum()) == len(payload), "octets not accounted for"
    if len(frames):
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        assert (frames["offset"].astype(np.int64) == starts).all(), "records not contiguous"
        assert (frames["status"][:-1] != TRUNCATED).all(), "TRUNCATED before the end"
    n = frames["n_points"].astype(np.int64)
    assert int(n.sum()) == len(points)
    bad = frames["status"] != OK
    assert not n[bad].any(), "objects from a malformed frame"
    firsts = np.concatenate([[0], np.cumsum(n)[:-1]])
    has = n > 0
    assert (frames["first_point"][has].astype(np.int64) == firsts[has]).all()
    owner = np.repeat(np.arange(len(frames)), n)
    assert (points["type_id"] == frames["type_id"][owner]).all()
    assert (points["ca"] == frames["ca"][owner]).all()
    assert (points["ioa"] < 1 << 8 * sizes["ioa_size"]).all(), "IOA beyond its field"
    return frames, points


def check_streaming(payload: bytes, sizes: dict, rng: random.Random, frames, points):
    """Feed in pieces as a transport would: the unconsumed tail goes before the next piece."""
    d = Decoder(capacity=8, **sizes)               # small: the workspace grows mid-batch
    got_points, got_ok, got_bad = [], [], set()
    carry, base, pos, rows = b"", 0, 0, 0
    for size in pieces(len(payload), rng):
        buf = carry + payload[pos:pos + size]
        pos += size
        used = d.feed(buf, RECV)
        assert 0 <= used <= len(buf)
        carry = buf[used:]
        assert len(carry) < 255 and (not carry or carry[0] == 0x68), \
            f"{len(carry)} octets left unconsumed: more than a partial APDU"
        got_points.append(d.points.copy())
        f = d.frames.copy()
        got_bad |= covered(f, base)
        ok = f[f["status"] == OK]
        ok["offset"] += base
        ok["first_point"] += rows
        got_ok.append(ok)
        base += used
        rows += len(d.points)
    if carry:
        d.feed(carry, RECV, final=True)
        got_points.append(d.points.copy())
        f = d.frames.copy()
        assert len(f) and int(f["length"].sum()) == len(carry)
        got_bad |= covered(f, base)
        ok = f[f["status"] == OK]
        ok["offset"] += base
        ok["first_point"] += rows
        got_ok.append(ok)
    got = np.concatenate(got_points) if got_points else points[:0]
    assert got.tobytes() == points.tobytes(), "streamed objects differ from one call's"
    ok = np.concatenate(got_ok) if got_ok else frames[:0]
    assert ok.tobytes() == frames[frames["status"] == OK].tobytes(), "streamed frames differ"
    assert got_bad == covered(frames), "malformed octets differ when streamed"


def check_reencode(points, sizes: dict):
    mon = points[np.isin(points["type_id"], list(MONITOR))]
    if len(mon):
        data2, _ = encode_points(mon, **sizes)
        back = decode_all(bytes(data2), **sizes)[1]
        assert len(back) == len(mon)
        np.testing.assert_array_equal(back["ioa"], mon["ioa"])


# ---- the link core's receive path -------------------------------------------------------

def starts(opts: int) -> bool:
    """A master that sent STARTDT act and receives its con before the stream."""
    return not opts & (STOPPED | OUTSTATION)


def new_link(opts: int) -> Link:
    link = Link(LinkConfig(role="outstation" if opts & OUTSTATION else "master"))
    link.connection_made(0.0)
    if starts(opts):
        link.start(0.0)                         # STARTDT act; its con comes first
    return link


def setup_sent(link: Link, opts: int) -> None:
    # a master's I-frames go out at once; an outstation's would wait for STARTDT act and go
    # out at the end of the batch that brings it, which depends on how the stream is cut
    if opts & OUTSTANDING and not opts & OUTSTATION:
        for _ in range(3):
            link.send_asdu(SENT, 0.5)
        assert link.status()["unacked_sent"] == (3 if starts(opts) else 0)
    link.data_to_send()


class Side:
    """One connection: its Channel, store and (optionally) a lossless reader; an outstation's
    Channel stores nothing (as in the simulator)."""

    def __init__(self, station, sizes, opts, rb, ws, stream, cuts, ring_cap):
        self.link = new_link(opts)
        master = not opts & OUTSTATION
        self.table = LatestTable() if master else None
        self.ring = EventRing(ring_cap) if master else None
        self.lossless = master and bool(opts & LOSSLESS)
        if self.lossless:
            self.ring.hold = 0
        self.station = station
        self.ch = Channel(self.link, Decoder(station=station, workspace=ws, **sizes), rb,
                          self.table, self.ring, broadcast_ca=0xFF if sizes["ca_size"] == 1 else 0xFFFF)
        self.stream, self.cuts, self.pos = stream, cuts, 0
        self.rows, self.read = [], []

    def feed(self, data: bytes, now: float) -> None:
        """What a transport does with one chunk: get_buffer, copy what fits, received."""
        ch, ring, link = self.ch, self.ring, self.link
        while data:
            buf = ch.get_buffer()
            assert len(buf) >= 1, "get_buffer() without room for one octet"
            n = min(len(buf), len(data))
            buf[:n] = data[:n]
            data = data[n:]
            total, closed, points_in = ring.total if ring else 0, link.closed, ch.points_in
            flags = ch.received(n, now)
            frames, acc, pts = ch.frames(), ch.accepted, ch.points()
            assert 0 <= acc <= len(frames)
            assert len(pts) == int(frames["n_points"][:acc].astype(np.int64).sum()), \
                "rows of frames that were not accepted"
            assert ch.points_in - points_in == len(pts)
            if ring is not None:
                assert ring.total - total == len(pts), "rows stored != rows of accepted frames"
            if closed:
                assert acc == 0 and len(pts) == 0, "frames accepted after the link closed"
            if acc < len(frames):
                assert link.closed, "a frame refused without closing the link"
            assert bool(flags & B_BAD) == bool((frames["status"] != OK).any())
            assert (pts["station"] == self.station).all()
            self.rows.append(comparable(pts))
            if self.lossless and ring.total % 3 != 1:      # the reader catches up, now and then
                self.take()

    def take(self) -> None:
        ring = self.ring
        self.read.append(comparable(ring.slice(ring.hold, ring.total)))
        ring.hold = ring.total

    def step(self, now: float) -> bool:
        if not self.cuts:
            return False
        size = self.cuts.pop(0)
        self.feed(self.stream[self.pos:self.pos + size], now)
        self.pos += size
        return True


def check_channel(stream: bytes, sizes: dict, opts: int, rng: random.Random) -> None:
    # the reference: one Link fed the whole stream as one batch
    ref = new_link(opts)
    dec = Decoder(**sizes)
    if starts(opts):
        dec.feed(STARTDT_CON, RECV)
        assert ref.receive_frames(0.0, dec.frames) == 1
    setup_sent(ref, opts)
    dec.feed(stream, RECV)
    frames = dec.frames.copy()
    acc = ref.receive_frames(1.0, frames)
    expected = dec.points[:int(frames["n_points"][:acc].astype(np.int64).sum())].copy()
    want = comparable(expected)

    rb, ws = RecvBuffer(rng.choice((1, 512, 4096))), Workspace(rng.choice((1, 200, 4096)))
    ring_cap = 1 << 12 if rng.random() < 0.5 else rng.randint(1, 16)
    sides = [Side(s, sizes, opts, rb, ws, stream, pieces(len(stream), rng, 12), ring_cap)
             for s in (1, 2)]
    for side in sides:
        if starts(opts):
            side.feed(STARTDT_CON, 0.0)
        setup_sent(side.link, opts)
    now = 1.0
    while any([side.step(now) for side in sides if rng.random() < 0.7]) or \
            any(side.cuts for side in sides):
        now += 0.001
    for side in sides:
        ch, ring, link = side.ch, side.ring, side.link
        assert link.closed == ref.closed and link.close_reason == ref.close_reason, \
            (link.close_reason, ref.close_reason)
        assert link.data_transfer == ref.data_transfer
        got = b"".join(side.rows)
        assert got == want, f"rows differ from those of the frames the link accepts " \
                            f"({len(got) // 44} vs {len(want) // 44})"
        assert ch.points_in == len(expected)
        assert ch.frames_in == acc + starts(opts)
        if ring is None:
            continue
        assert ring.total == len(expected)
        if side.lossless:
            side.take()
            assert b"".join(side.read) == want, "a lossless reader lost or reordered rows"
        else:
            keep = min(ring.total, ring.capacity)
            tail = ring.slice(ring.total - keep, ring.total)
            assert comparable(tail) == (want[len(want) - 44 * keep:] if keep else b"")
        check_table(side.table, expected)


def check_table(table, rows) -> None:
    rows = rows[(rows["type_id"] >= 1) & (rows["type_id"] <= 44)]
    last = {}
    for r in rows:
        last[(int(r["ca"]), int(r["ioa"]), family_of(int(r["type_id"])))] = r
    assert len(table) == len(last), f"table has {len(table)} rows for {len(last)} addresses"
    cols = table.columns()
    for i in range(len(table)):
        r = last[(int(cols["ca"][i]), int(cols["ioa"][i]), int(cols["family"][i]))]
        assert cols["type_id"][i] == r["type_id"] and cols["quality"][i] == r["quality"]
        assert cols["value"][i] == r["value"] or (r["value"] != r["value"]
                                                   and cols["value"][i] != cols["value"][i])


def one_input(data: bytes) -> None:
    head, seed, payload = (data[0] if data else 0), (data[1] if len(data) > 1 else 0), data[2:]
    sizes = SIZES[(head & 0x0F) % 12]
    rng = random.Random(seed * 65599 + len(payload))
    frames, points = check_decode_all(payload, sizes)
    check_streaming(payload, sizes, rng, frames, points)
    check_reencode(points, sizes)
    opts = head | (OUTSTATION if seed & 0x80 else 0)
    nr = 3 if opts & OUTSTANDING and starts(opts) else 0     # acknowledge what was sent
    stream = renumbered(payload, nr) if head & RENUMBER else payload
    check_channel(stream, sizes, opts, rng)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
