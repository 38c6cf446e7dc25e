"""Point lists: reading, validation with precise errors, the joined tables, command table."""
import asyncio
import datetime as dt
import re

import numpy as np
import polars as pl
import pytest
import xlsxwriter

from iec104 import NO_TIME, POINT_DTYPE
from iec104.metadata import Catalog, CommandNotAllowed, PointListError, read_point_list
from iec104.store import Store

GOOD = ("Information Object Address;Common Address;Tag;Units;Type;Scale;Offset;Command Type;Bay\n"
        "100;1;Feeder current;A;M_ME_NC_1;1;0;;F1\n"
        "101;1;Oil temp;°C;M_ME_NB_1;0.1;0;;T1\n"
        "5001;1;Breaker;;M_DP_NA_1;;;C_DC_NA_1;F1\n")


def write(tmp_path, text, name="points.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def write_xlsx(path, sheets):
    wb = xlsxwriter.Workbook(path)
    for name, rows in sheets.items():
        ws = wb.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                ws.write(r, c, v)
    wb.close()
    return path


def test_aliases_case_delimiter_and_extras(tmp_path):
    df = read_point_list(write(tmp_path, GOOD))
    assert df["ioa"].to_list() == [100, 101, 5001]
    assert df["name"].to_list() == ["Feeder current", "Oil temp", "Breaker"]
    assert df["family"].to_list() == [13, 11, 3] and df["command_type"].to_list() == [None, None, 46]
    assert df["unit"][1] == "°C" and df["Bay"].to_list() == ["F1", "T1", "F1"]
    assert df.schema["ioa"] == pl.UInt32 and df.schema["ca"] == pl.UInt16


def test_latin1_and_tab_separated(tmp_path):
    p = write(tmp_path, "ioa\tunit\tname\n1\t°C\tTempérature\n", encoding="latin-1")
    df = read_point_list(p)
    assert df["unit"][0] == "°C" and df["name"][0] == "Température" and df["ca"][0] == 1


def test_linear_range_gives_scale_and_offset(tmp_path):
    df = read_point_list(write(tmp_path, "ioa,raw_min,raw_max,eng_min,eng_max\n1,0,32767,0,100\n"))
    assert df["scale"][0] == pytest.approx(100 / 32767) and df["offset"][0] == 0


@pytest.mark.parametrize("text,row,column,words", [
    ("name,unit\nx,A\n", None, "IOA", "columns seen: name, unit"),
    ("ioa,name\n1,a\nabc,b\n", 2, "ioa", "'abc'"),
    ("ioa\n1\n99999999\n", 2, "ioa", "0..16777215"),
    ("ioa,type\n1,M_XX_NA_1\n", 1, "type", "unknown type"),
    ("ioa,ca\n1,1\n2,1\n1,1\n", 3, "ioa", "rows 1 and 3"),
    ("ioa,command type\n1,M_SP_NA_1\n", 1, "command type", "not a command type"),
])
def test_bad_lists_name_file_row_and_column(tmp_path, text, row, column, words):
    p = write(tmp_path, text)
    with pytest.raises(PointListError) as e:
        read_point_list(p)
    assert e.value.row == row and e.value.column == column and str(p) in str(e.value)
    assert words in str(e.value)


def test_xlsx_sheets(tmp_path):
    p = write_xlsx(tmp_path / "p.xlsx", {
        "Intro": [["nothing here"]],
        "Points": [["IOA", "Name", "Type"], [1, "a", "M_SP_NA_1"], [2, "b", 13]],
    })
    assert read_point_list(p, sheet="Points")["type_id"].to_list() == [1, 13]
    assert read_point_list(p, sheet=1)["ioa"].to_list() == [1, 2]
    with pytest.raises(PointListError, match="no IOA column"):
        read_point_list(p)                              # the first sheet has no IOA
    with pytest.raises(PointListError, match="workbook"):
        read_point_list(p, sheet="Missing")


def test_unreadable_files(tmp_path):
    with pytest.raises(PointListError, match="no such file"):
        read_point_list(tmp_path / "nope.csv")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(PointListError, match="broken.xlsx"):
        read_point_list(broken)


def live(values):
    """A store with float points (station 0, CA 1) at the given IOAs."""
    s = Store()
    p = np.zeros(len(values), POINT_DTYPE)
    p["type_id"], p["ca"], p["cot"], p["time"] = 13, 1, 20, NO_TIME
    p["ioa"] = list(values)
    p["value"] = list(values.values())
    p["quality"][0] = 0x80
    p["recv_ns"] = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1e9)
    s.update(p)
    return s


