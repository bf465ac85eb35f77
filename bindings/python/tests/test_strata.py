"""The Python package, tested from the installed wheel over the real native module (no mocks).

run_tests.sh runs these from a directory outside bindings/python, so `import strata` finds the
installed package only.
"""

import asyncio
import os
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from pathlib import Path

import msgpack
import pytest

import strata

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO = PACKAGE_ROOT.parent.parent


@pytest.fixture
def store():
    with strata.open_in_memory(durability="fast") as store:
        yield store


# ----------------------------------------------------------------------------------------------
# Installing


def test_the_package_is_the_installed_wheel_not_the_source_tree():
    package = Path(strata.__file__).resolve().parent
    assert package != (PACKAGE_ROOT / "python" / "strata").resolve()
    assert package.parent == Path(sysconfig.get_paths()["purelib"]).resolve()
    native = Path(strata._native.__file__)
    assert native.parent == package and native.suffix in (".so", ".pyd")
    assert (package / "py.typed").is_file() and (package / "_native.pyi").is_file()
    assert strata.__version__ == "0.1.0"


def test_import_works_from_any_directory_with_no_environment_variable(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = "import strata; s = strata.open_in_memory(); print(s.append('s', [('a', b'')]).last_version)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "1\n"


def test_the_distribution_is_named_strata_eventstore_and_needs_msgpack():
    from importlib import metadata

    assert metadata.version("strata-eventstore") == "0.1.0"
    assert any(r.startswith("msgpack") for r in metadata.requires("strata-eventstore"))


# ----------------------------------------------------------------------------------------------
# Opening


def test_open_a_file_store_and_reopen_it(tmp_path):
    path = tmp_path / "events.db"
    with strata.open(path, durability="fast", bucket_width="day") as store:
        result = store.append("s", [("created", {"n": 1})])
        assert (result.first_position, result.last_version, result.already_stored) == (1, 1, False)
    with strata.open(str(path)) as store:
        assert store.last_position == 1
    with pytest.raises(strata.IncompatibleError):
        strata.open(path, bucket_width="hour")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"j" * 4096)
    with pytest.raises(strata.CorruptError) as error:
        strata.open(junk)
    assert error.value.status == "STRATA_CORRUPT"
    with pytest.raises(strata.InvalidArgumentError):
        strata.open(path, read_connections=0)
    with pytest.raises(strata.InvalidArgumentError, match="durability"):
        strata.open(path, durability="sometimes")
    with pytest.raises(strata.InvalidArgumentError, match="bucket_width"):
        strata.open(tmp_path / "other.db", bucket_width="year")


def test_closed_store_raises_closed(store):
    store.close()
    store.close()  # closing twice is harmless in Python
    assert store.closed
    with pytest.raises(strata.ClosedError):
        store.append("s", [("a", b"")])
    with pytest.raises(strata.ClosedError):
        store.last_position
    with pytest.raises(strata.ClosedError):
        store.read_all()


# ----------------------------------------------------------------------------------------------
# Appending and reading


def test_append_dicts_bytes_and_read_back(store):
    event_id = uuid.uuid4()
    result = store.append(
        "order-1",
        [
            strata.NewEvent("created", {"amount": 5}, metadata={"user": "u"}, event_id=event_id),
            ("paid", b"\x00raw\xff"),
            {"type": "shipped"},
        ],
        expected=strata.NO_STREAM,
    )
    assert (result.first_position, result.last_position, result.last_version) == (1, 3, 3)
    events = list(store.read_stream("order-1"))
    assert [e.version for e in events] == [1, 2, 3]
    assert events[0].decode() == {"amount": 5}
    assert events[0].decode_metadata() == {"user": "u"}
    assert events[0].event_id == event_id
    assert events[0].stream_id == "order-1" and events[0].recorded_at > 0
    assert events[1].data == b"\x00raw\xff" and events[1].metadata == b""
    assert events[1].decode_metadata() is None
    assert events[2].data == b"" and events[2].decode() is None
    assert [e.version for e in store.read_stream("order-1", backwards=True)] == [3, 2, 1]
    assert [e.version for e in store.read_stream("order-1", from_version=2, limit=1)] == [2]
    assert [e.version for e in store.read_stream("order-1", from_version=2, backwards=True)] == [2, 1]
    assert list(store.read_stream("nope")) == []
    assert store.stream_info("order-1") == strata.StreamInfo(3, 1, 3)
    assert store.stream_info("nope") is None


