"""strata's exceptions: one class per failure, each with the C ABI's status code and name."""

from typing import Dict, Type

__all__ = [
    "StrataError",
    "ConflictError",
    "DuplicateIdError",
    "InvalidArgumentError",
    "NotFoundError",
    "ClosedError",
    "StrataTimeoutError",
    "CorruptError",
    "IncompatibleError",
    "BusyError",
    "FullError",
    "StrataIOError",
    "ProjectionFaultError",
    "MisuseError",
    "InternalError",
    "ConditionFailedError",
]

_STATUS_NAMES = {
    2: "STRATA_TIMEOUT",
    3: "STRATA_CONFLICT",
    4: "STRATA_DUPLICATE_ID",
    5: "STRATA_INVALID_ARGUMENT",
    6: "STRATA_NOT_FOUND",
    7: "STRATA_CLOSED",
    8: "STRATA_CORRUPT",
    9: "STRATA_INCOMPATIBLE",
    10: "STRATA_BUSY",
    11: "STRATA_FULL",
    12: "STRATA_IO",
    13: "STRATA_PROJECTION_FAULT",
    14: "STRATA_MISUSE",
    15: "STRATA_INTERNAL",
    16: "STRATA_CONDITION_FAILED",
}


class StrataError(Exception):
    """A failed strata call. ``code`` is the status code the C ABI gives the same failure and
    ``status`` its name (such as ``"STRATA_CONFLICT"``)."""

    code: int = -1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status: str = _STATUS_NAMES.get(self.code, "STRATA_UNKNOWN")


class ConflictError(StrataError):
    """The stream's version is not the expected one (nothing of the append was written).
    ``actual_version`` is the stream's version (0: it has no events)."""

    code = 3

    def __init__(self, message: str, actual_version: int = 0) -> None:
        super().__init__(message)
        self.actual_version: int = actual_version


class DuplicateIdError(StrataError):
    """An event id is already stored, not as part of this same append."""

    code = 4


class InvalidArgumentError(StrataError, ValueError):
    """An argument breaks a rule or a limit (nothing was stored)."""

    code = 5


class NotFoundError(StrataError, LookupError):
    """No such projection, or the events were archived or dropped by retention."""

    code = 6


class ClosedError(StrataError):
    """The store (or the subscription) was closed."""

    code = 7


class StrataTimeoutError(StrataError, TimeoutError):
    """A wait ran out of time."""

    code = 2


class CorruptError(StrataError):
    """A stored row or the file is corrupt, or the file is not an SQLite database."""

    code = 8


class IncompatibleError(StrataError):
    """The file is another application's database, from a newer strata, or has another
    bucket width."""

    code = 9


class BusyError(StrataError):
    """Another process holds the write lock past the busy timeout."""

    code = 10


class FullError(StrataError):
    """The disk (or a quota) is full."""

    code = 11


class StrataIOError(StrataError, OSError):
    """An I/O error, or the file cannot be opened."""

    code = 12


class ProjectionFaultError(StrataError):
    """A projection failed (trap, timeout, memory limit, its own error) or is faulted."""

    code = 13


class MisuseError(StrataError):
    """The API was used wrongly (such as starting the projection runner twice)."""

    code = 14


class InternalError(StrataError):
    """A bug in strata."""

    code = 15


class ConditionFailedError(StrataError):
    """A conditional append (:meth:`strata.Store.append_with`) found an event matching its
    condition's query after the condition's ``after`` position: nothing was written.
    ``position`` is the first such event's position, ``after`` the condition's. Read the query
    again, decide again, and retry with the new position."""

    code = 16

    def __init__(self, message: str, position: int = 0, after: int = 0) -> None:
        super().__init__(message)
        self.position: int = position
        self.after: int = after


ERRORS: Dict[int, Type[StrataError]] = {
    cls.code: cls
    for cls in (
        StrataTimeoutError,
        ConflictError,
        DuplicateIdError,
        InvalidArgumentError,
        NotFoundError,
        ClosedError,
        CorruptError,
        IncompatibleError,
        BusyError,
        FullError,
        StrataIOError,
        ProjectionFaultError,
        MisuseError,
        InternalError,
        ConditionFailedError,
    )
}
