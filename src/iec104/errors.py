"""Every error iec104 raises, in one hierarchy: what went wrong, with the standard's cause
attached.

``IEC104Error`` is the base of all of them. An error in what the caller passed (settings,
request arguments, point lists, capture files) is a ``ValueError`` too, a link failure a
``ConnectionError``, a missing confirmation a ``TimeoutError``. The modules that raise them
import them from here (``iec104.metadata.PointListError`` and the like still work).

::

    IEC104Error
    +-- SettingsError (ValueError)            a session setting out of range
    +-- InvalidRequestError (ValueError)      a request that does not fit: nothing was sent
    |   +-- CommandNotAllowed                 not a command point of the point list
    |       +-- CommandOutOfLimits            outside the point list's min/max
    +-- PointListError (ValueError)           a point list that cannot be used
    +-- CaptureError (ValueError)             a capture file this reader does not understand
    +-- ImportHookError                       an import hook missing, failed or timed out
    +-- CommandInDoubt                        an earlier request to the object may have run
    +-- ConnectError (ConnectionError)        the RTU could not be reached
    +-- ConnectionLostError (ConnectionError) the link closed while a request waited
    +-- NotConnected                          no data transfer on the session
    +-- ConfirmationTimeout (TimeoutError)    no ActCon/ActTerm in time
    +-- CommandError                          the outstation refused (``cot`` says why)
        +-- NegativeConfirmation              P/N bit set
        +-- UnknownTypeError                  COT 44
        +-- UnknownCauseError                 COT 45
        +-- UnknownCommonAddressError         COT 46
        +-- UnknownIOAError                   COT 47
"""
from __future__ import annotations

from os import PathLike
from typing import Any

__all__ = [
    "IEC104Error", "SettingsError", "InvalidRequestError", "CommandNotAllowed",
    "CommandOutOfLimits", "PointListError", "CaptureError", "ImportHookError", "CommandInDoubt",
    "ConnectError", "ConnectionLostError", "NotConnected", "ConfirmationTimeout",
    "CommandError", "NegativeConfirmation", "UnknownTypeError", "UnknownCauseError",
    "UnknownCommonAddressError", "UnknownIOAError", "InputError",
]


class IEC104Error(Exception):
    """Base of every error raised by iec104."""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled as its args and fields, not by calling __init__ again (the keyword-only
        # fields of CommandError and PointListError): errors cross Ray workers
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[IEC104Error], args: tuple[Any, ...], state: dict[str, Any]) -> IEC104Error:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InputError(IEC104Error, ValueError):
    """A bad argument or file on the command line (the CLI: one line, exit code 1)."""


class SettingsError(IEC104Error, ValueError):
    """A session setting out of range (t2 >= t1, w > 2k/3, a field size of 4 octets...)."""


class InvalidRequestError(IEC104Error, ValueError):
    """A request's address or value does not fit the session's field sizes, the type's range
    or the point list's limits. Raised before anything is encoded: nothing was sent."""


class CommandNotAllowed(InvalidRequestError):
    """The point list in force does not list this IOA as a command point of this type.
    Raised before anything is encoded: nothing was sent."""


class CommandOutOfLimits(CommandNotAllowed):
    """A command value outside the ``min``/``max`` of its row in the point list in force (or
    not a number to compare with them). Raised before anything is encoded: nothing was sent."""


class PointListError(IEC104Error, ValueError):
    """A point list that cannot be used: says which file, row (1-based data row) and column."""

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None,
                 row: int | None = None, column: str | None = None):
        where = ", ".join(x for x in (str(path) if path else None,
                                      f"row {row}" if row else None,
                                      f"column {column!r}" if column else None) if x)
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.row, self.column = path, row, column


class CaptureError(IEC104Error, ValueError):
    """A file that is not a capture this reader understands, or is damaged."""


class ImportHookError(IEC104Error):
    """A hook that does not exist, failed, timed out or answered another request."""


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


BY_COT: dict[int, type[CommandError]] = {
    44: UnknownTypeError, 45: UnknownCauseError, 46: UnknownCommonAddressError,
    47: UnknownIOAError,
}
"""The typed refusal of each cause 44..47."""
