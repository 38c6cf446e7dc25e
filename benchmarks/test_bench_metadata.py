"""Point lists at scale: a 100,000-row XLSX imported, validated and joined; a 1,000,000-row
join written to Parquet. Against reading the same XLSX with Polars alone, same run."""
import numpy as np
import polars as pl
import pytest
import xlsxwriter

from iec104 import NO_TIME, POINT_DTYPE
from iec104.export import write_table
from iec104.metadata import Catalog
from iec104.store import Store


@pytest.fixture(scope="module")
def xlsx(tmp_path_factory):
    path = tmp_path_factory.mktemp("x") / "points.xlsx"
    wb = xlsxwriter.Workbook(path, {"constant_memory": True})
    ws = wb.add_worksheet("Points")
    ws.write_row(0, 0, ["IOA", "Common Address", "Name", "Unit", "Type", "Scale", "Offset"])
    for i in range(100_000):
        ws.write_row(i + 1, 0, [i + 1, 1, f"point {i + 1}", "kV", "M_ME_NC_1", 0.1, 0])
    wb.close()
    return path


def store_of(n):
    s = Store(event_capacity=16)
    p = np.zeros(n, POINT_DTYPE)
    p["type_id"], p["ca"], p["cot"], p["time"] = 13, 1, 20, NO_TIME
    p["ioa"] = np.arange(n) + 1
    p["value"] = np.arange(n) * 0.5
    s.update(p)
    return s


def test_xlsx_100k_import_validate_join(benchmark, xlsx):
    points = store_of(100_000).points()

    def run():
        cat = Catalog()
        cat.load(xlsx)
        return cat.parameters(points)
    benchmark.group = "point list 100k XLSX"
    df = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(df) == 100_000 and (df["status"] == "ok").all()


def test_xlsx_100k_polars_read_alone(benchmark, xlsx):
    benchmark.group = "point list 100k XLSX"
    benchmark.pedantic(lambda: pl.read_excel(xlsx, engine="calamine"), rounds=3, iterations=1)


def test_join_and_write_1m_rows(benchmark, tmp_path):
    s = store_of(1_000_000)
    cat = Catalog()
    cat.load(pl.DataFrame({"ioa": [str(i) for i in range(1, 1_000_001)], "unit": ["A"] * 1_000_000}))

    def run():
        return write_table(cat.parameters(s.points()), tmp_path / "params.parquet")
    benchmark.group = "1M join + parquet"
    benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(pl.read_parquet(tmp_path / "params.parquet")) == 1_000_000
