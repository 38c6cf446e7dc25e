"""Trickle: many RTU sessions, each receiving small spontaneous APDUs (1-3 objects), at the
standard k = 12, w = 8 on both sides: the main workload of real users.

Simulator processes (this project's ``iec104.Outstation``, ``with_time=True``: M_SP_TB_1,
M_ME_TF_1, ... with CP56Time2a) serve ``--ports`` listening ports (one Outstation each, 1
station, ``--points`` points); session i of the master connects to port i % ports. Every
Outstation sends ``--objects`` changes every tick to each of its connections (its batch per
tick; the rolling window over the image splits a batch where the type changes, so an APDU
carries 1-3 objects: measured, not assumed). The tick is sessions / ``--total-rate`` seconds
(the same offered load, about 1,000 APDUs/s, at every size: the sizes differ in sessions,
not in traffic; 10,000 RTUs then send one APDU every 10 s each) or ``--tick`` for all sizes.
The tickers of the Outstations of a process are started spread over one tick, as
unsynchronised RTUs are.

The master (this project's, uvloop, in this process, with one ``master.events()`` consumer
that takes the latency of every row; with ``--no-consumer`` none, and the latency of the
window's rows is read from the event log after it) is measured for a fixed window after a warm-up:
its CPU time (``time.process_time``) per data APDU received (I-frames; the CPU spent on
S/U frames, e.g. the TESTFR of links idle for t3, is charged to them; per frame of any kind
in the JSON too), APDUs/s, objects per APDU (from ``master.status()``: ``points`` and the
link's ``i_in``; ``frames_in`` counts every frame), and the latency from the simulator's
CP56 time tag (ms, UTC, stamped when the batch is built) to the master's receive time
(``recv_ns``). Loss check: after the window the simulators stop, the queues drain, and the
objects the simulators sent (changes x connections) are compared with those the master
counted. The same stream is then consumed by c104's master (lib60870-C: one
``c104.Client``, one connection per RTU and port, a Python ``on_receive`` callback per point)
at ``--c104-sessions`` sessions, in the same run, against the same simulator processes.

Run: .venv/bin/python benchmarks/bench_trickle.py [--sizes 100,1000,10000] [--coalesce 0,5] [--floor] [--tls] [--json out.json]
"""

import argparse
import asyncio
import atexit
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402

import iec104  # noqa: E402

# CP56Time2a variant of each monitor type (IEC 60870-5-101 7.2.1): what with_time sends
TIME_VARIANT = {1: 30, 3: 31, 5: 32, 7: 33, 9: 34, 11: 35, 13: 36, 15: 37}
SIM_LOG = Path("/tmp") / "iec104-bench-trickle-sim.log"        # the simulators' stderr


# ---- the simulator process ---------------------------------------------------------------

def serve(a) -> None:
    """``--serve N``: N Outstations on free ports; commands on stdin (go, stop, stats, quit),
    one JSON line on stdout per command; its log (stderr) goes to SIM_LOG."""

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def main():
        loop = asyncio.get_running_loop()
        rate = a.objects / a.tick
        outs, sent = [], [0] * a.serve

        def counting(o, i):
            changes = o.changes

            def wrapped(n):                  # called once per tick, for every started connection
                rows = changes(n)
                sent[i] += len(rows) * o.stats()["connections_open"]
                return rows
            o.changes = wrapped

        tls = procs.PKI(Path(a.tls_dir)).outstation() if a.tls_dir else None
        for i in range(a.serve):
            o = iec104.Outstation(stations=1, points=a.points, rate=rate, with_time=True,
                                  k=a.k, w=a.w, tick=a.tick, port=0, tls=tls)
            counting(o, i)
            await o.start()
            o.rate = 0.0                      # held until "go"
            outs.append(o)
            await asyncio.sleep(a.tick / a.serve)   # spread the tickers' phases over a tick
        image = outs[0].image_of(1)
        types = [[int(i), TIME_VARIANT.get(int(t), int(t))]
                 for i, t in zip(image["ioa"], image["type_id"])]
        cmds: asyncio.Queue = asyncio.Queue()

        def read_stdin():
            for line in sys.stdin:
                loop.call_soon_threadsafe(cmds.put_nowait, line.strip())
            loop.call_soon_threadsafe(cmds.put_nowait, "quit")
        threading.Thread(target=read_stdin, daemon=True).start()
        reply({"ports": [o.port for o in outs], "types": types})
        while True:
            cmd = await cmds.get()
            if cmd == "quit":
                break
            if cmd in ("go", "stop"):
                for o in outs:
                    o.rate = rate if cmd == "go" else 0.0
            st = [o.stats() for o in outs]
            if cmd == "detail":                    # per port, for debugging a run
                reply({"ports": [o.port for o in outs], "stats": st, "sent": sent})
                continue
            reply({"sent_objects": sum(sent), "frames_out": sum(s.get("frames_out", 0) for s in st),
                   "frames_dropped": sum(s.get("frames_dropped", 0) for s in st),
                   "connections": sum(s["connections_open"] for s in st),
                   "cpu": time.process_time()})
        for o in outs:
            await o.close()

    iec104.run(main())


