"""Constants of IEC 60870-5-104 and the record layouts the codec writes.

The ``cdef enum`` blocks of ``ext/apdu.pxd`` mirror the enums here and its packed C structs
the dtypes; ``tests/test_codec.py`` checks that both agree (and ``tests/test_tables.py`` the
type families).
"""
from __future__ import annotations

from enum import IntEnum, IntFlag

import numpy as np

__all__ = [
    "TypeID", "Cot", "UFunction", "FrameFormat", "FrameStatus", "Flag", "Quality",
    "CounterQuality", "TimeFlag",
    "POINT_DTYPE", "FRAME_DTYPE", "NO_TIME", "NO_EXTRA", "BROADCAST_CA", "broadcast_ca", "family_of",
    "MONITOR_TYPES", "COMMAND_TYPES", "SYSTEM_TYPES", "CP56_VARIANT",
]


class TypeID(IntEnum):
    """ASDU type identification (IEC 60870-5-101/104, 7.2.1)."""

    # monitor direction: process information
    M_SP_NA_1 = 1
    M_SP_TA_1 = 2
    M_DP_NA_1 = 3
    M_DP_TA_1 = 4
    M_ST_NA_1 = 5
    M_ST_TA_1 = 6
    M_BO_NA_1 = 7
    M_BO_TA_1 = 8
    M_ME_NA_1 = 9
    M_ME_TA_1 = 10
    M_ME_NB_1 = 11
    M_ME_TB_1 = 12
    M_ME_NC_1 = 13
    M_ME_TC_1 = 14
    M_IT_NA_1 = 15
    M_IT_TA_1 = 16
    M_EP_TA_1 = 17
    M_EP_TB_1 = 18
    M_EP_TC_1 = 19
    M_PS_NA_1 = 20
    M_ME_ND_1 = 21
    M_SP_TB_1 = 30
    M_DP_TB_1 = 31
    M_ST_TB_1 = 32
    M_BO_TB_1 = 33
    M_ME_TD_1 = 34
    M_ME_TE_1 = 35
    M_ME_TF_1 = 36
    M_IT_TB_1 = 37
    M_EP_TD_1 = 38
    M_EP_TE_1 = 39
    M_EP_TF_1 = 40
    # control direction: process information
    C_SC_NA_1 = 45
    C_DC_NA_1 = 46
    C_RC_NA_1 = 47
    C_SE_NA_1 = 48
    C_SE_NB_1 = 49
    C_SE_NC_1 = 50
    C_BO_NA_1 = 51
    C_SC_TA_1 = 58
    C_DC_TA_1 = 59
    C_RC_TA_1 = 60
    C_SE_TA_1 = 61
    C_SE_TB_1 = 62
    C_SE_TC_1 = 63
    C_BO_TA_1 = 64
    # monitor direction: system information
    M_EI_NA_1 = 70
    # control direction: system information
    C_IC_NA_1 = 100
    C_CI_NA_1 = 101
    C_RD_NA_1 = 102
    C_CS_NA_1 = 103
    C_TS_NA_1 = 104
    C_RP_NA_1 = 105
    C_CD_NA_1 = 106
    C_TS_TA_1 = 107
    # control direction: parameters
    P_ME_NA_1 = 110
    P_ME_NB_1 = 111
    P_ME_NC_1 = 112
    P_AC_NA_1 = 113
    # file transfer
    F_FR_NA_1 = 120
    F_SR_NA_1 = 121
    F_SC_NA_1 = 122
    F_LS_NA_1 = 123
    F_AF_NA_1 = 124
    F_SG_NA_1 = 125
    F_DR_TA_1 = 126
    F_SC_NB_1 = 127

    @classmethod
    def parse(cls, value: "TypeID | int | str") -> "TypeID":
        """A TypeID from itself, its number or its name (``"C_SC_NA_1"``, any case)."""
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                raise ValueError(f"unknown type {value!r}") from None
        return cls(int(value))


