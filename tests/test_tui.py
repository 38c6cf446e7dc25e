"""The watch UI, headless (Textual's pilot) against the simulator: each page, the tables that
render only the rows on screen, the crash cases of issue 16.

The pages' tests share one app and simulator (starting an app costs about half a second);
each starts from the sample point list (the ``rtu`` fixture) and goes to its page (``page``:
a page drawn for nothing costs as much as a test's own steps). On uvloop
only, the loop watch runs on: the pages do not depend on the loop, the sessions' tests cover
both."""
import sys
import time
import types

import polars as pl
import pytest
import pytest_asyncio
import xlsxwriter
from textual.widgets import Button, Input, Static, Switch

from iec104.cli import sample_points
from iec104.outstation import Outstation
from iec104.targets import Target
from iec104.tui import Confirm, WatchApp
from iec104.tui_table import FrameTable

pytestmark = pytest.mark.asyncio(loop_scope="module", loop_factories=["uvloop"])


def watch(*args, **kwargs) -> WatchApp:
    app = WatchApp(*args, **kwargs)
    app.animation_level = "none"                # tabs switch at once: each test ~0.3 s less
    return app


async def settle(pilot, predicate, tries=100):
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.02)
    raise AssertionError("the page did not show it in time")


def text(app, sel):
    return str(app.query_one(sel, Static).render())


def lines(app, sel) -> list[str]:
    """What a table shows on screen, header first."""
    table = app.query_one(sel, FrameTable)
    return [table.render_line(y).text.rstrip() for y in range(table.scrollable_content_region.height)]


async def page(app, pilot, tab):
    app.screen.set_focus(None)                  # a field of the page before keeps it on screen
    app.query_one("#tabs").active = tab
    await pilot.pause(0)                        # no wait for an idle CPU (20 ms to 1 s)
    app.refresh_pages()
    await pilot.pause(0)


async def answer(app, pilot, yes: bool) -> str:
    """Answers the confirmation dialog on screen; returns its question."""
    await settle(pilot, lambda: isinstance(app.screen, Confirm))
    question = app.screen.question
    await pilot.press("y" if yes else "n")
    await settle(pilot, lambda: not isinstance(app.screen, Confirm))
    return question


async def connected(app, pilot, rows=None):
    await settle(pilot, lambda: app.session is not None and app.session.data_transfer == "started"
                 and (rows is None or len(app.master) >= rows))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared():
    async with Outstation(point_list=sample_points()) as out:
        # no refresh timer: the tests refresh the pages themselves (page(), refresh_pages), and
        # a redraw twice a second beside them was a tenth of this file's CPU; the apps of the
        # tests below keep the operators' 0.5 s timer
        app = watch(Target("127.0.0.1", out.port, name="[[rtu]]"), points=str(sample_points()),
                    settings={"clock_sync_interval": 3600}, refresh_every=None)
        async with app.run_test(size=(160, 30)) as pilot:
            await connected(app, pilot, 20)
            yield out, app, pilot


@pytest_asyncio.fixture(loop_scope="module")
async def rtu(shared):
    out, app, pilot = shared
    while isinstance(app.screen, Confirm):
        app.pop_screen()
    app.master.import_points(sample_points())
    app.import_source = str(sample_points())
    app.screen.set_focus(None)                  # keys are keys, not a field's text
    await pilot.pause(0)
    return shared


async def test_keys_switch_the_pages_and_escape_leaves_a_field(rtu):
    out, app, pilot = rtu
    tabs = app.query_one("#tabs")
    await page(app, pilot, "general")                   # "5" from another page than 5's
    await pilot.press("5")
    assert tabs.active == "commands"
    app.query_one("#command_input", Input).focus()
    await pilot.press("7")                              # typed into the field
    assert tabs.active == "commands" and app.query_one("#command_input", Input).value.endswith("7")
    await pilot.press("escape", "7")
    assert tabs.active == "debug_tab"


# ---- General: the parameter table -----------------------------------------------------------

