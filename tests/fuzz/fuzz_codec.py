"""Coverage-guided fuzzing of the Cython decoder and encoder with atheris (libFuzzer).

Run: make fuzz   (or .venv/bin/python tests/fuzz/fuzz_codec.py -max_total_time=60)

The decoder must never crash or read out of bounds on any input: every octet is accounted
for by a frame record, objects come only from frames with status OK, and whatever decodes
re-encodes (batch encoder) to frames that decode to the same rows.
"""
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np
    from iec104 import Decoder, decode_all
    from iec104._encode import encode_points

MONITOR = set(range(1, 22)) | set(range(30, 41))


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    sizes = dict(cot_size=fdp.ConsumeIntInRange(1, 2), ca_size=fdp.ConsumeIntInRange(1, 2),
                 ioa_size=fdp.ConsumeIntInRange(1, 3))
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    frames, points = decode_all(payload, **sizes)
    assert int(frames["length"].sum()) == len(payload), "octets not accounted for"
    assert int(frames["n_points"].sum()) == len(points)
    bad = frames["status"] != 0
    assert not frames["n_points"][bad].any()
    # streaming in two pieces gives the same rows
    d = Decoder(capacity=8, **sizes)
    cut = len(payload) // 2
    used = d.feed(payload[:cut], 0)
    first = d.points.copy()
    d.feed(payload[used:], 0, final=True)
    assert len(first) + len(d.points) == len(points)
    mon = points[np.isin(points["type_id"], list(MONITOR)) & (points["type_id"] != 125)]
    if len(mon):
        data2, _ = encode_points(mon, **sizes)
        back = decode_all(bytes(data2), **sizes)[1]
        assert len(back) == len(mon)
        np.testing.assert_array_equal(back["ioa"], mon["ioa"])


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