def test_parameter_table_has_ok_unknown_and_missing_rows(tmp_path):
    cat = Catalog()
    cat.load(write(tmp_path, "ioa,name,unit,type,scale,offset\n100,I,A,M_ME_NC_1,2,1\n"
                             "102,P,MW,M_ME_NC_1,,\n"))
    df = cat.parameters(live({100: 10.0, 101: 5.0}).points())
    by = {r["ioa"]: r for r in df.iter_rows(named=True)}
    assert by[100]["status"] == "ok" and by[100]["eng_value"] == 21.0 and by[100]["unit"] == "A"
    assert by[100]["iv"] is True and by[100]["age"] >= 0
    assert by[101]["status"] == "unknown" and by[101]["name"] is None
    assert by[102]["status"] == "missing" and by[102]["value"] is None and by[102]["name"] == "P"


def test_a_list_for_every_station_applies_to_the_stations_given_too(tmp_path):
    """``stations`` (the master's connected ones) join a list for every station as the
    stations with live values do: a station that sent nothing shows the list as missing."""
    cat = Catalog()
    cat.load(write(tmp_path, "ioa,name,type\n100,I,M_ME_NC_1\n"))
    df = cat.parameters(live({100: 10.0}).points(), stations=[0, 2])
    assert df.select("station", "status").rows() == [(0, "ok"), (2, "missing")]
    assert cat.parameters(Store().points(), stations=[3])["station"].to_list() == [3]


def test_import_is_all_or_nothing(tmp_path):
    cat = Catalog()
    cat.load(write(tmp_path, "ioa,name\n1,a\n"))
    with pytest.raises(PointListError):
        cat.load(write(tmp_path, "ioa,name\n1,a\nx,b\n", name="bad.csv"))
    assert cat.table()["name"].to_list() == ["a"]
    assert cat.status.state == "failed" and "bad.csv" in cat.status.error


async def test_async_import_reports_its_status(tmp_path):
    cat = Catalog()
    task = asyncio.create_task(cat.import_points(write(tmp_path, GOOD)))
    await asyncio.sleep(0)
    assert cat.status.state in ("pending", "in_progress", "completed")
    await task
    assert cat.status.state == "completed" and cat.status.rows == 3


def test_command_table_and_check(tmp_path):
    cat = Catalog()
    cat.check_command(0, 1, 7, 45)                      # no list: anything goes
    cat.load(write(tmp_path, GOOD))
    cmds = cat.command_points(learned=[{"station": 0, "ca": 1, "ioa": 5001, "type_id": 46,
                                        "last_result": "confirmed"}])
    row = cmds.row(0, named=True)
    assert (row["ioa"], row["type"], row["last_result"]) == (5001, "C_DC_NA_1", "confirmed")
    cat.check_command(0, 1, 5001, 59)                   # the time-tagged variant is the same family
    with pytest.raises(CommandNotAllowed):
        cat.check_command(0, 1, 100, 50)
    with pytest.raises(CommandNotAllowed):
        cat.check_command(0, 1, 5001, 45)
    cat.check_command(0, 1, 100, 50, allow_unlisted=True)


# ---- import hooks ----------------------------------------------------------------------------

import logging  # noqa: E402
import threading  # noqa: E402

from iec104 import importhooks  # noqa: E402
from iec104.importhooks import ImportHookError, Secret, available_hooks, run_hook  # noqa: E402

CALLS = []


def good_hook(*, element, request_id, device, user, password):
    CALLS.append((element, device, user, repr(password), password.reveal()))
    logging.getLogger("test").info("hook called with %s", password)
    return request_id, [{"ioa": 1, "name": "from hook"}, {"ioa": 2, "name": "second"}]


SLOW_HOOK_RELEASED = threading.Event()


def slow_hook(**kw):
    SLOW_HOOK_RELEASED.wait(5)          # answers only once the test has seen it time out
    return []


def failing_hook(**kw):
    raise RuntimeError("database down")


def wrong_id_hook(**kw):
    return "another-request", []


