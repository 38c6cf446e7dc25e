"""The ``iec104`` command: the main job on the built-in simulator by default, and poll,
watch, simulate, command, import, export, decode."""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
import time
from importlib import resources
from pathlib import Path

from iec104 import console
from iec104.commands import build_command
from iec104.errors import CommandError, ConfirmationTimeout, IEC104Error
from iec104.master import Master, run
from iec104.session import SessionSettings
from iec104.targets import SETTINGS, Target, parse_targets, tls_settings
from iec104.types import TypeID

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

# exit codes
OK, FAILED, REFUSED, TIMEOUT = 0, 1, 2, 3


def sample_points() -> Path:
    """The point list shipped with the package (the simulator's default image)."""
    return Path(str(resources.files("iec104") / "data" / "points.csv"))


def _parser() -> argparse.ArgumentParser:
    from iec104 import __version__
    p = argparse.ArgumentParser(prog="iec104", description="IEC 60870-5-104 master: poll RTUs, "
                                "send commands, simulate outstations, decode captures.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"iec104 {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log protocol events")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def settings(sp):
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

    def tls_options(sp, server=False):
        g = sp.add_argument_group("TLS (IEC 62351-3; mutual authentication)")
        g.add_argument("--tls-cert", help="our certificate chain (PEM; the key too unless --tls-key)")
        g.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
        g.add_argument("--tls-ca", help="CA certificate(s) that sign the "
                       + ("clients'" if server else "RTUs'") + " certificates (PEM)")

    d = sub.add_parser("demo", help="the main job on the built-in simulator (the default)")
    d.add_argument("--export", default="out/parameters.parquet", help="where to write the table")
    d.add_argument("--rows", type=int, default=40, help="rows of the table to show")

    pp = sub.add_parser("poll", help="poll one or many RTUs", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pp.add_argument("targets", nargs="+", metavar="TARGET", help="HOST[:PORT] or a .toml/.csv file of targets")
    pp.add_argument("--duration", type=float, help="stop after S seconds (default: Ctrl-C)")
    pp.add_argument("--export", help="write the parameter table at the end (.parquet/.csv/.jsonl/.arrow)")
    pp.add_argument("--events", help="directory for rotating Parquet files of every object received")
    pp.add_argument("--points", help="point list (CSV/XLSX) joined with the live values")
    pp.add_argument("--json", action="store_true", help="machine-readable status lines")
    settings(pp)

    w = sub.add_parser("watch", help="terminal UI for one RTU")
    w.add_argument("target", metavar="TARGET")
    w.add_argument("--points", help="point list (CSV/XLSX)")
    settings(w)

    s = sub.add_parser("simulate", help="run the outstation simulator")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2404)
    s.add_argument("--stations", type=int, default=2)
    s.add_argument("--points", type=int, default=100, help="points per station")
    s.add_argument("--point-list", help="CSV/XLSX point list instead of generated points")
    s.add_argument("--rate", type=float, default=0.0, help="spontaneous changes per second")
    s.add_argument("--with-time", action="store_true", help="spontaneous data with CP56Time2a")
    s.add_argument("--duration", type=float, help="stop after S seconds (default: Ctrl-C)")
    s.add_argument("--k", type=int, default=12, help="send window (raise it for load tests)")
    s.add_argument("--w", type=int, default=8, help="acknowledge after w received frames")
    tls_options(s, server=True)

    c = sub.add_parser("command", help="send one command; the exit code tells its result")
    c.add_argument("target", metavar="TARGET")
    c.add_argument("--ca", type=int, required=True)
    c.add_argument("--ioa", type=int, required=True)
    c.add_argument("--type", required=True, help="C_SC_NA_1, C_DC_NA_1, C_SE_NC_1, ... or its number")
    c.add_argument("--value", type=float, required=True)
    c.add_argument("--select", action="store_true", help="select before operate")
    c.add_argument("--time", action="store_true", help="send the CP56Time2a variant")
    c.add_argument("--qualifier", type=int, default=0, help="QU (commands) or QL (setpoints)")
    c.add_argument("--timeout", type=float, default=10.0)
    settings(c)

    i = sub.add_parser("import", help="validate a point list and say what it holds")
    i.add_argument("file")
    i.add_argument("--sheet", help="XLSX sheet name or 0-based index")

    e = sub.add_parser("export", help="connect, interrogate, write a snapshot")
    e.add_argument("target", metavar="TARGET")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--points", help="point list joined with the values")
    settings(e)

    dc = sub.add_parser("decode", help="decode a pcap/pcapng capture or a file of hex APDUs")
    dc.add_argument("capture")
    dc.add_argument("-o", "--output", required=True, help=".parquet, .csv, .jsonl or .arrow")
    dc.add_argument("--port", type=int, help="TCP port of the IEC 104 streams (default: find them)")
    return p


def _session_settings(args) -> dict:
    """The session settings given on the command line (the others keep their defaults)."""
    out = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    tls = [getattr(args, f"tls_{k}", None) for k in ("cert", "key", "ca")]
    if any(v is not None for v in tls):
        out["tls"] = tls_settings(*tls, where="--tls-*")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    else:                                       # the error line and the tables say it once
        logging.getLogger("iec104").addHandler(logging.NullHandler())
    cmd = args.cmd or "demo"
    if cmd == "demo" and not hasattr(args, "export"):
        args.export, args.rows = "out/parameters.parquet", 40
    handler = globals()[f"cmd_{cmd}"]
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
    except (IEC104Error, OSError, ValueError) as e:
        console.error(str(e))
        return FAILED if not isinstance(e, ValueError) or isinstance(e, IEC104Error) else REFUSED


# ---- demo ------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    return run(_demo(args))


async def _demo(args) -> int:
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
            console.table_of(master.parameters(), "parameters (live values joined with the point list)",
                             rows=args.rows)
            cmds = master.command_points()
            first = cmds.sort(["ca", "ioa"]).row(0, named=True)
            value = {45: 1, 46: 2, 47: 2, 48: 0.5, 49: 100, 50: 112.5, 51: 1}.get(int(first["type_id"]), 1)
            res = await rtu.command(first["ca"], first["ioa"], int(first["type_id"]), value,
                                    select=True, wait_term=True)
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


def cmd_poll(args) -> int:
    return run(_poll(args))


async def _connect_all(master: Master, targets: list[Target], settings: dict):
    sessions = []
    for t in targets:
        merged = {**settings, **t.settings}
        sessions.append(await master.connect(t.host, t.port, name=t.name, **merged))
        if t.points:
            master.import_points(t.points, station=sessions[-1].station)
    return sessions


async def _poll(args) -> int:
    from iec104.store import ParquetSink
    targets = parse_targets(args.targets)
    stop = _stop_on_signals()
    async with Master() as master:
        sink = master.store.add_sink(ParquetSink(args.events)) if args.events else None
        await _connect_all(master, targets, _session_settings(args))
        if args.points:
            master.import_points(args.points)
        live = console.Live(master, json_lines=args.json)
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except asyncio.TimeoutError:
            pass
        finally:
            live.stop()
            if args.export:
                console.say(f"wrote {len(master)} parameters to {master.export(args.export)}")
            if sink is not None:
                sink.close()
                console.say(f"wrote {sink.rows_written} events to {len(sink.files)} file(s) in {args.events}")
    return OK


def cmd_export(args) -> int:
    return run(_export(args))


async def _export(args) -> int:
    async with Master(gi_on_start=False) as master:
        sessions = await _connect_all(master, parse_targets([args.target]), _session_settings(args))
        for s in sessions:
            await s.interrogate()
        if args.points:
            master.import_points(args.points)
        console.say(f"wrote {len(master)} parameters to {master.export(args.output)}")
    return OK


# ---- simulate --------------------------------------------------------------------------------

def cmd_simulate(args) -> int:
    return run(_simulate(args))


async def _simulate(args) -> int:
    from iec104.outstation import Outstation
    out = Outstation(stations=args.stations, points=args.points, point_list=args.point_list,
                     host=args.host, port=args.port, rate=args.rate, with_time=args.with_time,
                     k=args.k, w=args.w, tls=_session_settings(args).get("tls"))
    out.on_command.append(lambda r: console.say(
        f"command from {r['connection']}: {r['type']} CA {r['ca']} IOA {r['ioa']} value "
        f"{r['value']:g}{' select' if r['select'] else ''} -> {r['result']}"))
    stop = _stop_on_signals()
    async with out:
        console.say(f"simulator listening on {args.host}:{out.port}: stations {out.stations}, "
                    f"{len(out.image)} points, {args.rate:g} changes/s")
        try:
            await asyncio.wait_for(stop.wait(), args.duration)
        except asyncio.TimeoutError:
            pass
        console.say(f"stopping: {json.dumps(out.stats())}")
    return OK


# ---- command ---------------------------------------------------------------------------------

def _field_sizes(settings: dict) -> dict:
    """The COT, CA and IOA sizes the session will use (settings checked as connect would)."""
    s = SessionSettings.of(**settings)
    return dict(cot_size=s.cot_size, ca_size=s.ca_size, ioa_size=s.ioa_size)


def cmd_command(args) -> int:
    (target,) = parse_targets([args.target])
    settings = {**_session_settings(args), **target.settings}
    value = int(args.value) if math.isfinite(args.value) and args.value.is_integer() else args.value
    # type, address, value and qualifier are checked before connecting: InvalidRequestError
    # (exit 1) in one line, nothing sent
    build_command(args.type, args.ca, args.ioa, value, select=args.select,
                  qualifier=args.qualifier, time=True if args.time else None,
                  sizes=_field_sizes(settings))
    return run(_command(args, target, settings, value))


async def _command(args, target: Target, settings: dict, value) -> int:
    async with Master(gi_on_start=False, reconnect=False) as master:
        rtu = await master.connect(target.host, target.port, name=target.name, **settings)
        res = await rtu.command(args.ca, args.ioa, args.type, value, select=args.select,
                                qualifier=args.qualifier, time=True if args.time else None,
                                timeout=args.timeout)
        console.say(f"{args.type} CA {res.ca} IOA {res.ioa} value {value}: confirmed (ActCon) "
                    f"in {res.rtt * 1000:.1f} ms")
    return OK


# ---- import / decode -------------------------------------------------------------------------

def cmd_import(args) -> int:
    from iec104.errors import PointListError
    from iec104.metadata import read_point_list
    sheet = int(args.sheet) if args.sheet and args.sheet.isdigit() else args.sheet
    try:
        df = read_point_list(args.file, sheet=sheet)
    except PointListError as e:
        console.error(str(e))
        return REFUSED
    console.point_list_summary(df, args.file)
    return OK


def cmd_decode(args) -> int:
    from iec104.capture import read_capture, write_points
    t = time.perf_counter()
    res = read_capture(args.capture, port=args.port)
    path = write_points(res, args.output)
    s = res.stats
    console.say(f"{args.capture}: {s.get('apdus', 0)} APDUs, {s.get('objects', 0)} objects, "
                f"{s.get('connections', 0)} connection(s), {s.get('bad_frames', 0)} bad frame(s), "
                f"{s.get('gaps', 0)} gap(s) in {time.perf_counter() - t:.2f} s -> {path}")
    return OK


def cmd_watch(args) -> int:
    try:
        from iec104.tui import run_watch
    except ModuleNotFoundError as e:            # without the tui extra: one line that names it
        if e.name != "textual":
            raise
        console.error(str(e))
        return FAILED
    (target,) = parse_targets([args.target])
    return run_watch(target, settings=_session_settings(args), points=args.points)


if __name__ == "__main__":
    sys.exit(main())
