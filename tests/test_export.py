"""Export: every format by extension, atomic, rotation."""
import datetime as dt
import os

import polars as pl
import pytest

from iec104.export import RotatingWriter, write_table

DF = pl.DataFrame({
    "ioa": [1, 2], "value": [1.5, None], "name": ["a", "b"],
    "time": pl.Series([dt.datetime(2026, 11, 24, 1, 2, 3), None]).dt.replace_time_zone("UTC"),
})


@pytest.mark.parametrize("ext,read", [(".parquet", pl.read_parquet), (".arrow", pl.read_ipc),
                                      (".csv", pl.read_csv), (".jsonl", pl.read_ndjson)])
def test_every_format_reads_back(tmp_path, ext, read):
    path = write_table(DF, tmp_path / f"t{ext}")
    back = read(path)
    assert back["ioa"].to_list() == [1, 2] and back["name"].to_list() == ["a", "b"]
    assert "2026-11-24" in str(back["time"][0])
    assert [p.name for p in tmp_path.iterdir()] == [f"t{ext}"]     # no temporary left


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match=".xls"):
        write_table(DF, tmp_path / "t.xls")


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = write_table(DF, tmp_path / "t.parquet")
    before = path.read_bytes()

    def boom(self, *a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        write_table(DF.head(1), path)
    assert path.read_bytes() == before and len(os.listdir(tmp_path)) == 1


def test_rotating_writer_writes_complete_files(tmp_path):
    w = RotatingWriter(tmp_path, prefix="ev", rotate_rows=3)
    for i in range(4):
        w.write(pl.DataFrame({"i": [2 * i, 2 * i + 1]}))
    w.close()
    files = sorted(tmp_path.glob("ev-*.parquet"))
    assert [len(pl.read_parquet(f)) for f in files] == [3, 3, 2]
    assert pl.concat([pl.read_parquet(f) for f in files])["i"].to_list() == list(range(8))


def test_a_failed_rotation_keeps_its_rows_and_names_are_the_writers_own(tmp_path, monkeypatch):
    """A file that could not be written (disk full) keeps its rows for the next write; two
    writers on one directory within one second make names of their own."""
    orig, failing = pl.DataFrame.write_parquet, [True]

    def write(self, *a, **k):
        if failing[0]:
            raise OSError(28, "No space left on device")
        return orig(self, *a, **k)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", write)
    monkeypatch.setattr("iec104.export.time.strftime", lambda fmt: "20261204T000000")
    a, b = (RotatingWriter(tmp_path, prefix="ev", rotate_rows=2) for _ in range(2))
    with pytest.raises(OSError):
        a.write(pl.DataFrame({"i": [0, 1]}))
    assert not os.listdir(tmp_path)
    failing[0] = False
    a.write(pl.DataFrame({"i": [2]}))
    b.write(pl.DataFrame({"i": [3, 4]}))
    a.close()
    assert len(a.files) == 2 and len(set(a.files + b.files)) == 3
    back = sorted(i for f in tmp_path.iterdir() for i in pl.read_parquet(f)["i"])
    assert back == [0, 1, 2, 3, 4]


def test_csv_text_cells_cannot_become_formulas(tmp_path):
    """A point name from the RTU's list starting with = + - @ tab or CR is a formula when the
    CSV is opened in a spreadsheet: such text cells get a leading single quote; numbers, and
    text that is a plain number, stay as they are; ``csv_safe=False`` writes them as is."""
    names = ["=1+1", "+cmd", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx", "ok", "-5"]
    df = pl.DataFrame({"name": names, "value": [-1.5] * len(names)})
    back = pl.read_csv(write_table(df, tmp_path / "t.csv"))
    assert back["name"].to_list() == ["'" + n for n in names[:6]] + ["ok", "-5"]
    assert back["value"].to_list() == [-1.5] * len(names)
    assert pl.read_csv(write_table(df, tmp_path / "u.csv", csv_safe=False))["name"].to_list() == names


def test_csv_safe_quotes_what_could_run_and_only_that(tmp_path):
    """A lone "-" or "+" (a unit or an empty description, as lists write them) is no formula:
    it stays; " =1" is one to a program that trims cells on import: quoted; a column name
    (a list's extra column, named by the list's author) is quoted like a cell; Parquet keeps
    every text as it is."""
    df = pl.DataFrame({"unit": ["-", "+", " =1", "\u00a0@x", " -5", "＝1"], "=cmd|'/C calc'!A0": [1] * 6})
    back = pl.read_csv(write_table(df, tmp_path / "t.csv"))
    assert back.columns == ["unit", "'=cmd|'/C calc'!A0"]
    assert back["unit"].to_list() == ["-", "+", "' =1", "'\u00a0@x", " -5", "＝1"]
    assert pl.read_parquet(write_table(df, tmp_path / "t.parquet")).equals(df)