async def test_callable_hook_feeds_an_import_and_keeps_the_password_secret(caplog):
    caplog.set_level(logging.DEBUG)
    cat = Catalog()
    df = await cat.import_points(hook=f"{__name__}:good_hook", element="SS7", device=3,
                                 user="op", password="hunter2")
    assert df["name"].to_list() == ["from hook", "second"]
    element, device, user, shown, real = CALLS[-1]
    assert (element, device, user, real) == ("SS7", "3", "op", "hunter2")
    assert "hunter2" not in shown and "hunter2" not in caplog.text
    assert "hunter2" not in repr(cat.status) and cat.status.state == "completed"


async def test_executable_hook_gets_the_password_on_stdin(tmp_path):
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\nread pw\necho 'ioa,name,args'\n"
                      "echo \"7,$pw,$*\"\n")
    script.chmod(0o755)
    df = await run_hook(str(script), element="E1", device="ALL", user="u", password="s3cret")
    assert df["name"].to_list() == ["s3cret"]               # it came through stdin
    assert "s3cret" not in df["args"][0] and "--request-id" in df["args"][0]


@pytest.mark.parametrize("hook,words", [
    ("slow_hook", "did not answer"), ("failing_hook", "database down"),
    ("wrong_id_hook", "answered request"), ("no_such_function", "cannot load"),
])
async def test_hook_failures_are_typed(hook, words):
    cat = Catalog()
    SLOW_HOOK_RELEASED.clear()
    try:
        with pytest.raises(ImportHookError, match=words):
            await cat.import_points(hook=f"{__name__}:{hook}", timeout=0.3)
    finally:
        SLOW_HOOK_RELEASED.set()        # its thread ends now, not seconds after the test
    assert cat.status.state == "failed"


async def test_unknown_hook_name_is_a_clear_error():
    with pytest.raises(ImportHookError, match="no import hook 'nothing'"):
        await run_hook("nothing")


def test_entry_point_hooks_are_listed_and_refreshed(monkeypatch):
    class EP:
        name, value = "erp", f"{__name__}:good_hook"
    monkeypatch.setattr(importhooks.importlib.metadata, "entry_points", lambda group: [EP()])
    assert available_hooks(refresh=True) == {"erp": f"{__name__}:good_hook"}
    monkeypatch.setattr(importhooks.importlib.metadata, "entry_points", lambda group: [])
    assert available_hooks() == {"erp": f"{__name__}:good_hook"}     # cached until refreshed
    assert available_hooks(refresh=True) == {}


def test_secret_never_shows():
    s = Secret("pw")
    assert "pw" not in repr(s) and "pw" not in str(s) and "pw" not in f"{s}"


async def test_an_import_without_a_list_or_hook_says_so_in_one_line():
    catalog = Catalog()
    with pytest.raises(PointListError, match="no point list: give a file, a DataFrame or hook="):
        await catalog.import_points()
    assert catalog.status.state != "in_progress"


@pytest.mark.parametrize("text, column", [
    ("ioa,tag,name\n1,a,b\n", "name"),          # Tag is the name column; so is a later "name"
    ("IOA,ioa,name\n1,2,b\n", "ioa"),           # the same column twice in two cases
    ("ioa,type,type_id\n1,analog,13\n", "type_id"),     # type_id is an alias of type
    ("ioa,family,name\n1,a,b\n", "family"),     # an extra column named like an output column
])
def test_a_column_named_like_a_canonical_one_is_a_point_list_error(tmp_path, text, column):
    """Two columns that give the same canonical column (two aliases, or an alias and the
    canonical name itself), and an extra column named like one of the output, are a
    PointListError naming the column, not a polars DuplicateError from inside."""
    with pytest.raises(PointListError) as ei:
        read_point_list(write(tmp_path, text))
    assert ei.value.column == column


@pytest.mark.parametrize("encoding, words", [("ascii", "not ascii text"),
                                             ("no-such-codec", "unknown encoding")])
def test_a_wrong_explicit_encoding_is_a_point_list_error(tmp_path, encoding, words):
    """An ``encoding=`` the file is not in, or an unknown codec, is a PointListError (with
    the row of the first byte that does not decode), not UnicodeDecodeError or LookupError."""
    p = write(tmp_path, "ioa,unit\n1,°C\n")
    with pytest.raises(PointListError, match=words):
        read_point_list(p, encoding=encoding)


