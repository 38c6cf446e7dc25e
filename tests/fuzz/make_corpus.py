"""Write the seed corpus of fuzz_codec.py into tests/fuzz/corpus (deterministic; rerun after
changing the input format of fuzz_codec.py).

Seeds are the conformance frames (tests/data/conformance: lib60870-C captures and scapy-built
frames) with fuzz_codec.py's two header octets: octet 0 the field sizes and options, octet 1
the split seed. Besides single frames: runs of the captured monitor-direction stream (so that
the link accepts several I-frames in a row) and of the control direction for an outstation, the monitor objects re-encoded with every other
field size, and a few malformed streams.

Run: .venv/bin/python tests/fuzz/make_corpus.py
"""
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))

from iec104 import decode_all  # noqa: E402
from iec104._encode import encode_points  # noqa: E402

CORPUS = HERE / "corpus"
DATA = ROOT / "tests" / "data" / "conformance"
RENUMBER, STOPPED, LOSSLESS, OUTSTANDING = 0x10, 0x20, 0x40, 0x80
STARTDT_ACT = bytes([0x68, 4, 0x07, 0, 0, 0])
SIZES = [(c, a, i) for c in (2, 1) for a in (2, 1) for i in (3, 2, 1)]
MONITOR = set(range(1, 22)) | set(range(30, 41))


def frames(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def main():
    seeds = {}

    def add(head, payload, seed=0, outstation=False):
        data = bytes([head, (seed & 0x7F) | (0x80 if outstation else 0)]) + payload
        seeds[hashlib.sha1(data).hexdigest()[:16]] = data

    rows = frames("lib60870_capture.jsonl") + frames("scapy_built.jsonl")
    s2c = [bytes.fromhex(r["hex"]) for r in rows if r["dir"] == "s2c"]
    for i, f in enumerate(dict.fromkeys(bytes.fromhex(r["hex"]) for r in rows)):
        add(RENUMBER, f, i)
    stream = b"".join(s2c)
    for i in range(0, min(len(s2c), 120), 6):        # runs of the captured stream
        run = b"".join(s2c[i:i + 6])
        add(RENUMBER | (OUTSTANDING if i % 12 else 0), run, i)
        if i % 24 == 0:
            add(RENUMBER | LOSSLESS, run, i + 1)
    c2s = [bytes.fromhex(r["hex"]) for r in rows if r["dir"] == "c2s"]
    for i in range(0, min(len(c2s), 60), 5):          # what a master sends, to an outstation
        add(RENUMBER, STARTDT_ACT + b"".join(c2s[i:i + 5]), i, outstation=True)
    add(RENUMBER, b"".join(c2s[:40]), 1, outstation=True)
    add(RENUMBER | LOSSLESS, stream[:1500], 7)
    add(RENUMBER, stream[:1500], 8)
    add(STOPPED, s2c[0] + s2c[1], 9)
    add(0, stream[:300], 10)                           # as captured: sequence numbers as sent

    _, points = decode_all(stream)
    import numpy as np
    mon = points[np.isin(points["type_id"], list(MONITOR))]
    for k, (c, a, i) in enumerate(SIZES[1:], start=1):
        sub = mon[(mon["ca"] < 1 << (8 * a)) & (mon["ioa"] < 1 << (8 * i))]
        if not len(sub):
            continue
        data, _ = encode_points(sub[:40], cot_size=c, ca_size=a, ioa_size=i)
        add(RENUMBER | k, bytes(data)[:600], k)

    good = s2c[2] if len(s2c) > 2 else s2c[0]
    add(RENUMBER, b"\x00\x01" + good, 20)              # bad start, then a frame
    add(RENUMBER, b"\x68\x02\x00\x00" + good, 21)      # bad length
    add(RENUMBER, good + good[:len(good) // 2], 22)    # truncated
    add(RENUMBER, b"\x68\x04\x01\x00\x02\x00", 23)     # S-frame acknowledging an unsent frame

    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.iterdir():
        old.unlink()
    for name, data in seeds.items():
        (CORPUS / name).write_bytes(data)
    print(f"{len(seeds)} seeds, {sum(map(len, seeds.values()))} octets in {CORPUS}")


if __name__ == "__main__":
    main()