async def test_parameters_read_as_an_operator_reads_them_and_keep_cursor_and_scroll(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "general")
    table = app.query_one("#parameters", FrameTable)
    assert table.row_count == 29
    shown = lines(app, "#parameters")
    assert shown[0].split() == ["ca", "ioa", "name", "type", "value", "unit", "quality", "time",
                                "received", "age", "status"]
    assert "CB1 position" in shown[1] and " ON " in shown[1]
    assert "TR1 protection trip" in shown[4] and " OFF " in shown[4]
    assert "52.3" in "".join(shown) and "degC" in "".join(shown)   # the engineering value
    table.focus()
    await pilot.press("home", "pagedown", "down")       # past the first screen
    cursor, top = table.cursor, table.scroll_y
    assert cursor == table.scrollable_content_region.height and top > 0
    for _ in range(3):                                  # the refresh keeps both
        app.refresh_pages()
        await pilot.pause()
    assert (table.cursor, table.scroll_y) == (cursor, top)
    await pilot.press("end")
    last = app.master.parameters().row(-1, named=True)
    assert table.cursor == table.row_count - 1
    assert lines(app, "#parameters")[-1].split()[:2] == [str(last["ca"]), str(last["ioa"])]


async def test_a_100000_row_table_stays_responsive(rtu, monkeypatch):
    out, app, pilot = rtu
    await page(app, pilot, "general")
    n = 100_000                                         # a list of 100,000 points besides
    app.master.import_points(pl.DataFrame({"ca": [7] * n, "ioa": range(n), "type": ["M_ME_NC_1"] * n}))
    table = app.query_one("#parameters", FrameTable)
    formatted = []                                      # rows each render formats
    rows = FrameTable._rows
    monkeypatch.setattr(FrameTable, "_rows",
                        lambda self: (r := rows(self), formatted.append(len(r[1])))[0])
    t = time.perf_counter()
    app.refresh_pages()
    await pilot.pause()
    refresh = time.perf_counter() - t
    assert table.row_count == n + len(app.master)       # the list's and the live rows
    table.focus()
    t = time.perf_counter()
    await pilot.press("end")
    end = time.perf_counter() - t
    assert table.cursor == table.row_count - 1
    assert lines(app, "#parameters")[-1].split()[:3] == ["7", str(n - 1), "M_ME_NC_1"]
    assert "no value yet" in lines(app, "#parameters")[-1]
    await pilot.press(*["pageup"] * 5)
    assert table.cursor == table.row_count - 1 - 5 * (table.scrollable_content_region.height - 1)
    # what keeps it responsive: only the rows on screen are formatted and drawn, never the
    # 100,000 (Textual's DataTable took seconds to fill); the times are printed, not asserted
    assert formatted and max(formatted) <= table.scrollable_content_region.height
    print(f"100,000-row table: refresh {refresh:.3f} s, End {end:.3f} s")


# ---- Configuration: schedules ---------------------------------------------------------------

async def test_schedules_are_set_on_the_configuration_page_after_confirmation(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "configuration")
    assert "t1 15 s" in text(app, "#config")
    assert app.query_one("#clock_sync_interval", Input).value == "3600"   # shown as it is
    boxes = {name: app.query_one(f"#{name}", Input) for name in
             ("gi_interval", "gi_group", "ci_interval", "clock_sync_interval")}
    for value, said in (("abc", "is not a number"), ("-1", "an interval in seconds > 0")):
        boxes["gi_interval"].value = value
        app.query_one("#set_schedules", Button).press()
        await settle(pilot, lambda: said in text(app, "#status"))
    boxes["gi_interval"].value, boxes["gi_group"].value = "0.05", "17"
    app.query_one("#set_schedules", Button).press()
    await settle(pilot, lambda: "groups are 1..16" in text(app, "#status"))
    boxes["gi_group"].value = "2"
    app.query_one("#set_schedules", Button).press()
    assert "every 0.05 s (group 2)" in await answer(app, pilot, yes=False)
    assert app.session.settings.gi_interval is None                  # No: nothing changed
    app.query_one("#set_schedules", Button).press()
    assert "clock sync every 3600 s" in await answer(app, pilot, yes=True)
    await settle(pilot, lambda: app.session.settings.gi_interval == 0.05)
    before = out.counts["requests"]
    await settle(pilot, lambda: out.counts["requests"] >= before + 2)   # running
    app.refresh_pages()
    assert "every 0.05 s (group 2)" in text(app, "#config")
    app.session.set_schedules(gi_interval=None, gi_group=None)        # for the other tests


