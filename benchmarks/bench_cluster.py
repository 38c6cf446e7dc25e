"""iec104.cluster on one machine: the GI and trickle workloads with 1 and 2 Ray workers (the
scaling ratio), and the cost of ``await cluster.points()`` for 1 M rows across the workers.

The simulators run in one child process (their own event loop, so the workers' cost is not
theirs); every worker is a Ray actor with its own Master on uvloop.

- GI: ``rtus`` RTUs of ``points`` objects each, the best of ``repeat`` fleet-wide
  interrogations; objects/s. ``--k``/``--w`` on both sides: the standard's 12/8 by default
  (what a real RTU gives), ``--k 1000 --w 600`` for a load test.
- trickle: every RTU sends ``rate`` spontaneous changes/s for ``seconds``; objects received
  per second over the window (from the workers' status) against what was offered.
- points(): the fleet table after a GI of ``big`` rows in all, median of 5 calls.

Run: .venv/bin/python benchmarks/bench_cluster.py [--rtus 8 --points 25000 --rate 20000] [--k 12 --w 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402


def _serve(ports, points: int, rate: float, k: int, w: int, ready, stop) -> None:
    async def main():
        outs = [await iec104.Outstation(stations=1, points=points, port=p, rate=rate, k=k,
                                        w=w).start() for p in ports]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for o in outs:
            await o.close()
    iec104.run(main())


class Simulators:
    """``n`` simulated RTUs in a child process."""

    k, w = 12, 8                                        # main() sets --k/--w

    def __init__(self, n: int, points: int, rate: float = 0.0):
        self.ports = [procs.free_port() for _ in range(n)]
        ctx = mp.get_context("spawn")                   # no fork of a process Ray runs in
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_serve, args=(self.ports, points, rate, self.k, self.w, self.ready, self.stop))

    def __enter__(self) -> "Simulators":
        self.proc.start()
        assert self.ready.wait(120), "simulators did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.proc.join(30)


async def fleet(cluster, ports) -> None:
    await asyncio.gather(*(cluster.connect("127.0.0.1", p, name=f"rtu-{i}", k=Simulators.k,
                                           w=Simulators.w,
                                           gi_on_start=False) for i, p in enumerate(ports)))


async def gi(workers: int, rtus: int, points: int, repeat: int) -> dict:
    from iec104.cluster import Cluster
    with Simulators(rtus, points) as sims:
        async with Cluster(workers=workers) as cluster:
            await fleet(cluster, sims.ports)
            await cluster.interrogate(timeout=120)               # warm up
            best = min([await _timed(cluster.interrogate(timeout=120)) for _ in range(repeat)])
            n = len(await cluster.points())
    return {"workers": workers, "objects": n, "seconds": best, "objects_per_s": n / best}


async def _timed(coro) -> float:
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


async def trickle(workers: int, rtus: int, rate: float, seconds: float) -> dict:
    from iec104.cluster import Cluster
    with Simulators(rtus, 1000, rate) as sims:
        async with Cluster(workers=workers, heartbeat=0.25) as cluster:
            await fleet(cluster, sims.ports)
            await asyncio.sleep(1.0)                            # settle
            def received():
                return sum(s["points"] for s in cluster.status())
            first, t0 = received(), time.perf_counter()
            await asyncio.sleep(seconds)
            got = (received() - first) / (time.perf_counter() - t0)
    return {"workers": workers, "offered_per_s": rtus * rate, "received_per_s": got}


async def points_cost(workers: int, rtus: int, rows: int) -> dict:
    from iec104.cluster import Cluster
    with Simulators(rtus, rows * 10 // 9 // rtus + 1) as sims:   # GI leaves the counters out
        async with Cluster(workers=workers) as cluster:
            await fleet(cluster, sims.ports)
            await cluster.interrogate(timeout=300)
            times = [await _timed(cluster.points()) for _ in range(5)]
            n = len(await cluster.points())
            times_p = [await _timed(cluster.parameters()) for _ in range(3)]
    return {"workers": workers, "rows": n, "points_s": statistics.median(times),
            "parameters_s": statistics.median(times_p)}


async def main(args) -> dict:
    out: dict = {"args": vars(args), "gi": [], "trickle": [], "points": []}
    Simulators.k, Simulators.w = args.k, args.w
    for w in (1, 2):
        out["gi"].append(await gi(w, args.rtus, args.points, args.repeat))
        print("gi", out["gi"][-1], flush=True)
        out["trickle"].append(await trickle(w, args.rtus, args.rate, args.seconds))
        print("trickle", out["trickle"][-1], flush=True)
    out["points"].append(await points_cost(2, args.rtus, args.big))
    print("points", out["points"][-1], flush=True)
    g, t = out["gi"], out["trickle"]
    out["scaling"] = {"gi": g[1]["objects_per_s"] / g[0]["objects_per_s"],
                      "trickle": t[1]["received_per_s"] / t[0]["received_per_s"]}
    print("scaling (2 workers / 1)", out["scaling"], flush=True)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rtus", type=int, default=8)
    p.add_argument("--points", type=int, default=25_000, help="objects per RTU (GI)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rate", type=float, default=20_000, help="changes/s per RTU (trickle)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--big", type=int, default=1_000_000, help="rows of the points() test")
    p.add_argument("--k", type=int, default=12, help="k of both sides (standard: 12)")
    p.add_argument("--w", type=int, default=8, help="w of both sides (standard: 8)")
    p.add_argument("--json")
    args = p.parse_args()
    res = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