@pytest.mark.parametrize("text, column", [
    ("ioa,raw_min,raw_max,eng_min,eng_max\n1,5,5,0,100\n", "raw_max"),     # zero raw span
    ("ioa,scale\n1,inf\n", "scale"),
    ("ioa,scale\n1,nan\n", "scale"),
    ("ioa,offset\n1,1e400\n", "offset"),
    ("ioa,min\n1,-inf\n", "min"),
])
def test_a_scaling_that_is_not_finite_is_refused(tmp_path, text, column):
    """Scale, offset and limits are finite numbers, and a raw range has a span: inf, nan,
    1e400 or raw_min == raw_max is a PointListError, not a list whose every eng_value of the
    point is silently inf or nan."""
    with pytest.raises(PointListError, match="not finite|not a finite number") as ei:
        read_point_list(write(tmp_path, text))
    assert ei.value.column == column and ei.value.row == 1


@pytest.mark.parametrize("sheet", [-1, True, 1.0])
def test_a_sheet_that_is_no_name_nor_index_is_a_point_list_error(tmp_path, sheet):
    """``sheet`` is a name or an index >= 0: -1 would be polars' "every sheet" (a dict of
    frames, then an AttributeError), not a PointListError."""
    p = write_xlsx(tmp_path / "p.xlsx", {"Points": [["IOA"], [1]]})
    with pytest.raises(PointListError, match="a sheet name or an index >= 0"):
        read_point_list(p, sheet=sheet)


def test_a_list_column_in_a_dataframe_or_hook_rows_is_a_point_list_error():
    """A column of lists or structs (a DataFrame's, a hook's rows with a list value) is a
    PointListError naming the column, not polars' InvalidOperationError from a cast."""
    for df in (pl.DataFrame({"ioa": [1, 2], "tags": [["a"], ["b", "c"]]}),
               pl.DataFrame({"ioa": [1, 2], "tags": [{"a": 1}, {"a": 2}]})):
        with pytest.raises(PointListError) as ei:
            read_point_list(df)
        assert ei.value.column == "tags"


@pytest.mark.parametrize("station", [-1, 2**32, True, 1.5, "0"])
def test_a_station_argument_out_of_range_is_a_point_list_error(tmp_path, station):
    """``station=`` (import_points(station=...)) is a station index 0..2**32-1 or None; any
    other is a PointListError, not polars' InvalidOperationError from a strict cast."""
    with pytest.raises(PointListError, match="a station index"):
        read_point_list(write(tmp_path, "ioa\n1\n"), station=station)
    assert read_point_list(write(tmp_path, "ioa\n1\n"), station=2**32 - 1)["station"][0] == 2**32 - 1


@pytest.mark.parametrize("typed", [False, True])
@pytest.mark.parametrize("column", ["value", "quality", "recv_time", "status", "age", "iv",
                                    "_live"])
def test_a_list_column_named_like_a_live_one_is_shown_beside_it(tmp_path, column, typed):
    """An extra column named like a column of the live or parameter table (a "value" column
    of initial values, as the simulator's lists have) imports as it is, and the parameter
    table (Master.parameters, export, the TUI) shows it as ``list_<name>`` beside the live
    one: neither a polars error at every call nor the list's column joined over."""
    cat = Catalog()
    kind = ",type" if typed else ""
    cat.load(write(tmp_path, f"ioa,name{kind},{column}\n100,I{',analog' if typed else ''},x\n"))
    assert cat.table()[column].to_list() == ["x"]           # as imported
    table = cat.parameters(live({100: 10.0}).points())
    assert table[f"list_{column}"].to_list() == ["x"]
    assert table["value"].to_list() == [10.0] and table["status"].to_list() == ["ok"]


def test_a_list_column_named_like_the_renamed_one_keeps_both():
    """``list_<name>`` already taken by the list itself: the renamed column takes a longer
    name, and both show."""
    cat = Catalog()
    cat.load(pl.DataFrame({"ioa": ["100"], "value": ["x"], "list_value": ["y"]}))
    table = cat.parameters(live({100: 10.0}).points())
    assert table["list_list_value"].to_list() == ["x"] and table["list_value"].to_list() == ["y"]


# ---- read as written, or refused ----------------------------------------------------------

