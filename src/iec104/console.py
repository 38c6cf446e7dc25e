"""What the CLI prints: rich tables on a terminal, plain lines otherwise."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.console import Console
from rich.live import Live as RichLive
from rich.table import Table
from rich.text import Text

from iec104.display import printable_text

if TYPE_CHECKING:
    from iec104.master import Master

out = Console(highlight=False)
if not out.is_terminal:                 # logs and pipes: wide enough for the tables
    out = Console(highlight=False, width=160)
err = Console(stderr=True, highlight=False)

_COLUMNS = ["station", "ca", "ioa", "name", "type", "value", "eng_value", "unit", "status",
            "iv", "time", "age"]
LIVE_ROWS = 30          # RTUs the poll's live table lists; a fleet's others are summed up


def shown(text: str) -> Text:
    """Text as written, never markup (names, addresses, errors carry brackets: "[[rtu]]",
    "iec104[tui]", or an RTU's "[link=...]"), and never a control character for the terminal."""
    return Text(printable_text(text))


def say(text: str) -> None:
    out.print(shown(text), soft_wrap=True)


def error(text: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", shown(text)), soft_wrap=True)


def fmt(v: object) -> str:
    """A table cell: floats to 6 digits, times to the millisecond."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dt.datetime):
        return v.strftime("%H:%M:%S.%f")[:-3]
    return str(v)


def table_of(df: pl.DataFrame, title: str, *, rows: int = 40,
             columns: Iterable[str] | None = None) -> None:
    cols = [c for c in (columns or _COLUMNS) if c in df.columns]
    t = Table(title=shown(f"{title}: {len(df)} rows" + (f", first {rows}" if len(df) > rows else "")))
    for c in cols:
        t.add_column(c, justify="right" if df.schema[c].is_numeric() else "left")
    for r in df.head(rows).select(cols).iter_rows():
        t.add_row(*(shown(fmt(v)) for v in r))
    out.print(t)


def tls_text(tls: dict[str, Any] | None) -> str:
    """A session's TLS (``status()["tls"]``): off, or on with the peer certificate's subject
    and expiry (flagged once past it)."""
    if not tls:
        return "TLS off"
    expires = tls.get("peer_expires")
    when = ""
    if expires is not None:
        when = f", expires {dt.datetime.fromtimestamp(expires, dt.timezone.utc):%Y-%m-%d}"
        when += " (EXPIRED)" if expires < dt.datetime.now().timestamp() else ""
    return f"TLS {tls.get('version') or 'on'}: {tls.get('peer_subject') or '(no peer yet)'}{when}"


def group_text(status: dict[str, Any]) -> str:
    """A redundancy group's active address, its switches and the last one's reason; "" for
    a single connection."""
    if "active" not in status:
        return ""
    n, last = status["switches"], status["last_switch"] or {}
    text = f"active {status['active'] or 'none (switching)'}, {n} switch{'es' if n != 1 else ''}"
    if n and last:
        text += (f", last {dt.datetime.fromtimestamp(last['time']):%H:%M:%S} from "
                 f"{last['previous']}: {last['reason']}")
    return text


def link_text(status: dict[str, Any]) -> str:
    """TLS and redundancy in one cell."""
    return "; ".join(t for t in (tls_text(status.get("tls")), group_text(status)) if t)


def _status_rows(status: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    for s in status:
        yield (s["name"], s["tcp_state"], s["data_transfer"], s["health"],
               f"{s['rtt'] * 1000:.3f} ms" if s["rtt"] is not None else "-",
               str(s["devices"]), str(s["points"]), str(s["frames_in"]), str(s["bad_frames"]),
               str(s["reconnects"]), link_text(s), s["last_error"] or "")


_STATUS_HEAD = ("session", "TCP", "data transfer", "health", "rtt", "devices", "objects",
                "frames", "bad", "reconnects", "link", "last error")


def _down_rows(down: dict[str, str] | None) -> Iterator[tuple[str, ...]]:
    # an RTU not reached yet (tried again in the background): one row saying so
    for name, why in (down or {}).items():
        yield (name, "down", "-", "-", "-", "0", "0", "0", "0", "-", "-", why)


def status_table(status: list[dict[str, Any]], down: dict[str, str] | None = None) -> Table:
    t = Table(title="sessions")
    for h in _STATUS_HEAD:
        t.add_column(h)
    for row in (*_status_rows(status), *_down_rows(down)):
        t.add_row(*map(shown, row))
    out.print(t)
    return t


class Live:
    """Status per RTU, refreshed twice a second while polling (JSON lines with --json, plain
    lines when stdout is not a terminal). A fleet of more than LIVE_ROWS RTUs is shown by its
    counts and the RTUs that need a look first (down, then not healthy), and a refresh waits
    at least 9 times what the last one took: a status() of 10,000 sessions takes ~0.2 s, and
    the display must not take the loop from the RTUs."""

    def __init__(self, master: Master, *, json_lines: bool = False,
                 down: dict[str, str] | None = None) -> None:
        self.master = master
        self.down = down if down is not None else {}   # name -> why, kept up to date by the caller
        self.json = json_lines
        self.live: RichLive | None = None
        if not json_lines and out.is_terminal:
            self.live = RichLive(self._render(), console=out, refresh_per_second=2)
            self.live.start()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _render(self) -> Table:
        up, down = self._up(), self.down
        total = len(up) + len(down)
        title = f"iec104 poll: {len(self.master)} parameters"
        if total <= LIVE_ROWS:
            rows = [*_status_rows(up), *_down_rows(down)]
        else:
            started = sum(s["data_transfer"] == "started" for s in up)
            healthy = sum(s["health"].startswith("ok") for s in up)
            title += f", {total} RTUs: {started} started, {healthy} healthy, {len(down)} down"
            unwell = sorted(up, key=lambda s: s["health"].startswith("ok"))   # stable
            rows = [*_down_rows(down), *_status_rows(unwell[:LIVE_ROWS])][:LIVE_ROWS]
            rows.append((f"... {total - LIVE_ROWS} more", *("",) * (len(_STATUS_HEAD) - 1)))
        t = Table(title=title)
        for h in _STATUS_HEAD:
            t.add_column(h)
        for row in rows:
            t.add_row(*map(shown, row))
        return t

    def _up(self) -> list[dict[str, Any]]:
        # a session being tried again for a target still down is shown once, as down
        return [s for s in self.master.status() if s["name"] not in self.down]

    def _json(self) -> None:
        for s in self._up():
            sys.stdout.write(json.dumps({k: v for k, v in s.items() if k != "link"}) + "\n")
        for name, why in self.down.items():
            sys.stdout.write(json.dumps({"name": name, "tcp_state": "down", "last_error": why}) + "\n")

    async def _run(self) -> None:
        every = wait = 0.5 if self.live else 1.0
        while True:
            await asyncio.sleep(wait)
            t0 = time.perf_counter()
            if self.live is not None:
                self.live.update(self._render())
            elif self.json:
                self._json()
                sys.stdout.flush()
            wait = max(every, 9 * (time.perf_counter() - t0))

    def stop(self) -> None:
        self.task.cancel()
        if self.live is not None:
            self.live.stop()
        elif not self.json:
            out.print(self._render())           # a fleet summed up, as on screen: every row
                                                # of 10,000 RTUs took Rich 11 s
        else:
            self._json()


def point_list_summary(df: pl.DataFrame, path: object) -> None:
    say(f"{path}: {len(df)} points")
    by = df.group_by(["station", "ca"], maintain_order=True).len().sort(["station", "ca"])
    for r in by.iter_rows(named=True):
        st = "any station" if r["station"] is None else f"station {r['station']}"
        say(f"  {st}, CA {r['ca']}: {r['len']} points")
    types = df.filter(pl.col("type_id").is_not_null()).group_by("type_id").len().sort("type_id")
    from iec104.types import TypeID
    say("  types: " + ", ".join(f"{TypeID(t).name} x{n}" for t, n in types.iter_rows()))
    cmds = df.filter(pl.col("command_type").is_not_null())
    say(f"  command points: {len(cmds)}")
    untyped = df["type_id"].null_count()
    if untyped:
        say(f"  warning: {untyped} point(s) without a type")
