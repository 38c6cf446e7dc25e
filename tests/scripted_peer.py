"""A scripted raw-socket outstation for fault tests: it does exactly what a test tells it."""
from __future__ import annotations

import asyncio
import struct

from iec104 import decode_frames


def u_frame(fn: int) -> bytes:
    return bytes([0x68, 4, fn, 0, 0, 0])


def s_frame(nr: int) -> bytes:
    return bytes([0x68, 4, 1, 0]) + struct.pack("<H", nr << 1)


def i_frame(asdu: bytes, ns: int, nr: int) -> bytes:
    return bytes([0x68, len(asdu) + 4]) + struct.pack("<HH", (ns % 32768) << 1, (nr % 32768) << 1) + asdu


def asdu(type_id: int, cot: int, ca: int, objects: bytes, count: int = 1, negative=False) -> bytes:
    return bytes([type_id, count, cot | (0x40 if negative else 0), 0]) + struct.pack("<H", ca) + objects


def float_objects(start_ioa: int, values) -> bytes:
    return b"".join(struct.pack("<I", start_ioa + i)[:3] + struct.pack("<fB", v, 0)
                    for i, v in enumerate(values))


class ScriptedPeer:
    """Listens on 127.0.0.1:0; each connection gets a reader that records frames and a writer
    the test drives. ``auto_start`` answers STARTDT act, ``auto_stop`` STOPDT act (so that a
    master's close() is a round trip, not its 2 s wait for a con), ``auto_test`` TESTFR act and
    ``auto_gi`` a general interrogation (ActCon, ActTerm)."""

    def __init__(self, *, auto_start=True, auto_stop=True, auto_test=True, auto_gi=True):
        self.auto_start, self.auto_stop = auto_start, auto_stop
        self.auto_test, self.auto_gi = auto_test, auto_gi
        self.connections: list[dict] = []
        self.server = None
        self.port = None
        self.connected = asyncio.Event()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        for c in self.connections:
            c["writer"].close()
        self.server.close()
        await self.server.wait_closed()

    @property
    def conn(self) -> dict:
        return self.connections[-1]

    def send(self, data: bytes, conn: dict | None = None) -> None:
        (conn or self.conn)["writer"].write(data)

    def send_i(self, asdu_bytes: bytes, conn: dict | None = None) -> None:
        c = conn or self.conn
        c["writer"].write(i_frame(asdu_bytes, c["vs"], c["vr"]))
        c["vs"] += 1

    async def _serve(self, reader, writer):
        c = {"writer": writer, "frames": [], "vs": 0, "vr": 0, "closed": asyncio.Event(),
             "raw": bytearray()}
        self.connections.append(c)
        self.connected.set()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                c["raw"] += data
                frames = decode_frames(bytes(c["raw"]))
                complete = [f for f in frames if f["status"] != 8]
                if complete:
                    end = int(complete[-1]["offset"] + complete[-1]["length"])
                    chunk = bytes(c["raw"][:end])
                    del c["raw"][:end]
                    for f in complete:
                        raw = chunk[int(f["offset"]):int(f["offset"] + f["length"])]
                        c["frames"].append((f.copy(), raw))
                        self._react(c, f, raw)
        finally:
            c["closed"].set()

    def _react(self, c, f, raw):
        if f["format"] == 2:
            if f["u_function"] == 0x07 and self.auto_start:
                c["writer"].write(u_frame(0x0B))
            elif f["u_function"] == 0x13 and self.auto_stop:
                c["writer"].write(u_frame(0x23))
            elif f["u_function"] == 0x43 and self.auto_test:
                c["writer"].write(u_frame(0x83))
        elif f["format"] == 0:
            c["vr"] += 1
            if f["type_id"] == 100 and self.auto_gi:   # GI: ActCon then ActTerm, no data
                body = raw[6:]
                ca = struct.unpack_from("<H", body, 4)[0]
                self.send_i(asdu(100, 7, ca, b"\x00\x00\x00\x14"), c)
                self.send_i(asdu(100, 10, ca, b"\x00\x00\x00\x14"), c)

    def received(self, conn=None, *, fmt=None, type_id=None):
        return [(f, raw) for f, raw in (conn or self.conn)["frames"]
                if (fmt is None or f["format"] == fmt) and (type_id is None or f["type_id"] == type_id)]
