"""Values as an operator reads them: switch states, bitstrings in hex, quality flags and times
as text.

Everything here is a Polars expression or a function of a DataFrame, so that a table of any
size is formatted in a few vectorised passes, with no Python call per row. The tables keep
their raw columns (``value``, ``quality``, ``time``) for pipelines; these are for people.
"""
from __future__ import annotations

import re

import polars as pl

from iec104.types import TypeID

__all__ = ["number", "hex32", "value_text", "quality_text", "time_text", "age_text",
           "readable", "printable", "printable_text", "PARAMETER_COLUMNS"]

# what a terminal acts on rather than shows (C0 but the newline, DEL, C1: ESC sequences move
# the cursor, retitle the window, make links; CR overwrites the line) and the invisible
# characters that reorder or hide text (bidi overrides, zero-width): names, units, messages
# and certificate subjects come from point lists and RTUs, and must read as what they are
_CONTROL = "\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL_LINE = re.compile(f"[{_CONTROL}]")
_CONTROL_CELL = f"[\n{_CONTROL}]"             # a cell is one line: its newline too
SHOWN_FOR_CONTROL = "\N{REPLACEMENT CHARACTER}"
MAX_CELL = 64                                   # a cell's characters shown, then an ellipsis

# families (the plain type id of a point and its time-tagged variants; see types.family_of)
_SINGLE = (1, 45)                               # M_SP, C_SC
_DOUBLE = (3, 17, 46)                           # M_DP, M_EP_TA's event state, C_DC
_STEP_COMMAND = (47,)                           # C_RC
_BITS = (7, 18, 19, 20, 51)                     # M_BO, M_EP_TB/TC, M_PS, C_BO
_INTEGER = (5, 15)                              # step position, counter reading
_COUNTER = 15
_STEP = 5
_PROTECTION = (17, 18, 19)

_DOUBLE_TEXT = ["INTERMEDIATE", "OFF", "ON", "INDETERMINATE"]      # DPI 0..3
_STEP_TEXT = ["-", "LOWER", "HIGHER", "-"]                          # RCS 0..3 (0, 3: not used)
_HEX = "0123456789ABCDEF"
_TYPE_NAMES = {int(t): t.name for t in TypeID}

PARAMETER_COLUMNS = ["ca", "ioa", "name", "type", "value", "unit", "quality", "time", "received",
                     "age", "status"]
"""The parameter table's columns as :func:`readable` makes them (``status`` only with a point
list in force)."""


def printable_text(text: str) -> str:
    """``text`` with what a terminal would act on replaced by a visible mark (lines kept)."""
    return _CONTROL_LINE.sub(SHOWN_FOR_CONTROL, text)


def printable(cell: pl.Expr) -> pl.Expr:
    """A text column as table cells: control characters and newlines replaced by a visible
    mark, and a cell longer than MAX_CELL cut with an ellipsis (a name of thousands of
    characters would push every other column off the screen)."""
    text = cell.str.replace_all(_CONTROL_CELL, SHOWN_FOR_CONTROL)
    return pl.when(text.str.len_chars() > MAX_CELL).then(
        text.str.slice(0, MAX_CELL - 1) + "\N{HORIZONTAL ELLIPSIS}").otherwise(text)


