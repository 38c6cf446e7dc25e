"""iec104: a fast IEC 60870-5-104 master (control station) for Python."""
__version__ = "0.1.0"
from iec104._codec import Decoder, decode, decode_all, decode_frames
from iec104.errors import (
    CaptureError, CommandError, CommandInDoubt, CommandNotAllowed, CommandOutOfLimits,
    ConfirmationTimeout, ConnectError, ConnectionLostError, IEC104Error, ImportHookError,
    InputError, InvalidRequestError, NegativeConfirmation, NotConnected, PointListError, SettingsError,
    UnknownCauseError, UnknownCommonAddressError, UnknownIOAError, UnknownTypeError,
)
from iec104.master import Master, run
from iec104.metadata import read_point_list
from iec104.outstation import Outstation           # the simulator: about 10 ms more to import
from iec104.redundancy import RedundancyGroup
from iec104.session import Session
from iec104.settings import SessionSettings
from iec104.tls import TLS
from iec104.types import (
    BROADCAST_CA, FRAME_DTYPE, NO_TIME, POINT_DTYPE, CounterQuality, Cot, Flag, FrameFormat,
    FrameStatus, Quality, TimeFlag, TypeID, UFunction,
)

__all__ = [
    "Decoder", "decode", "decode_all", "decode_frames", "Master", "Session", "SessionSettings",
    "Outstation", "RedundancyGroup", "TLS", "run", "read_point_list",
    "BROADCAST_CA", "FRAME_DTYPE", "NO_TIME", "POINT_DTYPE", "Cot", "CounterQuality", "Flag",
    "FrameFormat", "FrameStatus", "Quality", "TimeFlag", "TypeID", "UFunction",
    # iec104.errors, every one
    "IEC104Error", "SettingsError", "InvalidRequestError", "CommandNotAllowed",
    "CommandOutOfLimits", "PointListError", "CaptureError", "ImportHookError", "CommandInDoubt",
    "ConnectError", "ConnectionLostError", "NotConnected", "ConfirmationTimeout",
    "CommandError", "NegativeConfirmation", "UnknownTypeError", "UnknownCauseError",
    "UnknownCommonAddressError", "UnknownIOAError", "InputError",
]

