"""strata: an embedded event store, from Python (ctypes over the C ABI of libstrata).

    import strata

    with strata.open("events.db", durability="fast") as store:
        store.append("order-1", [("order_created", {"amount_cents": 1999})],
                     expected=strata.NO_STREAM)
        for event in store.read_stream("order-1"):
            print(event.version, event.event_type, event.decode())

Data given as ``bytes`` is stored as is; anything else is encoded as MessagePack.
Every failure raises a subclass of :class:`StrataError`, one per status code.
"""

import ctypes
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import msgpack

from . import _native
from ._native import lib

__all__ = [
    "open",
    "open_in_memory",
    "Store",
    "NewEvent",
    "RecordedEvent",
    "AppendResult",
    "StreamInfo",
    "ProjectionStatus",
    "Subscription",
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
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
    "library_path",
]

#: The library this package loaded.
library_path = _native.path

#: Expected versions: no check / the stream must not exist / it must exist. An ``int`` is an
#: exact version (0: no events).
ANY = "any"
NO_STREAM = "no_stream"
STREAM_EXISTS = "stream_exists"

_OK, _DONE, _TIMEOUT = 0, 1, 2


# ----------------------------------------------------------------------------------------------
# Errors


class StrataError(Exception):
    """A failed strata call: ``code`` is the C status, ``status`` its name."""

    code = -1

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.status = lib.strata_status_name(self.code).decode()


class ConflictError(StrataError):
    """The stream's version is not the expected one; ``actual_version`` is its version."""

    code = 3

    def __init__(self, message, actual_version=0):
        super().__init__(message)
        self.actual_version = actual_version


class DuplicateIdError(StrataError):
    code = 4


class InvalidArgumentError(StrataError, ValueError):
    code = 5


class NotFoundError(StrataError, LookupError):
    code = 6


class ClosedError(StrataError):
    code = 7


class StrataTimeoutError(StrataError, TimeoutError):
    code = 2


class CorruptError(StrataError):
    code = 8


class IncompatibleError(StrataError):
    code = 9


class BusyError(StrataError):
    code = 10


class FullError(StrataError):
    code = 11


class StrataIOError(StrataError, OSError):
    code = 12


class ProjectionFaultError(StrataError):
    code = 13


class MisuseError(StrataError):
    code = 14


class InternalError(StrataError):
    code = 15


_ERRORS = {
    cls.code: cls
    for cls in (
        ConflictError,
        DuplicateIdError,
        InvalidArgumentError,
        NotFoundError,
        ClosedError,
        StrataTimeoutError,
        CorruptError,
        IncompatibleError,
        BusyError,
        FullError,
        StrataIOError,
        ProjectionFaultError,
        MisuseError,
        InternalError,
    )
}


def _check(status):
    """Raises the exception of a failed status (read on this thread, right after the call)."""
    if status == _OK:
        return
    message = lib.strata_errmsg().decode("utf-8", "replace")
    if status == ConflictError.code:
        raise ConflictError(message, lib.strata_last_actual_version())
    cls = _ERRORS.get(status)
    if cls is None:
        raise StrataError(message, status)
    raise cls(message)


# ----------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``data``/``metadata``: bytes as is, anything else as MessagePack."""

    event_type: str
    data: object = b""
    metadata: object = None
    event_id: Optional[Union[uuid.UUID, bytes]] = None


@dataclass(frozen=True)
class RecordedEvent:
    """A stored event (its bytes copied out of the library)."""

    position: int
    stream_id: str
    version: int
    event_type: str
    event_id: uuid.UUID
    recorded_at: int
    data: bytes
    metadata: bytes

    def decode(self):
        """``data`` decoded from MessagePack."""
        return msgpack.unpackb(self.data, raw=False)

    def decode_metadata(self):
        """``metadata`` decoded from MessagePack (``None`` when empty)."""
        return msgpack.unpackb(self.metadata, raw=False) if self.metadata else None


@dataclass(frozen=True)
class AppendResult:
    first_position: int
    last_position: int
    last_version: int
    already_stored: bool


@dataclass(frozen=True)
class StreamInfo:
    version: int
    first_position: int
    last_position: int


_PHASES = ["catching_up", "live", "faulted", "rebuilding", "retired"]


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    version: int
    phase: str
    checkpoint: int
    lag: int
    fault_position: int


def _status(raw):
    return ProjectionStatus(
        name=raw.name.decode(),
        version=raw.version,
        phase=_PHASES[raw.phase] if raw.phase < len(_PHASES) else str(raw.phase),
        checkpoint=raw.checkpoint,
        lag=raw.lag,
        fault_position=raw.fault_position,
    )