def test_read_stream_takes_keyword_arguments(store):
    store.append("order-1", [("e", i) for i in range(1, 201)])
    events = list(store.read_stream("order-1", from_version=1, backwards=False, limit=100))
    assert [e.decode() for e in events] == list(range(1, 101))
    assert [e.version for e in store.read_stream(stream_id="order-1", from_version=200, backwards=True, limit=2)] == [200, 199]


def test_data_of_any_msgpack_value_round_trips(store):
    values = [None, True, 3, -7, 2**40, 1.5, "text", [1, "two", b"3"], {"nested": {"list": [1, 2]}}]
    store.append("values", [("v", value) for value in values])
    events = list(store.read_stream("values"))
    assert [e.decode() for e in events] == values  # None is stored as no data
    assert events[0].data == b""
    assert events[-1].data == msgpack.packb({"nested": {"list": [1, 2]}})
    store.append("raw", [("v", bytearray(b"ba")), ("v", memoryview(b"mv"))])
    assert [e.data for e in store.read_stream("raw")] == [b"ba", b"mv"]
    # Bytes given as the data itself are stored as they are, not packed.
    store.append("raw-bytes", [("v", b"bin")])
    (raw,) = store.read_stream("raw-bytes")
    assert raw.data == b"bin"


def test_an_event_is_an_immutable_value(store):
    store.append("s", [("created", {"n": 1}), ("renamed", b"x" * 100)])
    first, second = store.read_all()
    assert isinstance(first, strata.Event) and strata.RecordedEvent is strata.Event
    with pytest.raises(AttributeError):
        first.version = 9
    with pytest.raises(AttributeError):
        first.anything = 1
    assert not hasattr(first, "__dict__")
    assert repr(first).startswith("Event(position=1, stream_id='s', version=1, event_type='created', data=b'")
    assert "(100 bytes)" in repr(second) and "..." in repr(second)
    again = next(iter(store.read_all(limit=1)))
    assert again == first and again != second and hash(again) == hash(first)
    assert len({first, again, second}) == 2
    assert first != "not an event"
    assert isinstance(first.event_id, uuid.UUID)


def test_conflict_carries_the_actual_version(store):
    store.append("s", [("a", 1), ("b", 2)])
    with pytest.raises(strata.ConflictError) as error:
        store.append("s", [("c", 3)], expected=1)
    assert error.value.actual_version == 2
    assert error.value.status == "STRATA_CONFLICT"
    assert "actual version 2" in str(error.value)
    with pytest.raises(strata.ConflictError) as error:
        store.append("s", [("c", 3)], expected=strata.NO_STREAM)
    assert error.value.actual_version == 2
    with pytest.raises(strata.ConflictError) as error:
        store.append("t", [("c", 3)], expected=strata.STREAM_EXISTS)
    assert error.value.actual_version == 0
    assert store.append("s", [("c", 3)], expected=2).last_version == 3


def test_idempotent_retry_and_duplicate_id(store):
    ids = [uuid.uuid4(), uuid.uuid4()]
    events = [strata.NewEvent("a", b"1", event_id=ids[0]), strata.NewEvent("b", b"2", event_id=ids[1].bytes)]
    first = store.append("s", events)
    again = store.append("s", events)
    assert again.already_stored and again.first_position == first.first_position
    assert store.last_position == 2
    with pytest.raises(strata.DuplicateIdError):
        store.append("other", events[:1])


