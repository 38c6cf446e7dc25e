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


def pcap(packets, *, endian="<", nano=False, linktype=1, vlan=False, seconds=None):
    """``seconds``: each packet's capture time after 1_800_000_000 (2027-01-15 08:00 UTC)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, (ip, etype) in enumerate(packets):
        if linktype == 1:
            l2 = b"\x00" * 12 + (struct.pack(">HH", 0x8100, 7) if vlan else b"") + struct.pack(">H", etype) + ip
        elif linktype == 113:
            l2 = b"\x00" * 14 + struct.pack(">H", etype) + ip
        else:
            l2 = ip
        at = 1_800_000_000 + (seconds[i] if seconds else 0)
        out += struct.pack(endian + "IIII", at, i * (1000 if nano else 1), len(l2), len(l2)) + l2
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


def test_cp24_time_tags_are_placed_in_the_hour_of_their_packet(tmp_path):
    """CP24Time2a carries minutes and ms only: the hour is the capture time's, or the one
    before when the tag would lie more than a minute after it (as live, by the receive time)."""
    def sp_ta(ioa, minute, ms):                     # M_SP_TA_1: SIQ + CP24Time2a
        asdu = bytes([2, 1, 3, 0, 1, 0]) + ioa.to_bytes(3, "little") + bytes([1]) + \
            ms.to_bytes(2, "little") + bytes([minute])
        return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu
    first, second = sp_ta(1, 59, 30000), sp_ta(2, 10, 5000)
    p = tmp_path / "c.pcap"                         # at 08:00:00 and 09:30:00
    p.write_bytes(pcap([tcp_packet(first, 1000), tcp_packet(second, 1000 + len(first))],
                       seconds=[0, 5400]))
    times = read_capture(p).points["time"].dt.strftime("%Y-%m-%d %H:%M:%S").to_list()
    assert times == ["2027-01-15 07:59:30", "2027-01-15 09:10:05"]


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


# ---- damaged and hostile files: every one a CaptureError or a skipped packet, no traceback ----

def shb():
    body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    return struct.pack("<II", 0x0A0D0D0A, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def idb(linktype=101, tsresol=None):
    opts = b""
    if tsresol is not None:
        opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    body = struct.pack("<HHI", linktype, 0, 65535) + opts
    return struct.pack("<II", 1, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def epb(data, hi=0, lo=0, cap=None):
    pad = (-len(data)) % 4
    body = struct.pack("<IIIII", 0, hi, lo, len(data) if cap is None else cap, len(data)) \
        + data + b"\0" * pad
    return struct.pack("<II", 6, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


def raw_ip(payload=None, seq=0):
    return tcp_packet(apdu(1, 1.5) if payload is None else payload, seq)[0]


def raw_pcap(linktype, *packets, tail=b""):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for p in packets:
        out += struct.pack("<IIII", 1_800_000_000, 0, len(p), len(p)) + p
    return out + tail


@pytest.mark.parametrize("linktype,packet", [(113, b"\0" * 10), (276, b""), (0, b"\x02"),
                                             (101, b"")],
                         ids=["sll-10-octets", "sll2-empty", "loopback-1-octet", "raw-ip-empty"])
def test_a_packet_shorter_than_its_link_header_is_skipped(tmp_path, linktype, packet):
    """A packet shorter than its link-layer header (SLL 16 octets, SLL2 20, BSD loopback 4,
    raw IP its version octet: a small snaplen, a hostile file) is not a TCP/IP packet: it
    is counted and skipped, with no traceback, and the packets after it are decoded."""
    p = tmp_path / "c.pcap"
    good = {113: b"\0" * 14 + b"\x08\x00", 276: b"\x08\x00" + b"\0" * 18, 0: b"\x02\0\0\0",
            101: b""}[linktype] + raw_ip()
    p.write_bytes(raw_pcap(linktype, packet, good))
    res = read_capture(p)
    assert res.stats["packets"] == 2 and res.stats["tcp_segments"] == 1
    assert res.points["ioa"].to_list() == [1]


def test_bsd_loopback_family_in_either_byte_order(tmp_path):
    """The loopback header's address family is in the capturing host's byte order: AF_INET
    written big-endian is IPv4 too."""
    p = tmp_path / "c.pcap"
    p.write_bytes(raw_pcap(0, b"\0\0\0\x02" + raw_ip()))
    assert read_capture(p).points["ioa"].to_list() == [1]


def test_a_pcapng_packet_block_shorter_than_its_header_is_a_capture_error(tmp_path):
    """An enhanced packet block shorter than its 32-octet header and trailer is a
    CaptureError naming its offset (its header is not read from the next block)."""
    p = tmp_path / "c.pcapng"
    head = shb() + idb()
    p.write_bytes(head + struct.pack("<III", 6, 12, 12) + epb(raw_ip()))
    with pytest.raises(CaptureError, match=f"offset {len(head)}.*32-octet"):
        read_capture(p)


def test_a_pcapng_captured_length_past_its_block_stays_inside_the_block(tmp_path):
    """An enhanced packet's captured length longer than its block is cut to the block: the
    next block is not read as packet data, and is itself decoded."""
    p = tmp_path / "c.pcapng"
    first = raw_ip(apdu(1, 1.0), 0)
    second = raw_ip(apdu(2, 2.0), len(apdu(1, 1.0)))
    p.write_bytes(shb() + idb() + epb(first, cap=len(first) + 500) + epb(second))
    res = read_capture(p)
    assert res.stats["packets"] == 2 and res.points["ioa"].to_list() == [1, 2]


def test_a_pcapng_timestamp_past_int64_is_a_capture_error(tmp_path):
    """An enhanced packet's 64-bit timestamp times the interface's resolution past int64
    nanoseconds (the year 2262) is a CaptureError naming the packet's offset."""
    p = tmp_path / "c.pcapng"
    head = shb() + idb()
    p.write_bytes(head + epb(raw_ip(), hi=0xFFFFFFFF))
    with pytest.raises(CaptureError, match=f"offset {len(head)}.*2262"):
        read_capture(p)