# ---- Import and Metadata --------------------------------------------------------------------

@pytest.fixture
def hooks(monkeypatch):
    """An import script module, tui_hooks: fetch (records its call) and broken (fails saying
    the password)."""
    calls = []
    mod = types.ModuleType("tui_hooks")

    def fetch(**kw):
        calls.append({**kw, "password": kw["password"].reveal()})
        return [{"ca": 1, "ioa": 7, "name": "from the script", "type": "M_SP_NA_1"}]

    def broken(**kw):
        raise RuntimeError(f"login refused for password {kw['password'].reveal()}")
    mod.fetch, mod.broken = fetch, broken
    monkeypatch.setitem(sys.modules, "tui_hooks", mod)
    return calls


def fill(app, **fields):
    """The Import page's fields: those given, the others empty."""
    for name in ("path", "sheet", "hook", "element", "user", "password"):
        app.query_one(f"#import_{name}", Input).value = fields.get(name, "")


async def test_the_import_form_checks_what_it_is_given(rtu, tmp_path):
    out, app, pilot = rtu
    await page(app, pilot, "import")
    for given, said in [({}, "choose a point list file or an import script first"),
                        ({"path": str(tmp_path)}, "is a folder: choose a point list file"),
                        ({"path": str(tmp_path / "none.csv")}, "no such file"),
                        ({"path": str(sample_points()), "sheet": "2"}, "workbooks (XLSX) only"),
                        ({"hook": "tui_hooks:fetch"}, "needs an element name"),
                        ({"path": "a.csv", "hook": "x:y"}, "not both")]:
        fill(app, **given)
        app.query_one("#import_button", Button).press()
        await settle(pilot, lambda: said in text(app, "#import_message"))
        assert not isinstance(app.screen, Confirm)


async def test_an_import_script_runs_after_confirmation_with_element_device_and_user(rtu, hooks):
    out, app, pilot = rtu
    await page(app, pilot, "import")
    await settle(pilot, lambda: app._devices == [1, 2])            # the devices seen: offered
    app.query_one("#import_device").value = "1"
    fill(app, hook="tui_hooks:fetch", element="Bay 7", user="op", password="s3cret!")
    app.query_one("#import_button", Button).press()
    question = await answer(app, pilot, yes=True)
    assert "element Bay 7, device 1, as user op with the password given" in question
    assert "s3cret!" not in question
    await settle(pilot, lambda: "completed, 1 rows" in text(app, "#import_status"))
    assert hooks == [{"element": "Bay 7", "device": "1", "user": "op", "password": "s3cret!",
                      "request_id": hooks[0]["request_id"]}]
    await page(app, pilot, "metadata_tab")
    assert "1 points from import script tui_hooks:fetch (element Bay 7, device 1)" \
        in text(app, "#metadata_status")
    assert "from the script" in "\n".join(lines(app, "#metadata"))


async def test_a_failing_script_never_shows_the_password(rtu, hooks):
    out, app, pilot = rtu
    await page(app, pilot, "import")
    fill(app, hook="tui_hooks:broken", element="E", password="s3cret!")
    app.query_one("#import_button", Button).press()
    await answer(app, pilot, yes=True)
    await settle(pilot, lambda: "failed" in text(app, "#import_status"))
    assert "login refused for password ***" in text(app, "#import_status")
    assert "s3cret!" not in text(app, "#import_status") + text(app, "#status")


async def test_a_workbook_sheet_is_chosen_by_name_or_number(rtu, tmp_path):
    out, app, pilot = rtu
    path = tmp_path / "points.xlsx"
    wb = xlsxwriter.Workbook(path)
    for sheet, ioas in (("Cover", [1]), ("Points", [10, 11])):
        ws = wb.add_worksheet(sheet)
        ws.write_row(0, 0, ["ioa", "name"])
        for i, ioa in enumerate(ioas, 1):
            ws.write_row(i, 0, [ioa, f"p{ioa}"])
    wb.close()
    await page(app, pilot, "import")
    for sheet, rows in (("2", 2), ("Cover", 1)):
        fill(app, path=str(path), sheet=sheet)
        app.query_one("#import_button", Button).press()
        assert f"sheet {sheet}" in await answer(app, pilot, yes=True)
        await settle(pilot, lambda: f"completed, {rows} rows" in text(app, "#import_status"))


