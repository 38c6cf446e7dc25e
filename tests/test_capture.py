"""Capture decoding: the conformance pcapng, and synthetic pcap files for every corner."""
import struct

import pytest

from iec104.capture import CaptureError, read_capture, write_points

from conformance import PCAP, frames


def test_conformance_capture_gives_every_apdu_in_order():
    res = read_capture(PCAP)
    ref = frames("lib60870_capture.jsonl")
    assert res.stats["apdus"] == len(ref) and res.stats["bad_frames"] == 0
    assert res.stats["connections"] == 2
    assert len(res.points) == sum(len(f.get("objects", [])) for f in ref)
    for d in ("c2s", "s2c"):
        ours = res.frames.filter(res.frames["direction"] == d)
        theirs = [f for f in ref if f["dir"] == d]
        assert ours["length"].to_list() == [f["len"] for f in theirs]
        assert ours["type_id"].to_list() == [f.get("type_id", 0) for f in theirs]


def apdu(ioa, value):
    asdu = bytes([13, 1, 3, 0, 1, 0]) + ioa.to_bytes(3, "little") + struct.pack("<fB", value, 0)
    return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu


def tcp_packet(payload, seq, *, sport=2404, dport=40000, flags=0x18, v6=False):
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    if v6:
        ip = struct.pack(">IHBB", 6 << 28, len(tcp), 6, 64) + b"\x00" * 15 + b"\x01" + b"\x00" * 15 + b"\x02"
        return ip + tcp, 0x86DD
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + tcp
    return ip, 0x0800


def pcap(packets, *, endian="<", nano=False, linktype=1, vlan=False):
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, (ip, etype) in enumerate(packets):
        if linktype == 1:
            l2 = b"\x00" * 12 + (struct.pack(">HH", 0x8100, 7) if vlan else b"") + struct.pack(">H", etype) + ip
        elif linktype == 113:
            l2 = b"\x00" * 14 + struct.pack(">H", etype) + ip
        else:
            l2 = ip
        out += struct.pack(endian + "IIII", 1_800_000_000, i * (1000 if nano else 1), len(l2), len(l2)) + l2
    return out


@pytest.mark.parametrize("kw", [dict(), dict(endian=">"), dict(nano=True), dict(linktype=113),
                                dict(vlan=True), dict(linktype=101)])
def test_link_types_and_byte_orders(tmp_path, kw):
    data = apdu(1, 1.5) + apdu(2, 2.5)
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap([tcp_packet(data, 1000)], **kw))
    res = read_capture(p)
    assert res.points["ioa"].to_list() == [1, 2] and res.points["value"].to_list() == [1.5, 2.5]
    assert res.points["direction"].to_list() == ["s2c", "s2c"]


def test_ipv6(tmp_path):
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap([tcp_packet(apdu(9, 1.0), 5, v6=True)]))
    assert read_capture(p).points["connection"][0].startswith("[::1]:2404")


def test_split_reordered_and_retransmitted_segments(tmp_path):
    data = apdu(1, 1.0) + apdu(2, 2.0) + apdu(3, 3.0)
    a, b, c = data[:10], data[10:30], data[30:]
    pk = [tcp_packet(a, 100), tcp_packet(c, 130), tcp_packet(b, 110), tcp_packet(b, 110),
          tcp_packet(a, 100)]
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap(pk))
    res = read_capture(p)
    assert res.points["ioa"].to_list() == [1, 2, 3] and res.stats["bad_frames"] == 0


def test_a_gap_is_counted_and_decoding_resumes(tmp_path):
    one, two, three = apdu(1, 1.0), apdu(2, 2.0), apdu(3, 3.0)
    pk = [tcp_packet(one, 0), tcp_packet(three, len(one) + len(two))]   # two is never captured
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap(pk))
    res = read_capture(p)
    assert res.points["ioa"].to_list() == [1, 3] and res.stats["gaps"] == 1


def test_hex_text_files(tmp_path):
    p = tmp_path / "frames.txt"
    p.write_text("# two frames\n" + apdu(1, 1.0).hex(" ") + "\n\n" + apdu(2, 2.0).hex() + "\n")
    res = read_capture(p)
    assert res.points["ioa"].to_list() == [1, 2] and res.points["direction"][0] == "?"


def test_damaged_capture_is_a_typed_error(tmp_path):
    p = tmp_path / "c.pcap"
    good = pcap([tcp_packet(apdu(1, 1.0), 0)])
    p.write_bytes(good[:-10])
    with pytest.raises(CaptureError, match="past the end"):
        read_capture(p)


def test_write_points_by_extension(tmp_path):
    res = read_capture(PCAP)
    import polars as pl
    out = write_points(res, tmp_path / "o.parquet")
    assert len(pl.read_parquet(out)) == len(res.points)
