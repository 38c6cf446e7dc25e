"""Decoder behaviour beyond the corpus: streaming, malformed input, field sizes, time zones."""
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import iec104
from iec104 import Decoder, FrameStatus, decode, decode_all, decode_frames
from iec104 import types as T
from iec104._codec import struct_sizes

from conformance import frames

CORPUS = b"".join(bytes.fromhex(f["hex"]) for f in frames())
N_OBJECTS = sum(len(f.get("objects", [])) for f in frames())
FLOAT_APDU = bytes.fromhex("681a020002000d02030001000a0000cdcc8c3f000b0000000020c180")


def apdu(asdu: bytes, ns=0, nr=0) -> bytes:
    return bytes([0x68, len(asdu) + 4]) + (ns << 1).to_bytes(2, "little") + \
        (nr << 1).to_bytes(2, "little") + asdu


def test_packed_structs_match_the_dtypes():
    assert struct_sizes() == (T.POINT_DTYPE.itemsize, T.FRAME_DTYPE.itemsize)


def test_cython_enums_mirror_the_python_enums():
    pxd = (Path(__file__).parents[1] / "ext" / "apdu.pxd").read_text()
    consts = {m[0]: int(m[1], 0) for m in re.findall(r"^\s+(\w+) = (0x[0-9A-F]+|\d+)$", pxd, re.M)}
    for e in T.FrameStatus:
        assert consts["ST_" + e.name] == e.value
    for e in T.UFunction:
        assert consts["U_" + e.name] == e.value
    for e in T.FrameFormat:
        assert consts["FORMAT_" + e.name] == e.value
    for e in T.Flag:
        assert consts["FLAG_" + e.name] == e.value
    for e in T.TimeFlag:
        assert consts["TF_" + e.name] == e.value


def test_float_frame_decodes_both_objects():
    pts = decode(FLOAT_APDU)
    assert list(pts["ioa"]) == [10, 11]
    assert pts["value"][0] == pytest.approx(1.1)
    assert pts["value"][1] == -10.0 and pts["quality"][1] == 0x80
    assert (pts["time"] == T.NO_TIME).all() and (pts["extra"] == -1).all()


def test_streaming_decoder_leaves_partial_apdu_for_the_next_call():
    d = Decoder()
    for cut in range(1, len(CORPUS), 97):       # split the stream everywhere on a stride
        head = CORPUS[:cut]
        used = d.feed(head)
        pts1 = d.points.copy()
        nf1 = d.n_frames
        assert used <= cut
        d.feed(CORPUS[used:])
        assert nf1 + d.n_frames == len(frames())
        assert len(pts1) + len(d.points) == N_OBJECTS
    assert not (decode_frames(CORPUS)["status"]).any()


def test_streaming_decoder_grows_past_its_capacity():
    d = Decoder(capacity=16)
    used = d.feed(FLOAT_APDU * 1000)
    assert used == len(FLOAT_APDU) * 1000
    assert len(d.points) == 2000 and len(d.frames) == 1000
    assert list(d.frames["first_point"][:3]) == [0, 2, 4]
    assert list(d.frames["offset"][:3]) == [0, len(FLOAT_APDU), 2 * len(FLOAT_APDU)]


def test_station_and_receive_time_are_stamped():
    pts = decode(FLOAT_APDU, station=7, recv_ns=123)
    assert (pts["station"] == 7).all() and (pts["recv_ns"] == 123).all()


def test_garbage_before_a_frame_is_a_bad_start_then_decoding_resumes():
    fr, pts = decode_all(b"\x00\x01garbage" + FLOAT_APDU)
    assert list(fr["status"]) == [FrameStatus.BAD_START, FrameStatus.OK]
    assert fr[0]["length"] == 9 and fr[1]["offset"] == 9
    assert len(pts) == 2


def test_bad_length_octet_is_reported_and_skipped():
    fr, pts = decode_all(b"\x68\x02\x00" + FLOAT_APDU)
    assert fr[0]["status"] == FrameStatus.BAD_LENGTH
    assert fr[-1]["status"] == FrameStatus.OK and len(pts) == 2