def _encode(value):
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return msgpack.packb(value, use_bin_type=True)


def _expected(expected):
    if expected == ANY:
        return 0, 0
    if expected == NO_STREAM:
        return 1, 0
    if expected == STREAM_EXISTS:
        return 2, 0
    if isinstance(expected, int) and not isinstance(expected, bool) and expected >= 0:
        return 3, expected
    raise InvalidArgumentError(f"expected must be ANY, NO_STREAM, STREAM_EXISTS or a version >= 0, got {expected!r}")


def _event_array(events):
    events = list(events)
    array = (_native.NewEvent * max(len(events), 1))()
    for slot, event in zip(array, events):
        if isinstance(event, tuple):
            event = NewEvent(*event)
        elif isinstance(event, dict):
            event = NewEvent(
                event["type"], event.get("data", b""), event.get("metadata"), event.get("id")
            )
        elif not isinstance(event, NewEvent):
            raise InvalidArgumentError(f"not an event: {event!r}")
        data = _encode(event.data)
        metadata = _encode(event.metadata)
        slot.event_type = event.event_type.encode()
        slot.data = data
        slot.data_len = len(data)
        slot.metadata = metadata
        slot.metadata_len = len(metadata)
        if event.event_id is not None:
            raw = event.event_id.bytes if isinstance(event.event_id, uuid.UUID) else bytes(event.event_id)
            if len(raw) != 16:
                raise InvalidArgumentError("an event id is 16 bytes")
            slot.event_id = raw
    return array, len(events)


def _copy_event(view):
    return RecordedEvent(
        position=view.position,
        stream_id=ctypes.string_at(view.stream_id, view.stream_id_len).decode(),
        version=view.version,
        event_type=ctypes.string_at(view.event_type, view.event_type_len).decode(),
        event_id=uuid.UUID(bytes=bytes(view.event_id)),
        recorded_at=view.recorded_at,
        data=ctypes.string_at(view.data, view.data_len) if view.data_len else b"",
        metadata=ctypes.string_at(view.metadata, view.metadata_len) if view.metadata_len else b"",
    )


def _strings(values):
    values = [v.encode() for v in values]
    array = (ctypes.c_char_p * max(len(values), 1))(*values)
    return array, len(values)


# ----------------------------------------------------------------------------------------------
# Cursors and subscriptions


class _Cursor:
    """An iterator over a C cursor; frees it when exhausted, closed or collected."""

    def __init__(self, handle):
        self._handle = handle
        self._view = _native.Event()

    def __iter__(self):
        return self

    def __next__(self):
        if not self._handle:
            raise StopIteration
        status = lib.strata_cursor_next(self._handle, ctypes.byref(self._view))
        if status == _DONE:
            self.close()
            raise StopIteration
        if status != _OK:
            self.close()
        _check(status)
        return _copy_event(self._view)

    def close(self):
        if self._handle:
            lib.strata_cursor_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


class Subscription:
    """Events from a position on, history first, then live. Iterating blocks until the store
    is closed; :meth:`next` waits at most ``timeout`` seconds and returns ``None`` then."""

    def __init__(self, handle):
        self._handle = handle
        self._view = _native.Event()

    def next(self, timeout: Optional[float] = None) -> Optional[RecordedEvent]:
        """The next event; ``None`` after ``timeout`` seconds (``None``: wait forever) or once
        the store is closed and everything was delivered (then :attr:`done` is true)."""
        while True:
            if not self._handle:
                raise ClosedError("the subscription is closed")
            wait = 3_600_000 if timeout is None else max(0, min(int(timeout * 1000), 2**32 - 1))
            status = lib.strata_subscription_next(self._handle, wait, ctypes.byref(self._view))
            if status == _OK:
                return _copy_event(self._view)
            if status == _DONE:
                self.done = True
                return None
            if status == _TIMEOUT:
                if timeout is None:
                    continue
                return None
            _check(status)

    done = False

    def __iter__(self) -> Iterator[RecordedEvent]:
        while True:
            event = self.next()
            if event is None:
                return
            yield event

    def close(self):
        if self._handle:
            lib.strata_subscription_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


# ----------------------------------------------------------------------------------------------
# The store

_DURABILITY = {"durable": 0, "fast": 1}
_BUCKETS = {None: 0, "hour": 1, "day": 2, "week": 3, "month": 4}


