"""Scale: many concurrent sessions in one master process against simulator processes.

For N in 100, 1,000, 10,000: time to connect and start all, time until every session's
general interrogation completed, memory per session (RSS growth / N), CPU while idle (with
TESTFR keeping every link up), and the same for c104's master as far as it goes.

Run: .venv/bin/python benchmarks/bench_scale.py [--sizes 100,1000,10000] [--json out.json]
"""
import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402


async def ours(ports: list[int], n: int, idle: float, t3: float) -> dict:
    rss0 = procs.rss_bytes()
    async with iec104.Master(t3=t3, t1=max(2 * t3, 15), t2=min(t3, 10) / 2) as master:
        t0 = time.perf_counter()
        sessions = await procs.connect_all(master, ports, n)
        t_connect = time.perf_counter() - t0
        while int((master.devices()["gi_state"] == "done").sum()) < len(sessions):
            await asyncio.sleep(0.05)
        t_gi = time.perf_counter() - t0
        rss = procs.rss_bytes() - rss0
        cpu0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle)
        idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - w0)
        rss_idle = procs.rss_bytes() - rss0             # after the idle window (TESTFR running)
        status = master.status()
        tested = sum(1 for s in status if s["last_testfr_con"] is not None)
        started = sum(1 for s in status if s["data_transfer"] == "started")
        return {"sessions": n, "connect_all_s": t_connect, "gi_all_s": t_gi,
                "rss_per_session_kib": rss / n / 1024,
                "rss_idle_per_session_kib": rss_idle / n / 1024, "idle_cpu_share": idle_cpu,
                "testfr_confirmed": tested, "still_started": started,
                "parameters": len(master)}


def c104_scale(ports: list[int], n: int, timeout: float = 120) -> dict:
    import c104
    rss0 = procs.rss_bytes()
    # c104 keeps one connection per address and port in a client: a client per RTU (each
    # with its threads), as a c104 user polling many RTUs must do
    clients = [c104.Client(tick_rate_ms=100) for _ in range(n)]
    conns = [c.add_connection(ip="127.0.0.1", port=ports[i % len(ports)], init=c104.Init.ALL)
             for i, c in enumerate(clients)]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(c.state == c104.ConnectionState.OPEN for c in conns) < n:
        time.sleep(0.1)
    threads = len(os.listdir("/proc/self/task"))
    t = time.perf_counter() - t0
    opened = sum(c.state == c104.ConnectionState.OPEN for c in conns)
    rss = procs.rss_bytes() - rss0
    cpu0, w0 = time.process_time(), time.perf_counter()
    time.sleep(5)
    idle = (time.process_time() - cpu0) / (time.perf_counter() - w0)
    for c in clients:
        c.stop()
    return {"sessions": n, "opened": opened, "connect_all_s": t if opened == n else None,
            "rss_per_session_kib": rss / n / 1024, "idle_cpu_share": idle, "threads": threads}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--c104-sizes", default="100,1000")
    ap.add_argument("--simulators", type=int, default=2)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--t3", type=float, default=4.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    limit = procs.raise_nofile()
    print(f"machine: {procs.machine()}; open-file limit {limit}")
    print(f"sessions: k = 12, w = 8 (the standard's), t3 = {a.t3} s (standard 20 s: TESTFR "
          f"during the {a.idle} s idle window); 1 station x 10 points per RTU, GI at start")
    ports = [procs.free_port() for _ in range(a.simulators)]
    sims = [procs.start_simulator(p, stations=1, points=10) for p in ports]
    rows = []
    try:
        for n in (int(x) for x in a.sizes.split(",")):
            r = iec104.run(ours(ports, n, a.idle, a.t3))
            r["master"] = "iec104"
            rows.append(r)
            print(f"  iec104 {n:6d} sessions: connected+started in {r['connect_all_s']:.2f} s, all GIs "
                  f"in {r['gi_all_s']:.2f} s, {r['rss_per_session_kib']:.1f} KiB/session after the GIs, "
                  f"{r['rss_idle_per_session_kib']:.1f} after the idle window, idle CPU "
                  f"{r['idle_cpu_share']:.1%} of a core, TESTFR con on {r['testfr_confirmed']}, "
                  f"started {r['still_started']}", flush=True)
        for n in (int(x) for x in a.c104_sizes.split(",") if x):
            try:
                r = c104_scale(ports, n)
            except Exception as e:               # its limit is the finding
                r = {"sessions": n, "error": repr(e)}
            r["master"] = "c104"
            rows.append(r)
            print(f"  c104   {n:6d} sessions: {r}", flush=True)
    finally:
        for s in sims:
            procs.stop(s)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": procs.machine(), "command": " ".join([".venv/bin/python"] + sys.argv),
            "library": iec104.__file__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
