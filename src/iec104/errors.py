"""The typed errors of the facade: what went wrong, with the standard's cause attached."""
from __future__ import annotations

__all__ = [
    "IEC104Error", "ConnectError", "NotConnected", "CommandError", "NegativeConfirmation",
    "UnknownTypeError", "UnknownCauseError", "UnknownCommonAddressError", "UnknownIOAError",
    "ConfirmationTimeout", "ConnectionLostError", "SettingsError", "InvalidRequestError",
    "CommandInDoubt",
]


class IEC104Error(Exception):
    """Base of every error raised by iec104."""


class SettingsError(IEC104Error, ValueError):
    """A session setting out of range (t2 >= t1, w > 2k/3, a field size of 4 octets...)."""


class InvalidRequestError(IEC104Error, ValueError):
    """A request's address or value does not fit the session's field sizes, the type's range
    or the point list's limits. Raised before anything is encoded: nothing was sent."""


class CommandInDoubt(IEC104Error):
    """An earlier request to the same object was sent, its caller gave up (timeout or
    cancellation) and no answer has arrived yet: the RTU may have executed it. A new
    request to that object is refused until the answer arrives or the link is closed, so
    that a retry can never execute twice."""


class ConnectError(IEC104Error, ConnectionError):
    """The RTU could not be reached (refused, unreachable, t0 expired, no STARTDT con)."""


class NotConnected(IEC104Error):
    """A request on a session whose data transfer is not started."""


class ConnectionLostError(IEC104Error, ConnectionError):
    """The link closed while a request waited for its confirmation."""


class ConfirmationTimeout(IEC104Error, TimeoutError):
    """No confirmation (ActCon/ActTerm) in time; the request is never re-sent by itself."""


class CommandError(IEC104Error):
    """The outstation refused a request. ``cot`` is the cause it answered with."""

    def __init__(self, message: str, *, type_id: int, ca: int, ioa: int, cot: int,
                 negative: bool = True):
        super().__init__(message)
        self.type_id, self.ca, self.ioa, self.cot, self.negative = type_id, ca, ioa, cot, negative


class NegativeConfirmation(CommandError):
    """ActCon (or DeactCon) with the P/N bit set."""


class UnknownTypeError(CommandError):
    """COT 44: the outstation does not know this type identification."""


class UnknownCauseError(CommandError):
    """COT 45: unknown cause of transmission."""


class UnknownCommonAddressError(CommandError):
    """COT 46: no station with this common address."""


class UnknownIOAError(CommandError):
    """COT 47: no information object with this address."""


BY_COT = {44: UnknownTypeError, 45: UnknownCauseError, 46: UnknownCommonAddressError,
          47: UnknownIOAError}