async def test_import_page_lists_the_installed_scripts_and_reports_a_bad_list(rtu, tmp_path,
                                                                            monkeypatch):
    from iec104 import importhooks

    class EP:
        name, value = "erp", "somewhere:fetch"
    out, app, pilot = rtu
    bad = tmp_path / "bad.csv"
    bad.write_text("ioa\nxx\n")
    await page(app, pilot, "import")
    monkeypatch.setattr(importhooks.importlib.metadata, "entry_points", lambda group: [EP()])
    app.query_one("#refresh_hooks", Button).press()
    await settle(pilot, lambda: "erp = somewhere:fetch" in text(app, "#hooks"))
    fill(app, path=str(bad))
    app.query_one("#import_button", Button).press()
    await answer(app, pilot, yes=True)
    await settle(pilot, lambda: "failed" in text(app, "#import_status"))
    assert "row 1" in text(app, "#import_status")
    await page(app, pilot, "metadata_tab")                      # the list in force stays
    assert "29 points from" in text(app, "#metadata_status")


# ---- Commands and Devices -------------------------------------------------------------------

async def test_commands_page_one_row_per_point_with_its_value_and_a_confirmed_command(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "commands")
    table = app.query_one("#command_table", FrameTable)
    assert table.row_count == 8
    before = lines(app, "#command_table")
    assert "CB1 position" in before[1] and " ON " in before[1]      # the current value
    table.focus()
    await pilot.press("home", "down", "enter")                    # fills CA IOA TYPE
    assert app.query_one("#command_input", Input).value == "1 2 C_DC_NA_1 "
    app.query_one("#command_input", Input).value = "1 2 46 1 select"   # the type by number
    app.query_one("#send", Button).press()
    await settle(pilot, lambda: "Press Confirm" in text(app, "#command_status"))
    sent = len(out.commands)                                      # nothing sent yet
    app.query_one("#confirm", Button).press()
    await settle(pilot, lambda: "confirmed" in text(app, "#command_status"))
    assert len(out.commands) > sent and out.commands[-1]["type"] == "C_DC_NA_1"
    await page(app, pilot, "commands")
    after = lines(app, "#command_table")
    assert table.row_count == 8                                   # the learned row merged
    assert [r.split()[:2] for r in after] == [r.split()[:2] for r in before]   # same order
    assert "point list + learned" in after[2]

    app.query_one("#command_input", Input).value = "1 999 C_SC_NA_1 1"
    app.query_one("#send", Button).press()
    await settle(pilot, lambda: "not a C_SC_NA_1 command point" in text(app, "#command_status"))
    said = text(app, "#command_status")
    assert "allow_unlisted" not in said and "Import page" in said
    assert app.query_one("#confirm", Button).disabled             # nothing to confirm


async def test_devices_page_forces_an_interrogation(rtu):
    out, app, pilot = rtu
    assert "[[rtu]]" in text(app, "#state")                      # markup shown as text
    await page(app, pilot, "devices")
    assert app.query_one("#device_table", FrameTable).row_count == 2
    app.query_one("#gi_ca", Input).value = "2"
    app.query_one("#force_gi", Button).press()
    await settle(pilot, lambda: "objects" in text(app, "#device_status"))
    assert "interrogation of CA 2: 9 objects" in text(app, "#device_status")   # 10 less a counter


# ---- Debug ----------------------------------------------------------------------------------

async def test_debug_page_follows_the_newest_frames_and_pauses(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "debug_tab")
    assert "debug frames are off" in text(app, "#frames_state")
    app.query_one("#debug", Switch).value = True
    await settle(pilot, lambda: app.session.debug)
    table = app.query_one("#frames", FrameTable)
    for _ in range(2):                                  # more frames than the screen holds
        await app.session.interrogate()
    app.refresh_pages()
    await pilot.pause()
    assert table.row_count > table.scrollable_content_region.height
    assert table.cursor == table.row_count - 1
    assert lines(app, "#frames")[-1].split()[1:3] == ["rx", "I"]   # the newest: the ActTerm
    await pilot.press("p")
    assert "paused" in text(app, "#frames_state")
    held = table.row_count
    await app.session.interrogate()
    app.refresh_pages()
    assert table.row_count == held                      # held for reading
    await pilot.press("p")
    assert table.row_count > held and table.cursor == table.row_count - 1
    app.query_one("#debug", Switch).value = False


