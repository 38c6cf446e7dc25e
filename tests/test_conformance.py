"""The decoder agrees with Wireshark on every field of every frame of the corpus."""
import datetime as dt

import pytest

from iec104 import FrameFormat, TypeID, decode_all
from iec104.types import NO_TIME, TimeFlag

from conformance import frames

CORPUS = frames()
U_NAMES = {"STARTDT_ACT": 0x07, "STARTDT_CON": 0x0B, "STOPDT_ACT": 0x13, "STOPDT_CON": 0x23,
           "TESTFR_ACT": 0x43, "TESTFR_CON": 0x83}
# where Wireshark's quality sub-fields sit in our quality octet
QUALITY_BITS = {"iv": 0x80, "nt": 0x40, "sb": 0x20, "bl": 0x10, "ov": 0x01}


def _id(f):
    return f"{f['dir']}-{f.get('type_name') or f.get('u_function') or f['frame']}-{f['hex'][:24]}"


@pytest.mark.parametrize("ref", CORPUS, ids=[_id(f) for f in CORPUS])
def test_decoder_agrees_with_wireshark(ref):
    fr, pts = decode_all(bytes.fromhex(ref["hex"]))
    assert len(fr) == 1 and fr[0]["status"] == 0
    f = fr[0]
    assert FrameFormat(f["format"]).name == ref["frame"]
    assert f["length"] == ref["len"]
    if ref["frame"] == "U":
        assert f["u_function"] == U_NAMES[ref["u_function"].upper()]
        return
    assert f["nr"] == ref["rx"]
    if ref["frame"] == "S":
        return
    assert f["ns"] == ref["tx"]
    assert f["type_id"] == ref["type_id"]
    assert f["sq"] == ref["sq"] and f["count"] == ref["num_objects"]
    assert f["cot"] == ref["cot"]
    assert f["negative"] == ref["negative"] and f["test"] == ref["test"]
    assert f["originator"] == ref["originator"] and f["ca"] == ref["common_address"]
    assert len(pts) == len(ref["objects"])
    for p, o in zip(pts, ref["objects"]):
        _check_object(p, o, ref["type_id"])


