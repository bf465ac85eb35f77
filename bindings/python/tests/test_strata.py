"""Tests of the Python package over the real libstrata (no mocks)."""

import os
import re
import subprocess
import sys
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


def test_open_a_file_store_and_reopen_it(tmp_path):
    path = tmp_path / "events.db"
    with strata.open(path, durability="fast", bucket_width="day") as store:
        result = store.append("s", [("created", {"n": 1})])
        assert (result.first_position, result.last_version, result.already_stored) == (1, 1, False)
    with strata.open(path) as store:
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
    with pytest.raises(strata.InvalidArgumentError):
        strata.open(path, durability="sometimes")


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
    assert events[2].data == b""
    assert [e.version for e in store.read_stream("order-1", backwards=True)] == [3, 2, 1]
    assert [e.version for e in store.read_stream("order-1", from_version=2, limit=1)] == [2]
    assert list(store.read_stream("nope")) == []
    assert store.stream_info("order-1") == strata.StreamInfo(3, 1, 3)
    assert store.stream_info("nope") is None


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
    events = [strata.NewEvent("a", b"1", event_id=ids[0]), strata.NewEvent("b", b"2", event_id=ids[1])]
    first = store.append("s", events)
    again = store.append("s", events)
    assert again.already_stored and again.first_position == first.first_position
    with pytest.raises(strata.DuplicateIdError):
        store.append("other", events[:1])


def test_invalid_arguments(store):
    with pytest.raises(strata.InvalidArgumentError):
        store.append("", [("a", b"")])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [("", b"")])
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [("a", b"")], expected=-1)
    with pytest.raises(strata.InvalidArgumentError):
        store.append("s", [strata.NewEvent("a", event_id=b"short")])
    with pytest.raises(strata.InvalidArgumentError):
        list(store.read_by_type([]))
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError too
        store.append("s", [object()])


def test_append_multi_is_all_or_nothing(store):
    results = store.append_multi([("a", [("x", 1)], strata.NO_STREAM), ("b", [("y", 2)], 0)])
    assert [r.last_version for r in results] == [1, 1]
    with pytest.raises(strata.ConflictError):
        store.append_multi([("a", [("x", 1)], 1), ("b", [("y", 2)], 5)])
    assert store.last_position == 2
    with pytest.raises(strata.InvalidArgumentError):
        store.append_multi([("a", [("x", 1)], strata.ANY), ("a", [("y", 2)], strata.ANY)])


def test_read_all_and_by_type_across_pages(store):
    for start in range(0, 2500, 500):
        store.append("s", [("even" if i % 2 == 0 else "odd", {"i": i}) for i in range(start, start + 500)])
    assert sum(1 for _ in store.read_all()) == 2500
    assert [e.position for e in store.read_all(2499)] == [2499, 2500]
    assert sum(1 for _ in store.read_all(limit=1200)) == 1200
    evens = list(store.read_by_type(["even"]))
    assert len(evens) == 1250 and all(e.event_type == "even" for e in evens)
    assert list(store.read_by_type(["even"], recorded_to=0)) == []


def test_closed_store_raises_closed(store):
    store.close()
    store.close()  # closing twice is harmless in Python
    with pytest.raises(strata.ClosedError):
        store.append("s", [("a", b"")])
    with pytest.raises(strata.ClosedError):
        store.last_position


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
    with store.subscribe(event_types=["a"]) as sub:
        assert [sub.next(timeout=0).position for _ in range(2)] == [1, 3]
    with store.subscribe(stream_prefix="oth") as sub:
        assert sub.next(timeout=0).stream_id == "other"
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


def test_metrics_text(store):
    store.append("s", [("a", 1)])
    text = store.metrics_text()
    assert "# TYPE" in text and "strata_" in text


def test_every_status_has_an_exception_class():
    for code in range(2, 16):
        assert strata._ERRORS[code].code == code
        assert strata._ERRORS[code]("m").status.startswith("STRATA_")


def _example_plugin(name):
    path = os.environ.get("STRATA_TEST_PLUGIN_DIR")
    candidates = [Path(path)] if path else []
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    candidates.append(target / "wasm-examples/wasm32-wasip2/release")
    for directory in candidates:
        wasm = directory / f"{name.replace('-', '_')}.wasm"
        if wasm.is_file():
            return wasm.read_bytes()
    pytest.fail(
        f"the example plugin {name} is not built; run_tests.sh builds it "
        "(cargo build --release --target wasm32-wasip2 --manifest-path plugins/examples/Cargo.toml)"
    )


def test_projection_register_catch_up_query_reset(store):
    wasm = _example_plugin("event-counter")
    store.append("o", [("order_created", 1), ("order_created", 2), ("order_paid", 3)])
    with pytest.raises(strata.NotFoundError):
        store.projection_status("event-counter")
    with pytest.raises(strata.InvalidArgumentError):
        store.register_projection(b"\x00asm\x01\x00\x00\x00junk")
    status = store.register_projection(wasm)
    assert (status.name, status.version, status.checkpoint, status.lag) == ("event-counter", 1, 0, 3)
    status = store.catch_up("event-counter")
    assert (status.checkpoint, status.lag, status.phase) == (3, 0, "live")
    assert store.query("event-counter") == {"order_created": 2, "order_paid": 1}
    assert msgpack.unpackb(store.query("event-counter", b"\x80", raw=True)) == {"order_created": 2, "order_paid": 1}
    with pytest.raises(strata.NotFoundError):
        store.query("nope")
    assert store.reset_projection("event-counter").checkpoint == 0
    store.start_projections(idle_wake=0.05)
    deadline = time.time() + 20
    while store.projection_status("event-counter").checkpoint < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert store.projection_status("event-counter").checkpoint == 3
    store.stop_projections()
    assert store.resume_projection("event-counter").phase == "live"


def test_the_readme_example_runs_and_is_in_the_readme():
    example = (PACKAGE_ROOT / "example.py").read_text()
    readme = (REPO / "README.md").read_text()
    assert f"```python\n{example}```" in readme, "README.md must hold bindings/python/example.py verbatim"
    output = subprocess.run([sys.executable, str(PACKAGE_ROOT / "example.py")], capture_output=True, text=True, check=True)
    assert output.stdout == (
        "conflict, actual version 2\n"
        "1 order_created {'order_id': 'o-1', 'amount_cents': 1999}\n"
        "2 order_paid b'raw bytes'\n"
        "first order: o-1\n"
    )


def test_the_library_is_found_by_the_documented_rules():
    assert strata.library_path.is_file()
    if os.environ.get("STRATA_LIBRARY"):
        assert str(strata.library_path) == os.environ["STRATA_LIBRARY"]
    assert re.match(r"\d+\.\d+\.\d+", strata._native.lib.strata_version().decode())
