"""The ``iec104`` command: the main job on the built-in simulator by default, and poll,
watch, simulate, command, import, export, decode."""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import re
import signal
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, overload

from iec104 import console, display
from iec104.commands import build_command
from iec104.errors import (CommandError, CommandNotAllowed, ConfirmationTimeout, IEC104Error,
                           InputError)
from iec104.link import LinkConfig
from iec104.master import Master, run
from iec104.session import SessionSettings
from iec104.settings import FieldSizes
from iec104.targets import SETTINGS, Target, parse_address, parse_targets, tls_settings
from iec104.types import TypeID

if TYPE_CHECKING:
    import polars as pl

    from iec104.cluster import RTU, Cluster
    from iec104.redundancy import RedundancyGroup
    from iec104.session import Session

EXAMPLES = """\
examples:
  iec104                                  the demo: simulator + master on loopback, ~5 s
  iec104 poll 10.0.0.7:2404 --duration 60 --export snapshot.parquet
  iec104 poll rtus.toml --events events/ --points points.xlsx
  iec104 watch 10.0.0.7                   terminal UI (General, Configuration, Import,
                                          Commands, Devices, Debug)
  iec104 simulate --port 2404 --stations 2 --points 1000 --duration 60 --rate 500
  iec104 command 10.0.0.7 --ca 1 --ioa 5001 --type C_SC_NA_1 --value 1 --select
  iec104 import points.xlsx --sheet Points
  iec104 export 10.0.0.7 -o snapshot.csv
  iec104 decode capture.pcapng -o objects.parquet
"""

# exit codes (README "Exit codes")
OK, FAILED, REFUSED, TIMEOUT = 0, 1, 2, 3

_log = logging.getLogger("iec104.cli")


def sample_points() -> Path:
    """The point list shipped with the package (the simulator's default image)."""
    return Path(str(resources.files("iec104") / "data" / "points.csv"))


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and the input-error exit code (1), not its own 2, and
    no abbreviations: `export --ca 1` was taken for --ca-size 1 (the frames then decoded
    with a 1-octet CA); the subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(
                f"{v} is out of range: {lo}..{hi}" if hi is not None else f"{v} must be >= {lo}")
        return v
    check.__name__ = "integer"
    return check


def _float_in(lo: float = 0.0, hi: float | None = None, *,
              strict: bool = False) -> Callable[[str], float]:
    def check(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"{text} must be a number {'>' if strict else '>='} {lo:g}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{text} must be a number <= {hi:g}")
        return v
    check.__name__ = "number"
    return check


PORT, LISTEN_PORT = _int_in(1, 65535), _int_in(0, 65535)     # 0: any free port (simulate)
CA, IOA = _int_in(0, 65535), _int_in(0, 0xFFFFFF)


def _ca_list(text: str) -> list[int]:
    """``--ca 1,2``: the range against the CA size is the session setting's to check."""
    return [CA(c) for c in text.replace(",", " ").split()] or [CA(text)]
SECONDS = _float_in(0.0, strict=True)


