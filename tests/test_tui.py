"""The watch UI, headless (Textual's pilot) against the simulator."""

import numpy as np
from textual.widgets import Button, DataTable, Input, Static, Switch

from iec104.cli import sample_points
from iec104.outstation import Outstation
from iec104.targets import Target
from iec104.tui import WatchApp


async def settle(pilot, predicate, tries=100):
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("the page did not show it in time")


def text(app, sel):
    return str(app.query_one(sel, Static).render())


async def test_pages_show_state_parameters_devices_commands_and_frames():
    async with Outstation(point_list=sample_points()) as out:
        app = WatchApp(Target("127.0.0.1", out.port, name="sim"), points=str(sample_points()))
        async with app.run_test(size=(160, 50)) as pilot:
            counters = int(np.isin(out.image["type_id"], (15, 16, 37)).sum())
            await settle(pilot, lambda: app.master is not None and len(app.master) == 29 - counters)
            await app.master.sessions[0].counter_interrogation()   # the GI sends no counters
            app.refresh_pages()
            assert "started" in text(app, "#state") and "parameters: 29" in text(app, "#state")
            assert app.query_one("#parameters", DataTable).row_count == 29
            assert app.query_one("#device_table", DataTable).row_count == 2
            assert app.query_one("#command_table", DataTable).row_count == 8
            assert "t1 15 s" in text(app, "#config")

            app.query_one("#tabs").active = "debug_tab"
            app.query_one("#debug", Switch).value = True
            await settle(pilot, lambda: app.session.debug)        # the switch's handler ran
            app.query_one("#tabs").active = "devices"
            app.query_one("#gi_ca", Input).value = "2"
            app.query_one("#force_gi", Button).press()
            await settle(pilot, lambda: "objects" in text(app, "#device_status"))
            assert "interrogation of CA 2: 9 objects" in text(app, "#device_status")   # 10 less a counter
            app.refresh_pages()
            assert app.query_one("#frames", DataTable).row_count > 0

            app.query_one("#tabs").active = "commands"
            app.query_one("#command_input", Input).value = "1 200 C_SE_NC_1 112.5"
            app.query_one("#send", Button).press()
            await settle(pilot, lambda: "Press Confirm" in text(app, "#command_status"))
            assert not out.commands                      # nothing sent before confirmation
            app.query_one("#confirm", Button).press()
            await settle(pilot, lambda: "confirmed" in text(app, "#command_status"))
            assert out.commands[-1]["value"] == 112.5


async def test_import_page_lists_the_installed_hooks(monkeypatch):
    from iec104 import importhooks

    class EP:
        name, value = "erp", "somewhere:fetch"
    async with Outstation(stations=1, points=5) as out:
        app = WatchApp(Target("127.0.0.1", out.port))
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot, lambda: app.session is not None)
            assert "none" in text(app, "#hooks")
            monkeypatch.setattr(importhooks.importlib.metadata, "entry_points", lambda group: [EP()])
            app.query_one("#tabs").active = "import"
            app.query_one("#refresh_hooks", Button).press()
            await settle(pilot, lambda: "erp = somewhere:fetch" in text(app, "#hooks"))


async def test_import_page_reports_a_bad_list(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ioa\nxx\n")
    async with Outstation(stations=1, points=5) as out:
        app = WatchApp(Target("127.0.0.1", out.port))
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot, lambda: app.session is not None)
            app.query_one("#tabs").active = "import"
            app.query_one("#import_path", Input).value = str(bad)
            app.query_one("#import_button", Button).press()
            await settle(pilot, lambda: "failed" in text(app, "#import_status"))
            assert "row 1" in text(app, "#import_status")


async def test_unreachable_rtu_is_shown_not_raised():
    app = WatchApp(Target("127.0.0.1", 1), settings={"reconnect": False, "t0": 1})
    async with app.run_test() as pilot:
        await settle(pilot, lambda: "127.0.0.1" in text(app, "#state"))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_failed_interrogation_is_shown_not_raised():
    out = Outstation(stations=1, points=5)
    await out.__aenter__()
    app = WatchApp(Target("127.0.0.1", out.port), settings={"reconnect": False})
    async with app.run_test() as pilot:
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
        app = WatchApp(Target("127.0.0.1", out.port), points=str(bad))
        async with app.run_test() as pilot:
            await settle(pilot, lambda: "row 1" in text(app, "#status"))
            await settle(pilot, lambda: app.session is not None)     # connected all the same
            assert app.is_running
        assert app.return_code == 0


async def test_an_rtu_down_at_launch_is_tried_again_and_r_reconnects_now():
    port = _free_port()
    app = WatchApp(Target("127.0.0.1", port), settings={"t0": 1, "backoff_min": 60,
                                                        "backoff_max": 60})
    async with app.run_test() as pilot:
        await settle(pilot, lambda: "trying again" in text(app, "#state"))
        async with Outstation(stations=1, points=5, port=port):
            await pilot.press("r")                      # now, not after the 60 s back-off
            await settle(pilot, lambda: app.session is not None and
                         app.session.data_transfer == "started")
            await settle(pilot, lambda: "started" in text(app, "#state"))


async def test_commands_take_numeric_types_and_messages_keep_their_brackets():
    async with Outstation(stations=1, points=20) as out:
        app = WatchApp(Target("127.0.0.1", out.port))
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot, lambda: app.session is not None)
            app.query_one("#tabs").active = "commands"
            app.query_one("#command_input", Input).value = "nonsense"
            app.query_one("#send", Button).press()
            await settle(pilot, lambda: "[select]" in text(app, "#command_status"))
            app.query_one("#command_input", Input).value = "1 2 45 1"
            app.query_one("#send", Button).press()
            await settle(pilot, lambda: "Press Confirm" in text(app, "#command_status"))
            app.query_one("#confirm", Button).press()
            await settle(pilot, lambda: "confirmed" in text(app, "#command_status"))
            assert out.commands[-1]["type"] == "C_SC_NA_1"