MONITOR_TYPES = frozenset(t for t in TypeID if t <= 44)
COMMAND_TYPES = frozenset(t for t in TypeID if 45 <= t <= 64)
SYSTEM_TYPES = frozenset(t for t in TypeID if 100 <= t <= 107)

# The one table of type families (ext/apdu.pxd's iec104_family, the store's copy, is written
# out from it: tests/test_tables.py checks every type id and prints the C entries). A family is
# one point: its type and its time-tagged variants, which the store keeps as one latest value
# and a point list names once. One row per family:
#   family type: (its CP24Time2a variant, its CP56Time2a variant); 0: none
# The family type is the plain type, or for protection events (which always carry a time) the
# CP24Time2a one. IEC 104 sends CP56Time2a only; the CP24Time2a variants are 101's.
_TIME_VARIANTS: dict[int, tuple[int, int]] = {
    1: (2, 30), 3: (4, 31), 5: (6, 32), 7: (8, 33),             # single, double, step, bitstring
    9: (10, 34), 11: (12, 35), 13: (14, 36),                    # normalized, scaled, float
    15: (16, 37),                                               # integrated totals
    17: (0, 38), 18: (0, 39), 19: (0, 40),                      # protection events
    45: (0, 58), 46: (0, 59), 47: (0, 60), 48: (0, 61),         # commands and setpoints
    49: (0, 62), 50: (0, 63), 51: (0, 64),
    104: (0, 107),                                              # test command
}
_ALSO = {21: 9}            # M_ME_ND_1, a normalized value without quality: a normalized point

_FAMILY = {int(t): int(t) for t in TypeID}
_FAMILY.update({v: fam for fam, variants in _TIME_VARIANTS.items() for v in variants if v})
_FAMILY.update(_ALSO)

CP56_VARIANT = {fam: cp56 for fam, (_, cp56) in _TIME_VARIANTS.items()}
"""The CP56Time2a variant of each family's type (monitor and command): the inverse of
:func:`family_of` over the CP56Time2a types."""


def family_of(type_id: int) -> int:
    """The family (base type id) of a type id; unknown ids are their own family."""
    return _FAMILY.get(int(type_id), int(type_id))


class Cot(IntEnum):
    """Cause of transmission (IEC 60870-5-101, 7.2.3), the 6-bit cause without the P/N and T
    bits: every code the standard defines is a member; 48..63, the private range for special
    use, are accepted too (``Cot(50).name == "SPECIAL_USE_50"``); 0, 14..19, 42 and 43 (not
    used, reserved) raise ``ValueError``."""

    PERIODIC = 1
    BACKGROUND = 2
    SPONTANEOUS = 3
    INITIALIZED = 4
    REQUEST = 5
    ACTIVATION = 6
    ACTIVATION_CON = 7
    DEACTIVATION = 8
    DEACTIVATION_CON = 9
    ACTIVATION_TERMINATION = 10
    RETURN_REMOTE = 11
    RETURN_LOCAL = 12
    FILE_TRANSFER = 13
    INTERROGATED_BY_STATION = 20
    INTERROGATED_BY_GROUP_1 = 21
    INTERROGATED_BY_GROUP_2 = 22
    INTERROGATED_BY_GROUP_3 = 23
    INTERROGATED_BY_GROUP_4 = 24
    INTERROGATED_BY_GROUP_5 = 25
    INTERROGATED_BY_GROUP_6 = 26
    INTERROGATED_BY_GROUP_7 = 27
    INTERROGATED_BY_GROUP_8 = 28
    INTERROGATED_BY_GROUP_9 = 29
    INTERROGATED_BY_GROUP_10 = 30
    INTERROGATED_BY_GROUP_11 = 31
    INTERROGATED_BY_GROUP_12 = 32
    INTERROGATED_BY_GROUP_13 = 33
    INTERROGATED_BY_GROUP_14 = 34
    INTERROGATED_BY_GROUP_15 = 35
    INTERROGATED_BY_GROUP_16 = 36
    REQUESTED_BY_GENERAL_COUNTER = 37
    REQUESTED_BY_GROUP_1_COUNTER = 38
    REQUESTED_BY_GROUP_2_COUNTER = 39
    REQUESTED_BY_GROUP_3_COUNTER = 40
    REQUESTED_BY_GROUP_4_COUNTER = 41
    UNKNOWN_TYPE_ID = 44
    UNKNOWN_CAUSE = 45
    UNKNOWN_CA = 46
    UNKNOWN_IOA = 47

    @classmethod
    def _missing_(cls, value: object) -> "Cot | None":
        # the private range: a pseudo-member per code, made once (as IntFlag does for
        # combinations); not listed by iteration
        if isinstance(value, int) and 48 <= value <= 63:
            member = int.__new__(cls, value)
            member._name_ = f"SPECIAL_USE_{value}"
            member._value_ = value
            return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]
        return None


