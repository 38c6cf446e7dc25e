"""Writes docs/watch-<page>.svg: one screenshot per page of ``iec104 watch``, against the
simulator with the sample point list (run: .venv/bin/python docs/screenshots.py)."""
import asyncio
from pathlib import Path

from textual.widgets import Input

from iec104.cli import sample_points
from iec104.outstation import Outstation
from iec104.targets import Target
from iec104.tui import WatchApp

DOCS = Path(__file__).parent


async def main() -> None:
    async with Outstation(point_list=sample_points(), rate=5) as out:
        app = WatchApp(Target("127.0.0.1", out.port, name="substation-7"),
                       points=str(sample_points()), settings={"gi_interval": 600})
        app.animation_level = "none"
        async with app.run_test(size=(150, 40)) as pilot:
            while app.session is None or len(app.master) < 26:
                await pilot.pause(0.05)
            await app.session.counter_interrogation()
            app.session.enable_debug(True)
            await app.session.command(1, 200, "C_SE_NC_1", 110.5)
            app.query_one("#command_input", Input).value = "1 12 C_SC_NA_1 1"
            app.query_one("#import_hook", Input).value = "erp"
            app.query_one("#import_element", Input).value = "Bay 7"
            app.query_one("#import_user", Input).value = "operator"
            app.query_one("#import_password", Input).value = "not shown"
            await asyncio.sleep(1.5)                    # a few spontaneous frames
            for page in WatchApp.PAGES:
                app.action_page(page)
                await pilot.pause(0.1)
                app.refresh_pages()
                await pilot.pause(0.1)
                name = page.removesuffix("_tab")
                app.save_screenshot(f"watch-{name}.svg", str(DOCS))
                print(DOCS / f"watch-{name}.svg")


if __name__ == "__main__":
    asyncio.run(main())
