"""A table of a Polars DataFrame for ``iec104 watch`` that renders only the rows on screen.

Textual's DataTable makes a Python object per row and cell, so a table of 100,000 parameters
takes seconds to fill and cannot be refilled twice a second; and refilling it moves the
cursor and scroll back to the top. This one keeps the DataFrame as it is, formats only the
window on screen (one slice through a vectorised formatter), and keeps its cursor and scroll
across updates; with ``follow`` a cursor on the last row stays on the last row (the newest
frames of the Debug page).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import polars as pl
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from iec104.display import printable

__all__ = ["FrameTable", "as_text"]

GAP = 2                                         # spaces between columns
_HEADER = Style(bold=True, underline=True)
_CURSOR = Style(reverse=True)


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every column as text, nulls empty (the formatter of tables without a better one)."""
    return df.select(pl.all().cast(pl.String).fill_null(""))


class FrameTable(ScrollView, can_focus=True):
    """The rows of a DataFrame, ``formatter`` (a DataFrame of rows to one of text columns)
    applied to the rows on screen only."""

    DEFAULT_CSS = "FrameTable { height: 1fr; }"
    BINDINGS = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "jump(0)", "first", show=False),
        Binding("end", "jump(-1)", "last", show=False),
        Binding("enter", "select", "select", show=False),
    ]

    class Selected(Message):
        """Enter on a row: ``row`` is the row of the DataFrame, all its columns."""

        def __init__(self, table: "FrameTable", row: dict[str, Any]) -> None:
            super().__init__()
            self.table, self.row = table, row

    def __init__(self, formatter: Callable[[pl.DataFrame], pl.DataFrame] = as_text, *,
                 follow: bool = False, id: str | None = None):
        super().__init__(id=id)
        self.formatter, self.follow = formatter, follow
        self.frame = pl.DataFrame()
        self.cursor = 0
        self._columns: list[str] = []
        self._widths: list[int] = []            # they only grow: columns do not jump about
        self._window: tuple[int, int, list[tuple[str, ...]]] | None = None

    @property
    def row_count(self) -> int:
        return len(self.frame)

    @property
    def _rows_on_screen(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)   # one line is the header

    def update(self, frame: pl.DataFrame) -> None:
        """Show ``frame``; the cursor stays on its row number (or, following, on the last)."""
        at_end = self.cursor >= len(self.frame) - 1
        self.frame, self._window = frame, None
        last = max(0, len(frame) - 1)
        self.cursor = last if self.follow and at_end else min(self.cursor, last)
        self._set_virtual_size()
        if self.follow and at_end:
            self._show_cursor()
        self.refresh()

    def _set_virtual_size(self) -> None:
        width = sum(self._widths) + GAP * max(0, len(self._widths) - 1)
        self.virtual_size = Size(width, len(self.frame) + 1)

    def _rows(self) -> tuple[int, list[tuple[str, ...]]]:
        """The formatted rows from the top of the screen down, made once per scroll position."""
        top, height = int(self.scroll_y), self._rows_on_screen
        if self._window is not None and self._window[:2] == (top, height):
            return top, self._window[2]
        if not self.frame.width:                # nothing shown yet
            return top, []
        # names and units are the point list's, strings the RTU's: cut and never a control
        # character to the terminal (the segments below are written to it as they are)
        text = self.formatter(self.frame.slice(top, height)).select(printable(pl.all()))
        rows = text.rows()
        if text.columns != self._columns:
            self._columns, self._widths = text.columns, [len(c) for c in text.columns]
        widths = [max(w, max((len(r[i]) for r in rows), default=0))
                  for i, w in enumerate(self._widths)]
        if widths != self._widths:
            self._widths = widths
            self.call_after_refresh(self._set_virtual_size)
        self._window = (top, height, rows)
        return top, rows

    def _line(self, cells: Iterable[str]) -> str:
        return (" " * GAP).join(c.ljust(w) for c, w in zip(cells, self._widths))

    def render_line(self, y: int) -> Strip:
        top, rows = self._rows()
        x, width, base = int(self.scroll_x), self.scrollable_content_region.width, self.rich_style
        if y == 0:
            text, style = self._line(self._columns), base + _HEADER
        elif y - 1 < len(rows):
            text, style = self._line(rows[y - 1]), base + _CURSOR if top + y - 1 == self.cursor else base
        else:
            return Strip.blank(width, base)
        return Strip([Segment(text, style)]).crop_extend(x, x + width, style)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._window = None if int(old) != int(new) else self._window

    # ---- the cursor ----------------------------------------------------------------------

    def _show_cursor(self) -> None:
        top, n = int(self.scroll_y), self._rows_on_screen
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + n:
            self.scroll_to(y=self.cursor - n + 1, animate=False, immediate=True)
        self.refresh()

    def move_cursor(self, row: int) -> None:
        self.cursor = min(max(0, row), max(0, len(self.frame) - 1))
        self._show_cursor()

    def action_move(self, by: int) -> None:
        self.move_cursor(self.cursor + by)

    def action_page(self, by: int) -> None:
        self.move_cursor(self.cursor + by * self._rows_on_screen)

    def action_jump(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self.frame) - 1)

    def action_select(self) -> None:
        if len(self.frame):
            self.post_message(self.Selected(self, self.frame.row(self.cursor, named=True)))

    def on_click(self, event: Click) -> None:
        if event.y >= 1:
            self.move_cursor(int(self.scroll_y) + event.y - 1)