class UFunction(IntEnum):
    """U-frame functions as the bits of the first control octet (with the 0b11 format bits)."""

    NONE = 0
    STARTDT_ACT = 0x07
    STARTDT_CON = 0x0B
    STOPDT_ACT = 0x13
    STOPDT_CON = 0x23
    TESTFR_ACT = 0x43
    TESTFR_CON = 0x83


class FrameFormat(IntEnum):
    I = 0  # noqa: E741 - the standard's name
    S = 1
    U = 2


class FrameStatus(IntEnum):
    """Why a frame could not be decoded; OK for a good one."""

    OK = 0
    BAD_START = 1          # first octet is not 0x68: resynchronised at the next 0x68
    BAD_LENGTH = 2         # length octet outside 4..253
    BAD_CONTROL = 3        # U-frame with no or several functions, or unused format bits
    SHORT_ASDU = 4         # I-frame too short for the data unit identifier
    UNKNOWN_TYPE = 5       # type id not of the standard: header kept, objects skipped
    LENGTH_MISMATCH = 6    # VSQ object count does not fit the APDU length
    EMPTY = 7              # VSQ count of zero
    TRUNCATED = 8          # stream ended inside this frame (decode of a finite buffer only)
    BAD_IOA = 9            # an SQ=1 run that goes past the largest IOA of the field


class Flag(IntFlag):
    """Bits of POINT_DTYPE.flags: the COT octet's P/N and T bits and the VSQ's SQ bit."""

    NEGATIVE = 0x01
    TEST = 0x02
    SQ = 0x04


class Quality(IntFlag):
    """Quality descriptor bits as sent: QDS, SIQ, DIQ; QDP of protection events; the VTI's
    transient bit of step positions. Counter readings have their own bits
    (:class:`CounterQuality`): read a row's ``quality`` with the class of its type."""

    OV = 0x01          # overflow (QDS)
    TRANSIENT = 0x02   # step position: the VTI's transient bit, moved into a bit QDS leaves reserved
    EI = 0x08          # protection events: elapsed time invalid (QDP)
    BL = 0x10          # blocked
    SB = 0x20          # substituted
    NT = 0x40          # not topical
    IV = 0x80          # invalid


class CounterQuality(IntFlag):
    """The flags octet of a binary counter reading (BCR: M_IT_NA_1, M_IT_TA_1, M_IT_TB_1):
    the sequence number in the low five bits, then carry, adjusted and invalid."""

    SEQUENCE = 0x1F    # sequence number SQ (a 5-bit field: ``q & SEQUENCE``)
    CY = 0x20          # carry: the counter overflowed in the period
    CA = 0x40          # counter adjusted since the last reading
    IV = 0x80          # invalid


class TimeFlag(IntFlag):
    """Bits of POINT_DTYPE.time_flags, from CP56Time2a / CP24Time2a."""

    IV = 0x01        # time invalid
    SU = 0x02        # summer time
    CP24 = 0x04      # time was a CP24Time2a resolved against the receive time
    GEN = 0x08       # CP56 'substituted' (RES1/GEN) bit


