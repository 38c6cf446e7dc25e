"""Capture decoding: `iec104 decode`'s reader against tshark on the same pcap file.

Builds a pcap of M_ME_NC_1 traffic (Ethernet/IPv4/TCP, port 2404, many APDUs per segment,
as a busy link looks), then times read_capture and `tshark -T fields -e iec60870_asdu.ioa`
(every IOA printed), both reading the whole file.

Run: .venv/bin/python benchmarks/bench_capture.py [--mb 50] [--json out.json]
"""
import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs  # noqa: E402
from frames import m_me_nc  # noqa: E402

from iec104.capture import read_capture  # noqa: E402


def build_pcap(path: Path, megabytes: int) -> int:
    """A pcap of 1400-octet TCP segments carrying whole M_ME_NC_1 APDUs; returns objects."""
    apdus = m_me_nc(30 * 5)                           # 5 APDUs of 30 objects = 1240 octets
    per_segment = 150
    n_segments = megabytes * 1_000_000 // (len(apdus) + 54)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq = 1000
    for i in range(n_segments):
        tcp = struct.pack(">HHIIBBHHH", 2404, 50000, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + apdus
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + tcp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        out += struct.pack("<IIII", 1_800_000_000 + i // 1000, i % 1000 * 1000, len(frame), len(frame))
        out += frame
        seq += len(apdus)
    path.write_bytes(out)
    return n_segments * per_segment


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--json")
    a = ap.parse_args()
    path = Path(tempfile.gettempdir()) / f"iec104-bench-{a.mb}mb.pcap"
    objects = build_pcap(path, a.mb)
    t0 = time.perf_counter()
    res = read_capture(path)
    ours = time.perf_counter() - t0
    assert len(res.points) == objects, (len(res.points), objects)
    row = {"machine": procs.machine(), "megabytes": a.mb, "objects": objects,
           "iec104_s": ours, "iec104_objects_per_s": objects / ours}
    if shutil.which("tshark"):
        t0 = time.perf_counter()
        out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "iec60870_asdu.ioa"],
                             capture_output=True, check=True).stdout
        row["tshark_s"] = time.perf_counter() - t0
        row["tshark_ioas"] = sum(len(line.split(b",")) for line in out.splitlines() if line)
        row["tshark_objects_per_s"] = objects / row["tshark_s"]
        row["speedup"] = row["tshark_s"] / ours
    print(f"machine: {row['machine']}")
    print(f"{a.mb} MB pcap, {objects:,} objects: iec104 {ours:.2f} s "
          f"({row['iec104_objects_per_s'] / 1e6:.2f} M objects/s)", end="")
    if "tshark_s" in row:
        print(f"; tshark {row['tshark_s']:.2f} s ({row['tshark_objects_per_s'] / 1e6:.3f} M/s, "
              f"{row['tshark_ioas']:,} IOAs printed): {row['speedup']:.0f}x")
    else:
        print("; tshark not installed (apt-get install tshark)")
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
