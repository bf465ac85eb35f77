"""strata: an embedded event store (one SQLite file, WebAssembly projections), from Python.

    import strata

    with strata.open("events.db", durability="fast") as store:
        store.append("order-1", [("order_created", {"amount_cents": 1999})],
                     expected=strata.NO_STREAM)
        for event in store.read_stream("order-1"):
            print(event.version, event.event_type, event.decode())

The native code (a PyO3 module over strata's Rust core) ships inside the package. Data given
as ``bytes`` is stored as is; anything else is encoded as MessagePack. Reads are iterators that
fetch a page of events per native call. Every failure raises a subclass of
:class:`StrataError`, one per kind of failure.
"""

import asyncio
import builtins
import collections
import os
import threading
import uuid
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Deque,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import msgpack

from . import _native
from ._errors import (
    ERRORS as _ERRORS,
    BusyError,
    ClosedError,
    ConditionFailedError,
    ConflictError,
    CorruptError,
    DuplicateIdError,
    FullError,
    IncompatibleError,
    InternalError,
    InvalidArgumentError,
    MisuseError,
    NotFoundError,
    ProjectionFaultError,
    StrataError,
    StrataIOError,
    StrataTimeoutError,
)
from ._native import Cursor, Event

__version__: str = _native.__version__

__all__ = [
    "open",
    "open_in_memory",
    "Store",
    "NewEvent",
    "Event",
    "RecordedEvent",
    "Cursor",
    "AppendResult",
    "StreamInfo",
    "ProjectionStatus",
    "Subscription",
    "Query",
    "QueryItem",
    "AppendCondition",
    "DEFAULT_STREAM",
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
    "ConditionFailedError",
]

#: Expected versions: no check / the stream must not exist / it must exist. An ``int`` is an
#: exact version (0: the stream has no events).
ANY = "any"
NO_STREAM = "no_stream"
STREAM_EXISTS = "stream_exists"

#: The stream of conditional appends that name none (:meth:`Store.append_with`).
DEFAULT_STREAM = "$dcb"

#: The older name of :class:`Event`.
RecordedEvent = Event

Expected = Union[str, int]