def test_vsq_count_that_does_not_fit_the_length_gives_no_points():
    bad = bytearray(FLOAT_APDU)
    bad[7] = 0x03                               # VSQ says 3 objects, 2 are there
    fr, pts = decode_all(bytes(bad) + FLOAT_APDU)
    assert list(fr["status"]) == [FrameStatus.LENGTH_MISMATCH, FrameStatus.OK]
    assert fr[0]["ns"] == 1 and len(pts) == 2   # sequence number still known for the link


def test_unknown_type_id_keeps_the_header_and_skips_the_objects():
    fr, pts = decode_all(apdu(bytes([0x16, 0x01, 0x03, 0x00, 0x05, 0x00, 1, 0, 0, 9])))
    assert fr[0]["status"] == FrameStatus.UNKNOWN_TYPE
    assert (fr[0]["type_id"], fr[0]["ca"], fr[0]["cot"]) == (0x16, 5, 3)
    assert len(pts) == 0


def test_empty_and_short_asdus_are_errors_not_crashes():
    fr, _ = decode_all(apdu(bytes([13, 0x00, 3, 0, 1, 0])) + apdu(bytes([13, 1])))
    assert list(fr["status"]) == [FrameStatus.EMPTY, FrameStatus.SHORT_ASDU]


def test_u_frame_with_two_functions_is_bad_control():
    fr, _ = decode_all(bytes([0x68, 4, 0x0F, 0, 0, 0]))
    assert fr[0]["status"] == FrameStatus.BAD_CONTROL


@pytest.mark.parametrize("control", ["05000200", "81000200", "01000300", "01010200"])
def test_s_frame_with_a_reserved_bit_set_is_bad_control(control):
    # 5.1: an S-format control field is 01 00 then N(R) << 1; every other bit is reserved (0)
    fr, _ = decode_all(bytes.fromhex("6804" + control) + bytes.fromhex("680401000200"))
    assert list(fr["status"]) == [FrameStatus.BAD_CONTROL, FrameStatus.OK]


@pytest.mark.parametrize("control", ["07010000", "07000100", "07000001", "03000000"])
def test_u_frame_with_a_reserved_bit_set_is_bad_control(control):
    fr, _ = decode_all(bytes.fromhex("6804" + control))
    assert fr[0]["status"] == FrameStatus.BAD_CONTROL


def test_step_position_transient_comes_from_the_vti_not_the_qds_reserved_bit():
    # M_ST_NA_1, two objects: VTI 5 with QDS 0x02 (reserved, set by a sloppy sender), then
    # VTI 0x85 (T=1, 5) with QDS IV
    _, pts = decode_all(apdu(bytes([5, 2, 3, 0, 1, 0, 1, 0, 0, 0x05, 0x02, 2, 0, 0, 0x85, 0x80])))
    assert pts["value"].tolist() == [5, 5]
    assert pts["quality"].tolist() == [0, T.Quality.IV | T.Quality.TRANSIENT]


def test_truncated_tail_of_a_finite_buffer():
    fr, pts = decode_all(FLOAT_APDU + FLOAT_APDU[:10])
    assert list(fr["status"]) == [FrameStatus.OK, FrameStatus.TRUNCATED]
    assert len(pts) == 2


def test_decoder_counts_bad_frames_by_status():
    d = Decoder()
    d.feed(b"xx" + FLOAT_APDU + b"\x68\x01" + FLOAT_APDU)
    assert d.bad_frames == 2
    assert d.status_counts[FrameStatus.BAD_START] == 1
    assert d.status_counts[FrameStatus.BAD_LENGTH] == 1


@pytest.mark.parametrize("cot_size,ca_size,ioa_size", [(1, 1, 1), (1, 2, 2), (2, 1, 3), (2, 2, 2)])
def test_non_standard_field_sizes(cot_size, ca_size, ioa_size):
    head = bytes([13, 0x02, 0x03]) + (b"\x09" if cot_size == 2 else b"") + \
        (0x0102 if ca_size == 2 else 0x02).to_bytes(ca_size, "little")
    objs = b"".join(ioa.to_bytes(ioa_size, "little") + np.float32(v).tobytes() + b"\x00"
                    for ioa, v in ((5, 1.5), (6, -2.0)))
    pts = decode(apdu(head + objs), cot_size=cot_size, ca_size=ca_size, ioa_size=ioa_size)
    assert list(pts["ioa"]) == [5, 6] and list(pts["value"]) == [1.5, -2.0]
    assert (pts["ca"] == (0x0102 if ca_size == 2 else 0x02)).all()
    assert (pts["originator"] == (9 if cot_size == 2 else 0)).all()