@pytest.mark.parametrize("tsresol,ticks_per_s",
                         [(0x80 | 20, 1 << 20), (12, 10 ** 12), (9, 10 ** 9)],
                         ids=["binary-2^-20", "picoseconds", "nanoseconds"])
def test_pcapng_timestamp_resolutions_are_exact(tmp_path, tsresol, ticks_per_s):
    """if_tsresol in powers of two or of ten, finer than a nanosecond too, gives the exact
    capture time (no tick rounded to whole nanoseconds)."""
    ts = 10_000_000 * ticks_per_s + ticks_per_s // 2             # 1e7 s and a half: in 64 bits
    p = tmp_path / "c.pcapng"
    p.write_bytes(shb() + idb(tsresol=tsresol) + epb(raw_ip(), hi=ts >> 32, lo=ts & 0xFFFFFFFF))
    t = read_capture(p).points["capture_time"].dt.epoch("ns")[0]
    assert t == 10_000_000_500_000_000


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_capture_cut_inside_a_record_header_is_a_capture_error(tmp_path, kind):
    """A file that ends inside a record header (fewer than 16 octets left in pcap, 12 in
    pcapng) is a CaptureError naming the offset, like one cut inside a packet's data: it is
    not read as if complete."""
    p = tmp_path / f"c.{kind}"
    if kind == "pcap":
        data = raw_pcap(101, raw_ip(), tail=struct.pack("<II", 1_800_000_001, 0))
        at = len(data) - 8
    else:
        data = shb() + idb() + epb(raw_ip()) + struct.pack("<I", 6)
        at = len(data) - 4
    p.write_bytes(data)
    with pytest.raises(CaptureError, match=f"ends inside .* offset {at}"):
        read_capture(p)


def test_a_stream_decoded_in_chunks_is_what_one_decode_gives(tmp_path, monkeypatch):
    """A stream is decoded in bounded chunks (the decoder's rows sized from a chunk, not
    from the capture): APDUs across a chunk boundary, their offsets, first points and
    capture times are what one decode of the whole stream gives."""
    import iec104.capture as capture
    data = b"".join(apdu(i, float(i)) for i in range(1, 60))       # 1180 octets: 5 chunks
    pk, seq = [], 0
    for i in range(0, len(data), 37):
        pk.append(tcp_packet(data[i:i + 37], seq))
        seq += len(data[i:i + 37])
    p = tmp_path / "c.pcap"
    p.write_bytes(pcap(pk))
    whole = read_capture(p)
    monkeypatch.setattr(capture, "_CHUNK", 1)    # 256 octets, the least
    chunked = read_capture(p)
    assert chunked.points.equals(whole.points) and chunked.frames.equals(whole.frames)
    assert chunked.points["ioa"].to_list() == list(range(1, 60))
    assert chunked.frames["offset"].to_list() == [20 * i for i in range(59)]
    assert chunked.frames["first_point"].to_list() == list(range(59))
