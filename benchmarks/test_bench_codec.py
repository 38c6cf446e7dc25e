"""Decoder throughput against a numpy copy of the same output (the memory limit), same run.

Run: make bench   (or .venv/bin/python -m pytest benchmarks/test_bench_codec.py --benchmark-only)
"""
import numpy as np
import pytest

from iec104 import Decoder, decode

from frames import m_me_nc, m_me_tf, mix

N = 600_000
BUFFERS = {"M_ME_NC_1": m_me_nc(N), "M_ME_TF_1": m_me_tf(N), "mix": mix(N)}


@pytest.mark.parametrize("kind", BUFFERS)
def test_decode(benchmark, kind):
    data = BUFFERS[kind]
    d = Decoder(capacity=len(data))
    benchmark.group = f"decode {kind}"
    used = benchmark(d.feed, data, 0)
    assert used == len(data)
    benchmark.extra_info["objects"] = len(d.points)
    benchmark.extra_info["objects_per_s"] = len(d.points) / benchmark.stats["mean"]


@pytest.mark.parametrize("kind", BUFFERS)
def test_numpy_copy_of_the_output(benchmark, kind):
    out = decode(BUFFERS[kind]).view(np.uint8)   # raw bytes: the memory limit
    dst = np.empty_like(out)
    benchmark.group = f"decode {kind}"
    benchmark(np.copyto, dst, out)
    benchmark.extra_info["objects_per_s"] = len(out) / 44 / benchmark.stats["mean"]


ONE = m_me_nc(2, per_frame=2)     # one APDU of 2 objects: what decode() costs per small message


def test_decode_of_one_apdu(benchmark):
    benchmark.group = "decode one APDU"
    assert len(benchmark(decode, ONE)) == len(decode(ONE))


def test_reused_decoder_on_one_apdu(benchmark):
    d = Decoder(capacity=len(ONE))
    benchmark.group = "decode one APDU"
    benchmark(d.feed, ONE, 0)