async def test_commands_without_a_point_list_take_numeric_types_and_keep_brackets():
    async with Outstation(stations=1, points=20) as out:
        app = watch(Target("127.0.0.1", out.port))
        async with app.run_test(size=(160, 16)) as pilot:      # the width: the header's columns
            await connected(app, pilot, 15)
            await page(app, pilot, "general")                   # no list: no status column
            assert lines(app, "#parameters")[0].split()[-1] == "age"
            await page(app, pilot, "commands")
            app.query_one("#command_input", Input).value = "nonsense"
            app.query_one("#send", Button).press()
            await settle(pilot, lambda: "[select]" in text(app, "#command_status"))
            app.query_one("#command_input", Input).value = "1 2 45 1"
            app.query_one("#send", Button).press()
            await settle(pilot, lambda: "Press Confirm" in text(app, "#command_status"))
            app.query_one("#confirm", Button).press()
            await settle(pilot, lambda: "confirmed" in text(app, "#command_status"))
            assert out.commands[-1]["type"] == "C_SC_NA_1"
            await page(app, pilot, "commands")                  # learned: one row
            assert app.query_one("#command_table", FrameTable).row_count == 1


# ---- what once crashed ----------------------------------------------------------------------

# these tests read the apps' text (the status lines' content, not the screen's cells): a small
# screen draws less, the same tests at 80x24 or 200x30
SMALL = (80, 12)


async def test_unreachable_rtu_is_shown_not_raised():
    app = watch(Target("127.0.0.1", 1), settings={"reconnect": False, "t0": 1})
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, lambda: "127.0.0.1" in text(app, "#state"))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_failed_interrogation_is_shown_not_raised():
    out = Outstation(stations=1, points=5)
    await out.__aenter__()
    app = watch(Target("127.0.0.1", out.port), settings={"reconnect": False})
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, lambda: app.session is not None)
        await out.__aexit__(None, None, None)           # the RTU goes away
        await settle(pilot, lambda: app.session.data_transfer != "started")
        await pilot.press("g")
        await settle(pilot, lambda: "interrogation" in text(app, "#status"))
        assert app.is_running
    assert app.return_code == 1                         # it ended on an error


async def test_a_bad_point_list_is_shown_not_raised(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ioa\nxx\n")
    async with Outstation(stations=1, points=5) as out:
        app = watch(Target("127.0.0.1", out.port), points=str(bad))
        async with app.run_test(size=SMALL) as pilot:
            await settle(pilot, lambda: "row 1" in text(app, "#status"))
            await settle(pilot, lambda: app.session is not None)     # connected all the same
            assert app.is_running
        assert app.return_code == 0


async def test_an_rtu_down_at_launch_is_tried_again_and_r_reconnects_now():
    port = _free_port()
    app = watch(Target("127.0.0.1", port), settings={"t0": 1, "backoff_min": 60,
                                                        "backoff_max": 60})
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, lambda: "trying again" in text(app, "#state"))
        async with Outstation(stations=1, points=5, port=port):
            await pilot.press("r")                      # now, not after the 60 s back-off
            await connected(app, pilot)
            await settle(pilot, lambda: "started" in text(app, "#state"))


async def test_a_redundancy_group_shows_its_active_address_and_health():
    async with Outstation(stations=1, points=5, standby_ports=[0]) as out:
        first, second = out.ports
        app = watch(Target("127.0.0.1", first, standby=[("127.0.0.1", second)]))
        async with app.run_test(size=SMALL) as pilot:
            await connected(app, pilot, 5)
            await settle(pilot, lambda: "health: ok (" in text(app, "#state"))
            state = text(app, "#state")
            assert f"TLS off; active 127.0.0.1:{first}, 0 switches" in state
            assert "no TESTFR con yet" not in state
            # the Debug page and the switch work on a group (AttributeError before)
            await page(app, pilot, "debug_tab")
            assert "debug frames are off" in text(app, "#frames_state")
            app.query_one("#debug", Switch).value = True
            await settle(pilot, lambda: app.session.debug)
            await app.session.test()                # TESTFR act and con, logged
            app.refresh_pages()
            await settle(pilot, lambda: app.query_one("#frames", FrameTable).row_count > 0)
            assert "frames, following the newest" in text(app, "#frames_state") and app.is_running