def uncomputed_xlsx(path, keep_placeholder):
    """A sheet whose formulas were never calculated: xlsxwriter's placeholder ``<v>0</v>`` (a
    workbook flagged for a full calculation on load), or no ``<v>`` at all (openpyxl's)."""
    wb = xlsxwriter.Workbook(path)
    ws = wb.add_worksheet("Points")
    ws.write_row(0, 0, ["ioa", "name", "scale", "max", "command_type"])
    ws.write_row(1, 0, [1, "a", 2, 5, "C_SE_NC_1"])
    ws.write_row(2, 0, [2, None, None, None, "C_SE_NC_1"])
    ws.write_formula(2, 1, '="b"&"c"')
    ws.write_formula(2, 3, "=D2*2")
    wb.close()
    if not keep_placeholder:
        rezip(path, lambda x: x.replace(b"</f><v>0</v>", b"</f>"))
    return path


def rezip(path, edit, member="xl/worksheets/sheet1.xml"):
    """The workbook at ``path`` with ``member``'s XML passed through ``edit``."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        parts = {i.filename: z.read(i) for i in z.infolist()}
    parts[member] = edit(parts[member])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("keep_placeholder", [True, False])
def test_an_uncomputed_formula_in_a_limit_is_refused_and_in_a_name_read_as_missing(
        tmp_path, keep_placeholder):
    """A formula the writing program never calculated was read as 0 (a max of 0, a scale of
    0): in a column that drives scaling, limits or addresses it is a PointListError naming the
    sheet cell, row and column; in a text column it is a missing value, not "0"."""
    p = uncomputed_xlsx(tmp_path / "p.xlsx", keep_placeholder)
    with pytest.raises(PointListError, match="cell D3: a formula") as ei:
        read_point_list(p)
    assert ei.value.row == 2 and ei.value.column == "max"
    wb = xlsxwriter.Workbook(tmp_path / "q.xlsx")
    ws = wb.add_worksheet()
    ws.write_row(0, 0, ["ioa", "name", "scale"])
    ws.write_row(1, 0, [1, None, None])
    ws.write_formula(1, 1, '="b"&"c"')
    ws.write_formula(1, 2, "=1/4", None, 0.25)          # a computed value: read as it is
    wb.close()
    df = read_point_list(tmp_path / "q.xlsx")
    assert df["name"].to_list() == [None] and df["scale"].to_list() == [0.25]


def test_a_windows_1252_list_reads_as_written(tmp_path):
    """Not UTF-8: Windows-1252 (a dash, the euro sign, per mille, smart quotes are its bytes
    0x80..0x9F), not latin-1's control characters; a byte 1252 leaves undefined says the
    file is in another code page: refused, naming the row, not guessed."""
    p = write(tmp_path, "ioa,name,unit\n1,Pump – 1 “main”,‰\n2,Tariff,€/MWh\n", encoding="cp1252")
    df = read_point_list(p)
    assert df["name"].to_list() == ["Pump – 1 “main”", "Tariff"]
    assert df["unit"].to_list() == ["‰", "€/MWh"]
    p.write_bytes(b"ioa,name\n1,a\n2,\x8d\n")
    with pytest.raises(PointListError, match="encoding=") as ei:
        read_point_list(p)
    assert ei.value.row == 2
    assert read_point_list(p, encoding="latin-1")["name"][1] == "\x8d"


@pytest.mark.parametrize("xlsx", [False, True])
@pytest.mark.parametrize("header, column", [(["ioa", "name", "ioa"], "ioa"),
                                            (["ioa", "note", "note"], "note")])
def test_a_header_written_twice_is_refused(tmp_path, xlsx, header, column):
    """Two columns of one header were renamed (ioa_duplicated_0, ioa_1) and one of them
    silently ignored or kept under a name nobody wrote: a PointListError naming the header.
    Columns without a header are no duplicates of each other."""
    rows = [header, ["1", "a", "2"]]
    p = (write_xlsx(tmp_path / "p.xlsx", {"Points": rows}) if xlsx
         else write(tmp_path, "".join(",".join(r) + "\n" for r in rows)))
    with pytest.raises(PointListError, match="twice") as ei:
        read_point_list(p)
    assert ei.value.column == column
    assert read_point_list(write(tmp_path, "ioa,,\n1,,\n", name="q.csv"))["ioa"].to_list() == [1]


def test_a_min_above_max_is_refused(tmp_path):
    """A command row whose min is above its max would refuse every value: a PointListError
    naming the row, the min and the max, at import."""
    p = write(tmp_path, "ioa,command_type,min,max\n1,C_SE_NC_1,0,5\n2,C_SE_NC_1,10,5\n")
    with pytest.raises(PointListError, match="min 10 above max 5") as ei:
        read_point_list(p)
    assert ei.value.row == 2 and ei.value.column == "min"


ROWS = [["ioa", "name", "scale", "max"], [1, "a", 2, 5], [2, 7, 3, 6]]


@pytest.mark.parametrize("cell", [b'<c r="C3" t="e"><f>1/0</f><v>#DIV/0!</v></c>',
                                  b'<c r="C3" t="e"><v>#REF!</v></c>'])
def test_an_error_value_in_a_scaling_column_is_refused(tmp_path, cell):
    """An error cell (#DIV/0!, #REF!: computed or pasted as a value) was read as empty: a
    scale of 1, a missing limit. Refused naming the cell and its error in a column that drives
    addresses, scaling or limits; in a text column it is a missing value."""
    p = rezip(write_xlsx(tmp_path / "p.xlsx", {"Points": ROWS}),
              lambda x: x.replace(b'<c r="C3"><v>3</v></c>', cell))
    with pytest.raises(PointListError, match="cell C3: the error value #") as ei:
        read_point_list(p)
    assert ei.value.row == 2 and ei.value.column == "scale"
    q = rezip(write_xlsx(tmp_path / "q.xlsx", {"Points": ROWS}),
              lambda x: x.replace(b'<c r="B3"><v>7</v></c>', b'<c r="B3" t="e"><v>#N/A</v></c>'))
    assert read_point_list(q)["name"].to_list() == ["a", None]


def prefixed(xml):
    """The sheet as some generators write it: every element with an x: prefix."""
    xml = xml.replace(b'xmlns="http://schemas', b'xmlns:x="http://schemas')
    return re.sub(rb"<(/?)(?=[a-zA-Z])", rb"<\1x:", xml)


@pytest.mark.parametrize("edit", [prefixed, lambda x: x.replace(b"<c r=", b"<c\n r="),
                                  lambda x: x.replace(b"</f></c>", b"</f><v></v></c>")],
                         ids=["x-prefix", "newline", "empty-v"])
def test_an_uncomputed_formula_is_found_however_the_xml_is_spelled(tmp_path, edit):
    """A namespace prefix (<x:c>, <x:f>), a line break inside a tag or an empty <v></v>
    (openpyxl's) hid an uncomputed formula from the scan, and the max was read as missing:
    no limit."""
    p = rezip(write_xlsx(tmp_path / "p.xlsx", {"Points": ROWS}),
              lambda x: edit(x.replace(b'<c r="D3"><v>6</v></c>', b'<c r="D3"><f>D2+1</f></c>')))
    with pytest.raises(PointListError, match="cell D3: a formula") as ei:
        read_point_list(p)
    assert ei.value.column == "max"


@pytest.mark.parametrize("member", ["xl/worksheets/sheet1.xml", "xl/worksheets/sheet2.xml"])
def test_a_workbook_that_inflates_is_scanned_in_bounded_memory(tmp_path, member):
    """64 MiB of sheet XML from a small file (a sheet padded, in the one read or in another):
    the scan read every sheet whole, as bytes, and wrote the workbook again in memory."""
    import tracemalloc
    p = write_xlsx(tmp_path / "p.xlsx", {"Points": ROWS, "Other": [["x"]]})
    rezip(p, lambda x: x.replace(b"<sheetData>", b"<sheetData>" + b" " * (64 << 20)), member)
    tracemalloc.start()
    try:
        assert read_point_list(p)["ioa"].to_list() == [1, 2]
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


def test_a_csv_that_is_utf8_in_part_is_refused(tmp_path):
    """A UTF-8 BOM, or UTF-8 characters, in a file that is not UTF-8 throughout (rows pasted
    from two sources): read as Windows-1252 it gave a header "ï»¿name" (the names lost) or
    units "Â°C"; refused, naming the row; encoding= reads it as the caller says."""
    p = write(tmp_path, "")
    p.write_bytes(b"\xef\xbb\xbfname,ioa\nPump \x96 1,1\n")
    with pytest.raises(PointListError, match="UTF-8") as ei:
        read_point_list(p)
    assert ei.value.row == 1
    p.write_bytes("ioa,name,unit\n1,a,°C\n".encode() + b"2,caf\xe9,V\n")
    with pytest.raises(PointListError, match="UTF-8") as ei:
        read_point_list(p)
    assert ei.value.row == 2
    assert read_point_list(p, encoding="cp1252")["unit"].to_list() == ["Â°C", "V"]
