"""End-to-end general interrogation: this project's master against c104's master, same run,
same outstation process (this project's simulator, then a c104 outstation).

Timed from the GI request to the last ActTerm (ours) or the last object counted (c104's
callbacks). Reports objects/s, CPU seconds of master and outstation, and the ratio.

The link parameters are the standard's by default: outstation k = 12 (w = 8), master k = 12,
w = 8 (it acknowledges every 8 I-frames), on both masters. ``--k 1000`` raises the
outstations' send window for a load test (labelled as such in the output and the JSON).

``--tls`` runs this project's master against its simulator over TLS 1.3 (IEC 62351-3, mutual
authentication; certificates made by trustme for the run) beside the same over plain TCP. c104
is left out there: its TLS client fails every handshake on this platform (tests/test_tls.py).

Run: .venv/bin/python benchmarks/bench_gi.py [--stations 10 --points 10000] [--k 12] [--tls] [--json out.json]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402


async def ours(port: int, stations: int, points: int, repeat: int, tls=None,
               coalesce: float = 0.0) -> dict:
    async with iec104.Master(gi_on_start=False, k=12, w=8, tls=tls,       # the standard's
                             coalesce=coalesce) as master:
        rtu = await master.connect("127.0.0.1", port, name="bench")
        cas = range(1, stations + 1)
        # one station after the other, as the c104 side does: lib60870 stalls when asked for
        # 100,000 objects at once (broadcast or concurrent requests: its queue fills)
        for ca in cas:                                  # warm up
            await rtu.interrogate(ca=ca, timeout=60)
        best = None
        for _ in range(repeat):
            cpu0, t0 = time.process_time(), time.perf_counter()
            n = 0
            for ca in cas:
                n += await rtu.interrogate(ca=ca, timeout=60)
            dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            if best is None or dt < best["seconds"]:
                best = {"objects": n, "seconds": dt, "master_cpu": cpu}
        # lib60870's outstation drops GI data when its send window is full (k = 12): the
        # image is then incomplete, which is a result, not a crash
        best["complete"] = len(master) == stations * points
        best["image_rows"] = len(master)
        return best


def c104_master(port: int, stations: int, points: int, timeout: float = 120,
                stall: float = 5.0) -> dict:
    import c104
    client = c104.Client(tick_rate_ms=50)
    conn = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.NONE)
    pp = conn.protocol_parameters                       # lib60870's defaults: the standard's
    assert (pp.send_window_size, pp.receive_window_size) == (12, 8), (pp.send_window_size,
                                                                     pp.receive_window_size)
    count = [0]
    lock = threading.Lock()
    done = threading.Event()
    total = stations * points

    def on_receive(point: c104.Point, previous_info: c104.Information,
                   message: c104.IncomingMessage) -> c104.ResponseState:
        with lock:
            count[0] += 1
            if count[0] >= total:
                done.set()
        return c104.ResponseState.SUCCESS

    for ca in range(1, stations + 1):
        st = conn.add_station(common_address=ca)
        for ioa in range(1, points + 1):
            st.add_point(io_address=ioa, type=c104.Type.M_ME_NC_1).on_receive(callable=on_receive)
    client.start()
    conn.connect()
    deadline = time.monotonic() + 30
    while conn.state != c104.ConnectionState.OPEN and time.monotonic() < deadline:
        if conn.state == c104.ConnectionState.OPEN_MUTED:
            conn.unmute()                           # STARTDT
        time.sleep(0.01)
    assert conn.state == c104.ConnectionState.OPEN, conn.state
    cpu0, t0 = time.process_time(), time.perf_counter()
    finished = True
    for ca in range(1, stations + 1):                   # one station after the other
        target = ca * points
        conn.interrogation(common_address=ca, wait_for_response=False)
        deadline = time.monotonic() + timeout
        last, moved = count[0], time.monotonic()
        while count[0] < target and time.monotonic() < deadline:
            time.sleep(0.0005)
            if count[0] != last:
                last, moved = count[0], time.monotonic()
            elif time.monotonic() - moved > stall:      # nothing more is coming
                break
        finished = finished and count[0] >= target
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    client.stop()
    return {"objects": count[0], "seconds": dt, "master_cpu": cpu, "complete": finished}


def scenario(name, start_outstation, stations, points, repeat, coalesce=0.0):
    rows = []
    for master in ("iec104", "c104"):
        port = procs.free_port()
        proc = start_outstation(port)
        try:
            time.sleep(0.5)
            out0 = procs.cpu_seconds(proc.pid)
            if master == "iec104":
                r = iec104.run(ours(port, stations, points, repeat, coalesce=coalesce))
            else:
                r = c104_master(port, stations, points)
            r["outstation_cpu"] = procs.cpu_seconds(proc.pid) - out0
        finally:
            procs.stop(proc)
        if master == "iec104" and coalesce:
            master += f" coalesce {coalesce * 1e3:g} ms"
        r.update(outstation=name, master=master, objects_per_s=r["objects"] / r["seconds"])
        rows.append(r)
        print(f"  {name:10} {master:7} {r['objects']:8d} objects in {r['seconds']:7.3f} s = "
              f"{r['objects_per_s'] / 1e6:7.3f} M/s; CPU master {r['master_cpu']:.2f} s, "
              f"outstation {r['outstation_cpu']:.2f} s"
              + ("" if r.get("complete", True) else f"; INCOMPLETE: {r['objects']} of "
                 f"{stations * points} objects") , flush=True)
    if all(r.get("complete", True) for r in rows):
        rows[0]["ratio_vs_c104"] = rows[1]["seconds"] / rows[0]["seconds"]
        rows[0]["cpu_ratio_vs_c104"] = rows[1]["master_cpu"] / rows[0]["master_cpu"]
    return rows


def tls_scenario(a, floats, repeat) -> list[dict]:
    """Our master against our simulator, plain and over TLS 1.3, same image and windows."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = procs.PKI(Path(tmp), make=True)
        tls = pki.master()
        for name, flags, master_tls in (
                ("plain", [], None),
                ("tls1.3", ["--tls-cert", str(pki.server), "--tls-ca", str(pki.ca)], tls)):
            port = procs.free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "iec104.cli", "simulate", "--port", str(port),
                 "--stations", str(a.stations), "--points", str(a.points), "--k", str(a.k),
                 "--w", "8", "--point-list", str(floats), *flags],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                procs.wait_port(port)
                time.sleep(0.5)
                out0 = procs.cpu_seconds(proc.pid)
                r = iec104.run(ours(port, a.stations, a.points, repeat, master_tls))
                r["outstation_cpu"] = procs.cpu_seconds(proc.pid) - out0
            finally:
                procs.stop(proc)
            r.update(outstation="simulator", master="iec104", transport=name,
                     objects_per_s=r["objects"] / r["seconds"])
            rows.append(r)
            print(f"  {name:7} {r['objects']:8d} objects in {r['seconds']:7.3f} s = "
                  f"{r['objects_per_s'] / 1e6:7.3f} M/s; CPU master {r['master_cpu']:.2f} s, "
                  f"outstation {r['outstation_cpu']:.2f} s", flush=True)
    rows[1]["slowdown_vs_plain"] = rows[1]["seconds"] / rows[0]["seconds"]
    print(f"  TLS 1.3 takes {rows[1]['slowdown_vs_plain']:.2f}x the time of plain TCP")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=12, help="outstation send window (standard: 12; "
                    "1000 for a load test, labelled as not the standard)")
    ap.add_argument("--outstations", default="simulator,c104",
                    help="which outstations: simulator (this project's), c104 (lib60870's)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tls", action="store_true", help="our master and simulator over TLS 1.3 "
                    "beside plain TCP (instead of the comparison with c104)")
    ap.add_argument("--coalesce", type=float, default=0.0, help="read coalescing of our "
                    "master, ms (Master(coalesce=...): it must not slow a GI)")
    ap.add_argument("--json")
    a = ap.parse_args()
    standard = a.k == 12
    params = (f"outstation k = {a.k}" + (" (the standard's)" if standard else
              " (NOT the standard k = 12: a load-test setting)") +
              ", w = 8; masters k = 12, w = 8 (the standard's)")
    print(f"machine: {procs.machine()}")
    print(f"GI of {a.stations} stations x {a.points} points; {params}")
    which = a.outstations.split(",")
    floats = procs.float_point_list(a.stations, a.points)     # the same image as the c104 one
    rows = []
    if a.tls:
        rows += tls_scenario(a, floats, a.repeat)
        which = []
    if "simulator" in which:
        rows += scenario("simulator", lambda port: procs.start_simulator(
            port, stations=a.stations, points=a.points, k=a.k, w=8, point_list=floats),
            a.stations, a.points, a.repeat, a.coalesce / 1e3)
    if "c104" in which:
        rows += scenario("c104", lambda port: procs.start_c104_outstation(
            port, stations=a.stations, points=a.points, k=a.k), a.stations, a.points, a.repeat,
            a.coalesce / 1e3)
    for r in rows:
        r.update(outstation_k=a.k, outstation_w=8, master_k=12, master_w=8, standard_k_w=standard)
    for r in rows:
        if "ratio_vs_c104" in r:
            print(f"  against the {r['outstation']} outstation: iec104 is {r['ratio_vs_c104']:.1f}x "
                  f"faster than c104's master, {r['cpu_ratio_vs_c104']:.1f}x less master CPU")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": procs.machine(), "command": " ".join([".venv/bin/python"] + sys.argv),
            "library": iec104.__file__, "parameters": params, "standard_k_w": standard,
            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
