"""Helpers of the end-to-end benchmarks: outstation processes, CPU time, memory."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core, every process) since boot, from
    /proc/stat: the difference over a window, minus the benchmark's own processes, is what
    other users of a shared machine took meanwhile."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def wait_quiet(max_wait: float, *, busy_below: float = 0.2, sample: float = 2.0) -> float:
    """Wait (at most ``max_wait`` s) until the machine's busy share over ``sample`` s is below
    ``busy_below`` of all cores; returns the last busy share seen (0..1)."""
    deadline, share = time.monotonic() + max_wait, 1.0
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(sample)
        share = (machine_busy_seconds() - b0) / (time.monotonic() - t0) / (os.cpu_count() or 1)
        if share < busy_below or time.monotonic() >= deadline:
            return share


def rss_bytes(pid: int | None = None) -> int:
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit (10,000 sessions need it)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


_raise_nofile = raise_nofile            # preexec_fn of the simulator processes


async def connect_all(master, ports: list[int], n: int, *, concurrency: int = 256,
                      **settings) -> list:
    """Open ``n`` sessions of ``master`` (public API only), session i to ports[i % len];
    at most ``concurrency`` connects in flight. Returns the sessions in order."""
    import asyncio
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            return await master.connect("127.0.0.1", ports[i % len(ports)], name=f"rtu{i}",
                                        **settings)
    return await asyncio.gather(*(one(i) for i in range(n)))


def percentile(values, q: float) -> float | None:
    """q-th percentile (0..100) of a sequence or numpy array; None when empty."""
    import numpy as np
    a = np.asarray(values, dtype=float)
    return float(np.percentile(a, q)) if a.size else None


def float_point_list(stations: int, points: int) -> Path:
    """A point list of M_ME_NC_1 points only (what the c104 side of a benchmark expects)."""
    path = Path(tempfile.gettempdir()) / f"iec104-bench-{stations}x{points}.csv"
    if not path.exists():
        rows = ["ca,ioa,type,value"] + [f"{ca},{ioa},M_ME_NC_1,{ioa * 0.5}"
                                        for ca in range(1, stations + 1)
                                        for ioa in range(1, points + 1)]
        path.write_text("\n".join(rows) + "\n")
    return path


def start_simulator(port: int, *, stations: int, points: int, k: int = 12, w: int = 8,
                    rate: float = 0, with_time: bool = False,
                    point_list: Path | None = None) -> subprocess.Popen:
    """This project's outstation in a process of its own."""
    args = [sys.executable, "-m", "iec104.cli", "simulate", "--port", str(port), "--stations",
            str(stations), "--points", str(points), "--k", str(k), "--w", str(w), "--rate", str(rate)]
    if point_list is not None:
        args += ["--point-list", str(point_list)]
    if with_time:
        args.append("--with-time")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_raise_nofile)
    wait_port(port)
    return proc


def start_c104_outstation(port: int, *, stations: int, points: int, k: int) -> subprocess.Popen:
    """lib60870-C's outstation (c104) in a process of its own."""
    proc = subprocess.Popen([sys.executable, str(HERE / "c104_outstation.py"), str(port),
                             str(stations), str(points), str(k)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, timeout=300)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


class PKI:
    """A CA, the simulator's certificate for 127.0.0.1 and the master's, in ``path`` (a
    temporary directory), made there by trustme when ``make`` (nothing committed)."""

    def __init__(self, path: Path, *, make: bool = False):
        self.ca = path / "ca.pem"
        self.server, self.client = path / "server.pem", path / "client.pem"
        if not make:
            return
        import trustme
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(self.server))
        ca.issue_cert("master.example").private_key_and_cert_chain_pem.write_to_path(str(self.client))

    def master(self):
        import iec104
        return iec104.TLS(cert=self.client, ca=self.ca, min_version="1.3")

    def outstation(self):
        import iec104
        return iec104.TLS(cert=self.server, ca=self.ca, min_version="1.3")
