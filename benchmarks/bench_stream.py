"""Spontaneous stream: the simulator (another process) at its top rate with batching, the
master's objects/s and CPU, and its latency from the simulator's time tag to the store.

The simulator stamps each batch with CP56Time2a (ms) when it builds it; the master's store
row has the receive time (ns): their difference is the latency send -> store (clock of
one machine, ms resolution of the tag).

Run: .venv/bin/python benchmarks/bench_stream.py [--rate 2000000 --seconds 5] [--json out.json]
"""
import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402
from iec104.types import NO_TIME  # noqa: E402


async def measure(port: int, seconds: float) -> dict:
    async with iec104.Master(gi_on_start=False, event_capacity=4_000_000) as master:
        latencies = []
        received = [0]

        async def consume():
            async for batch in master.events():
                received[0] += len(batch)
                t = batch["time"]
                ok = t != NO_TIME
                latencies.append(batch["recv_ns"][ok] // 1_000_000 - t[ok])
        # ack every 600 frames (w <= 2k/3): at a million objects/s, S-frames every 8 frames
        # would cost the simulator more than the data
        await master.connect("127.0.0.1", port, name="stream", k=1000, w=600)
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(1.0)                        # ramp up
        n0, cpu0, t0 = received[0], time.process_time(), time.perf_counter()
        latencies.clear()
        await asyncio.sleep(seconds)
        n, cpu, dt = received[0] - n0, time.process_time() - cpu0, time.perf_counter() - t0
        task.cancel()
        lat = np.concatenate(latencies) if latencies else np.zeros(1)
        return {"objects": n, "seconds": dt, "objects_per_s": n / dt, "master_cpu": cpu,
                "master_cpu_share": cpu / dt, "latency_ms_median": float(np.median(lat)),
                "latency_ms_p99": float(np.percentile(lat, 99))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2_000_000, help="changes/s asked of the simulator")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args()
    port = procs.free_port()
    proc = procs.start_simulator(port, stations=1, points=a.points, k=a.k, rate=a.rate, with_time=True)
    try:
        time.sleep(0.5)
        out0 = procs.cpu_seconds(proc.pid)
        r = iec104.run(measure(port, a.seconds))
        r["outstation_cpu"] = procs.cpu_seconds(proc.pid) - out0
    finally:
        procs.stop(proc)
    r.update(machine=procs.machine(), asked_rate=a.rate)
    print(f"machine: {r['machine']}")
    print(f"spontaneous M_ME_TF_1 stream, simulator asked for {a.rate:,.0f}/s:")
    print(f"  master received {r['objects_per_s'] / 1e6:.3f} M objects/s, CPU {r['master_cpu_share']:.0%} "
          f"of a core; latency time tag -> store median {r['latency_ms_median']:.1f} ms, "
          f"p99 {r['latency_ms_p99']:.1f} ms; simulator CPU {r['outstation_cpu']:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
