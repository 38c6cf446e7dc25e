"""``iec104 watch``: the operators' pages for one RTU link, in the terminal (Textual).

General (TCP and data transfer state, connection health, parameter count and table),
Configuration (timers, schedule, Reconnect, debug switch), Import (a point list from a file
or an import hook, with its status), Commands (the command table, a command with a
confirmation step), Devices (one row per CA, forced interrogation), Debug (the last frames).
"""
from __future__ import annotations

import asyncio
import datetime as dt

try:
    from textual.app import App, ComposeResult
    from textual.containers import Horizontal
    from textual.widgets import (Button, DataTable, Footer, Header, Input, Label, Static,
                                 Switch, TabbedContent, TabPane)
except ModuleNotFoundError as e:                # Textual is the optional extra "tui"
    if (e.name or "").partition(".")[0] != "textual":
        raise
    raise ModuleNotFoundError("iec104 watch needs Textual, in the 'tui' extra: "
                              "pip install 'iec104[tui]'", name="textual") from None

from rich.markup import escape

from iec104.console import fmt as _fmt
from iec104.master import Master
from iec104.settings import SessionSettings
from iec104.targets import Target

__all__ = ["WatchApp", "run_watch"]

PARAM_COLUMNS = ["ca", "ioa", "name", "type", "value", "eng_value", "unit", "status", "iv", "time"]


def _fill(table: DataTable, columns: list[str], rows) -> None:
    if [str(c.label) for c in table.columns.values()] != columns:
        table.clear(columns=True)
        table.add_columns(*columns)
    else:
        table.clear()
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))


