"""The iec104 command, in-process against the simulator, and the default job as a user runs it."""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import pytest

from iec104.cli import main
from iec104.outstation import Outstation

from conformance import PCAP, frames


class Sim:
    """An Outstation in a thread of its own, so that main() can run its own event loop."""

    def __init__(self, **kw):
        self.kw = kw
        self.ready = threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.ready.wait(5)
        return self

    async def _run(self):
        self.stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        async with Outstation(**self.kw) as out:
            self.out = out
            self.ready.set()
            await self.stop.wait()

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)


def test_default_job_runs_end_to_end_and_writes_the_table(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "iec104.cli"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "general interrogation: 26 objects, counter interrogation: 3 counters" in out
    assert "ActCon and ActTerm" in out and "-> executed" in out
    df = pl.read_parquet(tmp_path / "out" / "parameters.parquet")
    assert len(df) == 29 and set(df["status"]) == {"ok"}
    assert "TR1 oil temperature" in df["name"].to_list()


def test_simulate_then_poll_with_export_and_events(tmp_path, capsys):
    with Sim(stations=2, points=30, rate=500) as sim:
        code = main(["poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.5", "--export",
                     str(tmp_path / "snap.parquet"), "--events", str(tmp_path / "ev")])
    assert code == 0
    snap = pl.read_parquet(tmp_path / "snap.parquet")
    assert len(snap) == 60
    events = pl.concat([pl.read_parquet(f) for f in (tmp_path / "ev").glob("*.parquet")])
    assert len(events) >= 60 and set(events["cot"].unique()) >= {3, 20}


def test_simulate_command_runs_for_its_duration(capsys):
    assert main(["simulate", "--port", "0", "--stations", "1", "--points", "5", "--duration", "0.5"]) == 0
    assert "simulator listening on 127.0.0.1:" in capsys.readouterr().out


def test_command_exit_codes(capsys):
    with Sim(stations=1, points=20) as sim:
        target = f"127.0.0.1:{sim.out.port}"
        assert main(["command", target, "--ca", "1", "--ioa", "2", "--type", "C_SC_NA_1",
                     "--value", "1"]) == 0
        assert main(["command", target, "--ca", "1", "--ioa", "2", "--type", "C_SC_NA_1",
                     "--value", "1", "--select", "--time"]) == 0
        assert main(["command", target, "--ca", "1", "--ioa", "99999", "--type", "C_SC_NA_1",
                     "--value", "1"]) == 2
        err = capsys.readouterr().err
        assert "unknown ioa" in err.lower() and "Traceback" not in err
        port = sim.out.port
    assert main(["command", f"127.0.0.1:{port}", "--ca", "1", "--ioa", "2", "--type",
                 "C_SC_NA_1", "--value", "1", "--t0", "1"]) == 1
    assert "127.0.0.1" in capsys.readouterr().err


def test_import_reports_a_good_list_and_rejects_a_bad_one(tmp_path, capsys):
    good = tmp_path / "p.csv"
    good.write_text("ioa,ca,type,command_type\n1,1,M_SP_NA_1,C_SC_NA_1\n2,1,M_ME_NC_1,\n")
    assert main(["import", str(good)]) == 0
    out = capsys.readouterr().out
    assert "2 points" in out and "command points: 1" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("ioa\n1\nfoo\n")
    assert main(["import", str(bad)]) == 1             # an input error
    assert "row 2" in capsys.readouterr().err


def test_export_snapshot(tmp_path):
    with Sim(stations=2, points=10) as sim:
        assert main(["export", f"127.0.0.1:{sim.out.port}", "-o", str(tmp_path / "s.csv")]) == 0
    assert len(pl.read_csv(tmp_path / "s.csv")) == 18     # 20 points less 2 counters (no GI)


def test_decode_capture(tmp_path, capsys):
    assert main(["decode", str(PCAP), "-o", str(tmp_path / "o.parquet")]) == 0
    df = pl.read_parquet(tmp_path / "o.parquet")
    assert len(df) == sum(len(f.get("objects", [])) for f in frames("lib60870_capture.jsonl"))
    assert {"connection", "direction", "capture_time", "ioa", "value"} <= set(df.columns)


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "iec104 decode capture.pcapng -o objects.parquet" in capsys.readouterr().out


def test_target_files_carry_settings(tmp_path):
    from iec104.errors import SettingsError
    from iec104.targets import parse_targets
    toml = tmp_path / "rtus.toml"
    toml.write_text('[[rtu]]\nhost = "10.0.0.7"\nport = 2405\nname = "ss7"\nt1 = 20\n'
                    'gi_interval = 600\npoints = "p.csv"\n\n[[rtu]]\nhost = "10.0.0.8"\n')
    a, b = parse_targets([str(toml)])
    assert (a.host, a.port, a.name, a.points) == ("10.0.0.7", 2405, "ss7", str(tmp_path / "p.csv"))
    assert a.settings == {"t1": 20, "gi_interval": 600} and b.port == 2404
    csv = tmp_path / "rtus.csv"
    csv.write_text("host,port,k,w,ca_size\n127.0.0.1,2404,24,16,1\n")
    (c,) = parse_targets([str(csv)])
    assert c.settings == {"k": 24, "w": 16, "ca_size": 1}
    assert [(t.host, t.port) for t in parse_targets(["h1", "h2:99", "[::1]:2406"])] == \
        [("h1", 2404), ("h2", 99), ("::1", 2406)]
    bad = tmp_path / "bad.csv"
    bad.write_text("host,colour\nx,red\n")
    with pytest.raises(SettingsError, match="colour"):
        parse_targets([str(bad)])


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_poll_of_two_rtus_with_one_down_polls_the_other_and_shows_it_down(tmp_path, capsys):
    down = _free_port()
    with Sim(stations=1, points=30) as sim:
        code = main(["poll", f"127.0.0.1:{sim.out.port}", f"127.0.0.1:{down}", "--duration", "0.5",
                     "--t0", "1", "--export", str(tmp_path / "snap.parquet")])
        counters = int(np.isin(sim.out.image["type_id"], (15, 16, 37)).sum())
    assert code == 1                                 # not every RTU was reached
    assert len(pl.read_parquet(tmp_path / "snap.parquet")) == 30 - counters   # the GI sends no counters
    cap = capsys.readouterr()
    assert f"127.0.0.1:{down}" in cap.out and "down" in cap.out
    assert "Traceback" not in cap.err


def test_poll_reaches_an_rtu_that_comes_up_later(tmp_path):
    port = _free_port()
    with Sim(stations=1, points=10) as a:
        import threading
        late = Sim(stations=1, points=10, port=port)
        timer = threading.Timer(0.3, late.__enter__)      # after the first connect failed
        timer.start()
        try:
            code = main(["poll", f"127.0.0.1:{a.out.port}", f"127.0.0.1:{port}",
                         "--duration", "2", "--t0", "1", "--export", str(tmp_path / "s.csv")])
        finally:
            timer.join()
            late.__exit__()
    assert code == 0                                 # both reached in the end
    assert pl.read_csv(tmp_path / "s.csv")["station"].n_unique() == 2


def test_a_numeric_name_is_polled_and_its_export_written(tmp_path, capsys):
    """`name = 7` in a target file is the name "7": the poll's final table shows it and the
    --export is written (it is written even if that table fails)."""
    with Sim(stations=1, points=10) as sim:
        toml = tmp_path / "rtus.toml"
        toml.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = {sim.out.port}\nname = 7\n')
        code = main(["poll", str(toml), "--duration", "0.3", "--export", str(tmp_path / "s.csv")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "s.csv").exists()


def test_the_export_is_written_when_the_final_table_fails(tmp_path, monkeypatch):
    from iec104 import console

    def broken(self):
        raise RuntimeError("display")
    monkeypatch.setattr(console.Live, "stop", broken)
    with Sim(stations=1, points=10) as sim:
        code = main(["poll", f"127.0.0.1:{sim.out.port}", "--duration", "0.3",
                     "--export", str(tmp_path / "s.csv")])
    assert code == 1 and (tmp_path / "s.csv").exists()


def test_ctrl_c_while_connecting_stops_the_poll_promptly():
    """SIGINT (as SIGTERM) cancels the connects still running: an RTU that accepts TCP but
    never answers STARTDT does not hold the operator's Ctrl-C for t1 (or t0)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)                                   # accepts in the kernel, never answers
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t = time.monotonic()
    timer.start()
    try:
        code = main(["poll", f"127.0.0.1:{srv.getsockname()[1]}", "--t1", "3", "--t2", "1"])
    finally:
        timer.cancel()
        srv.close()
    assert time.monotonic() - t < 2 and code == 1
