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