def test_invalid_field_sizes_are_rejected():
    with pytest.raises(ValueError, match="IOA"):
        Decoder(ioa_size=4)


CP56_APDU = apdu(bytes.fromhex("24 01 0300 0100 0a0000 0000803f 00 393011 0917 0b1a".replace(" ", "")))


def test_cp56_in_a_local_time_zone_is_converted_to_utc():
    utc = decode(CP56_APDU)[0]["time"]
    berlin = decode(CP56_APDU, tz="Europe/Berlin")[0]["time"]
    assert utc - berlin == 3600_000             # 09:17 CET is 08:17 UTC in November
    summer = bytearray(CP56_APDU)
    summer[-4] |= 0x80                          # SU bit: the RTU says it is summer time
    assert utc - decode(bytes(summer), tz="Europe/Berlin")[0]["time"] == 7200_000
    assert decode(bytes(summer))[0]["time_flags"] & T.TimeFlag.SU


def test_cp56_year_is_taken_in_2000_to_2099_and_bad_dates_are_invalid():
    p = decode(CP56_APDU)[0]
    assert dt.datetime.fromtimestamp(p["time"] / 1000, dt.timezone.utc).year == 2026
    bad = bytearray(CP56_APDU)
    bad[-2] = 0                                 # month 0
    q = decode(bytes(bad))[0]
    assert q["time"] == T.NO_TIME and q["time_flags"] & T.TimeFlag.IV


def test_cp24_is_resolved_against_the_receive_time():
    cp24 = apdu(bytes.fromhex("0e 01 0300 0100 0a0000 0000803f 00 393011".replace(" ", "")))
    recv = dt.datetime(2026, 11, 23, 9, 20, tzinfo=dt.timezone.utc)   # 3 min after the tag
    p = decode(cp24, recv_ns=int(recv.timestamp() * 1e9))[0]
    assert p["time"] == int(dt.datetime(2026, 11, 23, 9, 17, 12, 345000,
                                        tzinfo=dt.timezone.utc).timestamp() * 1000)
    later = dt.datetime(2026, 11, 23, 10, 5, tzinfo=dt.timezone.utc)  # 10:17 is ahead: 09:17
    assert decode(cp24, recv_ns=int(later.timestamp() * 1e9))[0]["time"] == p["time"]
    next_hour = dt.datetime(2026, 11, 23, 10, 18, tzinfo=dt.timezone.utc)
    assert decode(cp24, recv_ns=int(next_hour.timestamp() * 1e9))[0]["time"] == p["time"] + 3600_000
    late = dt.datetime(2026, 11, 23, 9, 10, tzinfo=dt.timezone.utc)   # received before 9:17
    r = decode(cp24, recv_ns=int(late.timestamp() * 1e9))[0]
    assert r["time"] == p["time"] - 3600_000    # the tag lies in the previous hour


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_and_account_for_every_octet(data):
    fr, pts = decode_all(data)
    assert fr["length"].sum() == len(data)             # every octet is in some record
    assert fr["n_points"].sum() == len(pts)
    assert not fr["n_points"][fr["status"] != 0].any()  # objects only from good frames


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_corpus_frames_never_crash(data):
    buf = bytearray(CORPUS[:2000])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    d = Decoder(capacity=8)
    used = d.feed(bytes(buf))
    assert 0 <= used <= len(buf)
    ok = d.frames[d.frames["status"] == 0]
    assert (ok["n_points"] <= 127).all()


def test_public_names():
    for name in ("decode", "decode_frames", "POINT_DTYPE", "FRAME_DTYPE", "TypeID"):
        assert hasattr(iec104, name)
    assert set(T.POINT_DTYPE.names) >= {"station", "ca", "ioa", "type_id", "cot", "flags",
                                        "originator", "value", "quality", "time", "time_flags"}


def test_long_garbage_is_split_into_records_that_account_for_every_octet():
    fr, _ = decode_all(b"x" * 200_000 + bytes([0x68, 4, 0x07, 0, 0, 0]))
    assert list(fr["status"][:-1]) == [FrameStatus.BAD_START] * 4
    assert fr["length"].sum() == 200_006 and fr[-1]["u_function"] == 0x07