def test_invalid_arguments_are_clear_errors_and_store_nothing(store):
    store.append("s", [("a", b"")])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("", [("a", b"")])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [("", b"")])
    with pytest.raises(strata.InvalidArgumentError, match="expected"):
        store.append("s", [("a", b"")], expected=-1)
    with pytest.raises(strata.InvalidArgumentError, match="expected"):
        store.append("s", [("a", b"")], expected=True)
    with pytest.raises(strata.InvalidArgumentError, match="16 bytes"):
        store.append("s", [strata.NewEvent("a", event_id=b"short")])
    with pytest.raises(strata.InvalidArgumentError, match=r"events\[1\].data cannot be encoded"):
        store.append("s", [("a", b""), ("b", object())])
    with pytest.raises(strata.InvalidArgumentError, match="event type must be a str"):
        store.append("s", [(7, b"")])
    with pytest.raises(strata.InvalidArgumentError, match="needs a \"type\""):
        store.append("s", [{"data": b""}])
    with pytest.raises(strata.InvalidArgumentError):
        list(store.read_by_type([]))
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError too
        store.append("s", [object()])
    assert store.last_position == 1 and store.stream_info("s").version == 1


def test_append_multi_is_all_or_nothing(store):
    results = store.append_multi([("a", [("x", 1)], strata.NO_STREAM), ("b", [("y", 2)], 0)])
    assert [r.last_version for r in results] == [1, 1]
    with pytest.raises(strata.ConflictError) as error:
        store.append_multi([("a", [("x", 1)], 1), ("b", [("y", 2)], 5)])
    assert error.value.actual_version == 1 and "\"b\"" in str(error.value)
    assert store.last_position == 2
    with pytest.raises(strata.InvalidArgumentError):
        store.append_multi([("a", [("x", 1)], strata.ANY), ("a", [("y", 2)], strata.ANY)])
    with pytest.raises(strata.InvalidArgumentError, match=r"parts\[0\]"):
        store.append_multi(["not a part"])


def test_read_all_and_by_type_across_pages(store):
    for start in range(0, 2500, 500):
        store.append("s", [("even" if i % 2 == 0 else "odd", {"i": i}) for i in range(start, start + 500)])
    assert sum(1 for _ in store.read_all()) == 2500
    assert [e.position for e in store.read_all(2499)] == [2499, 2500]
    assert sum(1 for _ in store.read_all(limit=1200)) == 1200
    evens = list(store.read_by_type(["even"]))
    assert len(evens) == 1250 and all(e.event_type == "even" for e in evens)
    assert [e.decode()["i"] for e in evens[:3]] == [0, 2, 4]
    assert list(store.read_by_type(["even"], recorded_to=0)) == []
    # Positions 2400..=2500 that hold odd i (position i + 1 is even): 51 of them.
    assert len(list(store.read_by_type("odd", from_position=2400))) == 51


def test_a_cursor_reads_a_page_per_native_call(store):
    for start in range(0, 2500, 500):
        store.append("s", [("e", b"") for _ in range(500)])
    assert strata._native.CURSOR_PAGE == 1000
    cursor = store.read_all()
    pages = []
    while True:
        page = cursor.next_page()
        if not page:
            break
        pages.append([e.position for e in page])
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert pages[0][0] == 1 and pages[2][-1] == 2500
    # mixing the two: next() takes one, next_page() the rest of that page
    cursor = store.read_all()
    assert next(cursor).position == 1
    assert len(cursor.next_page()) == 999
    assert next(cursor).position == 1001


def test_a_cursor_is_a_context_manager_and_fails_once_the_store_closes():
    store = strata.open_in_memory(durability="fast")
    store.append("s", [("e", b"") for _ in range(1500)])
    with store.read_all() as cursor:
        assert next(cursor).position == 1
    assert list(cursor) == []  # closed: ends
    cursor = store.read_all()
    assert len(cursor.next_page()) == 1000
    store.close()
    with pytest.raises(strata.ClosedError):
        list(cursor)


# ----------------------------------------------------------------------------------------------
# Subscriptions