# ---- what an operator's mistake or a hostile RTU / point list could do ----------------------

async def send(app, pilot, line: str, said: str) -> None:
    """Types ``line`` in the command line and presses Send; waits until the status says ``said``."""
    app._show("#command_status", "")                  # not the line before's
    app.query_one("#command_input", Input).value = line
    app.query_one("#send", Button).press()
    await settle(pilot, lambda: said in text(app, "#command_status"))


async def test_the_confirmation_says_exactly_what_operates(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "commands")
    await send(app, pilot, "1 2 C_DC_NA_1 1 select", "Press Confirm")
    said = text(app, "#command_status")
    # the session and its address, the point's name, what the value means, select/execute
    assert f"[[rtu]] (127.0.0.1:{out.port})" in said and "'CB2 position'" in said
    assert "value 1 (OFF)" in said and "select, then execute" in said
    await send(app, pilot, "1 12 C_SC_NA_1 1", "Press Confirm")      # not select before operate
    assert "value 1 (ON)" in text(app, "#command_status")
    assert "direct execute" in text(app, "#command_status")
    await send(app, pilot, "1 200 C_SE_NC_1 110.123456789", "Press Confirm")   # as it is sent,
    assert "C_SE_NC_1 value 110.123456789, direct" in text(app, "#command_status")   # not 110.123
    for line, why in (("1 2 C_DC_NA_1 1 selct", "select"), ("1 2 C_DC_NA_1 1 select 5", "select"),
                      ("1 2 C_SE_NC_1 nan", "finite"), ("1 2 C_SE_NC_1 inf", "finite")):
        await send(app, pilot, line, why)               # refused, nothing to confirm
        assert app.query_one("#confirm", Button).disabled and app.pending_command is None


async def test_editing_the_command_line_withdraws_the_command_awaiting_confirmation(rtu):
    out, app, pilot = rtu
    await page(app, pilot, "commands")
    await send(app, pilot, "1 12 C_SC_NA_1 1", "Press Confirm")
    sent = len(out.commands)
    app.query_one("#command_input", Input).value = "1 12 C_SC_NA_1 0"  # not what was shown
    await settle(pilot, lambda: "withdrawn" in text(app, "#command_status"))
    assert app.query_one("#confirm", Button).disabled and app.pending_command is None
    app.query_one("#confirm", Button).press()
    await pilot.pause(0.1)
    assert len(out.commands) == sent                    # nothing went out


async def test_a_command_is_refused_before_the_rtu_is_reached_not_crashing():
    app = watch(Target("127.0.0.1", _free_port()), settings={"reconnect": False, "t0": 1})
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot, lambda: "127.0.0.1" in text(app, "#state"))
        await page(app, pilot, "commands")
        await send(app, pilot, "1 2 45 1", "not connected")
        assert app.query_one("#confirm", Button).disabled
        app.query_one("#confirm", Button).press()       # AssertionError: the app crashed
        await pilot.pause(0.1)
        assert app.is_running


