"""iec104: a fast IEC 60870-5-104 master (control station) for Python."""
from iec104._codec import Decoder, decode, decode_all, decode_frames
from iec104.types import (
    BROADCAST_CA, FRAME_DTYPE, NO_TIME, POINT_DTYPE, Cot, Flag, FrameFormat, FrameStatus,
    Quality, TimeFlag, TypeID, UFunction,
)

__all__ = [
    "Decoder", "decode", "decode_all", "decode_frames",
    "BROADCAST_CA", "FRAME_DTYPE", "NO_TIME", "POINT_DTYPE", "Cot", "Flag", "FrameFormat",
    "FrameStatus", "Quality", "TimeFlag", "TypeID", "UFunction",
]