def _check_object(p, o, type_id):
    assert p["ioa"] == o["ioa"]
    assert p["type_id"] == type_id
    q = int(p["quality"])
    for group in ("siq", "diq", "qds"):
        for bit, mask in QUALITY_BITS.items():
            if f"{group}.{bit}" in o:
                assert bool(q & mask) == bool(o[f"{group}.{bit}"]), f"{group}.{bit}"
    checks = {
        "siq.spi": lambda v: p["value"] == v,
        "diq.dpi": lambda v: p["value"] == v,
        "vti.v": lambda v: p["value"] == v,
        "vti.t": lambda v: bool(q & 0x02) == bool(v),
        # Wireshark 4.0 shows the BSI octets reversed; the value is little-endian as sent
        "bitstring": lambda v: p["value"] == int.from_bytes(v.to_bytes(4, "little"), "big"),
        "normval": lambda v: p["value"] == pytest.approx(v, abs=1e-5),
        "scalval": lambda v: p["value"] == v,
        "float": lambda v: p["value"] == pytest.approx(v, rel=1e-5, abs=1e-5),
        "bcr.count": lambda v: p["value"] == v,
        "bcr.sq": lambda v: q & 0x1F == v,
        "bcr.cy": lambda v: bool(q & 0x20) == bool(v),
        "bcr.ca": lambda v: bool(q & 0x40) == bool(v),
        "bcr.iv": lambda v: bool(q & 0x80) == bool(v),
        "sco.on": lambda v: p["value"] == v,
        "dco.on": lambda v: p["value"] == v,
        "rco.up": lambda v: p["value"] == v,
        "sco.qu": lambda v: (q >> 2) & 0x1F == v,
        "dco.qu": lambda v: (q >> 2) & 0x1F == v,
        "rco.qu": lambda v: (q >> 2) & 0x1F == v,
        "sco.se": lambda v: q >> 7 == v,
        "dco.se": lambda v: q >> 7 == v,
        "rco.se": lambda v: q >> 7 == v,
        "qos.ql": lambda v: q & 0x7F == v,
        "qos.se": lambda v: q >> 7 == v,
        "qpm": lambda v: q == v,
        "qoi": lambda v: p["value"] == v,
        "qcc": lambda v: p["value"] == v,
        "qrp": lambda v: p["value"] == v,
        "coi": lambda v: p["value"] == v,
    }
    for key, check in checks.items():
        if key in o:
            assert check(o[key]), f"{key}: {o[key]} vs value {p['value']} quality {q:#x}"
    if "cp56time.ms" in o:
        _check_cp56(p, o)
    elif "cp24time.ms" in o:
        assert p["time_flags"] & TimeFlag.CP24
        assert int(p["time"]) % 60000 == o["cp24time.ms"]
        assert (int(p["time"]) // 60000) % 60 == o["cp24time.min"]
        assert bool(p["time_flags"] & TimeFlag.IV) == bool(o["cp24time.iv"])


def _check_cp56(p, o):
    assert p["time"] != NO_TIME
    t = dt.datetime.fromtimestamp(int(p["time"]) / 1000, dt.timezone.utc)
    assert t.second * 1000 + t.microsecond // 1000 == o["cp56time.ms"]
    assert (t.minute, t.hour, t.day, t.month, t.year - 2000) == (
        o["cp56time.min"], o["cp56time.hour"], o["cp56time.day"], o["cp56time.month"],
        o["cp56time.year"])
    assert bool(p["time_flags"] & TimeFlag.IV) == bool(o["cp56time.iv"])
    assert bool(p["time_flags"] & TimeFlag.SU) == bool(o["cp56time.su"])


def _apdu(asdu_hex):
    """An I-frame (N(S) = N(R) = 0) around an ASDU given in hex."""
    asdu = bytes.fromhex(asdu_hex.replace(" ", ""))
    return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu


def _one(asdu_hex):
    pts = decode_all(_apdu(asdu_hex))[1]
    assert len(pts) == 1
    return pts[0]


# Types Wireshark shows only the IOA of: decoded from the standard's layouts.
def test_protection_events_keep_elapsed_time_in_extra():
    # M_EP_TA_1: SEP 0x09 (EI, ES=1), CP16 = 0x0201 ms, CP24 12.345 s at minute 17
    p = _one("11 01 0300 0100 030201 09 0102 393011")
    assert (p["value"], p["quality"], p["extra"]) == (1, 0x08, 0x0201)
    assert int(p["time"]) % 60000 == 12345 and (int(p["time"]) // 60000) % 60 == 17


def test_packed_protection_and_output_circuit_events():
    for t in (18, 19):
        p = _one(f"{t:02x} 01 0300 0100 030201 09 80 0a00 393011")
        assert (p["type_id"], p["value"], p["quality"], p["extra"]) == (t, 0x09, 0x80, 10)
    p = _one("28 01 0300 0100 030201 05 00 e803 393011 0917 0b1a")   # M_EP_TF_1, CP56
    assert (p["value"], p["extra"]) == (5, 1000)
    assert dt.datetime.fromtimestamp(int(p["time"]) / 1000, dt.timezone.utc) == \
        dt.datetime(2026, 11, 23, 9, 17, 12, 345000, dt.timezone.utc)


def test_status_change_detection_keeps_both_words():
    p = _one("14 01 0300 0100 030201 f000 0f00 10")      # M_PS_NA_1: ST 0x00F0, CD 0x000F
    assert (p["value"], p["extra"], p["quality"]) == (0xF0, 0x0F, 0x10)


def test_system_commands_keep_their_values():
    assert _one("68 01 0600 0100 000000 aa55")["value"] == 0x55AA   # C_TS_NA_1 FBP
    assert _one("6a 01 0600 0100 000000 3930")["value"] == 12345    # C_CD_NA_1 CP16
    clock = _one("67 01 0600 0100 000000 393011 0917 0b1a")          # C_CS_NA_1
    assert clock["type_id"] == TypeID.C_CS_NA_1
    assert dt.datetime.fromtimestamp(int(clock["time"]) / 1000, dt.timezone.utc) == \
        dt.datetime(2026, 11, 23, 9, 17, 12, 345000, dt.timezone.utc)
    test = _one("6b 01 0600 0100 000000 3412 393011 0917 0b1a")      # C_TS_TA_1: TSC, CP56
    assert test["value"] == 0x1234 and test["time"] == clock["time"]


def test_file_transfer_is_decoded_not_an_error():
    data = (_apdu("78 01 0d00 0100 030201 0700 001000 00")      # F_FR_NA_1 NOF 7, LOF 0x1000
            + _apdu("79 01 0d00 0100 030201 0700 02 200000 80")  # F_SR_NA_1 NOS 2, LOF 0x20
            + _apdu("7d 01 0d00 0100 030201 0700 01 02 abcd"))   # F_SG_NA_1 with 2 octets
    fr, pts = decode_all(data)
    assert list(fr["status"]) == [0, 0, 0]
    assert list(pts["value"]) == [7, 7, 7]
    assert list(pts["extra"]) == [0x1000, 0x20, 1]
    assert pts["quality"][1] == 0x80 and pts["quality"][2] == 2


def test_every_standard_type_id_has_a_layout():
    from iec104._codec import element_lengths
    lengths = element_lengths()
    assert set(lengths) == {int(t) for t in TypeID}