def _parser() -> argparse.ArgumentParser:
    from iec104 import __version__
    p = _Parser(prog="iec104", description="IEC 60870-5-104 master: poll RTUs, "
                                "send commands, simulate outstations, decode captures.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"iec104 {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log the sessions' life on stderr (connects, interrogations, closes); -vv: debug")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def settings(sp: argparse.ArgumentParser) -> None:
        g = sp.add_argument_group("session settings (defaults: the standard's)")
        for name, kind, help_ in (
                ("t0", float, "connect timeout, s"), ("t1", float, "ack timeout, s"),
                ("t2", float, "ack delay, s"), ("t3", float, "idle test, s"),
                ("k", int, "send window"), ("w", int, "ack after w frames"),
                ("cot-size", int, "COT octets (1, 2)"), ("ca-size", int, "CA octets (1, 2)"),
                ("ioa-size", int, "IOA octets (1, 2, 3)"),
                ("gi-interval", float, "periodic general interrogation, s"),
                ("ci-interval", float, "periodic counter interrogation, s"),
                ("clock-sync-interval", float, "periodic clock sync, s")):
            g.add_argument(f"--{name}", type=kind, help=help_)
        g.add_argument("--tz", help="time zone of the RTU clocks (default UTC)")
        tls_options(sp)

    def rtu_options(sp: argparse.ArgumentParser, standby: bool = True) -> None:
        g = sp.add_argument_group("the RTU")
        g.add_argument("--ca", dest="cas", type=_ca_list, action="append", metavar="CA[,CA...]",
                       help="common address(es) of its stations: the GI at start and on schedule, "
                       "and the clock sync go to each (repeat or a comma list; default: broadcast)")
        if standby:
            g.add_argument("--standby", action="append", default=[], metavar="HOST:PORT",
                           help="another address of the same RTU: a redundancy group (repeat)")

    def tls_options(sp: argparse.ArgumentParser, server: bool = False) -> None:
        g = sp.add_argument_group("TLS (IEC 62351-3; mutual authentication)")
        g.add_argument("--tls-cert", help="our certificate chain (PEM; the key too unless --tls-key)")
        g.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
        g.add_argument("--tls-ca", help="CA certificate(s) that sign the "
                       + ("clients'" if server else "RTUs'") + " certificates (PEM)")
        g.add_argument("--tls-crl", help="certificate revocation list (PEM) of that CA")
        g.add_argument("--tls-allow", action="append", metavar="CERT", help="allow only this "
                       "peer certificate: a SHA-256 fingerprint or a certificate file (repeat)")

    d = sub.add_parser("demo", help="the main job on the built-in simulator (the default)")
    d.add_argument("--export", default="out/parameters.parquet", help="where to write the table")
    d.add_argument("--rows", type=_int_in(0), default=40, help="rows of the table to show")

    pp = sub.add_parser("poll", help="poll one or many RTUs", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pp.add_argument("targets", nargs="+", metavar="TARGET", help="HOST[:PORT] or a .toml/.csv file of targets")
    pp.add_argument("--duration", type=SECONDS, help="stop after S seconds (default: Ctrl-C)")
    pp.add_argument("--export", help="write the parameter table at the end (.parquet/.csv/.jsonl/.arrow)")
    pp.add_argument("--events", help="directory for rotating Parquet files of every object received")
    pp.add_argument("--points", help="point list (CSV/XLSX) joined with the live values")
    pp.add_argument("--json", action="store_true", help="machine-readable status lines")
    pp.add_argument("--workers", type=_int_in(1, 4096),
                    help="poll on N Ray workers (iec104.cluster; needs the 'cluster' extra)")
    pp.add_argument("--ray-address", help="with --workers: join this Ray cluster (default: a local one)")
    pp.add_argument("--coalesce", type=_float_in(0.0, 1000.0), default=0.0, metavar="MS",
                    help="read coalescing: nap MS ms after reading spontaneous data, so that "
                    "one wake-up serves every RTU that sent meanwhile (fleets of many RTUs; "
                    "spontaneous data waits up to MS more; GI and commands do not); 0: off")
    settings(pp)
    rtu_options(pp)

    w = sub.add_parser("watch", help="terminal UI for one RTU")
    w.add_argument("target", metavar="TARGET")
    w.add_argument("--points", help="point list (CSV/XLSX)")
    settings(w)
    rtu_options(w)

    s = sub.add_parser("simulate", help="run the outstation simulator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=LISTEN_PORT, default=2404, help="TCP port (0: any free one)")
    s.add_argument("--standby-port", type=LISTEN_PORT, action="append", default=[], metavar="PORT",
                   help="another port of the same stations: a redundancy group (repeat)")
    s.add_argument("--stations", type=_int_in(1, 65534), default=2)
    s.add_argument("--points", type=_int_in(1, 0xFFFFFF), default=100, help="points per station")
    s.add_argument("--point-list", help="CSV/XLSX point list instead of generated points")
    s.add_argument("--rate", type=_float_in(0.0), default=0.0, help="spontaneous changes per second")
    s.add_argument("--with-time", action="store_true", help="spontaneous data with CP56Time2a")
    s.add_argument("--duration", type=SECONDS, help="stop after S seconds (default: Ctrl-C)")
    s.add_argument("--k", type=_int_in(1, 32767), default=LinkConfig.k, help="send window (raise it for load tests)")
    s.add_argument("--w", type=_int_in(1, 32767), default=LinkConfig.w, help="acknowledge after w received frames")
    tls_options(s, server=True)

    c = sub.add_parser("command", help="send one command; the exit code tells its result")
    c.add_argument("target", metavar="TARGET")
    c.add_argument("--ca", type=CA, required=True)
    c.add_argument("--ioa", type=IOA, required=True)
    c.add_argument("--type", required=True, help="C_SC_NA_1, C_DC_NA_1, C_SE_NC_1, ... or its number")
    c.add_argument("--value", type=float, required=True)
    c.add_argument("--select", action="store_true", help="select before operate")
    c.add_argument("--time", action="store_true", help="send the CP56Time2a variant")
    c.add_argument("--qualifier", type=_int_in(0, 255), default=0, help="QU (commands) or QL (setpoints)")
    c.add_argument("--timeout", type=SECONDS, default=10.0)
    settings(c)

    i = sub.add_parser("import", help="validate a point list and say what it holds")
    i.add_argument("file")
    i.add_argument("--sheet", help="XLSX sheet name or 0-based index")

    e = sub.add_parser("export", help="connect, interrogate, write a snapshot")
    e.add_argument("target", metavar="TARGET")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--points", help="point list joined with the values")
    settings(e)
    rtu_options(e, standby=False)

    dc = sub.add_parser("decode", help="decode a pcap/pcapng capture or a file of hex APDUs")
    dc.add_argument("capture")
    dc.add_argument("-o", "--output", required=True, help=".parquet, .csv, .jsonl or .arrow")
    dc.add_argument("--port", type=PORT, help="TCP port of the IEC 104 streams (default: find them)")
    return p


def _session_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The session settings given on the command line (the others keep their defaults)."""
    # "ca": the session's CAs are --ca of poll/watch (args.cas); command's --ca is its address
    out = {k: getattr(args, k) for k in SETTINGS if k != "ca" and getattr(args, k, None) is not None}
    if getattr(args, "cas", None):
        out["ca"] = tuple(c for cas in args.cas for c in cas)
    tls = [getattr(args, f"tls_{k}", None) for k in ("cert", "key", "ca", "crl", "allow")]
    if any(v is not None for v in tls):
        out["tls"] = tls_settings(*tls, where="--tls-*")
    return out


def _targets(specs: list[str], standby: list[str] | None = None) -> list[Target]:
    """parse_targets, with the file errors a user makes said as such: a .toml/.csv target that
    does not exist (not taken for a host name), a TOML syntax error with its file and line, a
    port out of range; ``standby`` (--standby) the more addresses of the one target."""
    import tomllib
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() in (".toml", ".csv"):
            if not path.is_file():
                raise InputError(f"target file {spec}: does not exist" if not path.exists()
                                 else f"target file {spec}: not a file")
            if path.suffix.lower() == ".toml":
                try:
                    tomllib.loads(path.read_text())
                except tomllib.TOMLDecodeError as e:
                    raise InputError(f"{spec}: not valid TOML: {e}") from None
                except (OSError, UnicodeDecodeError) as e:
                    raise InputError(f"{spec}: unreadable ({e})") from None
    targets = parse_targets(specs)
    if standby:
        if len(targets) != 1:
            raise InputError(f"--standby: the addresses of one RTU, and there are {len(targets)} "
                             "targets (a target file takes standby = [...] per RTU)")
        t = targets[0]
        for a in standby:
            address = parse_address(a, where="--standby")
            if address in ((t.host, t.port), *t.standby):   # a second connection to one address
                also = "the RTU's own address" if address == (t.host, t.port) else "a standby"
                raise InputError(f"--standby {a}: given twice (also {also}): each address of a "
                                 "group is one more connection to the RTU")
            t.standby.append(address)
    for t in targets:
        for port in (t.port, *(p for _, p in t.standby)):
            if not 1 <= port <= 65535:
                raise InputError(f"target {t.name or t.host}: port {port} is out of range: 1..65535")
    return targets


def _one_target(spec: str, standby: list[str] | None = None) -> Target:
    targets = _targets([spec], standby)
    if len(targets) != 1:
        raise InputError(f"{spec}: {len(targets)} targets; this command talks to one RTU")
    return targets[0]


def _check_settings(settings: dict[str, Any]) -> None:
    """Session settings checked as connect would check them, before connecting."""
    SessionSettings.of(**settings)


def _read_points(path: str | None) -> pl.DataFrame | None:
    """A point list read and checked before connecting (PointListError: exit code 1)."""
    if path is None:
        return None
    from iec104.metadata import read_point_list
    return read_point_list(path)


def _read_target_points(targets: list[Target]) -> None:
    """The targets' own point lists (a target file's ``points``) read and checked before
    connecting, each file once: a bad one is exit code 1 with nothing connected."""
    for path in dict.fromkeys(t.points for t in targets if t.points):
        _read_points(path)


def _logging(verbose: int) -> None:
    """-v: the library's INFO logs (sessions connect, interrogate, close) on stderr; -vv: DEBUG.
    Without -v only the error line says what went wrong (warnings are dropped)."""
    import logging
    lib = logging.getLogger("iec104")
    for h in [h for h in lib.handlers if getattr(h, "_iec104_cli", False)]:
        lib.removeHandler(h)
    if verbose:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        lib.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        lib.propagate = False
    else:                                       # the error line and the tables say it once
        h = logging.NullHandler()
        lib.setLevel(logging.NOTSET)
        lib.propagate = True
    setattr(h, "_iec104_cli", True)            # our mark, read back with getattr above
    lib.addHandler(h)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except InputError as e:
        console.error(str(e))
        return FAILED
    _logging(args.verbose)
    cmd = args.cmd or "demo"
    if cmd == "demo" and not hasattr(args, "export"):
        args.export, args.rows = "out/parameters.parquet", 40
    handler: Callable[[argparse.Namespace], int] = globals()[f"cmd_{cmd}"]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except CommandError as e:
        console.error(str(e))
        return REFUSED
    except ConfirmationTimeout as e:
        console.error(str(e))
        return TIMEOUT
    except (IEC104Error, OSError, ValueError) as e:  # connection or input error
        console.error(str(e) or type(e).__name__)
        return FAILED
    except Exception as e:                      # never a traceback (-vv logs it)
        import logging
        logging.getLogger("iec104.cli").debug("unexpected error", exc_info=True)
        console.error(f"{type(e).__name__}: {e}")
        return FAILED


# ---- demo ------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    return run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    from iec104.outstation import Outstation
    points = sample_points()
    t0 = time.monotonic()
    async with Outstation(point_list=points, rate=50) as out:
        console.say(f"simulator: IEC 104 outstation on 127.0.0.1:{out.port}, stations "
                    f"{out.stations}, {len(out.image)} points, 50 changes/s")
        async with Master() as master:
            rtu = await master.connect("127.0.0.1", out.port, name="simulator", gi_on_start=False)
            n = await rtu.interrogate()
            c = await rtu.counter_interrogation()   # integrated totals answer only this
            console.say(f"master: connected, STARTDT con, general interrogation: {n} objects, "
                        f"counter interrogation: {c} counters")
            master.import_points(points)
            await asyncio.sleep(1.0)                # let some spontaneous changes arrive
            console.table_of(display.readable(master.parameters()),
                             "parameters (live values joined with the point list)",
                             rows=args.rows, columns=display.PARAMETER_COLUMNS)
            cmds = master.command_points()
            first = cmds.sort(["ca", "ioa"]).row(0, named=True)
            value = {45: 1, 46: 2, 47: 2, 48: 0.5, 49: 100, 50: 112.5, 51: 1}.get(int(first["type_id"]), 1)
            res = await rtu.command(first["ca"], first["ioa"], int(first["type_id"]), value,
                                    select=True, wait_term=True)
            assert res.rtt is not None          # command() measures it
            console.say(f"command {first['type']} CA {res.ca} IOA {res.ioa} value {value} "
                        f"(select before operate): ActCon{' and ActTerm' if res.terminated else ''} "
                        f"in {res.rtt * 1000:.1f} ms")
            rec = out.commands[-1]
            console.say(f"simulator recorded: {rec['type']} CA {rec['ca']} IOA {rec['ioa']} "
                        f"value {rec['value']:g} -> {rec['result']}")
            rtt = await rtu.test()
            console.say(f"connection health: TESTFR con after {rtt * 1000:.2f} ms")
            path = master.export(args.export)
            console.say(f"wrote {len(master.parameters())} rows to {path}")
            console.status_table(master.status())
    console.say(f"done in {time.monotonic() - t0:.1f} s")
    return OK


# ---- poll / export ---------------------------------------------------------------------------

def _stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so that the command stops cleanly, writing what it has."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    return stop


def _check_output(path: str | None) -> None:
    """An export file's extension checked before connecting: one of export.FORMATS, or .xlsx
    when xlsxwriter is installed."""
    if path is None:
        return
    from iec104.export import FORMATS
    ext = Path(path).suffix.lower()
    if ext == ".xlsx":
        try:
            import xlsxwriter  # noqa: F401
        except ModuleNotFoundError:
            raise InputError(f"{path}: writing .xlsx needs xlsxwriter, with the 'xlsx' extra: "
                             "pip install 'iec104[xlsx]' xlsxwriter") from None
    elif ext not in FORMATS:
        raise InputError(f"{path}: unknown extension {Path(path).suffix!r}; use one of "
                         f"{', '.join(sorted([*FORMATS, '.xlsx']))}")


def _export_table(df: pl.DataFrame, path: str) -> Path:
    """The parameter table written as master.export does, and .xlsx (Polars' write_excel)
    written the same way: beside, then renamed."""
    from iec104.export import file_mode, write_table
    if Path(path).suffix.lower() != ".xlsx":
        return write_table(df, path)
    import os
    import tempfile

    import polars as pl
    # Excel has no nested cells and no time zones: text, and times in UTC
    df = df.select([pl.col(c).cast(pl.String) if isinstance(t, (pl.List, pl.Struct, pl.Object))
                    else pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
                    if isinstance(t, pl.Datetime) and t.time_zone else pl.col(c)
                    for c, t in df.schema.items()])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".xlsx", dir=out.parent)
    os.close(fd)
    try:
        df.write_excel(tmp, worksheet="parameters")
        os.chmod(tmp, file_mode())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


async def _connect_all(master: Master, targets: list[Target],
                       settings: dict[str, Any]) -> list[Session | RedundancyGroup]:
    sessions = []
    for t in targets:
        sessions.append(await _connect_one(master, t, settings))
    return sessions


@overload
async def _connect_one(master: Master, t: Target,
                       settings: dict[str, Any]) -> Session | RedundancyGroup: ...
@overload
async def _connect_one(master: Cluster, t: Target, settings: dict[str, Any]) -> RTU: ...


async def _connect_one(master: Master | Cluster, t: Target,
                       settings: dict[str, Any]) -> Session | RedundancyGroup | RTU:
    _log.debug("%s: connecting to %s:%d, settings %s", Reach.name(t), t.host, t.port,
               {**settings, **t.settings} or "the standard's")
    standby: dict[str, Any] = {"standby": t.standby} if t.standby else {}  # a Cluster: none
    s = await master.connect(t.host, t.port, name=t.name, **standby, **{**settings, **t.settings})
    _log.info("%s: connected to %s:%d, data transfer started%s", s.name, t.host, t.port,
              " (general interrogation at start)" if s.settings.gi_on_start else "")
    if t.points:
        master.import_points(t.points, station=s.station)
    return s


class Reach:
    """Every target of a multi-RTU poll: the ones down at start are shown as down and tried
    again in the background (the session's own back-off), the others polled meanwhile."""

    def __init__(self, master: Master | Cluster, targets: list[Target],
                 settings: dict[str, Any]) -> None:
        self.master, self.targets, self.settings = master, targets, settings
        self.down: dict[str, str] = {}          # name -> why, while not reached
        self.tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def name(t: Target) -> str:
        return t.name or f"{t.host}:{t.port}"

    async def start(self, stop: asyncio.Event | None = None) -> int:
        """Connect to all at once; returns how many were reached. ``stop`` (Ctrl-C, SIGTERM)
        set meanwhile cancels the connects still running: their targets are down."""
        tasks = [asyncio.ensure_future(_connect_one(self.master, t, self.settings))
                 for t in self.targets]
        every = asyncio.gather(*tasks, return_exceptions=True)
        waits: set[asyncio.Future[Any]] = {every}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if w is not every:
                    w.cancel()
            for task in tasks:
                task.cancel()               # the ones still connecting; done ones keep theirs
            await asyncio.gather(every, *waits, return_exceptions=True)
        for t, task in zip(self.targets, tasks):
            r = task.exception() if not task.cancelled() else \
                IEC104Error("stopped while connecting")
            if r is not None:
                if not isinstance(r, (IEC104Error, OSError)):
                    raise r
                self.down[self.name(t)] = str(r)
                _log.info("%s: down (%s), trying again in the background", self.name(t), r)
        return len(self.targets) - len(self.down)

    def retry(self) -> None:
        for t in self.targets:
            if self.name(t) in self.down:
                self.tasks.append(asyncio.get_running_loop().create_task(self._retry(t)))

    async def _retry(self, t: Target) -> None:
        cfg = SessionSettings.of(**{**self.settings, **t.settings})
        delay = cfg.backoff_min
        while True:
            await asyncio.sleep(delay)
            try:
                await _connect_one(self.master, t, self.settings)
            except (IEC104Error, OSError) as e:
                self.down[self.name(t)] = str(e)
                delay = min(cfg.backoff_max, delay * 2)
            else:
                del self.down[self.name(t)]
                return

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _fleet(args: argparse.Namespace) -> Master | Cluster:
    """The poll's master: one Master, or with --workers a Cluster of Masters on Ray, which
    the poll drives alike (its tables are awaited)."""
    if args.workers is None:
        if args.ray_address:
            raise InputError("--ray-address: only with --workers")
        return Master(coalesce=args.coalesce / 1e3)
    try:
        from iec104.cluster import Cluster
    except ModuleNotFoundError as e:
        raise InputError(f"--workers needs the 'cluster' extra ({e}): "
                         "pip install 'iec104[cluster]'") from None
    return Cluster(workers=args.workers, address=args.ray_address, coalesce=args.coalesce / 1e3)


def cmd_poll(args: argparse.Namespace) -> int:
    targets = _targets(args.targets, args.standby)
    if args.workers and any(t.standby for t in targets):
        raise InputError("standby: redundancy groups are not polled with --workers")
    for t in targets:
        _check_settings({**_session_settings(args), **t.settings})
    _check_output(args.export)
    _read_target_points(targets)
    points = _read_points(args.points)
    return run(_poll(args, targets, points))


async def _poll(args: argparse.Namespace, targets: list[Target],
                points: pl.DataFrame | None) -> int:
    """Polls every RTU it can reach; the ones down are shown as down and tried again in the
    background. Exit code 0 when every RTU was reached, 1 when one never was (or, at once,
    when none could be reached at start)."""
    from iec104.store import ParquetSink
    stop = _stop_on_signals()
    # a Master, or a Cluster with --workers: driven alike, the branches on args.workers
    # calling what only one of them has
    fleet: Any = _fleet(args)
    async with fleet as master:
        if args.events and args.workers:
            sink = master.sink(args.events)
        else:
            sink = master.store.add_sink(ParquetSink(args.events)) if args.events else None
        reach = Reach(master, targets, _session_settings(args))
        if not await reach.start(stop):
            for name, why in reach.down.items():
                console.error(why if name in why else f"{name}: {why}")
            if sink is not None:
                sink.close()
            return FAILED
        if not stop.is_set():
            reach.retry()
        if points is not None:
            master.import_points(points)
        # the sessions live as long as the poll: out of the collector's full passes, which
        # walk every object of every session (about 40 each) and, with 10,000 RTUs, stop
        # the loop for 0.15-0.4 s every few seconds (the status shown twice a second is
        # enough to start them); objects made from now on are collected as before
        gc.freeze()
        live = console.Live(master, json_lines=args.json, down=reach.down)
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except asyncio.TimeoutError:
            pass
        finally:
            gc.unfreeze()
            try:
                await reach.stop()
                live.stop()                     # the final table: its failure loses no file
            finally:
                await _write_poll_files(args, master, sink)
    for s in master.sessions:
        if s is not None:
            _log.info("%s: closed", s.name)
    if reach.down:
        console.error(f"not reached: {', '.join(reach.down)}")
        return FAILED
    return OK


async def _write_poll_files(args: argparse.Namespace, master: Any, sink: Any) -> None:
    """The end of a poll: --export's table and --events' last file, the one written even
    when the other fails."""
    try:
        if args.export:
            # the same table as without --workers (the placement is the cluster's business)
            df = (await master.parameters()).drop("worker") if args.workers \
                else master.parameters()
            console.say(f"wrote {len(master)} parameters to {_export_table(df, args.export)}")
    finally:
        if sink is not None:
            sink.close()
            console.say(f"wrote {sink.rows_written} events to {len(sink.files)} file(s) in {args.events}")


def cmd_export(args: argparse.Namespace) -> int:
    targets = _targets([args.target])
    for t in targets:
        _check_settings({**_session_settings(args), **t.settings})
    _check_output(args.output)
    _read_target_points(targets)
    return run(_export(args, targets, _read_points(args.points)))


async def _export(args: argparse.Namespace, targets: list[Target],
                  points: pl.DataFrame | None) -> int:
    async with Master(gi_on_start=False) as master:
        sessions = await _connect_all(master, targets, _session_settings(args))
        for s in sessions:
            for ca in s.settings.ca or (None,):     # its stations (--ca, the target's ca)
                n = await s.interrogate(ca=ca)
                _log.info("%s: general interrogation of CA %s: %d objects", s.name,
                          "broadcast" if ca is None else ca, n)
        if points is not None:
            master.import_points(points)
        console.say(f"wrote {len(master)} parameters to {_export_table(master.parameters(), args.output)}")
    return OK


# ---- simulate --------------------------------------------------------------------------------

def cmd_simulate(args: argparse.Namespace) -> int:
    return run(_simulate(args))


async def _simulate(args: argparse.Namespace) -> int:
    from iec104.outstation import Outstation
    out = Outstation(stations=args.stations, points=args.points, point_list=args.point_list,
                     host=args.host, port=args.port, rate=args.rate, with_time=args.with_time,
                     k=args.k, w=args.w, tls=_session_settings(args).get("tls"),
                     standby_ports=args.standby_port)
    out.on_command.append(lambda r: console.say(
        f"command from {r['connection']}: {r['type']} CA {r['ca']} IOA {r['ioa']} value "
        f"{r['value']:g}{' select' if r['select'] else ''} -> {r['result']}"))
    stop = _stop_on_signals()
    async with out:
        console.say(f"simulator listening on {args.host}:{out.port}: stations {out.stations}, "
                    f"{len(out.image)} points, {args.rate:g} changes/s"
                    + (f"; a redundancy group with ports {out.ports[1:]}" if out.group else ""))
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except asyncio.TimeoutError:
            pass
        console.say(f"stopping: {json.dumps(out.stats())}")
    return OK


# ---- command ---------------------------------------------------------------------------------

def _field_sizes(settings: dict[str, Any]) -> FieldSizes:
    """The COT, CA and IOA sizes the session will use (settings checked as connect would)."""
    s = SessionSettings.of(**settings)
    return FieldSizes(cot_size=s.cot_size, ca_size=s.ca_size, ioa_size=s.ioa_size)


def cmd_command(args: argparse.Namespace) -> int:
    target = _one_target(args.target)
    settings = {**_session_settings(args), **target.settings}
    _check_settings(settings)
    _read_target_points([target])
    value = int(args.value) if math.isfinite(args.value) and args.value.is_integer() else args.value
    if args.type.strip().isdigit():             # a type by its number (45), as the help says
        args.type = int(args.type)
    # type, address, value and qualifier are checked before connecting: InvalidRequestError
    # (exit 1) in one line, nothing sent
    build_command(args.type, args.ca, args.ioa, value, select=args.select,
                  qualifier=args.qualifier, time=True if args.time else None,
                  sizes=_field_sizes(settings))
    return run(_command(args, target, settings, value))


async def _command(args: argparse.Namespace, target: Target, settings: dict[str, Any],
                   value: float) -> int:
    async with Master(gi_on_start=False, reconnect=False) as master:
        # as poll and export connect: the target file's point list in force, so a command to
        # an IOA that is no command point of it is refused before it leaves
        rtu = await _connect_one(master, target, settings)
        try:
            res = await rtu.command(args.ca, args.ioa, args.type, value, select=args.select,
                                    qualifier=args.qualifier, time=True if args.time else None,
                                    timeout=args.timeout)
        except CommandNotAllowed as e:
            # the library's hints name API keywords: the command line's own ways instead
            text = str(e).replace("with select=True", "with --select")
            if "allow_unlisted=True" in text:       # (no switch for it: list the point)
                text = re.sub(r"\s*\(allow_unlisted=True[^)]*\)", "", text) + \
                    f": list it as a command point in {target.points} to command it"
            raise type(e)(text) from None
        name = TypeID(args.type).name if isinstance(args.type, int) else args.type
        assert res.rtt is not None              # command() measures it
        console.say(f"{name} CA {res.ca} IOA {res.ioa} value {value}: confirmed (ActCon) "
                    f"in {res.rtt * 1000:.1f} ms")
    return OK


# ---- import / decode -------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> int:
    from iec104.errors import PointListError
    from iec104.metadata import read_point_list
    sheet = int(args.sheet) if args.sheet and args.sheet.isdigit() else args.sheet
    try:
        df = read_point_list(args.file, sheet=sheet)
    except PointListError as e:                 # an input error, as everywhere
        console.error(str(e))
        return FAILED
    console.point_list_summary(df, args.file)
    return OK


def cmd_decode(args: argparse.Namespace) -> int:
    from iec104.capture import read_capture, write_points
    t = time.perf_counter()
    res = read_capture(args.capture, port=args.port)
    path = write_points(res, args.output)
    s = res.stats
    console.say(f"{args.capture}: {s.get('apdus', 0)} APDUs, {s.get('objects', 0)} objects, "
                f"{s.get('connections', 0)} connection(s), {s.get('bad_frames', 0)} bad frame(s), "
                f"{s.get('gaps', 0)} gap(s) in {time.perf_counter() - t:.2f} s -> {path}")
    return OK


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        from iec104.tui import run_watch
    except ModuleNotFoundError as e:            # without the tui extra: one line that names it
        if e.name != "textual":
            raise
        console.error(str(e))
        return FAILED
    target = _one_target(args.target, args.standby)
    _check_settings({**_session_settings(args), **target.settings})
    _read_target_points([target])               # a bad list: exit code 1 before connecting
    _read_points(args.points)
    return run_watch(target, settings=_session_settings(args), points=args.points)


if __name__ == "__main__":
    sys.exit(main())
