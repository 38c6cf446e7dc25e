"""The master's read path alone: the CPU of reading one small APDU from each of many
connections, through the loop's Reader (our epoll, in C) and through the transport (uvloop's
reads), in the same run.

One process: ``--sessions`` master sessions (uvloop, standard k = 12 / w = 8) to raw peer
sockets of this process. Each round the peers write one I-frame (M_ME_NC_1, one object) on
every connection (their writes are outside the measured part), then the loop runs until the
master has stored them all: that part's CPU (``time.process_time``), per APDU, is the read
path: the loop's wake-up, a recv per connection, decode, link, store, the S-frame every w,
and nothing else (no simulator, no scheduling against other processes, which make the
trickle's figures vary by 15% from run to run). The two paths alternate ``--runs`` times.

Run: .venv/bin/python benchmarks/bench_reads.py [--sessions 1000] [--rounds 200] [--runs 3] [--json out.json]
"""

import argparse
import asyncio
import json
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402
from iec104 import protocol  # noqa: E402

STARTDT_CON = b"\x68\x04\x0b\x00\x00\x00"


def i_frame(ns: int, ioa: int, value: float) -> bytes:
    asdu = bytes([13, 1, 3, 0]) + struct.pack("<H", 1) + struct.pack("<I", ioa)[:3] + \
        struct.pack("<fB", value, 0)
    return bytes([0x68, len(asdu) + 4]) + struct.pack("<HH", ns << 1, 0) + asdu


async def run(a, with_reader: bool) -> dict:
    loop = asyncio.get_running_loop()
    if not with_reader:
        protocol._readers[loop] = None          # this loop: the transports read
    srv = socket.create_server(("127.0.0.1", 0), backlog=a.sessions)
    srv.setblocking(False)
    peers, rtus = [], []
    async with iec104.Master(gi_on_start=False) as master:
        for _ in range(a.sessions):
            connect = loop.create_task(master.connect("127.0.0.1", srv.getsockname()[1]))
            conn, _ = await loop.sock_accept(srv)
            await loop.sock_sendall(conn, STARTDT_CON)
            rtus.append(await connect)
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as RTUs' stacks should
            peers.append(conn)
        log = master.store.log
        await asyncio.sleep(0.5)
        frames = [i_frame(ns, 1 + ns % 100, float(ns)) for ns in range(a.rounds)]
        cpu = 0.0
        for r in range(a.rounds):
            for p in peers:
                p.send(frames[r])
            want, deadline = log.total + a.sessions, time.monotonic() + 30
            c0 = time.process_time()
            while log.total < want:
                if time.monotonic() > deadline:
                    raise SystemExit(f"round {r}: {want - log.total} of {a.sessions} APDUs not "
                                     "stored after 30 s (a session lost?)")
                await asyncio.sleep(0)
            cpu += time.process_time() - c0
            for p in peers:                     # the S-frames (every w): not read, not kept
                try:
                    p.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
        on_reader = sum(s._proto.reader is not None for s in rtus)
    for p in peers:
        p.close()
    srv.close()
    n = a.sessions * a.rounds
    return {"path": "Reader (epoll in C)" if with_reader else "transport (uvloop)",
            "sessions": a.sessions, "apdus": n, "cpu_s": cpu, "cpu_us_per_apdu": cpu / n * 1e6,
            "sessions_on_reader": on_reader}


def _rounds(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 32767:
        raise argparse.ArgumentTypeError(f"{n} is not 1..32767")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--rounds", type=_rounds, default=200,
                    help="APDUs per connection, 1..32767 (N(S) does not wrap)")
    ap.add_argument("--runs", type=int, default=3, help="alternations of the two paths")
    ap.add_argument("--json")
    a = ap.parse_args()
    procs.raise_nofile()
    print(f"machine: {procs.machine()}; {a.sessions} sessions x {a.rounds} rounds, one "
          "M_ME_NC_1 APDU per connection per round, k = 12, w = 8", flush=True)
    rows = []
    for _ in range(a.runs):
        for with_reader in (True, False):
            rows.append(iec104.run(run(a, with_reader)))
            r = rows[-1]
            print(f"  {r['path']:22} {r['cpu_us_per_apdu']:6.2f} us of master CPU per APDU "
                  f"({r['apdus']:,} APDUs; {r['sessions_on_reader']} sessions on the Reader)",
                  flush=True)
    best = {p: min(r["cpu_us_per_apdu"] for r in rows if r["path"] == p)
            for p in {r["path"] for r in rows}}
    print("best of each: " + ", ".join(f"{p} {v:.2f} us" for p, v in sorted(best.items())))
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": procs.machine(), "command": " ".join([".venv/bin/python"] + sys.argv),
            "parameters": "k = 12, w = 8 (the standard's), master defaults", "rows": rows,
            "best_us_per_apdu": best}, indent=2))


if __name__ == "__main__":
    main()