async def test_a_command_in_flight_can_be_cancelled_and_its_doubt_cleared_from_the_page(rtu, monkeypatch):
    """The command runs beside the UI (the page refreshed, a lost link shown, Cancel): the
    library withdraws what has not left; what left is in doubt, said so, and cleared here
    ("clear CA IOA", confirmed) once the operator has seen the RTU's state."""
    out, app, pilot = rtu
    await page(app, pilot, "commands")
    monkeypatch.setattr(out, "_command", lambda *a: None)      # the RTU never answers
    await send(app, pilot, "1 2 C_DC_NA_1 2 select", "Press Confirm")
    app.query_one("#confirm", Button).press()
    await settle(pilot, lambda: "sending" in text(app, "#command_status"))
    cancel = app.query_one("#cancel", Button)
    assert not cancel.disabled                          # the UI answers while it waits
    await send(app, pilot, "1 3 C_SC_NA_1 1", "in flight")   # one command at a time
    cancel.press()
    await settle(pilot, lambda: "IN DOUBT" in text(app, "#command_status"))
    assert "clear 1 2" in text(app, "#command_status") and cancel.disabled
    await send(app, pilot, "1 2 C_DC_NA_1 2 select", "IN DOUBT")  # the library refuses it
    said = text(app, "#command_status")
    assert "clear 1 2" in said and "clear_doubt(" not in said
    assert app.query_one("#confirm", Button).disabled
    monkeypatch.undo()                                  # the RTU answers again
    app.query_one("#command_input", Input).value = "clear 1 2"
    app.query_one("#send", Button).press()
    assert "CA 1 IOA 2" in await answer(app, pilot, yes=False)   # No: still in doubt
    await send(app, pilot, "1 2 C_DC_NA_1 2 select", "IN DOUBT")
    app.query_one("#command_input", Input).value = "clear 1 2"
    app.query_one("#send", Button).press()
    assert "seen the RTU's state" in await answer(app, pilot, yes=True)
    await settle(pilot, lambda: "no longer in doubt" in text(app, "#command_status"))
    await send(app, pilot, "1 2 C_DC_NA_1 2 select", "Press Confirm")
    app.query_one("#confirm", Button).press()
    await settle(pilot, lambda: "confirmed" in text(app, "#command_status"))


async def test_hostile_names_and_units_are_shown_as_written_and_never_reach_the_terminal(rtu):
    out, app, pilot = rtu
    esc = "\x1b]8;;http://evil\x07click\x1b]8;;\x07\x1b[2J\r"
    app.master.import_points(pl.DataFrame({
        "ca": [1, 1], "ioa": [1, 2], "type": ["M_SP_NA_1", "M_DP_NA_1"],
        "name": ["[bold red]CB1[/] [link=http://evil]x[/link]" + esc, "n" * 5000],
        "unit": ["[blink]u[/]", "u\x07"]}))
    await page(app, pilot, "general")
    app.query_one("#parameters", FrameTable).move_cursor(0)
    await pilot.pause()
    shown = "\n".join(lines(app, "#parameters"))
    assert "[bold red]CB1[/] [link=http://evil]x[/link]" in shown and "[blink]u[/]" in shown
    assert not set(shown) & {"\x1b", "\x07", "\r"}
    assert "n" * 5000 not in shown and "\N{HORIZONTAL ELLIPSIS}" in shown   # cut, not 5000 wide
    app._show("#status", "from the RTU: ", (esc + "[b]x[/b]", "red"))
    assert not set(text(app, "#status")) & {"\x1b", "\x07", "\r"}
    assert "[b]x[/b]" in text(app, "#status")


async def test_a_lost_link_marks_every_value_stale_at_once():
    out = Outstation(stations=1, points=5)
    await out.__aenter__()
    app = watch(Target("127.0.0.1", out.port), settings={"reconnect": False}, refresh_every=None)
    async with app.run_test(size=(160, 16)) as pilot:
        await connected(app, pilot, 5)
        await page(app, pilot, "general")
        assert "STALE" not in "\n".join(lines(app, "#parameters"))
        await out.__aexit__(None, None, None)
        await settle(pilot, lambda: app.session.data_transfer != "started")
        app.refresh_pages()
        await pilot.pause()
        rows = lines(app, "#parameters")[1:]
        assert rows[0] and all("STALE" in r for r in rows if r)
        assert "LINK DOWN" in text(app, "#state")


async def test_a_direct_execute_of_a_point_listed_sbo_is_refused_at_send(rtu):
    """CB1 of the sample list is select before operate: the page refuses the execute before
    any confirmation, saying to add "select"; with it, the confirmation is offered."""
    out, app, pilot = rtu
    await page(app, pilot, "commands")
    sent = len(out.commands)
    await send(app, pilot, "1 1 C_DC_NA_1 2", "select before operate")
    said = text(app, "#command_status")
    assert "with select" in said and "select=True" not in said
    assert app.query_one("#confirm", Button).disabled and len(out.commands) == sent
    await send(app, pilot, "1 1 C_DC_NA_1 2 select", "Press Confirm")