def _options(durability, bucket_width, cache_bytes, max_events_per_append, read_connections):
    options = _native.Options()
    _check(lib.strata_options_init(ctypes.byref(options)))
    if durability not in _DURABILITY:
        raise InvalidArgumentError(f"durability must be 'durable' or 'fast', got {durability!r}")
    if bucket_width not in _BUCKETS:
        raise InvalidArgumentError(f"bucket_width must be hour, day, week or month, got {bucket_width!r}")
    options.durability = _DURABILITY[durability]
    options.bucket_width = _BUCKETS[bucket_width]
    if cache_bytes is not None:
        options.cache_bytes = cache_bytes
    if max_events_per_append is not None:
        options.max_events_per_append = max_events_per_append
    if read_connections is not None:
        options.read_connections = read_connections
    return options


class Store:
    """An open store. Use as a context manager (closes on exit) or call :meth:`close`.
    Safe to share between threads."""

    def __init__(self, handle):
        self._handle = handle

    # -- life

    def close(self):
        """Closes the store and releases it. Closing twice does nothing."""
        if self._handle:
            handle, self._handle = self._handle, None
            _check(lib.strata_store_free(handle))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except StrataError:
            pass

    @property
    def _h(self):
        if not self._handle:
            raise ClosedError("the store is closed")
        return self._handle

    # -- appending

    def append(self, stream_id: str, events: Iterable, expected=ANY) -> AppendResult:
        """Appends events (``NewEvent``, ``(type, data[, metadata[, id]])`` tuples, or dicts
        with ``type``, ``data``, ``metadata``, ``id``) to one stream, all or nothing."""
        kind, version = _expected(expected)
        array, count = _event_array(events)
        result = _native.AppendResult()
        _check(
            lib.strata_append(
                self._h, stream_id.encode(), kind, version, array, count, ctypes.byref(result)
            )
        )
        return AppendResult(
            result.first_position, result.last_position, result.last_version, bool(result.already_stored)
        )

    def append_multi(self, parts: Sequence) -> List[AppendResult]:
        """Appends to several streams atomically: ``parts`` is a list of
        ``(stream_id, events, expected)``."""
        parts = list(parts)
        c_parts = (_native.StreamAppend * max(len(parts), 1))()
        keep = []
        for slot, (stream_id, events, expected) in zip(c_parts, parts):
            kind, version = _expected(expected)
            array, count = _event_array(events)
            keep.append(array)
            slot.stream_id = stream_id.encode()
            slot.expected_kind = kind
            slot.expected_version = version
            slot.events = ctypes.cast(array, ctypes.POINTER(_native.NewEvent))
            slot.n_events = count
        results = (_native.AppendResult * max(len(parts), 1))()
        _check(lib.strata_append_multi(self._h, c_parts, len(parts), results))
        return [
            AppendResult(r.first_position, r.last_position, r.last_version, bool(r.already_stored))
            for r in results[: len(parts)]
        ]

    # -- reading

    def read_stream(self, stream_id: str, from_version: int = 0, backwards: bool = False, limit: int = 0) -> Iterator[RecordedEvent]:
        """The events of a stream from ``from_version`` (0: its first in that direction)."""
        handle = ctypes.c_void_p()
        _check(
            lib.strata_read_stream(
                self._h, stream_id.encode(), from_version, 1 if backwards else 0, limit, ctypes.byref(handle)
            )
        )
        return _Cursor(handle)

    def read_all(self, from_position: int = 1, limit: int = 0) -> Iterator[RecordedEvent]:
        """Every event from ``from_position``, in position order."""
        handle = ctypes.c_void_p()
        _check(lib.strata_read_all(self._h, from_position, limit, ctypes.byref(handle)))
        return _Cursor(handle)

    def read_by_type(self, event_types: Sequence[str], recorded_from: int = -(2**63), recorded_to: int = 2**63 - 1, from_position: int = 1, limit: int = 0) -> Iterator[RecordedEvent]:
        """The events of the given types recorded in ``[recorded_from, recorded_to)`` (unix µs)."""
        types, count = _strings(event_types)
        handle = ctypes.c_void_p()
        _check(
            lib.strata_read_by_type(
                self._h, types, count, recorded_from, recorded_to, from_position, limit, ctypes.byref(handle)
            )
        )
        return _Cursor(handle)

    def stream_info(self, stream_id: str) -> Optional[StreamInfo]:
        """A stream's version and position range; ``None`` if it has no events."""
        info = _native.StreamInfo()
        status = lib.strata_get_stream_info(self._h, stream_id.encode(), ctypes.byref(info))
        if status == NotFoundError.code:
            return None
        _check(status)
        return StreamInfo(info.version, info.first_position, info.last_position)

    @property
    def last_position(self) -> int:
        """The position of the last committed event (0 when empty)."""
        value = ctypes.c_uint64()
        _check(lib.strata_last_position(self._h, ctypes.byref(value)))
        return value.value

    def subscribe(self, from_position: int = 0, stream_id: Optional[str] = None, stream_prefix: Optional[str] = None, event_types: Optional[Sequence[str]] = None) -> Subscription:
        """A :class:`Subscription` to the matching events from ``from_position``."""
        types, count = _strings(event_types or [])
        handle = ctypes.c_void_p()
        _check(
            lib.strata_subscribe(
                self._h,
                from_position,
                stream_id.encode() if stream_id is not None else None,
                stream_prefix.encode() if stream_prefix is not None else None,
                types,
                count,
                ctypes.byref(handle),
            )
        )
        return Subscription(handle)

    # -- projections

    def register_projection(self, wasm: bytes) -> ProjectionStatus:
        """Loads a projection compiled to a WebAssembly component and registers it."""
        wasm = bytes(wasm)
        raw = _native.ProjectionStatus()
        _check(lib.strata_projection_register_wasm(self._h, wasm, len(wasm), ctypes.byref(raw)))
        return _status(raw)

    def _projection(self, function, name):
        raw = _native.ProjectionStatus()
        _check(function(self._h, name.encode(), ctypes.byref(raw)))
        return _status(raw)

    def projection_status(self, name: str) -> ProjectionStatus:
        return self._projection(lib.strata_projection_status_get, name)

    def catch_up(self, name: str) -> ProjectionStatus:
        """Folds the events the projection has not seen yet."""
        return self._projection(lib.strata_projection_catch_up, name)

    def reset_projection(self, name: str) -> ProjectionStatus:
        """Deletes its state: it rebuilds from position 1 on the next catch-up."""
        return self._projection(lib.strata_projection_reset, name)

    def resume_projection(self, name: str) -> ProjectionStatus:
        return self._projection(lib.strata_projection_resume, name)

    def start_projections(self, idle_wake: float = 1.0):
        """Keeps every registered projection caught up in a background thread."""
        _check(lib.strata_projections_start(self._h, int(idle_wake * 1000)))

    def stop_projections(self):
        _check(lib.strata_projections_stop(self._h))

    def query(self, name: str, request=None, raw: bool = False):
        """Asks the projection; ``request`` bytes as is, anything else as MessagePack
        (``None``: an empty map). The answer is decoded from MessagePack unless ``raw``."""
        payload = _encode({} if request is None else request)
        response = ctypes.POINTER(ctypes.c_uint8)()
        length = ctypes.c_size_t()
        _check(
            lib.strata_projection_query(
                self._h, name.encode(), payload, len(payload), ctypes.byref(response), ctypes.byref(length)
            )
        )
        try:
            data = ctypes.string_at(response, length.value)
        finally:
            lib.strata_free(ctypes.cast(response, ctypes.c_void_p))
        return data if raw else msgpack.unpackb(data, raw=False)

    # -- metrics

    def metrics_text(self) -> str:
        """The store's metrics in the Prometheus text format."""
        text = ctypes.c_void_p()
        _check(lib.strata_metrics_text(self._h, ctypes.byref(text)))
        try:
            return ctypes.string_at(text).decode()
        finally:
            lib.strata_free(text)


def open(path, durability: str = "durable", bucket_width: Optional[str] = None, cache_bytes: Optional[int] = None, max_events_per_append: Optional[int] = None, read_connections: Optional[int] = None) -> Store:  # noqa: A001
    """Opens (creating if needed) the store at ``path``."""
    options = _options(durability, bucket_width, cache_bytes, max_events_per_append, read_connections)
    handle = ctypes.c_void_p()
    _check(lib.strata_open(str(path).encode(), ctypes.byref(options), ctypes.byref(handle)))
    return Store(handle)


def open_in_memory(durability: str = "durable", **kwargs) -> Store:
    """Opens a new private store held in memory."""
    options = _options(durability, kwargs.pop("bucket_width", None), kwargs.pop("cache_bytes", None), kwargs.pop("max_events_per_append", None), kwargs.pop("read_connections", None))
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    handle = ctypes.c_void_p()
    _check(lib.strata_open_in_memory(ctypes.byref(options), ctypes.byref(handle)))
    return Store(handle)
