"""The edges of the information elements (IEC 60870-5-101/104): CP56Time2a dates that do not
exist or years it cannot carry give IV and no time, never another date; values beyond a field
are clamped to it, never wrapped to the other sign."""
import datetime as dt

import numpy as np
import pytest

from iec104 import POINT_DTYPE, decode
from iec104._encode import encode_asdu, encode_points, i_frame
from iec104.types import NO_TIME, TimeFlag

M_SP_TB_1, M_ME_NA_1, M_ME_NB_1 = 30, 9, 11


def apdu(asdu: bytes) -> bytes:
    return bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu


def sp_tb(cp56: bytes) -> bytes:
    """M_SP_TB_1, one object, COT 3, CA 1, IOA 1, SPI on, with the given CP56Time2a."""
    return apdu(bytes([M_SP_TB_1, 0x01, 0x03, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01]) + cp56)


def cp56(ms=0, minute=0, hour=12, day=1, month=1, year=23) -> bytes:
    return bytes([ms & 0xFF, ms >> 8, minute, hour, day, month, year])


@pytest.mark.parametrize("day,month,year", [(31, 2, 23), (29, 2, 23), (31, 4, 23), (31, 11, 26)],
                         ids=["31-Feb", "29-Feb-non-leap", "31-Apr", "31-Nov"])
def test_cp56_day_past_the_end_of_its_month_is_invalid(day, month, year):
    """31 February, 29 February of a common year, 31 April: IV and no time (they used to roll
    over into the next month, IV clear; a clock sync with one would have been taken)."""
    p = decode(sp_tb(cp56(day=day, month=month, year=year)))[0]
    assert p["time"] == NO_TIME and p["time_flags"] & TimeFlag.IV, \
        dt.datetime.fromtimestamp(p["time"] / 1000, dt.timezone.utc)


@pytest.mark.parametrize("year", [100, 127])
def test_cp56_year_above_99_is_invalid(year):
    """A year octet of 100..127 is no CP56Time2a year (0..99): IV and no time."""
    p = decode(sp_tb(cp56(year=year)))[0]
    assert p["time"] == NO_TIME and p["time_flags"] & TimeFlag.IV, \
        dt.datetime.fromtimestamp(p["time"] / 1000, dt.timezone.utc)


@pytest.mark.parametrize("when", [
    dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),              # np.zeros row: time 0
    dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.timezone.utc),
    dt.datetime(2128, 1, 1, tzinfo=dt.timezone.utc),
], ids=["1970", "1999", "2128"])
def test_encoder_never_writes_a_different_year_for_a_time_cp56_cannot_carry(when):
    """A time outside 2000..2099 goes out with IV set (as no time), never as another year
    (time 0, an np.zeros row's, used to go out as 1 January 2098)."""
    ms = int(when.timestamp() * 1000)
    row = np.zeros(1, POINT_DTYPE)
    row["type_id"], row["ca"], row["ioa"], row["cot"], row["value"] = M_SP_TB_1, 1, 1, 3, 1
    row["time"] = ms
    for encode in (lambda: bytes(encode_points(row)[0]),
                   lambda: i_frame(encode_asdu(M_SP_TB_1, 1, 1, 1.0, cot=3, time_ms=ms), 0, 0)):
        try:
            frame = encode()
        except (OverflowError, ValueError):
            continue
        p = decode(frame)[0]
        assert p["time"] == ms or p["time_flags"] & TimeFlag.IV, \
            dt.datetime.fromtimestamp(p["time"] / 1000, dt.timezone.utc)


@pytest.mark.parametrize("t,value,top", [
    (M_ME_NB_1, float("inf"), 32767), (M_ME_NB_1, 1e19, 32767),
    (M_ME_NA_1, float("inf"), 32767 / 32768), (M_ME_NA_1, 1e15, 32767 / 32768),
])
def test_scaled_and_normalized_encoding_clamps_large_values_without_a_sign_flip(t, value, top):
    """+inf or a value beyond a C long is clamped to full scale positive, as 40000 is (lround
    of it used to give LONG_MIN: -32768, full scale negative)."""
    for encode in (lambda: i_frame(encode_asdu(t, 1, 1, value, cot=3), 0, 0),
                   lambda: bytes(encode_points(_row(t, value))[0])):
        assert decode(encode())[0]["value"] == top


def _row(t, value):
    row = np.zeros(1, POINT_DTYPE)
    row["type_id"], row["ca"], row["ioa"], row["cot"], row["value"] = t, 1, 1, 3, value
    row["time"] = NO_TIME
    return row


@pytest.mark.parametrize("t,value,back", [
    (5, 64, 63), (5, 100, 63), (5, -65, -64),                     # VTI: -64..63
    (15, 2.0 ** 31, 2 ** 31 - 1), (15, -2.0 ** 40, -2 ** 31),     # BCR: an int32
])
def test_a_step_position_or_counter_beyond_its_field_is_clamped_not_wrapped(t, value, back):
    """A value past its field's width is sent as the field's end (a step position of 64 used
    to go out as -64, a counter of 2**31 as -2**31)."""
    assert decode(bytes(encode_points(_row(t, value))[0]))[0]["value"] == back