NO_TIME = np.iinfo(np.int64).min
"""``time`` of an object that carried no time tag."""
NO_EXTRA = -1
"""``extra`` of an object that has no second value."""
BROADCAST_CA = 0xFFFF
"""The global (broadcast) common address with the standard's 2-octet CA."""


def broadcast_ca(ca_size: int = 2) -> int:
    """The global common address for a CA field of ``ca_size`` octets: 255 or 65535
    (IEC 60870-5-101, 7.2.4). Master and simulator both take it from here."""
    return 0xFF if ca_size == 1 else 0xFFFF

POINT_DTYPE = np.dtype([
    ("station", "<u4"),
    ("ca", "<u2"),
    ("ioa", "<u4"),
    ("type_id", "u1"),
    ("cot", "u1"),
    ("flags", "u1"),
    ("originator", "u1"),
    ("value", "<f8"),
    ("quality", "u1"),
    ("time", "<i8"),
    ("time_flags", "u1"),
    ("extra", "<i4"),
    ("recv_ns", "<i8"),
])
"""One row per information object as received, packed (no padding) to match ``point_t``.

``value`` per type: 0/1 single point; 0..3 double point; step position -64..63; bitstring as
an unsigned 32-bit integer (little-endian, as sent); normalized as value/32768; scaled as the
int16; short float; counter reading as int32; commands' state (SCS 0/1, DCS/RCS 0..3) or
setpoint value; interrogation QOI; counter interrogation QCC; test command FBP; reset QRP;
delay acquisition CP16 ms; parameter value; file transfer NOF (name of file); M_EI_NA_1 COI.

``quality`` is the qualifier octet as sent: SIQ/DIQ with the state bits cleared, QDS, the
BCR's sequence and CY/CA/IV, the SEP with its event state cleared or the QDP of protection
events; for step positions the QDS plus the VTI's transient bit as 0x02 (a bit QDS leaves
reserved); for commands the SCO/DCO/RCO octet with its state bits cleared (QU, S/E 0x80) or
the QOS; QPM for parameters (P_AC_NA_1: 0); for file transfer FRQ, SRQ, SCQ, LSQ, AFQ or SOF.
``value`` of a single/double point is SPI/DPI, of M_EP_TA/TD the event state ES, of
M_EP_TB/TE the SPE octet, of M_EP_TC/TF the OCI octet; M_PS_NA_1's status word ST.

``extra`` holds what does not fit one float: the CP16Time2a of protection events (17-19,
38-40: elapsed time, relay duration or relay operating time, in ms), M_PS_NA_1's
change-detection word CD, the length of file or section LOF (120, 121, 126), the section name
NOS (122-125; for F_SG_NA_1 ``quality`` holds the segment length LOS); NO_EXTRA (-1) elsewhere.
What the row has no room for: F_SR_NA_1's NOS, F_LS_NA_1's checksum, F_SC_NB_1's stop time and
F_SG_NA_1's segment octets (decode the frame's bytes at ``FRAME_DTYPE.offset`` for those).

``time`` is CP56Time2a (or CP24Time2a resolved against the receive time) in ms since the Unix
epoch, interpreted in the decoder's time zone (UTC by default; years 00..99 are 2000..2099);
NO_TIME when the object had no time tag. C_CS_NA_1 and C_TS_TA_1 put their time here too.
"""

FRAME_DTYPE = np.dtype([
    ("offset", "<u4"),
    ("length", "<u2"),
    ("format", "u1"),
    ("status", "u1"),
    ("ns", "<u2"),
    ("nr", "<u2"),
    ("u_function", "u1"),
    ("type_id", "u1"),
    ("sq", "u1"),
    ("count", "u1"),
    ("cot", "u1"),
    ("negative", "u1"),
    ("test", "u1"),
    ("originator", "u1"),
    ("ca", "<u2"),
    ("first_point", "<u4"),
    ("n_points", "<u2"),
])
"""One row per APDU: where it was, its APCI, its data unit identifier, its status, and the
rows of the point array it produced (``first_point``, ``n_points``)."""
