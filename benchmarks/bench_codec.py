"""Plain script: decode rates (objects/s) and their ratio to a numpy copy of the output.

Run: .venv/bin/python benchmarks/bench_codec.py [--json out.json]
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from frames import m_me_nc, m_me_tf, mix  # noqa: E402

from iec104 import Decoder, decode  # noqa: E402


def best_of(fn, repeat=7):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def scapy_rate(data: bytes, limit=2000) -> float:
    """Objects/s of scapy's pure-Python IEC 104 layer on the first ``limit`` APDUs."""
    from scapy.contrib.scada.iec104 import iec104_decode
    frames = []
    pos = 0
    while pos < len(data) and len(frames) < limit:
        n = data[pos + 1] + 2
        frames.append(data[pos:pos + n])
        pos += n
    objs = len(decode(b"".join(frames)))
    t = time.perf_counter()
    for f in frames:
        iec104_decode(f)
    return objs / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=3_000_000)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name, make in (("M_ME_NC_1", m_me_nc), ("M_ME_TF_1", m_me_tf), ("mix", mix)):
        data = make(args.objects)
        d = Decoder(capacity=len(data))
        t_dec = best_of(lambda: d.feed(data, 0))
        out = d.points.copy()
        raw = out.view(np.uint8)                # the memory limit: copy the output's bytes
        dst = np.empty_like(raw)
        t_copy = best_of(lambda: np.copyto(dst, raw))
        row = {"buffer": name, "objects": len(out), "MB": len(data) / 1e6,
               "decode_Mobj_s": len(out) / t_dec / 1e6, "copy_Mobj_s": len(out) / t_copy / 1e6,
               "ratio_to_copy": t_copy / t_dec}
        try:
            row["scapy_kobj_s"] = scapy_rate(data) / 1e3
            row["speedup_vs_scapy"] = row["decode_Mobj_s"] * 1e3 / row["scapy_kobj_s"]
        except Exception as e:  # scapy is a dev extra; its absence must not stop the run
            row["scapy_error"] = repr(e)
        rows.append(row)
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"{'buffer':10} {'objects':>9} {'decode Mobj/s':>14} {'copy Mobj/s':>12} {'ratio':>6} {'scapy kobj/s':>13} {'x scapy':>8}")
    for r in rows:
        print(f"{r['buffer']:10} {r['objects']:9d} {r['decode_Mobj_s']:14.1f} {r['copy_Mobj_s']:12.1f} "
              f"{r['ratio_to_copy']:6.2f} {r.get('scapy_kobj_s', float('nan')):13.1f} {r.get('speedup_vs_scapy', float('nan')):8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