class WatchApp(App):
    """One RTU: its master session, refreshed twice a second."""

    TITLE = "iec104 watch"
    BINDINGS = [("q", "quit", "Quit"), ("r", "reconnect", "Reconnect"),
                ("g", "interrogate", "General interrogation")]
    CSS = "DataTable { height: 1fr; } .row { height: auto; } Input { width: 40; }"

    def __init__(self, target: Target, *, settings: dict | None = None, points: str | None = None):
        super().__init__()
        self.target, self.settings, self.points_file = target, settings or {}, points
        self.master: Master | None = None
        self.session = None
        self.pending_command: dict | None = None
        self.down: str | None = None            # why the RTU is not reached yet (launch)
        self._retry_now = asyncio.Event()
        self._failed = False

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("General", id="general"):
                yield Static(id="state")
                yield DataTable(id="parameters")
            with TabPane("Configuration", id="configuration"):
                yield Static(id="config")
                with Horizontal(classes="row"):
                    yield Button("Reconnect", id="reconnect")
                    yield Label(" debug frames ")
                    yield Switch(id="debug")
            with TabPane("Import", id="import"):
                with Horizontal(classes="row"):
                    yield Input(placeholder="point list file (CSV/XLSX)", id="import_path")
                    yield Input(placeholder="or import hook (module:function)", id="import_hook")
                    yield Button("Import", id="import_button")
                    yield Button("Refresh hooks", id="refresh_hooks")
                yield Static(id="import_status")
                yield Static(id="hooks")
            with TabPane("Commands", id="commands"):
                yield DataTable(id="command_table")
                with Horizontal(classes="row"):
                    yield Input(placeholder="CA IOA TYPE VALUE [select]", id="command_input")
                    yield Button("Send", id="send")
                    yield Button("Confirm", id="confirm", disabled=True)
                yield Static(id="command_status")
            with TabPane("Devices", id="devices"):
                yield DataTable(id="device_table")
                with Horizontal(classes="row"):
                    yield Input(placeholder="CA", id="gi_ca")
                    yield Button("Force interrogation", id="force_gi")
                yield Static(id="device_status")
            with TabPane("Debug", id="debug_tab"):
                yield DataTable(id="frames")
        yield Static(id="status")               # what went wrong (never a traceback)
        yield Footer()

    async def on_mount(self) -> None:
        self.master = Master()
        self._list_hooks(refresh=True)
        self.set_interval(0.5, self.refresh_pages)
        self.run_worker(self._connect(), exclusive=True, group="connect")

    async def _connect(self) -> None:
        """Load the point list, then connect; an RTU down at launch is shown as down and tried
        again (the session's back-off; at once on Reconnect)."""
        merged = {**self.settings, **self.target.settings}
        try:
            cfg = SessionSettings.of(**merged)
        except Exception as e:
            self.down = str(e)
            self._say(f"settings: {e}")
            return
        if self.points_file:                    # first: the GI's rows get their names
            try:
                self.master.import_points(self.points_file)
            except Exception as e:
                self._say(f"point list {self.points_file}: {e}")
        delay = cfg.backoff_min
        while self.session is None:
            self._retry_now.clear()
            try:
                self.session = await self.master.connect(self.target.host, self.target.port,
                                                         name=self.target.name, **merged)
            except Exception as e:              # shown on the General page, not a traceback
                self.down = str(e)
                again = f"trying again in {delay:g} s, r: now" if cfg.reconnect else "r: try again"
                self._show("#state", f"[red]{escape(str(e))}[/] ({again})")
                try:
                    await asyncio.wait_for(self._retry_now.wait(),
                                           delay if cfg.reconnect else None)
                except asyncio.TimeoutError:
                    delay = min(cfg.backoff_max, delay * 2)
        self.down = None
        if self.is_running:
            self.refresh_pages()

    def _say(self, text: str) -> None:
        self._show("#status", f"[red]{escape(text)}[/]")

    def _show(self, selector: str, markup: str) -> None:
        from textual.css.query import NoMatches
        try:                                    # a worker may end while the app closes
            self.query_one(selector, Static).update(markup)
        except NoMatches:
            pass

    @property
    def return_code(self) -> int | None:
        """1 when the app ended on an error (the RTU not reached or its link down), else 0."""
        code = super().return_code
        return code if code else (1 if self._failed else 0)

    async def on_unmount(self) -> None:
        s = self.session
        self._failed = s is None or s.data_transfer != "started"
        if self.master is not None:
            await self.master.close()

    # ---- pages -------------------------------------------------------------------------------

    def refresh_pages(self) -> None:
        from textual.css.query import NoMatches
        try:
            self._refresh_pages()
        except NoMatches:                       # the timer ticked while the app closes
            pass

    def _refresh_pages(self) -> None:
        s, m = self.session, self.master
        if s is None:
            return
        st = s.status()
        health = (f"last TESTFR con {dt.datetime.fromtimestamp(st['last_testfr_con']):%H:%M:%S}, "
                  f"rtt {st['rtt'] * 1000:.2f} ms") if st["last_testfr_con"] else "no TESTFR con yet"
        self.query_one("#state", Static).update(
            f"{s.name} {s.host}:{s.port}   TCP: [b]{st['tcp_state']}[/]   data transfer: "
            f"[b]{st['data_transfer']}[/]   health: {health}   parameters: [b]{len(m)}[/]   "
            f"frames {st['frames_in']}, bad {st['bad_frames']}, reconnects {st['reconnects']}")
        params = m.parameters()
        cols = [c for c in PARAM_COLUMNS if c in params.columns]
        _fill(self.query_one("#parameters", DataTable), cols, params.select(cols).head(500).iter_rows())
        cfg = s.settings
        self.query_one("#config", Static).update(
            f"t0 {cfg.t0:g} s  t1 {cfg.t1:g} s  t2 {cfg.t2:g} s  t3 {cfg.t3:g} s  k {cfg.k}  w {cfg.w}\n"
            f"field sizes: COT {cfg.cot_size}, CA {cfg.ca_size}, IOA {cfg.ioa_size}   time zone "
            f"{cfg.tz or 'UTC'}\ninterrogation: at start {cfg.gi_on_start}, every "
            f"{cfg.gi_interval or '-'} s (group {cfg.gi_group or 'station'}); counters every "
            f"{cfg.ci_interval or '-'} s; clock sync every {cfg.clock_sync_interval or '-'} s")
        imp = m.catalog.status
        self.query_one("#import_status", Static).update(
            f"import: {imp.state}{' (' + imp.step + ')' if imp.step else ''}"
            f"{', ' + str(imp.rows) + ' rows' if imp.state == 'completed' else ''}"
            f"{': ' + imp.error if imp.error else ''}" + "".join(f"\nwarning: {w}" for w in imp.warnings))
        cmds = m.command_points()
        ccols = [c for c in ("ca", "ioa", "type", "name", "min", "max", "last_result", "source")
                 if c in cmds.columns]
        _fill(self.query_one("#command_table", DataTable), ccols, cmds.select(ccols).iter_rows())
        dev = m.devices()
        _fill(self.query_one("#device_table", DataTable), ["ca", "objects", "last_gi", "gi_state"],
              dev.select("ca", "objects", "last_gi", "gi_state").iter_rows())
        if s.debug:
            rows = [(dt.datetime.fromtimestamp(f["time"]).strftime("%H:%M:%S.%f")[:-3], f["dir"],
                     f["format"], f["ns"], f["nr"], f["type_id"] or "", f["cot"] or "",
                     f["ca"] or "", f["raw"].hex(" ")[:60]) for f in list(s.frame_log)[-200:]]
            _fill(self.query_one("#frames", DataTable),
                  ["time", "dir", "fmt", "N(S)", "N(R)", "type", "COT", "CA", "octets"], rows)

    # ---- actions -----------------------------------------------------------------------------

    async def action_reconnect(self) -> None:
        if self.session is None:
            self._retry_now.set()               # the launch's connect loop: try now
        else:
            self.run_worker(self._reconnect(), exclusive=True, group="reconnect")

    async def _reconnect(self) -> None:
        try:
            await self.session.reconnect()
            self.query_one("#status", Static).update("reconnected")
        except Exception as e:
            self._say(f"reconnect: {e}")

    async def action_interrogate(self) -> None:
        if self.session is None:
            self._say("general interrogation: not connected")
        else:
            self.run_worker(self._interrogate(), exclusive=False)

    async def _interrogate(self) -> None:
        try:
            n = await self.session.interrogate()
            self.query_one("#status", Static).update(f"general interrogation: {n} objects")
        except Exception as e:
            self._say(f"general interrogation: {e}")

    async def on_switch_changed(self, event: Switch.Changed) -> None:
        if event.switch.id == "debug" and self.session is not None:
            self.session.enable_debug(event.value)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id
        if bid == "reconnect":
            await self.action_reconnect()
        elif bid == "import_button":
            await self._import()
        elif bid == "send":
            self._prepare_command()
        elif bid == "confirm":
            await self._send_command()
        elif bid == "force_gi":
            await self._force_gi()
        elif bid == "refresh_hooks":
            self._list_hooks(refresh=True)

    def _list_hooks(self, *, refresh: bool = False) -> None:
        from iec104.importhooks import available_hooks
        hooks = available_hooks(refresh=refresh)
        self.query_one("#hooks", Static).update(
            "import hooks installed (entry point group iec104.importers): " +
            (", ".join(f"{k} = {v}" for k, v in sorted(hooks.items())) or "none"))

    async def _import(self) -> None:
        path = self.query_one("#import_path", Input).value.strip()
        hook = self.query_one("#import_hook", Input).value.strip()
        try:
            if hook:
                await self.master.import_points_async(hook=hook)
            else:
                await self.master.import_points_async(path)
        except Exception:
            pass                                # the status line says why
        self.refresh_pages()

    def _prepare_command(self) -> None:
        status = self.query_one("#command_status", Static)
        parts = self.query_one("#command_input", Input).value.split()
        try:
            ca, ioa, typ, value = int(parts[0]), int(parts[1]), parts[2], float(parts[3])
            if typ.isdigit():                   # a type by its number (45)
                from iec104.types import TypeID
                typ = TypeID(int(typ)).name
        except (IndexError, ValueError):
            status.update(f"[red]{escape('enter: CA IOA TYPE VALUE [select]')}[/]")
            return
        self.pending_command = dict(ca=ca, ioa=ioa, type=typ, value=value,
                                    select=len(parts) > 4 and parts[4].lower().startswith("s"))
        self.query_one("#confirm", Button).disabled = False
        status.update(f"send {typ} CA {ca} IOA {ioa} value {value:g}"
                      f"{' with select' if self.pending_command['select'] else ''}? Press Confirm.")

    async def _send_command(self) -> None:
        cmd, self.pending_command = self.pending_command, None
        self.query_one("#confirm", Button).disabled = True
        status = self.query_one("#command_status", Static)
        if cmd is None:
            return
        try:
            value = int(cmd["value"]) if cmd["value"] == int(cmd["value"]) else cmd["value"]
            res = await self.session.command(cmd["ca"], cmd["ioa"], cmd["type"], value,
                                             select=cmd["select"])
            status.update(f"[green]confirmed[/] {cmd['type']} CA {res.ca} IOA {res.ioa} in "
                          f"{res.rtt * 1000:.1f} ms")
        except Exception as e:
            status.update(f"[red]{escape(str(e))}[/]")
        self.refresh_pages()

    async def _force_gi(self) -> None:
        status = self.query_one("#device_status", Static)
        text = self.query_one("#gi_ca", Input).value.strip()
        try:
            n = await self.session.interrogate(ca=int(text) if text else None)
            status.update(f"interrogation of CA {text or 'all'}: {n} objects")
        except Exception as e:
            status.update(f"[red]{escape(str(e))}[/]")
        self.refresh_pages()


def run_watch(target: Target, *, settings: dict | None = None, points: str | None = None) -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    app = WatchApp(target, settings=settings, points=points)
    app.run()
    return app.return_code or 0
