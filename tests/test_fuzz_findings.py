"""What tests/fuzz/fuzz_codec.py found, as minimal reproducers (fixed: the decoder refuses the
frame with BAD_IOA, the table ignores rows whose IOA no field can carry).

1. An SQ=1 ASDU whose first IOA is the largest of its field (0xFF, 0xFFFF, 0xFFFFFF) decodes
   its next objects to IOAs past the field (256, 65536, 16777216): the decoder adds the
   index without wrapping or refusing the frame. The encoder refuses such rows
   (OverflowError), so decode -> encode does not round-trip.
2. The latest-value table keys an IOA by its low 24 bits (ext/store.pyx make_key), so a row
   with IOA 16777216, which (1) produces from the wire, overwrites the row of IOA 0 of the
   same CA and type family: IOA 0 then shows the other object's value.
"""
import struct

import numpy as np
import pytest

from iec104 import decode_all
from iec104._store import LatestTable
from iec104.types import FrameStatus, family_of

M_SP_NA_1, M_ME_NC_1 = 1, 13


def i_frame(asdu: bytes) -> bytes:
    return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu


@pytest.mark.parametrize("ioa_size", [1, 2, 3])
def test_an_sq_run_never_decodes_an_ioa_beyond_its_field(ioa_size):
    top = (1 << 8 * ioa_size) - 1
    # M_SP_NA_1, SQ=1 with 2 objects, COT 3, CA 1, first IOA = the field's largest
    frame = i_frame(bytes([M_SP_NA_1, 0x82, 3, 0, 1, 0]) + top.to_bytes(ioa_size, "little")
                    + b"\x01\x00")
    frames, points = decode_all(frame, ioa_size=ioa_size)
    assert (points["ioa"] <= top).all(), f"IOAs {points['ioa'].tolist()} in a {ioa_size}-octet field"


def test_a_row_past_24_bit_ioas_does_not_overwrite_ioa_0():
    def rows(first_ioa, values):
        sq = 0x80 | len(values)
        body = first_ioa.to_bytes(3, "little") + b"".join(struct.pack("<fB", v, 0) for v in values)
        return decode_all(i_frame(bytes([M_ME_NC_1, sq, 3, 0, 1, 0]) + body))

    table = LatestTable()
    table.update(rows(0, [1.0])[1])                       # IOA 0 = 1.0
    frames, wire = rows(0xFFFFFF, [2.0, 3.0])             # would be IOA 16777215 and "16777216"
    assert len(wire) == 0 and frames["status"].tolist() == [FrameStatus.BAD_IOA]
    forged = rows(0, [3.0])[1]                            # the same from Python: not stored
    forged["ioa"] = 0x1000000
    table.update(forged)
    cols = table.columns()
    assert len(table) == 1 and cols["ioa"].tolist() == [0] and cols["value"].tolist() == [1.0]
    assert table.lookup(0, 1, 0, family_of(M_ME_NC_1)) == 0