class Simulators:
    """The simulator processes of one size, and their commands (blocking; ``acmd`` from a
    running loop)."""

    def __init__(self, n_ports: int, a):
        n_procs = max(1, min(a.simulators, n_ports))
        counts = [n_ports // n_procs + (i < n_ports % n_procs) for i in range(n_procs)]
        self.log = open(SIM_LOG, "a")
        self.procs = [subprocess.Popen(
            [sys.executable, __file__, "--serve", str(c), "--points", str(a.points),
             "--objects", str(a.objects), "--tick", str(a.tick), "--k", str(a.k), "--w", str(a.w),
             *(["--tls-dir", a.tls_dir] if a.tls_dir else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            preexec_fn=procs.raise_nofile) for c in counts]
        self.ports, self.types = [], None
        for p in self.procs:
            hello = json.loads(p.stdout.readline())
            self.ports += hello["ports"]
            self.types = hello["types"]

    def detail(self) -> list[dict]:
        out = []
        for p in self.procs:
            p.stdin.write("detail\n")
            p.stdin.flush()
            d = json.loads(p.stdout.readline())
            out += [dict(port=port, sent_objects=n, **st)
                    for port, st, n in zip(d["ports"], d["stats"], d["sent"])]
        return out

    def cmd(self, c: str) -> dict:
        for p in self.procs:
            p.stdin.write(c + "\n")
            p.stdin.flush()
        rows = [json.loads(p.stdout.readline()) for p in self.procs]
        out = {k: sum(r[k] for r in rows) for k in rows[0]}
        out["cpu"] = sum(procs.cpu_seconds(p.pid) for p in self.procs)
        return out

    async def acmd(self, c: str) -> dict:
        return await asyncio.get_running_loop().run_in_executor(None, self.cmd, c)

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                procs.stop(p)
        self.log.close()


class Meter:
    """This process's CPU (user and system, every thread) and wake-ups (voluntary context
    switches: the loop's waits that ended), and the machine's busy time, over a window."""

    def __init__(self):
        self.r0, self.w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        self.b0 = procs.machine_busy_seconds()

    def stop(self) -> dict:
        r1, r0 = resource.getrusage(resource.RUSAGE_SELF), self.r0
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        return {"cpu": user + system, "user": user, "system": system,
                "wall": time.perf_counter() - self.w0, "wakeups": r1.ru_nvcsw - r0.ru_nvcsw,
                "busy": procs.machine_busy_seconds() - self.b0}


def window_figures(apdus, objects, m, sim0, sim1, lat, frames=None) -> dict:
    """``apdus``: data APDUs (I-frames) received in the window; ``frames``: every frame
    received (I, S and U: TESTFR of links that are idle for t3), when known; ``m``: the
    window's :meth:`Meter.stop`."""
    cpu, wall, busy = m["cpu"], m["wall"], m["busy"]
    if not apdus and frames:           # a library whose status has no link counts
        apdus = frames
    lat = (np.concatenate(lat) if isinstance(lat[0], np.ndarray) else np.asarray(lat)) \
        if lat else np.zeros(0)
    return {
        "apdus": apdus, "frames": frames, "objects": objects, "window_s": wall, "master_cpu_s": cpu,
        "cpu_us_per_frame": cpu / frames * 1e6 if frames else None,
        "objects_per_apdu": objects / apdus if apdus else None,
        "apdus_per_s": apdus / wall, "master_cpu_share": cpu / wall,
        "user_s": m["user"], "system_s": m["system"], "wakeups": m["wakeups"],
        "cpu_us_per_apdu": cpu / apdus * 1e6 if apdus else None,
        "apdus_per_cpu_s": apdus / cpu if cpu else None,
        "latency_ms_median": procs.percentile(lat, 50), "latency_ms_p99": procs.percentile(lat, 99),
        "latency_samples": int(lat.size),
        "simulator_cpu_share": (sim1["cpu"] - sim0["cpu"]) / wall,
        # the rest of the machine's busy time in the window: other users of a shared machine
        "other_cpu_share": max(0.0, busy - cpu - (sim1["cpu"] - sim0["cpu"])) / wall,
        "simulator_objects_per_frame": ((sim1["sent_objects"] - sim0["sent_objects"])
                                        / max(1, sim1["frames_out"] - sim0["frames_out"])),
    }


# ---- this project's master ---------------------------------------------------------------

def repeats(log, since: int) -> dict:
    """The event log's rows from ``since`` on, and how many of them repeat an earlier row's
    (station, CA, IOA, time tag). Each change a simulator sends has its own (a point changes
    at most once a tick, and each session is a station), so with as many rows as objects sent
    and none repeated, each object is in the log exactly once. Only rows still held are checked."""
    start = max(since, log.total - log.capacity)
    rows = log.slice(start, log.total)
    key = np.empty(len(rows), [("station", "u4"), ("ca", "u2"), ("ioa", "u4"), ("time", "i8")])
    for f in key.dtype.names:
        key[f] = rows[f]
    return {"logged_objects": log.total - since, "checked_objects": len(rows),
            "repeated_objects": len(rows) - len(np.unique(key))}


def totals(master, by_port: bool = False) -> dict:
    st = master.status()
    if by_port:
        out = {}
        for s in st:
            out[s["port"]] = out.get(s["port"], 0) + s["points"]
        return out
    return {"frames": sum(s["frames_in"] for s in st), "points": sum(s["points"] for s in st),
            # data APDUs (I-frames) as the link counted them; frames_in also counts U-frames
            "i_frames": sum((s.get("link") or {}).get("i_in", 0) for s in st),
            "started": sum(s["data_transfer"] == "started" for s in st),
            "reconnects": sum(s["reconnects"] for s in st)}


async def drain(read, expected, timeout: float = 60.0, stall: float = 3.0) -> float:
    """Wait until ``read()`` reaches ``expected``, or stops moving for ``stall`` s, or
    ``timeout``; returns the seconds waited."""
    t0 = time.monotonic()
    deadline, last, still = t0 + timeout, None, t0
    while time.monotonic() < deadline:
        v = read()
        if v >= expected:
            break
        if v != last:
            last, still = v, time.monotonic()
        elif time.monotonic() - still > stall:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def ours(sims: Simulators, n: int, a) -> dict:
    rss0 = procs.rss_bytes()
    tls = procs.PKI(Path(a.tls_dir)).master() if a.tls_dir else None
    async with iec104.Master(gi_on_start=False, k=a.k, w=a.w, coalesce=a.coalesce,
                             tls=tls) as master:
        t0 = time.perf_counter()
        sessions = await procs.connect_all(master, sims.ports, n)
        t_start = time.perf_counter() - t0
        sem = asyncio.Semaphore(256)

        async def gi(s):
            async with sem:
                return await s.interrogate(ca=1, timeout=120)
        gi_objects = sum(await asyncio.gather(*(gi(s) for s in sessions)))
        t_gi = time.perf_counter() - t0
        if a.gc_freeze:         # as iec104 poll does: the sessions out of the full collections
            gc.freeze()
        await asyncio.sleep(1.0)
        rss_idle = (procs.rss_bytes() - rss0) / n
        cpu0, w0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(a.idle)                 # idle (no data): the fixed cost of n sessions
        idle_share = (time.process_time() - cpu0) / (time.perf_counter() - w0)
        lat, kept, window = [], [], [False]

        async def consume():    # a reader that keeps its batches: the latency is reckoned after
            async for batch in master.events(**({} if a.linger is None else
                                                {"linger": a.linger / 1e3})):
                if window[0]:
                    kept.append(batch)
        task = asyncio.ensure_future(consume()) if a.consumer else None
        base, sim_base = totals(master), await sims.acmd("stats")
        log_base = master.store.log.total
        base_ports, sim_base_ports = totals(master, by_port=True), sims.detail()
        await sims.acmd("go")
        await asyncio.sleep(a.warmup)
        sim0 = await sims.acmd("stats")
        s0 = totals(master)
        window[0] = True
        log_from = master.store.log.total
        meter = Meter()
        await asyncio.sleep(a.seconds)
        m = meter.stop()
        window[0] = False
        if task is None:        # no reader: the latency of the window's rows, from the event log
            log = master.store.log
            kept.append(log.slice(max(log_from, log.total - log.capacity), log.total))
        if kept:
            rows = np.concatenate(kept)
            ok = rows["time"] != iec104.NO_TIME
            lat.append(rows["recv_ns"][ok] / 1e6 - rows["time"][ok])
        s1 = totals(master)
        sim1 = await sims.acmd("stats")
        sim_end = await sims.acmd("stop")
        sent = sim_end["sent_objects"] - sim_base["sent_objects"]
        t_drain = await drain(lambda: totals(master)["points"] - base["points"], sent)
        final = totals(master)
        loss_by_port = []
        if final["points"] - base["points"] != sent:      # where: per listening port
            now_ports = totals(master, by_port=True)
            for d0, d1 in zip(sim_base_ports, sims.detail()):
                got = now_ports.get(d1["port"], 0) - base_ports.get(d1["port"], 0)
                if got != d1["sent_objects"] - d0["sent_objects"]:
                    loss_by_port.append({"port": d1["port"], "connections": d1["connections_open"],
                                         "sent": d1["sent_objects"] - d0["sent_objects"],
                                         "received": got,
                                         "frames_dropped": d1.get("frames_dropped", 0)})
        if task is not None:
            task.cancel()
        r = window_figures(s1["i_frames"] - s0["i_frames"], s1["points"] - s0["points"], m,
                           sim0, sim1, lat, frames=s1["frames"] - s0["frames"])
        r.update(master="iec104" + (" TLS 1.3" if tls else "")
                 + (f" coalesce {a.coalesce * 1e3:g} ms" if a.coalesce else "")
                 + (f" linger {a.linger:g} ms" if a.consumer and a.linger is not None else "")
                 + (" gc frozen" if a.gc_freeze else ""),
                 tls=bool(tls),
                 coalesce_s=a.coalesce, sessions=n, ports=len(set(sims.ports[:n])), tick_s=a.tick,
                 offered_batches_per_s=n / a.tick,
                 start_all_s=t_start, start_and_gi_s=t_gi, gi_objects=gi_objects,
                 rss_idle_per_session_kib=rss_idle / 1024, idle_cpu_share=idle_share,
                 events_consumer=a.consumer, reader_linger_ms=a.linger, gc_frozen=a.gc_freeze,
                 latency_from="events() reader" if a.consumer else "event log, after the window",
                 sent_objects=sent, received_objects=final["points"] - base["points"],
                 sent_frames=sim_end["frames_out"] - sim_base["frames_out"],
                 received_frames=final["frames"] - base["frames"],
                 frames_dropped=sim_end["frames_dropped"] - sim_base["frames_dropped"],
                 started_at_end=final["started"], reconnects=final["reconnects"],
                 drain_s=t_drain, loss_by_port=loss_by_port[:20],
                 phases_s={"start": t_start, "gi": t_gi - t_start, "total": time.perf_counter() - t0})
        r.update(repeats(master.store.log, log_base))
        r["lost_objects"] = r["sent_objects"] - r["received_objects"]
        if a.gc_freeze:
            gc.unfreeze()
        return r


# ---- the floor: what reading the stream costs before any master does anything --------------

STARTDT_ACT, TESTFR_CON = b"\x68\x04\x07\x00\x00\x00", b"\x68\x04\x83\x00\x00\x00"


class FloorClient(asyncio.BufferedProtocol):
    """The least a uvloop master can do with the stream: split APDUs, count the I-frames and
    their objects, acknowledge every w (and every second, for t2), answer TESTFR; no decode,
    no store, no checks. Its CPU per APDU is the loop's and the kernel's share of ours."""

    def __init__(self, w: int, counts: list, on_read=None):
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.carry = self.nr = self.unacked = 0
        self.w, self.counts, self.transport, self.on_read = w, counts, None, on_read

    def connection_made(self, transport):
        self.transport = transport
        transport.write(STARTDT_ACT)

    def get_buffer(self, sizehint):
        return self.view[self.carry:]

    def buffer_updated(self, nbytes):
        b, end, i, counts = self.buf, self.carry + nbytes, 0, self.counts
        while end - i >= 6:
            size = b[i + 1] + 2
            if end - i < size:
                break
            c = b[i + 2]
            if not c & 1:                               # I-frame
                self.nr = (self.nr + 1) & 0x7FFF
                self.unacked += 1
                counts[0] += 1
                counts[1] += b[i + 7] & 0x7F
            elif c == 0x43:
                self.transport.write(TESTFR_CON)
            i += size
        self.carry = end - i
        if self.carry:
            b[:self.carry] = b[i:end]
        if self.unacked >= self.w:
            self.ack()
        if self.on_read is not None:
            self.on_read()

    def ack(self):
        self.unacked = 0
        self.transport.write(bytes((0x68, 4, 1, 0, (self.nr << 1) & 0xFF, self.nr >> 7)))


async def floor(sims: Simulators, n: int, a) -> dict:
    loop = asyncio.get_running_loop()
    counts, clients = [0, 0], []
    ssl = procs.PKI(Path(a.tls_dir)).master().client_context() if a.tls_dir else None
    armed = [False]

    def nap():                          # as Master(coalesce=...) does after a read
        time.sleep(a.coalesce)
        armed[0] = False

    def on_read():
        if not armed[0]:
            armed[0] = True
            loop.call_soon(nap)
    hook = on_read if a.coalesce else None
    for i in range(n):
        _, c = await loop.create_connection(lambda: FloorClient(a.w, counts, hook), "127.0.0.1",
                                            sims.ports[i % len(sims.ports)], ssl=ssl)
        clients.append(c)

    async def t2():
        while True:
            await asyncio.sleep(1.0)
            for c in clients:
                if c.unacked:
                    c.ack()
    acker = asyncio.ensure_future(t2())
    try:
        await asyncio.sleep(1.0)
        sim_base = await sims.acmd("stats")
        await sims.acmd("go")
        await asyncio.sleep(a.warmup)
        sim0, (f0, o0) = await sims.acmd("stats"), tuple(counts)
        meter = Meter()
        await asyncio.sleep(a.seconds)
        m = meter.stop()
        f1, o1 = counts
        sim1 = await sims.acmd("stats")
        sim_end = await sims.acmd("stop")
        sent = sim_end["sent_objects"] - sim_base["sent_objects"]
    finally:
        acker.cancel()
        for c in clients:
            c.transport.close()
    r = window_figures(f1 - f0, o1 - o0, m, sim0, sim1, [])
    r.update(master="floor (uvloop, no decode)" + (" TLS 1.3" if ssl else "") +
             (f" coalesce {a.coalesce * 1e3:g} ms" if a.coalesce else ""), sessions=n,
             tick_s=a.tick, coalesce_s=a.coalesce, sent_objects=sent, lost_objects=None)
    return r


FLOOR_C = Path(__file__).with_name("floor_epoll.c")


def floor_c(sims: Simulators, n: int, a) -> dict:
    """The floor without an event loop (``floor_epoll.c``: the FloorClient's work in C on one
    epoll), built here with gcc: what the kernel alone costs per APDU."""
    exe = Path(tempfile.gettempdir()) / "iec104-bench-floor_epoll"
    if not exe.exists() or exe.stat().st_mtime < FLOOR_C.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(FLOOR_C)], check=True)
    p = subprocess.Popen([str(exe), str(n), str(a.w), str(a.coalesce * 1e3),
                          *map(str, sims.ports)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, preexec_fn=procs.raise_nofile)

    def stats() -> dict:
        p.stdin.write("stats\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())
    try:
        json.loads(p.stdout.readline())                 # {"connected": n}
        time.sleep(1.0)
        sim_base = sims.cmd("stats")
        sims.cmd("go")
        time.sleep(a.warmup)
        sim0, c0, w0, b0 = sims.cmd("stats"), stats(), time.perf_counter(), \
            procs.machine_busy_seconds()
        time.sleep(a.seconds)
        c1, wall, busy = stats(), time.perf_counter() - w0, procs.machine_busy_seconds() - b0
        sim1 = sims.cmd("stats")
        sim_end = sims.cmd("stop")
    finally:
        p.stdin.write("quit\n")
        p.stdin.close()
        p.wait(10)
    d = {k: c1[k] - c0[k] for k in ("user", "system", "wakeups")}
    m = dict(d, cpu=d["user"] + d["system"], wall=wall, busy=busy)
    r = window_figures(c1["apdus"] - c0["apdus"], c1["objects"] - c0["objects"], m, sim0, sim1, [])
    r.update(master="floor (C epoll, no loop)" +
             (f" coalesce {a.coalesce * 1e3:g} ms" if a.coalesce else ""), sessions=n,
             tick_s=a.tick, coalesce_s=a.coalesce, lost_objects=None,
             sent_objects=sim_end["sent_objects"] - sim_base["sent_objects"])
    return r


# ---- c104's master -----------------------------------------------------------------------

def c104_trickle(sims: Simulators, n: int, a) -> dict:
    import c104
    if n > len(sims.ports):
        raise ValueError(f"c104 keeps one connection per address and port: {n} sessions need "
                         f"{n} ports, the simulators have {len(sims.ports)}")
    client = c104.Client(tick_rate_ms=100)
    window, lat, counters = [False], [], []

    def callback(cnt):
        def on_receive(point: c104.Point, previous_info: c104.Information,
                       message: c104.IncomingMessage) -> c104.ResponseState:
            cnt[0] += 1
            cnt[1] += 1.0 / message.number_of_objects      # every object of an APDU calls back
            if window[0]:
                rec = point.recorded_at
                if rec is not None:
                    lat.append(time.time() * 1000.0 - rec.timestamp() * 1000.0)
            return c104.ResponseState.SUCCESS
        return on_receive

    conns = []
    for port in sims.ports[:n]:
        conn = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.NONE)
        pp = conn.protocol_parameters
        pp.send_window_size, pp.receive_window_size = a.k, a.w
        cnt = [0, 0.0]
        counters.append(cnt)
        cb = callback(cnt)
        st = conn.add_station(common_address=1)
        for ioa, tid in sims.types:
            st.add_point(io_address=ioa, type=c104.Type(tid)).on_receive(callable=cb)
        conns.append(conn)
    k_w = (conns[0].protocol_parameters.send_window_size,
           conns[0].protocol_parameters.receive_window_size)

    def objects():
        return sum(c[0] for c in counters)

    def apdus():
        return round(sum(c[1] for c in counters))

    client.start()
    t0 = time.perf_counter()
    for conn in conns:
        conn.connect()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [c.state for c in conns]
        for c, s in zip(conns, states):
            if s == c104.ConnectionState.OPEN_MUTED:
                c.unmute()                               # STARTDT
        if all(s == c104.ConnectionState.OPEN for s in states):
            break
        time.sleep(0.05)
    t_start = time.perf_counter() - t0
    opened = sum(c.state == c104.ConnectionState.OPEN for c in conns)
    try:
        time.sleep(1.0)
        base, sim_base = objects(), sims.cmd("stats")
        sims.cmd("go")
        time.sleep(a.warmup)
        sim0 = sims.cmd("stats")
        o0, f0 = objects(), apdus()
        window[0] = True
        meter = Meter()
        time.sleep(a.seconds)
        m = meter.stop()
        window[0] = False
        o1, f1 = objects(), apdus()
        sim1 = sims.cmd("stats")
        sim_end = sims.cmd("stop")
        sent = sim_end["sent_objects"] - sim_base["sent_objects"]
        deadline, last, still = time.monotonic() + 20, None, time.monotonic()
        while time.monotonic() < deadline and objects() - base < sent:
            v = objects()
            if v != last:
                last, still = v, time.monotonic()
            elif time.monotonic() - still > 2.0:
                break
            time.sleep(0.1)
        received = objects() - base
    finally:
        client.stop()
    r = window_figures(f1 - f0, o1 - o0, m, sim0, sim1, lat)
    r.update(master="c104", sessions=n, ports=n, tick_s=a.tick, offered_batches_per_s=n / a.tick,
             start_all_s=t_start, opened=opened,
             k_w=list(k_w), sent_objects=sent, received_objects=received,
             lost_objects=sent - received,
             frames_dropped=sim_end["frames_dropped"] - sim_base["frames_dropped"])
    return r


# ---- the run -----------------------------------------------------------------------------

def print_run(r) -> None:
    print(f"  {r['master']}, {r['sessions']} sessions, a batch every {r['tick_s']:g} s: "
          f"{fmt(r['objects_per_apdu'], '.2f')} objects/APDU, {r['apdus']} I-frames, "
          f"{r['apdus_per_s']:,.0f} APDUs/s, master CPU {fmt(r['cpu_us_per_apdu'], '.1f')} "
          f"us/APDU ({r['master_cpu_share']:.1%} of a core: user {r['user_s']:.2f} s, system "
          f"{r['system_s']:.2f} s, {r['wakeups']} wake-ups), latency median "
          f"{fmt(r['latency_ms_median'], '.2f')} ms p99 {fmt(r['latency_ms_p99'], '.2f')} ms; "
          f"sent {r['sent_objects']} received {r.get('received_objects')}"
          + (f" (in the event log {r['logged_objects']}, repeated {r['repeated_objects']} of "
             f"{r['checked_objects']} checked)" if "logged_objects" in r else "") + "; start "
          f"{fmt(r.get('start_all_s'), '.2f')} s, idle RSS "
          f"{fmt(r.get('rss_idle_per_session_kib'), '.1f')} KiB/session; simulators "
          f"{r['simulator_cpu_share']:.0%} CPU, other processes {r['other_cpu_share']:.0%}",
          flush=True)


def fmt(v, spec):
    return "" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000", help="numbers of sessions")
    ap.add_argument("--c104-sessions", type=int, default=100,
                    help="sessions of the c104 run (0: none); needs as many ports")
    ap.add_argument("--ports", type=int, default=100, help="listening ports (Outstations), "
                    "at most one per session; session i uses port i %% ports")
    ap.add_argument("--simulators", type=int, default=2, help="simulator processes")
    ap.add_argument("--points", type=int, default=100, help="points per RTU (1 station)")
    ap.add_argument("--objects", type=int, default=2, help="changes per tick per connection")
    ap.add_argument("--total-rate", type=float, default=1000.0,
                    help="batches (APDUs, about) per second over all sessions: the tick of an "
                    "RTU is sessions / total-rate s (100 sessions: 0.1 s, 10,000: 10 s)")
    ap.add_argument("--tick", type=float, help="seconds between batches of an RTU, the same "
                    "for every size (instead of --total-rate)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    ap.add_argument("--idle", type=float, default=3.0, help="idle window before the data")
    ap.add_argument("--coalesce", default="0", help="read coalescing of our master, ms, a "
                    "comma-separated list: one run per value (Master(coalesce=...); 0: off)")
    ap.add_argument("--floor", action="store_true", help="also the floor at each size: a "
                    "uvloop client that only splits, counts and acknowledges the APDUs, and the same "
                    "in C on one epoll (floor_epoll.c, no event loop; not with --tls), with each --coalesce")
    ap.add_argument("--no-consumer", dest="consumer", action="store_false",
                    help="no events() consumer in our master (the latency is then taken from the event log after the window)")
    ap.add_argument("--linger", type=float, help="the reader's events(linger=...), ms "
                    "(default: the library's, 5 ms)")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once our master's "
                    "sessions are connected and interrogated (what iec104 poll does)")
    ap.add_argument("--k", type=int, default=12, help="k of both sides (standard: 12)")
    ap.add_argument("--w", type=int, default=8, help="w of both sides (standard: 8)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                    help="before each size, wait up to S s for the (shared) machine to be idle")
    ap.add_argument("--tls", action="store_true", help="every session over TLS 1.3 (mutual "
                    "authentication, certificates made by trustme for the run); c104 stays plain")
    ap.add_argument("--json")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)   # the simulator process
    ap.add_argument("--tls-dir", help=argparse.SUPPRESS)            # its certificates
    a = ap.parse_args()
    if a.serve:
        return serve(a)
    if a.tls:                       # c104's TLS client fails every handshake here: left out
        a.tls_dir, a.c104_sessions = tempfile.mkdtemp(prefix="iec104-bench-tls-"), 0
        atexit.register(shutil.rmtree, a.tls_dir, True)
        procs.PKI(Path(a.tls_dir), make=True)
    limit = procs.raise_nofile()
    standard = (a.k, a.w) == (12, 8)
    params = (f"k = {a.k}, w = {a.w}" + (" (the standard's)" if standard else " (NOT the standard "
              "k = 12, w = 8)") + " on both sides; t1..t3 standard")
    print(f"machine: {procs.machine()}; open-file limit {limit}")
    every = f"{a.tick} s" if a.tick else f"sessions / {a.total_rate:g} s"
    print(f"trickle: {params}; each RTU: {a.objects} changes every {every} with CP56Time2a "
          f"(1 station, {a.points} points); {a.warmup} s warm-up, {a.seconds} s window", flush=True)
    rows, c104_done = [], not a.c104_sessions
    for n in (int(x) for x in a.sizes.split(",")):
        if a.wait_quiet:
            share = procs.wait_quiet(a.wait_quiet)
            print(f"  machine busy before {n} sessions: {share:.0%} of its cores", flush=True)
        sa = argparse.Namespace(**vars(a))
        sa.tick = a.tick or n / a.total_rate
        sims = Simulators(min(n, a.ports), sa)
        try:
            mine = []
            for ms in (float(x) for x in a.coalesce.split(",")):
                sa.coalesce = ms / 1e3
                mine.append(iec104.run(ours(sims, n, sa)))
                print_run(mine[-1])
            rows += mine
            for ms in (float(x) for x in a.coalesce.split(",")) if a.floor else ():
                sa.coalesce = ms / 1e3          # the floor with each coalescing of ours
                rows.append(iec104.run(floor(sims, n, sa)))
                print_run(rows[-1])
                if not a.tls_dir:
                    rows.append(floor_c(sims, n, sa))
                    print_run(rows[-1])
            if not c104_done and len(sims.ports) >= a.c104_sessions:
                c = c104_trickle(sims, a.c104_sessions, sa)
                c["ratio_ours_over_c104_cpu_per_apdu"] = {
                    r["master"]: r["cpu_us_per_apdu"] / c["cpu_us_per_apdu"]
                    for r in mine if c["cpu_us_per_apdu"] and r["cpu_us_per_apdu"]}
                c["compared_with_iec104_sessions"] = n
                rows.append(c)
                c104_done = True
                print_run(c)
        finally:
            sims.close()
    print()
    print("| master | sessions | tick s | objects/APDU | CPU us/APDU | APDUs/s | APDUs per CPU-s | "
          "latency median / p99 ms | lost | idle RSS KiB/session | start s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['master']} | {r['sessions']:,} | {r['tick_s']:g} | "
              f"{fmt(r['objects_per_apdu'], '.2f')} | "
              f"{fmt(r['cpu_us_per_apdu'], '.1f')} | {r['apdus_per_s']:,.0f} | "
              f"{fmt(r['apdus_per_cpu_s'], ',.0f')} | {fmt(r['latency_ms_median'], '.2f')} / "
              f"{fmt(r['latency_ms_p99'], '.2f')} | {r['lost_objects']} | "
              f"{fmt(r.get('rss_idle_per_session_kib'), '.1f')} | {fmt(r.get('start_all_s'), '.2f')} |")
    for r in rows:
        for name, ratio in (r.get("ratio_ours_over_c104_cpu_per_apdu") or {}).items():
            print(f"{name} ({r['compared_with_iec104_sessions']} sessions) / c104 "
                  f"({r['sessions']} sessions, the same tick) CPU per APDU: {ratio:.3f} "
                  f"(c104 needs {1 / ratio:.1f}x the CPU)")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": procs.machine(), "command": " ".join([".venv/bin/python"] + sys.argv),
            "library": iec104.__file__, "parameters": params, "standard_k_w": standard,
            "settings": {k: v for k, v in vars(a).items() if k not in ("json", "serve")},
            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
