"""Values as an operator reads them (iec104.display)."""
import datetime as dt

import polars as pl
import pytest

from iec104 import display


def one(expr, **columns):
    return pl.DataFrame(columns).select(expr.alias("out"))["out"].to_list()


@pytest.mark.parametrize("family, values, texts", [
    (1, [0, 1], ["OFF", "ON"]),                                     # single point
    (45, [0, 1], ["OFF", "ON"]),                                    # single command
    (3, [0, 1, 2, 3], ["INTERMEDIATE", "OFF", "ON", "INDETERMINATE"]),   # double point
    (46, [1, 2], ["OFF", "ON"]),                                    # double command
    (47, [1, 2], ["LOWER", "HIGHER"]),                              # regulating step command
    (7, [774554000, 0], ["0x2E2AC190", "0x00000000"]),             # bitstring in hex
    (7, [4294967295], ["0xFFFFFFFF"]),
    (5, [-3, 12], ["-3", "12"]),                                    # step position
    (15, [5530021], ["5530021"]),                                   # counter reading
    (13, [112.5, -995, 0.6484375, 1.2345678e20], ["112.5", "-995", "0.648438", "1.23457e+20"]),
    (13, [float("inf"), float("nan")], ["inf", "NaN"]),
])
def test_values_read_as_their_kind(family, values, texts):
    out = one(display.value_text(pl.col("v"), pl.col("f")),
              v=[float(v) for v in values], f=[family] * len(values))
    assert out == texts


@pytest.mark.parametrize("family, quality, text", [
    (1, 0, ""), (1, 0x80, "IV"), (13, 0x80 | 0x40 | 0x20 | 0x10 | 0x01, "IV NT SB BL OV"),
    (15, 0x80 | 0x20 | 0x03, "IV CY"),              # a counter's own bits; 0x03 is its sequence
    (15, 0x40, "CA"),
    (17, 0x08, "EI"),                                # protection: elapsed time invalid
    (5, 0x02, "T"),                                  # a step position in transit
    (13, 0x02, ""),                                  # no such flag for a measured value
])
def test_quality_flags_as_text(family, quality, text):
    assert one(display.quality_text(pl.col("q"), pl.col("f")), q=[quality], f=[family]) == [text]


def test_age_and_time():
    assert one(display.age_text(pl.col("s")), s=[0.43, 12.4, 300.0, 3 * 3600.0, 3 * 86400.0, None]) \
        == ["0.4 s", "12 s", "5 min", "3 h", "3 d", None]
    t = dt.datetime(2024, 3, 1, 12, 30, 5, 123000, tzinfo=dt.timezone.utc)
    assert one(display.time_text(pl.col("t")), t=[t]) == ["2024-03-01 12:30:05.123"]
    assert one(display.time_text(pl.col("t"), date=False), t=[t]) == ["12:30:05.123"]


def _params(**over):
    now = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    base = dict(ca=[1, 1, 1], ioa=[1, 2, 3], name=["CB1", None, "P"], type=["M_DP_NA_1", None,
                "M_ME_NB_1"], family=[3, 1, 11], value=[2.0, None, 523.0],
                eng_value=[2.0, None, 52.3], scale=[None, None, 0.1], offset=[None, None, None],
                unit=[None, None, "degC"], quality=[0, None, 0x81],
                time=[now, None, None], recv_time=[now, None, now], age=[1.5, None, 1.5],
                status=["ok", "missing", "unknown"])
    return pl.DataFrame({**base, **over})


def test_the_parameter_table_as_people_read_it():
    out = display.readable(_params())
    assert out.columns == display.PARAMETER_COLUMNS
    assert out.row(0) == ("1", "1", "CB1", "M_DP_NA_1", "ON", "", "", "2024-03-01 12:00:00.000",
                          "12:00:00.000", "1.5 s", "")
    assert out.row(1)[3:5] == ("M_SP_NA_1", "") and out.row(1)[-1] == "no value yet"   # listed,
    # never received: the list's type, no value
    assert out.row(2)[4:7] == ("52.3", "degC", "IV OV")                 # the engineering value
    assert out.row(2)[-1] == "not in list"


def test_no_status_column_without_a_point_list():
    # without a list every row would read "unknown", which looks like a fault
    assert "status" not in display.readable(_params(), listed=False).columns


def test_an_invalid_time_tag_reads_as_invalid():
    """A CP56Time2a flagged invalid (``time_invalid``) shows " (IV)" after the time; a valid
    one and a row without a time tag read as before."""
    out = display.readable(_params(time_invalid=[True, None, False]))
    assert out["time"].to_list() == ["2024-03-01 12:00:00.000 (IV)", "", ""]
    out = display.readable(_params(time_invalid=[False, None, False]))
    assert out.row(0)[7] == "2024-03-01 12:00:00.000"


@pytest.mark.parametrize("x, text", [(1e15, "1.0e+15"), (9.9999999e15, "1.0e+16"),
                                     (1e300, "1.0e+300"), (-2.5e20, "-2.5e+20")])
def test_a_big_number_has_one_digit_before_the_point(x, text):
    """Scientific notation keeps one digit before the point: at powers of ten and where the
    rounded mantissa reaches 10 the exponent is one more."""
    assert one(display.number(pl.col("v")), v=[x]) == [text]
    mantissa, _, _ = text.partition("e")
    assert 1 <= abs(float(mantissa)) < 10


def test_stale_values_read_as_stale():
    """A row flagged ``stale`` (its link lost, or not refreshed since the link came back)
    reads STALE before its own flags; a row without a value has nothing to be stale."""
    out = display.readable(_params(stale=[True, True, True]))
    assert out["quality"].to_list() == ["STALE", "", "STALE IV OV"]
    assert display.readable(_params(stale=[False] * 3))["quality"].to_list() == ["", "", "IV OV"]


def test_hostile_text_is_shown_not_acted_on():
    """Names and units come from point lists and RTUs: what a terminal acts on (ESC sequences,
    CR, BEL, bidi overrides) is replaced by a visible mark, and a very long cell is cut."""
    mark = display.SHOWN_FOR_CONTROL
    assert display.printable_text("a\x1b[2J\rb\x07\u202ec\nd") == f"a{mark}[2J{mark}b{mark}{mark}c\nd"
    cells = one(display.printable(pl.col("s")), s=["x\x1b]8;;http://e\x07y\nz", "n" * 1000, None])
    assert cells[0] == f"x{mark}]8;;http://e{mark}y{mark}z"
    assert len(cells[1]) == display.MAX_CELL and cells[1].endswith("\N{HORIZONTAL ELLIPSIS}")
    assert cells[2] is None
