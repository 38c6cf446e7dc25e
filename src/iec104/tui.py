"""``iec104 watch``: the operators' pages for one RTU link, in the terminal (Textual).

General (TCP and data transfer state, connection health, the parameter table), Configuration
(timers, the interrogation and clock sync schedules, Reconnect, debug switch), Import (a point
list from a file or an import script, with its status), Metadata (the point lists in force),
Commands (one row per command point, a command with a confirmation step), Devices (one row
per CA, forced interrogation), Debug (the newest frames; p pauses). Every table renders only
its rows on screen (tui_table.FrameTable), so any number of rows pages through; only the page
on screen is refreshed. Whatever goes wrong is said in a status line, never a traceback.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

try:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.containers import Horizontal, Vertical
    from textual.content import Content
    from textual.screen import ModalScreen, Screen
    from textual.widgets import (Button, Footer, Header, Input, Label, Select, Static, Switch,
                                 TabbedContent, TabPane)
    from textual.worker import Worker
except ModuleNotFoundError as e:                # Textual is the optional extra "tui"
    if (e.name or "").partition(".")[0] != "textual":
        raise
    raise ModuleNotFoundError("iec104 watch needs Textual, in the 'tui' extra: "
                              "pip install 'iec104[tui]'", name="textual") from None

import polars as pl

from iec104 import console, display
from iec104.errors import CommandInDoubt, CommandNotAllowed
from iec104.importhooks import Secret
from iec104.master import Master
from iec104.settings import SessionSettings
from iec104.targets import Target
from iec104.tui_table import FrameTable, as_text
from iec104.types import TypeID, family_of

if TYPE_CHECKING:
    from iec104.redundancy import RedundancyGroup
    from iec104.session import Session

__all__ = ["WatchApp", "run_watch", "command_rows"]

SCHEDULES = [("gi_interval", "general interrogation every (s)"),
             ("gi_group", "of group (1..16; empty: station)"),
             ("ci_interval", "counter interrogation every (s)"),
             ("clock_sync_interval", "clock sync every (s)")]


def command_rows(commands: pl.DataFrame, points: pl.DataFrame, station: int) -> pl.DataFrame:
    """One row per command point (CA, IOA) of a station, in address order: the point list's
    row (its rows for any station included) and what confirmations taught merged, with the
    current value at that address (``points``: the latest values, as ``Master.points()``)."""
    key = ["ca", "ioa"]
    for c, t in (("name", pl.String), ("min", pl.Float64), ("max", pl.Float64),
                 ("last_result", pl.String), ("type", pl.String)):
        if c not in commands.columns:
            commands = commands.with_columns(pl.lit(None, t).alias(c))
    rows = (commands.filter(pl.col("station").is_null() | (pl.col("station") == station))
            .sort([*key, pl.col("source") != "point list"])
            .group_by(key, maintain_order=True)
            .agg(pl.col("type").first(), pl.col("name").first(), pl.col("min").first(),
                 pl.col("max").first(), pl.col("last_result").drop_nulls().last(),
                 pl.col("source").unique(maintain_order=True).str.join(" + ")))
    now = (points.filter(pl.col("station") == station).group_by(key)
           .agg(pl.col("value").first(), pl.col("family").first())
           .select(*key, display.value_text(pl.col("value"), pl.col("family")).alias("value")))
    return (rows.join(now.cast({"ca": pl.UInt16, "ioa": pl.UInt32}), on=key, how="left")
            .select(*key, "type", "name", "value", "min", "max", "last_result", "source")
            .sort(key))


_FRAME_FIELDS = {"time": ("time", pl.Float64), "dir": ("dir", pl.String),
                 "fmt": ("format", pl.String), "N(S)": ("ns", pl.Int64), "N(R)": ("nr", pl.Int64),
                 "type": ("type_id", pl.Int64), "COT": ("cot", pl.Int64), "CA": ("ca", pl.Int64),
                 "octets": ("raw", pl.Binary)}


def _frames(log: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """The session's frame log (a bounded deque of dicts) as a table, oldest first."""
    rows = list(log)
    return pl.DataFrame({c: [f[k] for f in rows] for c, (k, _) in _FRAME_FIELDS.items()},
                        schema={c: t for c, (_, t) in _FRAME_FIELDS.items()})


def _frame_text(df: pl.DataFrame) -> pl.DataFrame:
    i_frame = pl.col("fmt") == "I"
    return as_text(df.with_columns(
        pl.from_epoch(pl.col("time") * 1e6, time_unit="us").dt.strftime("%H:%M:%S%.3f"),
        *[pl.when(i_frame).then(pl.col(c)) for c in ("type", "COT", "CA")],
        pl.col("octets").bin.encode("hex").str.replace_all(r"(..)", "$1 ").str.slice(0, 60)))


