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


def test_reader_take_of_a_small_batch(benchmark):
    """What an events() reader's batch of 40 rows costs to hand over (a copy out of the
    ring), against a numpy copy of 40 rows into an array that exists already."""
    from iec104._store import EventRing
    ring = EventRing(1000)
    ring.append(POINTS[:100])
    benchmark.group = "reader take of 40 rows"
    assert len(benchmark(ring.slice, 10, 50)) == 40


def test_numpy_copy_of_40_rows(benchmark):
    dst = np.empty(40, POINT_DTYPE)
    benchmark.group = "reader take of 40 rows"
    benchmark(np.copyto, dst, POINTS[10:50])
