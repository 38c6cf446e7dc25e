"""Store update (one Cython call per batch) against a numpy copy of the same rows, same run."""
import numpy as np

from iec104 import NO_TIME, POINT_DTYPE
from iec104._store import LatestTable

N = 1_000_000


def batch():
    p = np.zeros(N, POINT_DTYPE)
    p["type_id"], p["ca"], p["cot"], p["time"] = 13, 1, 3, NO_TIME
    p["station"] = np.arange(N) % 100
    p["ioa"] = np.arange(N) // 100 + 1
    p["value"] = np.random.default_rng(0).normal(size=N)
    return p


POINTS = batch()


def test_update_existing_keys(benchmark):
    t = LatestTable(capacity=N)
    t.update(POINTS)
    benchmark.group = "store update 1M rows"
    benchmark(t.update, POINTS)
    benchmark.extra_info["rows_per_s"] = N / benchmark.stats["mean"]
    assert len(t) == N


def test_numpy_copy_of_the_batch(benchmark):
    dst = np.empty_like(POINTS)
    benchmark.group = "store update 1M rows"
    benchmark(np.copyto, dst, POINTS)


def test_points_frame_of_1m_rows(benchmark):
    from iec104.store import Store
    s = Store()
    s.update(POINTS)
    benchmark.group = "to polars"
    df = benchmark(s.points)
    assert len(df) == N