def number(x: pl.Expr) -> pl.Expr:
    """A float as text: integral values exactly ("1", "-995"), others to 6 significant digits
    ("0.648438", "1.23457e+20")."""
    big = x.abs() >= 1e15                       # past the integers a float holds exactly
    # one digit before the point: log10 of a power of ten may come out a little short, and
    # a mantissa rounded up to 10 (9.9999999) takes the next exponent
    guess = x.abs().log10().floor()
    rounded = (x.abs() / 10 ** guess).round(5)
    exponent = guess + pl.when(rounded >= 10).then(1).when(rounded < 1).then(-1).otherwise(0)
    return (pl.when(~x.is_finite()).then(x.cast(pl.String))      # inf, NaN as sent
            .when(big).then(pl.format("{}e+{}", (x / 10 ** exponent).round(5),
                                                        exponent.cast(pl.Int64)))
            .when(x == x.floor()).then(x.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(x.round_sig_figs(6).cast(pl.String)))


def hex32(x: pl.Expr) -> pl.Expr:
    """A bitstring (0..2**32-1, as the value column carries it) as 0x and eight hex digits."""
    v = x.cast(pl.Int64, strict=False)
    digits = [((v // 16 ** i) % 16).replace_strict(range(16), list(_HEX), return_dtype=pl.String)
              for i in range(7, -1, -1)]
    return pl.when(v.is_null()).then(None).otherwise(pl.concat_str([pl.lit("0x"), *digits]))


def _named(x: pl.Expr, names: list[str]) -> pl.Expr:
    return x.cast(pl.Int64, strict=False).replace_strict(range(len(names)), names, default=None,
                                                         return_dtype=pl.String)


def value_text(value: pl.Expr, family: pl.Expr) -> pl.Expr:
    """The value as the point's kind reads: OFF/ON for single points, INTERMEDIATE/OFF/ON/
    INDETERMINATE for double points, LOWER/HIGHER for step commands, hex for bitstrings,
    integers for step positions and counters, numbers for measured values."""
    return (pl.when(family.is_in(_SINGLE)).then(pl.when(value != 0).then(pl.lit("ON"))
                                                  .otherwise(pl.lit("OFF")))
            .when(family.is_in(_DOUBLE)).then(_named(value, _DOUBLE_TEXT))
            .when(family.is_in(_STEP_COMMAND)).then(_named(value, _STEP_TEXT))
            .when(family.is_in(_BITS)).then(hex32(value))
            .otherwise(number(value)))


def _flags(quality: pl.Expr, flags: list[tuple[str, int]]) -> list[pl.Expr]:
    return [pl.when((quality & bit) != 0).then(pl.lit(name)) for name, bit in flags]


def quality_text(quality: pl.Expr, family: pl.Expr) -> pl.Expr:
    """The quality flags set, as text ("IV NT", "" when good): IV NT SB BL OV (and EI of
    protection events, T of a step position in transit); a counter's IV CA CY."""
    q = quality.cast(pl.Int64)
    common = [("IV", 0x80), ("NT", 0x40), ("SB", 0x20), ("BL", 0x10)]
    points = pl.concat_str(_flags(q, [*common, ("OV", 0x01)]), separator=" ", ignore_nulls=True)
    counters = pl.concat_str(_flags(q, [("IV", 0x80), ("CA", 0x40), ("CY", 0x20)]),
                             separator=" ", ignore_nulls=True)
    protection = pl.concat_str(_flags(q, [*common, ("EI", 0x08)]), separator=" ",
                               ignore_nulls=True)
    step = pl.concat_str(_flags(q, [*common, ("OV", 0x01), ("T", 0x02)]), separator=" ",
                         ignore_nulls=True)
    return (pl.when(quality.is_null()).then(None)
            .when(family == _COUNTER).then(counters)
            .when(family.is_in(_PROTECTION)).then(protection)
            .when(family == _STEP).then(step)
            .otherwise(points))


def time_text(t: pl.Expr, *, date: bool = True) -> pl.Expr:
    """A time to the millisecond (UTC, as the tables hold it)."""
    return t.dt.strftime("%Y-%m-%d %H:%M:%S%.3f" if date else "%H:%M:%S%.3f")


def age_text(seconds: pl.Expr) -> pl.Expr:
    """Seconds since the value came, rounded for reading: 0.4 s, 12 s, 5 min, 3 h, 2 d."""
    s = seconds.clip(lower_bound=0)
    return (pl.when(s.is_null()).then(None)
            .when(s < 10).then(pl.format("{} s", s.round(1)))
            .when(s < 120).then(pl.format("{} s", s.round(0).cast(pl.Int64)))
            .when(s < 7200).then(pl.format("{} min", (s / 60).round(0).cast(pl.Int64)))
            .when(s < 172800).then(pl.format("{} h", (s / 3600).round(0).cast(pl.Int64)))
            .otherwise(pl.format("{} d", (s / 86400).round(0).cast(pl.Int64))))


_STATUS_TEXT = {"ok": "", "unknown": "not in list", "missing": "no value yet"}


def readable(params: pl.DataFrame, *, listed: bool = True) -> pl.DataFrame:
    """The parameter table (``Master.parameters()``) as text for people: ca, ioa, name, type,
    value (the engineering value where the list scales it), unit, quality, time (the time
    tag; empty when the type has none), received (the receive time), age, and, when a point
    list is in force (``listed``), status: "not in list" or "no value yet" ("" when both
    agree). A point without a value yet has an empty value; a time tag flagged invalid
    (``time_invalid``) reads with " (IV)" after it; a value flagged ``stale`` (its link lost,
    or not refreshed since it came back) has STALE first in its quality."""
    fam = pl.col("family")
    quality = quality_text(pl.col("quality"), fam).fill_null("")
    if "stale" in params.columns:               # the master's mark, before the RTU's flags
        stale = pl.col("stale").fill_null(False) & pl.col("value").is_not_null()
        quality = pl.when(stale).then(pl.concat_str([pl.lit("STALE"), quality], separator=" ")
                                      .str.strip_chars_end()).otherwise(quality)
    scaled = pl.col("scale").is_not_null() | pl.col("offset").is_not_null()
    value = pl.when(scaled & ~fam.is_in((*_SINGLE, *_DOUBLE, *_BITS))).then(
        number(pl.col("eng_value"))).otherwise(value_text(pl.col("value"), fam))
    columns = [
        pl.col("ca").cast(pl.String), pl.col("ioa").cast(pl.String),
        pl.col("name").fill_null(""),
        pl.col("type").fill_null(pl.col("family").replace_strict(_TYPE_NAMES, default=None,
                                                                 return_dtype=pl.String))
        .fill_null(""),                         # a point not received yet: its list's type
        pl.when(pl.col("value").is_null()).then(pl.lit("")).otherwise(value).alias("value"),
        pl.col("unit").fill_null(""),
        quality.alias("quality"),
        (pl.when(pl.col("time_invalid").fill_null(False))
         .then(pl.concat_str([time_text(pl.col("time")), pl.lit(" (IV)")]))
         .otherwise(time_text(pl.col("time"))) if "time_invalid" in params.columns
         else time_text(pl.col("time"))).fill_null("").alias("time"),
        time_text(pl.col("recv_time"), date=False).fill_null("").alias("received"),
        age_text(pl.col("age")).fill_null("").alias("age"),
    ]
    if listed:
        columns.append(pl.col("status").replace_strict(_STATUS_TEXT, default=pl.col("status"))
                       .alias("status"))
    return params.select(columns)