def test_subscription_history_then_live(store):
    store.append("live-1", [("a", 1), ("b", 2)])
    store.append("other", [("a", 3)])
    with store.subscribe(stream_id="live-1") as sub:
        assert [sub.next(timeout=0).version for _ in range(2)] == [1, 2]
        assert sub.next(timeout=0.01) is None

        def late():
            time.sleep(0.05)
            store.append("live-1", [("c", 4)])

        thread = threading.Thread(target=late)
        thread.start()
        event = sub.next(timeout=10)
        thread.join()
        assert event.event_type == "c" and event.decode() == 4
    with pytest.raises(strata.ClosedError):
        sub.next(timeout=0)
    with store.subscribe(event_types=["a"]) as sub:
        assert [sub.next(timeout=0).position for _ in range(2)] == [1, 3]
    with store.subscribe(stream_prefix="oth") as sub:
        assert sub.next(timeout=0).stream_id == "other"
    with store.subscribe(from_position=3) as sub:
        assert sub.next(timeout=0).position == 3
    with pytest.raises(strata.InvalidArgumentError):
        store.subscribe(stream_id="a", stream_prefix="b")


def test_subscription_iterator_ends_when_the_store_closes():
    store = strata.open_in_memory(durability="fast")
    store.append("s", [("a", 1), ("b", 2)])
    sub = store.subscribe()
    store.close()
    assert [e.version for e in sub] == [1, 2]
    assert sub.done
    sub.close()


def test_a_thread_iterating_a_subscription_sees_every_live_event_in_order(store):
    received = []
    sub = store.subscribe()

    def consume():
        for event in sub:
            received.append(event.position)
            if len(received) == 3000:
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    for _ in range(3):
        store.append("s", [("e", b"") for _ in range(1000)])
    consumer.join(timeout=30)
    assert received == list(range(1, 3001))
    sub.close()


def test_closing_a_subscription_ends_a_wait_in_another_thread(store):
    sub = store.subscribe()
    ended = threading.Event()

    def consume():
        for _ in sub:
            pass
        ended.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.1)
    sub.close()
    assert ended.wait(timeout=5)


def test_a_waiting_subscription_does_not_hold_the_gil(store):
    sub = store.subscribe(stream_id="never")
    waiter = threading.Thread(target=sub.next, kwargs={"timeout": 1.0})
    waiter.start()
    time.sleep(0.05)
    started = time.perf_counter()
    count = sum(1 for _ in range(200_000))  # needs the GIL throughout
    elapsed = time.perf_counter() - started
    waiter.join()
    assert count == 200_000 and elapsed < 0.9, elapsed
    sub.close()


def test_async_for_receives_history_then_live_events(store):
    store.append("s", [("a", 1)])

    async def main():
        received = []
        async with store.subscribe(stream_id="s") as sub:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: threading.Thread(target=store.append, args=("s", [("b", 2), ("c", 3)])).start())
            async for event in sub:
                received.append((event.version, event.decode()))
                if len(received) == 3:
                    break
        return received

    assert asyncio.run(main()) == [(1, 1), (2, 2), (3, 3)]


def test_async_for_does_not_block_the_event_loop(store):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        async with store.subscribe() as sub:
            waiter = asyncio.create_task(sub.__anext__())
            await asyncio.sleep(0.3)
            assert not waiter.done()
            store.append("s", [("a", b"")])
            event = await asyncio.wait_for(waiter, timeout=5)
        tick_task.cancel()
        return ticks, event.position

    ticks, position = asyncio.run(main())
    assert position == 1 and ticks >= 10


def test_a_cancelled_async_wait_loses_no_event(store):
    async def main():
        sub = store.subscribe()
        waiter = asyncio.create_task(sub.__anext__())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        store.append("s", [("a", b""), ("b", b"")])
        got = [(await sub.__anext__()).position, (await sub.__anext__()).position]
        sub.close()
        return got

    assert asyncio.run(main()) == [1, 2]


def test_async_for_ends_when_the_store_closes():
    store = strata.open_in_memory(durability="fast")
    store.append("s", [("a", 1), ("b", 2)])

    async def main():
        sub = store.subscribe()
        store.close()
        return [event.version async for event in sub]

    assert asyncio.run(main()) == [1, 2]


# ----------------------------------------------------------------------------------------------
# Errors, metrics, projections


