"""Batch encoding (the simulator's hot path) against a numpy copy of the rows, same run."""
import numpy as np

from iec104 import NO_TIME, POINT_DTYPE
from iec104._encode import encode_points

N = 600_000


def rows(type_id, scattered):
    p = np.zeros(N, POINT_DTYPE)
    p["type_id"], p["ca"], p["cot"], p["time"] = type_id, 1, 3, NO_TIME
    p["ioa"] = np.arange(N) * (3 if scattered else 1) + 1
    p["value"] = np.random.default_rng(0).normal(100, 10, N)
    if type_id == 36:
        p["time"] = 1795425432345
    return p


def test_encode_m_me_nc_1_sq0(benchmark):
    p = rows(13, True)
    benchmark.group = "encode"
    data, offsets = benchmark(encode_points, p)
    benchmark.extra_info["objects_per_s"] = N / benchmark.stats["mean"]


def test_encode_m_me_nc_1_sq1(benchmark):
    p = rows(13, False)
    benchmark.group = "encode"
    benchmark(encode_points, p)
    benchmark.extra_info["objects_per_s"] = N / benchmark.stats["mean"]


def test_encode_m_me_tf_1(benchmark):
    p = rows(36, True)
    benchmark.group = "encode"
    benchmark(encode_points, p)
    benchmark.extra_info["objects_per_s"] = N / benchmark.stats["mean"]


def test_numpy_copy_of_the_rows(benchmark):
    p = rows(13, True)
    dst = np.empty_like(p)
    benchmark.group = "encode"
    benchmark(np.copyto, dst, p)