def _command_text(df: pl.DataFrame) -> pl.DataFrame:
    return as_text(df.with_columns(display.number(pl.col("min")), display.number(pl.col("max"))))


def _readable(listed: bool) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda df: display.readable(df, listed=listed)


class Confirm(ModalScreen[bool]):
    """A question with Yes / No (y / n, Escape: no)."""

    DEFAULT_CSS = """
    Confirm { align: center middle; }
    Confirm > Vertical { width: 80; height: auto; border: thick $warning; padding: 1 2;
                         background: $surface; }
    Confirm Horizontal { height: auto; margin-top: 1; }
    """
    BINDINGS = [("y", "dismiss(True)", "Yes"), ("n,escape", "dismiss(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content(self.question), id="question")
            with Horizontal():
                yield Button("Yes", id="yes", variant="warning")
                yield Button("No", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class _Footer(Footer):
    """Textual's Footer, recomposed only when the keys it shows change: Textual's remounts its
    keys on every focus change (each field clicked, each page, each dialog), a layout pass of
    the whole screen for the same keys."""

    _composed: tuple[Any, ...] | None = None    # what the footer shows, as last composed

    def _keys(self) -> tuple[Any, ...]:
        palette = self.app.COMMAND_PALETTE_BINDING
        return (self.compact, self.show_command_palette, self.app.ENABLE_COMMAND_PALETTE,
                *((key, binding, enabled, tooltip) for key, (_, binding, enabled, tooltip)
                  in self.screen.active_bindings.items() if binding.show or key == palette))

    def compose(self) -> ComposeResult:
        self._composed = self._keys() if self._bindings_ready else None
        yield from super().compose()

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if (self._composed is not None and self.is_attached and screen is self.screen
                and self._keys() == self._composed):
            return
        super().bindings_changed(screen)


_NAMED_VALUES = (45, 46, 47, 51)                # commands whose value is a state (ON, LOWER, hex)


class _Command(TypedDict):
    """A command the Commands page asks to confirm."""

    ca: int
    ioa: int
    type: str
    value: float
    select: bool
    line: str                                   # the command line it was read from


class WatchApp(App[None]):
    """One RTU: its master session; the page on screen refreshed twice a second."""

    TITLE = "iec104 watch"
    SUB_TITLE = "keys 1-7: the pages (Esc leaves a field first)"
    PAGES = ["general", "configuration", "import", "metadata_tab", "commands", "devices",
             "debug_tab"]
    BINDINGS = [("q", "quit", "Quit"), ("r", "reconnect", "Reconnect"),
                ("g", "interrogate", "General interrogation"),
                ("p", "pause", "Pause/follow frames"),
                Binding("escape", "leave_field", "leave the field", show=False),
                *(Binding(str(i), f"page('{p}')", p, show=False) for i, p in enumerate(PAGES, 1))]
    CSS = """
    .row { height: auto; }
    Input { width: 1fr; }
    Select { width: 24; }
    .form Label { width: 36; padding: 1 1 0 0; }
    .form Input { width: 30; }
    #state, #status, #config, #import_status, #metadata_status, #frames_state { height: auto; }
    #tabs { height: 1fr; }
    """
    # #tabs: the pages take the screen between the header and the status line. Textual's
    # (height: auto) made a table page one line taller than the screen: the status line under
    # the footer, out of sight, and a scrollbar on the screen; and each change of a page's
    # height (a form's messages) moved the status line, a redraw of the whole screen.

    def __init__(self, target: Target, *, settings: dict[str, Any] | None = None,
                 points: str | None = None, refresh_every: float | None = 0.5) -> None:
        """``refresh_every``: seconds between refreshes of the page on screen; None: on events
        only (what the app does: a connect, a command, a page change...; a test that calls
        ``refresh_pages`` itself needs no timer redrawing the screen beside it)."""
        super().__init__()
        self.target, self.settings, self.points_file = target, settings or {}, points
        self.refresh_every = refresh_every
        self.master: Master | None = None       # made on mount
        self.session: Session | RedundancyGroup | None = None   # once connected
        self.pending_command: _Command | None = None
        self._in_flight: Worker[None] | None = None     # the command sent, until its answer
        self.down: str | None = None            # why the RTU is not reached yet (launch)
        self.paused = False                     # the Debug page's frames held for reading
        self._retry_now = asyncio.Event()
        self._failed = False
        self._frames_seen: tuple[int, int | None] | None = None
        self._schedules_shown = False
        self._listed: bool | None = None        # the parameter table's formatter: with status?
        self._shown: dict[str, Content] = {}    # the status lines as last shown
        self._devices: list[int] = []           # the CAs the Import page's Device offers
        self.import_source = points             # what the point list in force came from

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("General", id="general"):
                yield Static(id="state")
                yield FrameTable(_readable(False), id="parameters")
            with TabPane("Configuration", id="configuration"):
                yield Static(id="config")
                for name, label in SCHEDULES:
                    with Horizontal(classes="row form"):
                        yield Label(label)
                        yield Input(placeholder="empty: off" if name != "gi_group" else
                                    "empty: the station", id=name)
                with Horizontal(classes="row"):
                    yield Button("Set schedules", id="set_schedules")
                    yield Button("Reconnect", id="reconnect")
                    yield Label(" debug frames ")
                    yield Switch(id="debug")
            with TabPane("Import", id="import"):
                with Horizontal(classes="row"):
                    yield Input(placeholder="point list file (CSV/XLSX)", id="import_path")
                    yield Input(placeholder="XLSX sheet: name or number (empty: the first)",
                                id="import_sheet")
                with Horizontal(classes="row"):
                    yield Input(placeholder="or import script (module:function, name, or path)",
                                id="import_hook")
                    yield Input(placeholder="element name (the script's)", id="import_element")
                    yield Select([("ALL", "ALL")], value="ALL", allow_blank=False,
                                 id="import_device")
                with Horizontal(classes="row"):
                    yield Input(placeholder="user", id="import_user")
                    yield Input(placeholder="password", password=True, id="import_password")
                    yield Button("Import", id="import_button", variant="primary")
                    yield Button("Refresh scripts", id="refresh_hooks")
                yield Static(id="import_message")       # what the form is missing
                yield Static(id="import_status")
                yield Static(id="hooks")
            with TabPane("Metadata", id="metadata_tab"):
                yield Static(id="metadata_status")
                yield FrameTable(id="metadata")
            with TabPane("Commands", id="commands"):
                yield FrameTable(_command_text, id="command_table")
                with Horizontal(classes="row"):
                    yield Input(placeholder="CA IOA TYPE VALUE [select]   (Enter on a row fills "
                                            "CA IOA TYPE; clear CA IOA: a doubt)", id="command_input")
                    yield Button("Send", id="send")
                    yield Button("Confirm", id="confirm", disabled=True)
                    yield Button("Cancel", id="cancel", disabled=True)
                yield Static(id="command_status")
            with TabPane("Devices", id="devices"):
                yield FrameTable(id="device_table")
                with Horizontal(classes="row"):
                    yield Input(placeholder="CA", id="gi_ca")
                    yield Button("Force interrogation", id="force_gi")
                yield Static(id="device_status")
            with TabPane("Debug", id="debug_tab"):
                yield Static(id="frames_state")
                yield FrameTable(_frame_text, follow=True, id="frames")
        yield Static(id="status")               # what went wrong (never a traceback)
        yield _Footer()

    async def on_mount(self) -> None:
        self.master = Master()
        self._list_hooks(refresh=True)
        if self.refresh_every:
            self.set_interval(self.refresh_every, self.refresh_pages)
        self.run_worker(self._connect(), exclusive=True, group="connect")

    async def _connect(self) -> None:
        """Load the point list, then connect; an RTU down at launch is shown as down and tried
        again (the session's back-off; at once on Reconnect)."""
        merged = {**self.settings, **self.target.settings}
        m = self.master
        assert m is not None                    # made on mount, before this worker
        try:
            cfg = SessionSettings.of(**merged)
        except Exception as e:
            self.down = str(e)
            self._say(f"settings: {e}")
            return
        if self.points_file:                    # first: the GI's rows get their names
            try:
                m.import_points(self.points_file)
            except Exception as e:
                self._say(f"point list {self.points_file}: {e}")
        delay = cfg.backoff_min
        while self.session is None:
            self._retry_now.clear()
            try:
                self.session = await m.connect(self.target.host, self.target.port,
                                               self.target.standby, name=self.target.name,
                                               **merged)
            except Exception as e:              # shown on the General page, not a traceback
                self.down = str(e)
                again = f"trying again in {delay:g} s, r: now" if cfg.reconnect else "r: try again"
                self._show("#state", (str(e), "red"), f" ({again})")
                try:
                    async with asyncio.timeout(delay if cfg.reconnect else None):
                        await self._retry_now.wait()    # (wait_for: see EventLog.wait)
                except TimeoutError:
                    delay = min(cfg.backoff_max, delay * 2)
        self.down = None
        if self.is_running:
            self.refresh_pages()

    def _say(self, text: str, *, where: str = "#status", ok: bool = False) -> None:
        self._show(where, (text, "green" if ok else "red"))

    def _show(self, selector: str, *parts: str | tuple[str, str]) -> None:
        """Text, or (text, style), never markup: names and messages carry brackets
        ("[[rtu]]", "[select]") that markup would take for tags; and no control character
        (an RTU's or a point list's ESC sequence) reaches the terminal."""
        from textual.css.query import NoMatches
        content = Content.assemble(*(display.printable_text(p) if isinstance(p, str) else
                                     (display.printable_text(p[0]), p[1]) for p in parts))
        if self._shown.get(selector) == content:
            return                              # unchanged: no layout pass twice a second
        self._shown[selector] = content
        try:                                    # a worker may end while the app closes
            static = self.query_one(selector, Static)
        except NoMatches:
            return
        # a layout pass of the whole screen only if the height changes (the width is the
        # page's): the state line's counters change with each frame, its height seldom
        static.update(content, layout=False)
        width, height = static.content_size
        # (Textual's Widget measures with its styles the same way; its annotation says RulesMap)
        if not width or static.visual.get_height(static.styles, width) != height:  # type: ignore[arg-type]
            static.refresh(layout=True)

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

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
        """The state line and the page on screen (the others when they come on screen)."""
        from textual.css.query import NoMatches
        try:
            self._refresh_pages()
        except NoMatches:                       # the timer ticked while the app closes
            pass

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_pages()

    def _refresh_pages(self) -> None:
        s, m = self.session, self.master
        page = self.query_one("#tabs", TabbedContent).active
        if page == "import":
            self._refresh_import()
        elif page == "metadata_tab":
            self._refresh_metadata()
        if s is None:
            return
        assert m is not None                    # connected: made on mount
        st = s.status()
        where = f"{s.host}:{s.port}"
        down = (("LINK DOWN (values stale) ", "bold red"),) if st["data_transfer"] != "started" else ()
        self._show("#state", *down, f"{s.name if s.name == where else s.name + ' ' + where}   TCP: ", (st["tcp_state"], "bold"),
                   "   data transfer: ", (st["data_transfer"], "bold"), f"   health: {st['health']}   "
                   "parameters: ", (str(len(m)), "bold"), f"   frames {st['frames_in']}, bad "
                   f"{st['bad_frames']}, reconnects {st['reconnects']}\n{console.link_text(st)}")
        if page == "general":
            table = self.query_one("#parameters", FrameTable)
            listed = bool(m.catalog.lists)
            params = _with_stale(m.parameters(), st, s.settings.gi_interval)
            if listed != self._listed:          # the status column comes and goes with a list
                self._listed, table.formatter = listed, _readable(listed)
                table.update(params)
            else:
                _update(table, params)
        elif page == "configuration":
            self._refresh_configuration()
        elif page == "commands":
            _update(self.query_one("#command_table", FrameTable),
                    command_rows(m.command_points(), m.points(), s.station))
        elif page == "devices":
            dev = m.devices().select("ca", "objects", "last_gi", "gi_state")
            _update(self.query_one("#device_table", FrameTable),        # the link's, per device
                    dev.with_columns(display.time_text(pl.col("last_gi")), health=pl.lit(st["health"])))
        elif page == "debug_tab":
            self._refresh_frames()

    def _refresh_configuration(self) -> None:
        assert self.session is not None         # _refresh_pages: connected
        cfg = self.session.settings
        self._show("#config",
            f"t0 {cfg.t0:g} s  t1 {cfg.t1:g} s  t2 {cfg.t2:g} s  t3 {cfg.t3:g} s  k {cfg.k}  w {cfg.w}\n"
            f"field sizes: COT {cfg.cot_size}, CA {cfg.ca_size}, IOA {cfg.ioa_size}   time zone "
            f"{cfg.tz or 'UTC'}\ninterrogation: at start {cfg.gi_on_start}, every "
            f"{cfg.gi_interval or '-'} s (group {cfg.gi_group or 'station'}); counters every "
            f"{cfg.ci_interval or '-'} s; clock sync every {cfg.clock_sync_interval or '-'} s")
        if not self._schedules_shown:           # once: then the fields are the operator's
            self._schedules_shown = True
            for name, _ in SCHEDULES:
                value = getattr(cfg, name)
                self.query_one(f"#{name}", Input).value = "" if value is None else f"{value:g}"

    def _refresh_import(self) -> None:
        m = self.master
        assert m is not None                    # made on mount
        imp = m.catalog.status
        self._show("#import_status", (
            f"import: {imp.state}{' (' + imp.step + ')' if imp.step else ''}"
            f"{', ' + str(imp.rows) + ' rows' if imp.state == 'completed' else ''}"
            f"{': ' + imp.error if imp.error else ''}" + "".join(f"\nwarning: {w}" for w in imp.warnings)))
        cas = sorted({ca for s in m.sessions if s is not None for ca in s.devices})
        if cas != self._devices:                # a device came: offer it, keep the choice
            self._devices = cas
            select = self.query_one("#import_device", Select)
            value = select.value
            select.set_options([("ALL", "ALL"), *((f"CA {ca}", str(ca)) for ca in cas)])
            select.value = value if value in [str(ca) for ca in cas] else "ALL"

    def _refresh_metadata(self) -> None:
        m = self.master
        assert m is not None                    # made on mount
        meta = m.metadata()
        imp = m.catalog.status
        self._show("#metadata_status", (
            f"{len(meta)} points from {self.import_source}" if len(meta) else
            "no point list in force: import one on the Import page (or watch --points FILE)"))
        _update(self.query_one("#metadata", FrameTable), meta)

    def _refresh_frames(self) -> None:
        s = self.session
        assert s is not None                    # _refresh_pages: connected
        table = self.query_one("#frames", FrameTable)
        log = s.frame_log
        seen = (len(log), id(log[-1]) if log else None)
        if not self.paused and seen != self._frames_seen:
            self._frames_seen = seen
            table.update(_frames(log))
        state = (("paused", "bold"), " (p: follow the newest)") if self.paused else \
            ("following the newest frames (p: pause)",)
        off = () if s.debug else (("   debug frames are off: the switch on the Configuration "
                                   "page", "yellow"),)
        self._show("#frames_state", f"{table.row_count} frames, ", *state, *off)

    # ---- actions -----------------------------------------------------------------------------

    async def action_reconnect(self) -> None:
        if self.session is None:
            self._retry_now.set()               # the launch's connect loop: try now
        else:
            self.run_worker(self._reconnect(), exclusive=True, group="reconnect")

    async def _reconnect(self) -> None:
        assert self.session is not None         # action_reconnect: connected
        try:
            await self.session.reconnect()
            self._say("reconnected", ok=True)
        except Exception as e:
            self._say(f"reconnect: {e}")

    async def action_interrogate(self) -> None:
        if self.session is None:
            self._say("general interrogation: not connected")
        else:
            self.run_worker(self._interrogate(), exclusive=False)

    async def _interrogate(self) -> None:
        assert self.session is not None         # action_interrogate: connected
        try:
            n = await self.session.interrogate()
            self._say(f"general interrogation: {n} objects", ok=True)
        except Exception as e:
            self._say(f"general interrogation: {e}")

    def action_leave_field(self) -> None:
        self.screen.set_focus(None)             # so that 1-7, g, r, p are keys again

    def action_page(self, page: str) -> None:
        self.query_one("#tabs", TabbedContent).active = page

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.refresh_pages()

    async def on_switch_changed(self, event: Switch.Changed) -> None:
        if event.switch.id == "debug" and self.session is not None:
            self.session.enable_debug(event.value)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id
        if bid == "reconnect":
            await self.action_reconnect()
        elif bid == "set_schedules":
            self._prepare_schedules()
        elif bid == "import_button":
            self._prepare_import()
        elif bid == "send":
            self._prepare_command()
        elif bid == "confirm":
            self._send_command()
        elif bid == "cancel" and self._in_flight is not None:
            self._in_flight.cancel()
        elif bid == "force_gi":
            await self._force_gi()
        elif bid == "refresh_hooks":
            self._list_hooks(refresh=True)

    def on_input_changed(self, event: Input.Changed) -> None:
        cmd = self.pending_command
        if event.input.id == "command_input" and cmd and event.value.strip() != cmd["line"]:
            self._withdraw_command()            # Confirm sends only what the page showed
            self._show("#command_status", ("withdrawn", "yellow"), ": the command line "
                       "changed; Send shows the new one to confirm")

    def on_frame_table_selected(self, event: FrameTable.Selected) -> None:
        if event.table.id == "command_table":   # the command line, but for the value
            r = event.row
            box = self.query_one("#command_input", Input)
            box.value = f"{r['ca']} {r['ioa']} {r['type'] or ''} "
            box.focus()

    def _confirm(self, question: str, then: Callable[[], Awaitable[None]]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(then())
        self.push_screen(Confirm(question), answered)

    # ---- Configuration: schedules ------------------------------------------------------------

    def _prepare_schedules(self) -> None:
        if self.session is None:
            return self._say("schedules: not connected")
        values: dict[str, float | None] = {}
        for name, label in SCHEDULES:
            text = self._value(f"#{name}")
            try:
                values[name] = None if text in ("", "-", "off") else (
                    int(text) if name == "gi_group" else float(text))
            except ValueError:
                return self._say(f"{label.split(' (')[0]}: {text!r} is not a number")
        try:                                    # the same checks as the setter, before asking
            SessionSettings.of(**values)
        except Exception as e:
            return self._say(f"schedules: {e}")

        def every(v: float | None, what: str) -> str:
            return f"{what} every {v:g} s" if v else f"{what} off"
        group = f"group {values['gi_group']}" if values["gi_group"] else "the station"
        self._confirm(f"Set the schedules of {self.session.name}: "
                      f"{every(values['gi_interval'], 'general interrogation')} ({group}), "
                      f"{every(values['ci_interval'], 'counter interrogation')}, "
                      f"{every(values['clock_sync_interval'], 'clock sync')}?",
                      lambda: self._set_schedules(values))

    async def _set_schedules(self, values: dict[str, float | None]) -> None:
        assert self.session is not None         # _prepare_schedules: connected
        try:
            self.session.set_schedules(**values)
            self._say("schedules set", ok=True)
        except Exception as e:
            self._say(f"schedules: {e}")
        self.refresh_pages()

    # ---- Import ------------------------------------------------------------------------------

    def _list_hooks(self, *, refresh: bool = False) -> None:
        from iec104.importhooks import available_hooks
        hooks = available_hooks(refresh=refresh)
        self._show("#hooks", (
            "import scripts installed (entry point group iec104.importers): " +
            (", ".join(f"{k} = {v}" for k, v in sorted(hooks.items())) or "none")))

    def _prepare_import(self) -> None:
        path, hook = self._value("#import_path"), self._value("#import_hook")
        where = "#import_message"
        if not path and not hook:
            return self._say("choose a point list file or an import script first", where=where)
        if path and hook:
            return self._say("choose a point list file or an import script, not both", where=where)
        if hook:
            element = self._value("#import_element")
            if not element:
                return self._say("the import script needs an element name", where=where)
            device = str(self.query_one("#import_device", Select).value)
            user = self._value("#import_user") or None
            password = Secret(self.query_one("#import_password", Input).value or None)
            options: dict[str, Any] = dict(hook=hook, element=element, device=device, user=user,
                           password=password)
            source = f"import script {hook} (element {element}, device {device})"
            question = (f"Run the import script {hook} for element {element}, device {device}"
                        f"{', as user ' + user if user else ''}"
                        f"{' with the password given' if password.reveal() else ''}? "
                        "Its point list replaces the one in force if it reads without error.")
        else:
            file = Path(path).expanduser()
            if file.is_dir():
                return self._say(f"{path} is a folder: choose a point list file (CSV or XLSX)",
                                 where=where)
            if not file.exists():
                return self._say(f"{path}: no such file", where=where)
            sheet = self._value("#import_sheet")
            xlsx = file.suffix.lower() in (".xlsx", ".xlsm", ".xls", ".ods")
            if sheet and not xlsx:
                return self._say("a sheet is chosen for workbooks (XLSX) only", where=where)
            options = dict(source=str(file))
            source = str(file)
            if sheet:                           # a number counts from 1, as the workbook shows
                options["sheet"] = int(sheet) - 1 if sheet.isdigit() else sheet
            question = (f"Import {file}{', sheet ' + sheet if sheet else ''}? It replaces the "
                        "point list in force if it reads without error.")
        self._confirm(question, lambda: self._import(options, source))

    async def _import(self, options: dict[str, Any], source: str) -> None:
        m = self.master
        assert m is not None                    # made on mount
        self._show("#import_message", "")
        try:
            await m.import_points_async(**options)
            self.import_source = source + (f", sheet {options['sheet']}" if "sheet" in options else "")
        except Exception:
            pass                                # the import status says why (without secrets)
        self.refresh_pages()

    # ---- Commands ----------------------------------------------------------------------------

    _COMMAND_HINT = "enter: CA IOA TYPE VALUE [select], or clear CA IOA"

    def _withdraw_command(self) -> None:
        self.pending_command = None
        self.query_one("#confirm", Button).disabled = True

    def _prepare_command(self) -> None:
        """The command line read, checked and shown as what will operate; Confirm sends it."""
        self._withdraw_command()
        line = self._value("#command_input")
        parts = line.split()
        where = "#command_status"
        if self._in_flight is not None:         # one at a time: each answer read before the next
            return self._say("a command is in flight: wait for its answer, or Cancel it", where=where)
        if self.session is None:
            return self._say("not connected: nothing can be sent yet", where=where)
        if parts[:1] == ["clear"]:
            return self._prepare_clear(parts[1:])
        try:
            if len(parts) not in (4, 5) or parts[4:] not in ([], ["select"]):
                raise ValueError(self._COMMAND_HINT)
            ca, ioa, typ, value = int(parts[0]), int(parts[1]), parts[2], float(parts[3])
            typ = TypeID.parse(int(typ) if typ.isdigit() else typ).name    # 45 or C_SC_NA_1
        except (IndexError, ValueError) as e:
            hint = str(e) if "type" in str(e) else self._COMMAND_HINT
            return self._say(hint, where=where)
        if not math.isfinite(value):            # NaN passes every limit check (comparisons false)
            return self._say(f"value {parts[3]}: a finite number", where=where)
        s, m = self.session, self.master
        assert m is not None                    # connected: made on mount
        select = len(parts) == 5
        try:                                    # refused by the point list: say so now
            m.catalog.check_command(s.station, ca, ioa, TypeID[typ], value=value, select=select)
        except Exception as e:
            text = _command_error(e, ca, ioa).replace("with select=True", "with select")
            return self._say(text, where=where)
        if doubt := _in_doubt(s, ca, ioa):      # the library would refuse it: say so now
            return self._say(_doubt_text(f"{doubt[0]} is in doubt", ca, ioa), where=where)
        self.pending_command = _Command(ca=ca, ioa=ioa, type=typ, value=value, select=select,
                                        line=line)
        self.query_one("#confirm", Button).disabled = False
        row = command_rows(m.command_points(), m.points(), s.station).filter(
            (pl.col("ca") == ca) & (pl.col("ioa") == ioa))
        name = row["name"][0] if len(row) and row["name"][0] else None
        family = family_of(TypeID[typ])
        meaning = (" (", (pl.select(display.value_text(pl.lit(value), pl.lit(family))).item(),
                          "bold"), ")") if family in _NAMED_VALUES else ()
        # the value as it is sent, every digit (":g" showed 110.123456789 as 110.123)
        exact = str(int(value)) if value.is_integer() else repr(value)
        self._show(where, "operate ", (_session_text(s), "bold"), f" CA {ca} IOA {ioa}",
                   *((" ", (repr(name), "bold")) if name else ()), f": {typ} value {exact}",
                   *meaning,
                   ", ", ("select, then execute" if select else "direct execute", "bold"),
                   "? Press Confirm (a change of the command line withdraws it).")

    def _send_command(self) -> None:
        cmd = self.pending_command
        self._withdraw_command()
        if cmd is None or self._in_flight is not None:
            return
        # beside the UI, not in its message handler: the pages (a lost link) stay live and
        # Cancel can reach it while it waits up to request_timeout for the RTU's answer
        self._in_flight = self.run_worker(self._run_command(cmd), group="command")
        self.query_one("#cancel", Button).disabled = False
        self._show("#command_status", ("sending", "bold"), f" {cmd['type']} CA {cmd['ca']} IOA "
                   f"{cmd['ioa']}... (Cancel: withdrawn if it has not left, else in doubt)")

    async def _run_command(self, cmd: _Command) -> None:
        s = self.session
        assert s is not None                    # pending_command is made connected only
        ca, ioa = cmd["ca"], cmd["ioa"]
        try:
            value = int(cmd["value"]) if cmd["value"] == int(cmd["value"]) else cmd["value"]
            res = await s.command(ca, ioa, cmd["type"], value, select=cmd["select"])
            assert res.rtt is not None          # command() measures it
            self._show("#command_status", ("confirmed", "green"), f" {cmd['type']} CA {res.ca} "
                       f"IOA {res.ioa} in {res.rtt * 1000:.1f} ms")
        except asyncio.CancelledError:
            self._say(_doubt_text("cancelled after it left", ca, ioa) if _in_doubt(s, ca, ioa)
                      else "cancelled: withdrawn before it left, nothing sent",
                      where="#command_status")
            raise
        except Exception as e:
            text = _command_error(e, ca, ioa)
            if not isinstance(e, CommandInDoubt) and _in_doubt(s, ca, ioa):
                text = _doubt_text(text, ca, ioa)   # a timeout or lost link after it left
            self._say(text, where="#command_status")
        finally:
            self._in_flight = None
            self.query_one("#cancel", Button).disabled = True
            self.refresh_pages()

    def _prepare_clear(self, args: list[str]) -> None:
        """``clear CA IOA``: a new command to what is in doubt accepted, confirmed first."""
        s = self.session
        assert s is not None                    # _prepare_command: connected
        try:
            ca, ioa = (int(a) for a in args)
        except ValueError:
            return self._say("clear CA IOA: the object whose doubt to clear", where="#command_status")
        doubt = _in_doubt(s, ca, ioa)
        if not doubt:
            return self._say(f"nothing is in doubt at CA {ca} IOA {ioa}", where="#command_status")
        self._confirm(f"Clear the doubt on {_session_text(s)} CA {ca} IOA {ioa} "
                      f"({', '.join(doubt)})? Only once you have seen the RTU's state: the "
                      "command may have run, and the next one to it is sent.",
                      lambda: self._clear(ca, ioa))

    async def _clear(self, ca: int, ioa: int) -> None:
        assert self.session is not None         # _prepare_clear: connected
        gone = self.session.clear_doubt(ca, ioa)
        self._show("#command_status", ("no longer in doubt", "green"), f": {', '.join(gone)}"
                   if gone else f": CA {ca} IOA {ioa} (its answer came meanwhile)")

    # ---- Devices -----------------------------------------------------------------------------

    async def _force_gi(self) -> None:
        text = self._value("#gi_ca")
        assert self.session is not None         # the Devices page shows a connected RTU
        try:
            n = await self.session.interrogate(ca=int(text) if text else None)
            self._say(f"interrogation of CA {text or 'all'}: {n} objects", where="#device_status",
                      ok=True)
        except Exception as e:
            self._say(str(e), where="#device_status")
        self.refresh_pages()


def _update(table: FrameTable, frame: pl.DataFrame) -> None:
    """``table`` shows ``frame``, drawn again only if its rows changed: the Commands, Devices
    and Metadata pages mostly stay as they are, and a redraw twice a second of a table that
    did not change was most of the app's CPU on those pages. (equals: 1 == 1.0, hence the
    schema too.)"""
    if table.frame.schema != frame.schema or not table.frame.equals(frame):
        table.update(frame)


def _with_stale(params: pl.DataFrame, status: dict[str, Any],
                gi_interval: float | None) -> pl.DataFrame:
    """The parameters with ``stale``: every value while the link is down, and, once it is up,
    a value received before this connection (not refreshed since) or, with interrogations
    scheduled, one older than two of them (IEC 104 has no flag for either: the RTU cannot
    say that it is not heard)."""
    since = status.get("connected_since")
    if status["data_transfer"] != "started":
        stale = pl.lit(True)
    elif since is not None:
        stale = pl.col("recv_time") < dt.datetime.fromtimestamp(since, dt.timezone.utc)
    else:
        stale = pl.lit(False)
    if gi_interval:
        stale = stale | (pl.col("age") > 2 * gi_interval)
    return params.with_columns(stale=stale)


def _session_text(s: Session | RedundancyGroup) -> str:
    where = f"{s.host}:{s.port}"
    return where if s.name == where else f"{s.name} ({where})"


def _in_doubt(s: Session | RedundancyGroup, ca: int, ioa: int) -> list[str]:
    """What is in doubt (or awaits its answer) at (ca, ioa): each request's description."""
    return [r[3] for r in s.doubt_records() if r[1:3] == (ca, ioa)]


def _doubt_text(text: str, ca: int, ioa: int) -> str:
    return (f"IN DOUBT: {text}; the RTU may have run it, so a new command to it is refused. "
            f"Look at the RTU's state, then type: clear {ca} {ioa}, and Send")


def _command_error(e: Exception, ca: int, ioa: int) -> str:
    """An error as the page says it: the library's hints for scripts (allow_unlisted=True,
    clear_doubt(...)) replaced by what the operator can do here."""
    text = str(e)
    if isinstance(e, CommandNotAllowed):
        text = re.sub(r"\s*\(allow_unlisted=True[^)]*\)", "", text) + (
            ": choose a command point from the table (Enter fills the command line), or import "
            "a point list that lists this one (Import page)")
    elif isinstance(e, CommandInDoubt):
        text = _doubt_text(re.sub(r"\s*(, then )?clear_doubt\([^)]*\) to send it again", "",
                                  text), ca, ioa)
    return text


def run_watch(target: Target, *, settings: dict[str, Any] | None = None,
              points: str | None = None) -> int:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    app = WatchApp(target, settings=settings, points=points)
    app.run()
    return app.return_code or 0