# ----------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``data``/``metadata``: bytes as is, anything else as MessagePack;
    ``event_id`` (a :class:`uuid.UUID` or 16 bytes) is the idempotency key, generated when
    ``None``."""

    __slots__ = ("event_type", "data", "metadata", "event_id", "tags")

    event_type: str
    data: Any
    metadata: Any
    event_id: Optional[Union[uuid.UUID, bytes]]
    #: Its tags (DCB): each 1..=255 bytes of UTF-8, at most 64 distinct ones; repeats are
    #: dropped and the store keeps them sorted.
    tags: Tuple[str, ...]

    def __init__(self, event_type: str, data: Any = b"", metadata: Any = None, event_id: Optional[Union[uuid.UUID, bytes]] = None, tags: Iterable[str] = ()) -> None:
        object.__setattr__(self, "event_type", event_type)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "tags", _names(tags, "tags"))


def _names(values: Union[str, Iterable[str]], what: str) -> Tuple[str, ...]:
    """A tuple of str from an iterable of str (a bare str is refused: it would be its letters)."""
    if isinstance(values, str):
        raise InvalidArgumentError(f"{what} must be an iterable of str, not a str ({values!r}): wrap one in a list")
    out = tuple(values)
    for value in out:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{what} must hold str values, got {value!r}")
    return out


@dataclass(frozen=True)
class QueryItem:
    """One item of a :class:`Query`: it matches an event whose type is one of ``types`` (any
    type when empty) AND which carries every one of ``tags`` (any tags when empty). An item
    must name at least one type or tag (checked where the query is used)::

        QueryItem(types=["student_subscribed"], tags=["course:c1"])
    """

    __slots__ = ("types", "tags")

    types: Tuple[str, ...]
    tags: Tuple[str, ...]

    def __init__(self, types: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        object.__setattr__(self, "types", _names(types, "QueryItem types"))
        object.__setattr__(self, "tags", _names(tags, "QueryItem tags"))

    def matches(self, event: Event) -> bool:
        """Whether ``event`` matches this item (the test the store's indexes answer)."""
        return (not self.types or event.event_type in self.types) and all(event.has_tag(tag) for tag in self.tags)


class Query:
    """A DCB query: items combined with OR. ``Query(item, ...)`` (at least one item),
    ``Query.all()`` (every event), or the shortcuts ``Query.tags("a", "b")`` (one item: events
    carrying both) and ``Query.types("x", "y")`` (one item: events of either type)::

        Query(QueryItem(types=["course_defined"], tags=["course:c1"]),
              QueryItem(types=["student_subscribed"], tags=["student:ann"]))

    Immutable; invalid queries (no items, an item with neither types nor tags, a limit broken)
    raise :class:`InvalidArgumentError` where they are used."""

    __slots__ = ("_items",)

    def __init__(self, *items: QueryItem) -> None:
        for item in items:
            if not isinstance(item, QueryItem):
                raise InvalidArgumentError(f"Query takes QueryItem values, got {item!r}")
        self._items: Optional[Tuple[QueryItem, ...]] = tuple(items)

    @classmethod
    def all(cls) -> "Query":
        """The query that matches every event."""
        query = cls()
        query._items = None
        return query

    @classmethod
    def tags(cls, *tags: str) -> "Query":
        """One item: the events that carry every one of ``tags``."""
        return cls(QueryItem(tags=tags))

    @classmethod
    def types(cls, *event_types: str) -> "Query":
        """One item: the events of any of ``event_types``."""
        return cls(QueryItem(types=event_types))

    @property
    def items(self) -> Optional[Tuple[QueryItem, ...]]:
        """The items; ``None`` for :meth:`all`."""
        return self._items

    @property
    def is_all(self) -> bool:
        """Whether this is :meth:`all`."""
        return self._items is None

    def or_(self, item: QueryItem) -> "Query":
        """This query with one more item (OR); :meth:`all` stays all."""
        if self._items is None:
            return self
        return Query(*self._items, item)

    def matches(self, event: Event) -> bool:
        """Whether ``event`` matches this query."""
        return self._items is None or any(item.matches(event) for item in self._items)

    def _native(self) -> Optional[List[Tuple[List[str], List[str]]]]:
        if self._items is None:
            return None
        return [(list(item.types), list(item.tags)) for item in self._items]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        if self._items is None:
            return "Query.all()"
        return f"Query({', '.join(repr(item) for item in self._items)})"


@dataclass(frozen=True)
class AppendCondition:
    """The condition of :meth:`Store.append_with`: fail, writing nothing, if an event matching
    ``query`` has a position after ``after`` (usually the last position the decision read:
    the head :meth:`Store.read_query_with_head` returns; 0 counts every event)."""

    __slots__ = ("query", "after")

    query: Query
    after: int

    def __init__(self, query: Query, after: int = 0) -> None:
        if not isinstance(query, Query):
            raise InvalidArgumentError(f"AppendCondition takes a Query, got {query!r}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidArgumentError(f"after must be a position >= 0, got {after!r}")
        object.__setattr__(self, "query", query)
        object.__setattr__(self, "after", after)


def _query(query: Query, what: str = "query") -> Optional[List[Tuple[List[str], List[str]]]]:
    if not isinstance(query, Query):
        raise InvalidArgumentError(f"{what} must be a strata.Query, got {query!r}")
    return query._native()


def _condition(condition: AppendCondition) -> AppendCondition:
    if not isinstance(condition, AppendCondition):
        raise InvalidArgumentError(f"condition must be a strata.AppendCondition, got {condition!r}")
    return condition


#: What :meth:`Store.append` takes for each event.
EventLike = Union[NewEvent, Tuple[Any, ...], dict]


@dataclass(frozen=True)
class AppendResult:
    """Where an append landed. ``already_stored``: the events were stored before (an
    idempotent retry) and these are their original positions."""

    __slots__ = ("first_position", "last_position", "last_version", "already_stored")

    first_position: int
    last_position: int
    last_version: int
    already_stored: bool


@dataclass(frozen=True)
class StreamInfo:
    """A stream's version and the positions of its first and last events."""

    __slots__ = ("version", "first_position", "last_position")

    version: int
    first_position: int
    last_position: int


@dataclass(frozen=True)
class ProjectionStatus:
    """A projection's state: ``phase`` is ``"catching_up"``, ``"live"``, ``"faulted"``,
    ``"rebuilding"`` or ``"retired"``; a faulted one names the event (``fault_position``)
    and the reason (``fault_message``)."""

    __slots__ = ("name", "version", "phase", "checkpoint", "lag", "fault_position", "fault_message")

    name: str
    version: int
    phase: str
    checkpoint: int
    lag: int
    fault_position: int
    fault_message: Optional[str]


def _encode(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return msgpack.packb(value)


# ----------------------------------------------------------------------------------------------
# Subscriptions

#: Events a subscription takes from the native side per call.
_SUBSCRIPTION_BATCH = 1_000
#: The longest an asyncio subscriber's wait runs in its worker thread; after a cancellation the
#: thread is free again within this time. Events are handed over as soon as they commit.
_ASYNC_WAIT_SECONDS = 1.0


class Subscription:
    """Matching events from a position on: history first, then live events as they commit,
    with no gap and no duplicate between the two.

    From a thread: ``for event in subscription`` blocks until the store is closed;
    :meth:`next` waits at most ``timeout`` seconds. From asyncio: ``async for event in
    subscription`` (the wait runs in the loop's default executor, the event loop never
    blocks). Both are context managers (``with`` / ``async with``) that close it."""

    def __init__(self, native: "_native.NativeSubscription") -> None:
        self._native = native
        self._buffer: Deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._fetch: "Optional[asyncio.Future[None]]" = None
        self._closed = False
        #: True once the store was closed and every event committed before was delivered.
        self.done = False

    def _fill(self, timeout: Optional[float]) -> None:
        """Moves the next batch of events (waiting up to ``timeout``) into the buffer. One
        filler at a time keeps the buffer in position order."""
        with self._lock:
            if self._buffer or self.done:
                return
            if self._closed:
                raise ClosedError("the subscription is closed")
            events, ended = self._native.next_batch(_SUBSCRIPTION_BATCH, timeout)
            self._buffer.extend(events)
            if ended:
                self.done = True

    def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event; ``None`` after ``timeout`` seconds without one (``None``: wait as
        long as it takes) or once the store is closed and everything was delivered (then
        :attr:`done` is true). Raises :class:`ClosedError` after :meth:`close`."""
        if not self._buffer:
            if self._closed:
                raise ClosedError("the subscription is closed")
            self._fill(timeout)
        return self._buffer.popleft() if self._buffer else None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        try:
            event = self.next()
        except ClosedError:
            if self._closed:  # closed by another thread while this one waited
                raise StopIteration from None
            raise
        if event is None:
            raise StopIteration
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self.done or self._closed:
                raise StopAsyncIteration
            if self._fetch is None:
                loop = asyncio.get_running_loop()
                self._fetch = loop.run_in_executor(None, self._fill, _ASYNC_WAIT_SECONDS)
            fetch = self._fetch
            try:
                # Shielded: a cancelled waiter leaves the fetch running, and the events it
                # brings stay in the buffer for the next call (none is lost).
                await asyncio.shield(fetch)
            except ClosedError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            finally:
                if fetch.done():
                    self._fetch = None
        return self._buffer.popleft()

    def close(self) -> None:
        """Releases the subscription; a wait in another thread ends within 0.2 s. Closing
        twice does nothing."""
        self._closed = True
        self._native.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# The store

_MIN_TIME = -(2**63)
_MAX_TIME = 2**63 - 1


def _status(raw: tuple) -> ProjectionStatus:
    return ProjectionStatus(*raw)


def _result(raw: tuple) -> AppendResult:
    return AppendResult(*raw)


class Store:
    """An open store. Use it as a context manager (it closes on exit) or call :meth:`close`.
    Safe to share between threads; appends and reads release the GIL while they wait."""

    __slots__ = ("_native", "__weakref__")

    def __init__(self, native: "_native.NativeStore") -> None:
        self._native = native

    # -- life

    def close(self) -> None:
        """Waits for queued appends, stops the writer and the projections. Closing twice does
        nothing; every later call raises :class:`ClosedError`."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native.closed

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        native = getattr(self, "_native", None)
        if native is not None:
            native.close()

    def __repr__(self) -> str:
        return f"<strata.Store {'closed' if self.closed else 'open'}>"

    # -- appending

    def append(self, stream_id: str, events: Iterable[EventLike], expected: Expected = ANY) -> AppendResult:
        """Appends ``events`` to one stream, all or nothing, if its version is ``expected``
        (:data:`ANY`, :data:`NO_STREAM`, :data:`STREAM_EXISTS` or an exact version). Each
        event is a :class:`NewEvent`, a ``(type, data[, metadata[, id[, tags]]])`` tuple, or a
        dict with ``type``, ``data``, ``metadata``, ``id``, ``tags``. Raises
        :class:`ConflictError` (with ``actual_version``) when the version does not hold."""
        return _result(self._native.append(stream_id, events, expected))

    def append_with(self, events: Iterable[EventLike], condition: AppendCondition, stream_id: Optional[str] = None, expected: Expected = ANY) -> AppendResult:
        """A conditional append (DCB): appends ``events`` (tagged, usually) unless an event
        matching ``condition.query`` was appended after ``condition.after``; then nothing is
        written and :class:`ConditionFailedError` names the first such ``position``. Checked
        inside the store's write transaction, so two appends whose conditions overlap never
        both succeed, in this process or another. ``stream_id`` ``None`` appends to the default
        stream :data:`DEFAULT_STREAM` (``"$dcb"``); a named stream may also carry an
        ``expected`` version (:class:`ConflictError`). A retry of an append already stored
        (same event ids) succeeds with the original positions."""
        condition = _condition(condition)
        return _result(self._native.append_with(stream_id, events, expected, _query(condition.query, "condition.query"), condition.after))

    def append_multi(self, parts: Iterable[Tuple[str, Iterable[EventLike], Expected]]) -> List[AppendResult]:
        """Appends to several streams atomically: ``parts`` holds ``(stream_id, events,
        expected)`` tuples; every part is stored or none is."""
        return [_result(raw) for raw in self._native.append_multi(parts)]

    def append_multi_with(self, parts: Iterable[Tuple[str, Iterable[EventLike], Expected]], condition: AppendCondition) -> List[AppendResult]:
        """:meth:`append_multi` with a condition: every part's expected version and the
        condition must hold (:class:`ConflictError`, :class:`ConditionFailedError`), or nothing
        is written."""
        condition = _condition(condition)
        return [_result(raw) for raw in self._native.append_multi_with(parts, _query(condition.query, "condition.query"), condition.after)]

    # -- reading

    def read_stream(self, stream_id: str, from_version: int = 0, backwards: bool = False, limit: Optional[int] = None) -> Cursor:
        """The events of a stream from ``from_version`` (0: its first event in that direction,
        the last one when ``backwards``), at most ``limit`` (``None`` or 0: all). An unknown
        stream reads empty."""
        return self._native.read_stream(stream_id, from_version, backwards, limit or 0)

    def read_all(self, from_position: int = 1, limit: Optional[int] = None) -> Cursor:
        """Every event from ``from_position`` in position order, at most ``limit``."""
        return self._native.read_all(from_position, limit or 0)

    def read_by_type(self, event_types: Sequence[str], recorded_from: int = _MIN_TIME, recorded_to: int = _MAX_TIME, from_position: int = 1, limit: Optional[int] = None) -> Cursor:
        """The events of the given types recorded in ``[recorded_from, recorded_to)`` (unix
        microseconds), from ``from_position``, at most ``limit``."""
        if isinstance(event_types, str):
            event_types = [event_types]
        return self._native.read_by_type(list(event_types), recorded_from, recorded_to, from_position, limit or 0)

    def read_query(self, query: Query, after: int = 0, limit: Optional[int] = None) -> Cursor:
        """The events after position ``after`` (0: from the first) that match ``query``, in
        position order, at most ``limit`` (``None`` or 0: all); read through the tag index a
        page of 1,000 at a time, like the other reads (:meth:`Cursor.next_page`)."""
        return self._native.read_query(_query(query), after, limit or 0)

    def read_query_with_head(self, query: Query, after: int = 0) -> Tuple[List[Event], int]:
        """The events matching ``query`` after ``after`` and the log's last position, as of one
        snapshot: decide on the events, then append with ``AppendCondition(query, head)``.
        Fewer than 100,000 events (as many raise :class:`InvalidArgumentError`: decide on a
        smaller query)."""
        return self._native.read_query_with_head(_query(query), after)

    def stream_info(self, stream_id: str) -> Optional[StreamInfo]:
        """A stream's version and position range; ``None`` if it has no events."""
        raw = self._native.stream_info(stream_id)
        return None if raw is None else StreamInfo(*raw)

    @property
    def last_position(self) -> int:
        """The position of the last committed event (0 when the store is empty)."""
        return self._native.last_position()

    def subscribe(self, from_position: int = 0, stream_id: Optional[str] = None, stream_prefix: Optional[str] = None, event_types: Optional[Sequence[str]] = None, query: Optional[Query] = None) -> Subscription:
        """A :class:`Subscription` to the events from ``from_position`` (0 or 1: the whole
        log), optionally of one stream (``stream_id``) or of the streams starting with
        ``stream_prefix``, of some ``event_types`` only, and matching a DCB ``query`` only
        (the filters combine: an event must pass all that are given)."""
        if isinstance(event_types, str):
            event_types = [event_types]
        # None and Query.all() both pass None: no query filter.
        native_query = None if query is None else _query(query)
        native = self._native.subscribe(from_position, stream_id, stream_prefix, list(event_types or []), native_query)
        return Subscription(native)

    # -- projections

    def register_projection(self, wasm: Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]) -> ProjectionStatus:
        """Loads a projection compiled to a WebAssembly component (its bytes, or the path of
        its ``.wasm`` file) and registers it. A known name resumes from its checkpoint."""
        if isinstance(wasm, (str, os.PathLike)):
            with builtins.open(wasm, "rb") as file:
                wasm = file.read()
        return _status(self._native.register_projection(bytes(wasm)))

    def projection_status(self, name: str) -> ProjectionStatus:
        """The stored status of a projection (:class:`NotFoundError` if there is none)."""
        return _status(self._native.projection_status(name))

    def catch_up(self, name: str) -> ProjectionStatus:
        """Folds the events the projection has not seen yet (until caught up or faulted)."""
        return _status(self._native.catch_up(name))

    def reset_projection(self, name: str) -> ProjectionStatus:
        """Deletes its state: it rebuilds from position 1 on the next catch-up."""
        return _status(self._native.reset_projection(name))

    def resume_projection(self, name: str) -> ProjectionStatus:
        """Clears a fault: the next batch retries the event it failed on."""
        return _status(self._native.resume_projection(name))

    def start_projections(self, idle_wake: float = 1.0) -> None:
        """Keeps every registered projection caught up in a background thread, woken by each
        commit and at least every ``idle_wake`` seconds."""
        self._native.start_projections(idle_wake)

    def stop_projections(self) -> None:
        """Stops the background runner (after its current batch)."""
        self._native.stop_projections()

    def query(self, name: str, request: Any = None, raw: bool = False) -> Any:
        """Asks the projection: ``request`` bytes as is, anything else as MessagePack
        (``None``: an empty map). The answer is decoded from MessagePack unless ``raw``."""
        answer = self._native.query(name, _encode({} if request is None else request))
        return answer if raw else msgpack.unpackb(answer)

    # -- metrics

    def metrics_text(self) -> str:
        """The store's metrics in the Prometheus text format."""
        return self._native.metrics_text()


def open(path: Union[str, "os.PathLike[str]"], durability: str = "durable", bucket_width: Optional[str] = None, cache_bytes: Optional[int] = None, max_events_per_append: Optional[int] = None, read_connections: Optional[int] = None) -> Store:  # noqa: A001
    """Opens (creating if needed) the store at ``path``. ``durability``: ``"durable"`` (an
    append returns after fsync) or ``"fast"``; ``bucket_width`` (``"hour"``, ``"day"``,
    ``"week"``, ``"month"``) is fixed when the store is created."""
    return Store(_native.NativeStore.open(os.fspath(path), durability, bucket_width, cache_bytes, max_events_per_append, read_connections))


def open_in_memory(durability: str = "durable", bucket_width: Optional[str] = None, cache_bytes: Optional[int] = None, max_events_per_append: Optional[int] = None, read_connections: Optional[int] = None) -> Store:
    """Opens a new private store held in memory (gone when closed)."""
    return Store(_native.NativeStore.open_in_memory(durability, bucket_width, cache_bytes, max_events_per_append, read_connections))