def test_metrics_text(store):
    store.append("s", [("a", 1)])
    text = store.metrics_text()
    assert "# TYPE" in text and "strata_" in text


def test_every_failure_has_its_own_exception_class():
    for code in range(2, 17):
        assert strata._ERRORS[code].code == code
        assert strata._ERRORS[code]("m").status.startswith("STRATA_")
        assert issubclass(strata._ERRORS[code], strata.StrataError)
    assert len(set(strata._ERRORS.values())) == 15
    assert strata.ConflictError("m", 4).actual_version == 4


def _example_plugin(name):
    path = os.environ.get("STRATA_TEST_PLUGIN_DIR")
    candidates = [Path(path)] if path else []
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    candidates.append(target / "wasm-examples/wasm32-wasip2/release")
    for directory in candidates:
        wasm = directory / f"{name.replace('-', '_')}.wasm"
        if wasm.is_file():
            return wasm
    pytest.fail(
        f"the example plugin {name} is not built; run_tests.sh builds it "
        "(cargo build --release --target wasm32-wasip2 --manifest-path plugins/examples/Cargo.toml)"
    )


def test_projection_register_catch_up_query_reset(store):
    wasm = _example_plugin("event-counter").read_bytes()
    store.append("o", [("order_created", 1), ("order_created", 2), ("order_paid", 3)])
    with pytest.raises(strata.NotFoundError):
        store.projection_status("event-counter")
    with pytest.raises(strata.InvalidArgumentError):
        store.register_projection(b"\x00asm\x01\x00\x00\x00junk")
    status = store.register_projection(wasm)
    assert (status.name, status.version, status.checkpoint, status.lag) == ("event-counter", 1, 0, 3)
    status = store.catch_up("event-counter")
    assert (status.checkpoint, status.lag, status.phase, status.fault_message) == (3, 0, "live", None)
    assert store.query("event-counter") == {"order_created": 2, "order_paid": 1}
    assert msgpack.unpackb(store.query("event-counter", b"\x80", raw=True)) == {"order_created": 2, "order_paid": 1}
    with pytest.raises(strata.NotFoundError):
        store.query("nope")
    assert store.reset_projection("event-counter").checkpoint == 0
    store.start_projections(idle_wake=0.05)
    with pytest.raises(strata.MisuseError):
        store.start_projections()
    deadline = time.time() + 20
    while store.projection_status("event-counter").checkpoint < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert store.projection_status("event-counter").checkpoint == 3
    store.stop_projections()
    assert store.resume_projection("event-counter").phase == "live"


def test_a_projection_registers_from_its_wasm_file(store):
    store.append("o", [("order_created", 1)])
    status = store.register_projection(_example_plugin("event-counter"))
    assert status.name == "event-counter"
    store.catch_up("event-counter")
    assert store.query("event-counter") == {"order_created": 1}


# ----------------------------------------------------------------------------------------------
# The README and the bench


def test_the_bench_runs_and_reports_its_ratios(tmp_path):
    run = subprocess.run(
        [sys.executable, str(PACKAGE_ROOT / "bench.py"), "--events", "2000", "--runs", "1"],
        cwd=tmp_path, env={**os.environ, "BENCH_DIR": str(tmp_path)}, capture_output=True, text=True, check=True,
    )
    ratios = [line for line in run.stdout.splitlines() if line.startswith("RATIO ")]
    assert [line.split(":")[0] for line in ratios] == ["RATIO append durable", "RATIO append fast", "RATIO read all"]


def test_the_readme_example_runs_and_is_in_the_readme(tmp_path):
    example = (PACKAGE_ROOT / "example.py").read_text()
    readme = (REPO / "README.md").read_text()
    assert f"```python\n{example}```" in readme, "README.md must hold bindings/python/example.py verbatim"
    # -c from another directory: the example imports the installed package, not the source.
    output = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert output.stdout == (
        "conflict, actual version 2\n"
        "1 order_created {'order_id': 'o-1', 'amount_cents': 1999}\n"
        "2 order_paid b'raw bytes'\n"
        "first order: o-1\n"
        "paid at position 2\n"
    )
