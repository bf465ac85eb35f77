"""Tags, queries and conditional appends (Dynamic Consistency Boundaries), from the installed
wheel over the real native module (no mocks)."""

import subprocess
import sys
from pathlib import Path

import pytest

import strata
from strata import AppendCondition, NewEvent, Query, QueryItem

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REPO = PACKAGE_ROOT.parent.parent


@pytest.fixture
def store():
    with strata.open_in_memory(durability="fast") as store:
        yield store


def tagged(event_type, *tags, data=b""):
    return NewEvent(event_type, data, tags=tags)


def positions(cursor):
    return [event.position for event in cursor]


# ----------------------------------------------------------------------------------------------
# Tags on events


def test_tags_are_stored_sorted_without_repeats_and_read_back_as_a_tuple(store):
    store.append("s", [
        NewEvent("a", tags=["z", "b", "z"]),
        ("b", b"", None, None, ["t"]),
        {"type": "c", "tags": ("x", "y")},
        ("d", b"untagged"),
    ])
    events = list(store.read_stream("s"))
    assert [e.tags for e in events] == [("b", "z"), ("t",), ("x", "y"), ()]
    assert all(isinstance(e.tags, tuple) for e in events)
    assert events[0].has_tag("z") and not events[0].has_tag("t")
    assert "tags=('b', 'z')" in repr(events[0]) and "tags" not in repr(events[3])
    # Tags take part in equality.
    assert events[0] == list(store.read_all(limit=1))[0]
    assert events[0] != events[1]


def test_new_event_keeps_its_tags_as_a_tuple():
    event = NewEvent("a", tags=["x", "y"])
    assert event.tags == ("x", "y")
    assert NewEvent("a").tags == ()


@pytest.mark.parametrize("tags, message", [
    (["a" * 256], "a tag must be 1..=255 bytes"),
    ([""], "a tag must be 1..=255 bytes"),
    ([f"t{i}" for i in range(65)], "65 distinct tags"),
])
def test_invalid_tags_raise_and_write_nothing(store, tags, message):
    with pytest.raises(strata.InvalidArgumentError, match=message):
        store.append("s", [("ok", b""), {"type": "a", "tags": tags}])
    with pytest.raises(strata.InvalidArgumentError, match=message):
        store.append_with([{"type": "a", "tags": tags}], AppendCondition(Query.all()))
    assert store.last_position == 0
    # The limits themselves are allowed.
    store.append("s", [{"type": "a", "tags": ["a" * 255] + [f"t{i}" for i in range(63)]}])
    assert len(list(store.read_all())[0].tags) == 64


def test_tags_of_the_wrong_type_raise_and_write_nothing(store):
    with pytest.raises(strata.InvalidArgumentError, match="not a str"):
        store.append("s", [{"type": "a", "tags": "course:c1"}])
    with pytest.raises(strata.InvalidArgumentError, match=r"tags\[1\] must be a str"):
        store.append("s", [{"type": "a", "tags": ["x", 3]}])
    with pytest.raises(strata.InvalidArgumentError, match="iterable of str"):
        store.append("s", [{"type": "a", "tags": 3}])
    with pytest.raises(strata.InvalidArgumentError, match="not a str"):
        NewEvent("a", tags="course:c1")
    with pytest.raises(strata.InvalidArgumentError):
        NewEvent("a", tags=[b"bytes"])
    assert store.last_position == 0


# ----------------------------------------------------------------------------------------------
# Queries


@pytest.fixture
def courses(store):
    store.append("x", [
        tagged("course_defined", "course:c1"),                       # 1
        tagged("student_subscribed", "course:c1", "student:ann"),    # 2
        tagged("student_subscribed", "course:c2", "student:ann"),    # 3
        tagged("student_subscribed", "course:c1", "student:bob"),    # 4
        ("noise", b""),                                              # 5
    ])
    return store


def test_read_query_ors_items_ors_types_and_ands_tags(courses):
    assert positions(courses.read_query(Query.tags("course:c1"))) == [1, 2, 4]
    assert positions(courses.read_query(Query.tags("course:c1", "student:ann"))) == [2]
    assert positions(courses.read_query(Query.types("noise", "course_defined"))) == [1, 5]
    query = Query(
        QueryItem(types=["course_defined", "nothing"], tags=["course:c1"]),
        QueryItem(types=["student_subscribed"], tags=["student:ann"]),
    )
    assert positions(courses.read_query(query)) == [1, 2, 3]
    assert positions(courses.read_query(query, after=2)) == [3]
    assert positions(courses.read_query(query, limit=2)) == [1, 2]
    assert positions(courses.read_query(Query.all())) == [1, 2, 3, 4, 5]
    assert positions(courses.read_query(Query.all(), after=3)) == [4, 5]
    assert positions(courses.read_query(Query.tags("nobody"))) == []
    events = list(courses.read_query(query))
    assert all(query.matches(e) for e in events)
    assert not query.matches(list(courses.read_all(from_position=4))[0])


def test_read_query_with_head_returns_the_events_and_the_last_position(courses):
    events, head = courses.read_query_with_head(Query.tags("student:ann"))
    assert [e.position for e in events] == [2, 3] and head == 5
    events, head = courses.read_query_with_head(Query.tags("student:ann"), after=2)
    assert [e.position for e in events] == [3] and head == 5


def test_read_query_pages_in_batches_of_a_thousand(store):
    store.append("s", [tagged("t", "many") for _ in range(2_500)] + [("t", b"")])
    cursor = store.read_query(Query.tags("many"))
    assert len(cursor.next_page()) == strata._native.CURSOR_PAGE == 1_000
    rest = list(cursor)
    assert len(rest) == 1_500 and rest[-1].position == 2_500
    assert len(list(store.read_query(Query.types("t"), after=1_000, limit=1_200))) == 1_200


def test_query_values():
    assert Query.tags("a") == Query(QueryItem(tags=["a"]))
    assert Query.all().is_all and Query.all().items is None
    assert Query.all().or_(QueryItem(tags=["x"])).is_all
    assert Query.tags("a").or_(QueryItem(types=["t"])).items == (QueryItem(tags=("a",)), QueryItem(types=("t",)))
    assert repr(Query.all()) == "Query.all()"
    assert hash(Query.tags("a")) == hash(Query.tags("a"))
    with pytest.raises(strata.InvalidArgumentError):
        Query("not an item")
    with pytest.raises(strata.InvalidArgumentError, match="not a str"):
        QueryItem(tags="abc")
    with pytest.raises(strata.InvalidArgumentError):
        AppendCondition("not a query", 0)
    with pytest.raises(strata.InvalidArgumentError):
        AppendCondition(Query.all(), -1)


@pytest.mark.parametrize("query, message", [
    (Query(), r"at least one item; use strata\.Query\.all\(\) to match every event"),
    (Query(QueryItem()), "query item 0 has neither event types nor tags"),
    (Query(QueryItem(tags=[""])), "a tag must be 1..=255 bytes"),
    (Query(QueryItem(types=[""])), "event type must be 1..=255 bytes"),
    (Query(*[QueryItem(tags=["t"])] * 257), "the number of items"),
])
def test_invalid_queries_raise_everywhere_and_write_nothing(courses, query, message):
    with pytest.raises(strata.InvalidArgumentError, match=message):
        courses.read_query(query)
    with pytest.raises(strata.InvalidArgumentError, match=message):
        courses.read_query_with_head(query)
    with pytest.raises(strata.InvalidArgumentError, match=message):
        courses.subscribe(query=query)
    with pytest.raises(strata.InvalidArgumentError, match="condition.query: .*" + message):
        courses.append_with([("a", b"")], AppendCondition(query, 5))
    with pytest.raises(strata.InvalidArgumentError, match=message):
        courses.append_multi_with([("m", [("a", b"")], strata.ANY)], AppendCondition(query, 5))
    assert courses.last_position == 5
    with pytest.raises(strata.InvalidArgumentError, match="strata.Query"):
        courses.read_query(["course:c1"])
    with pytest.raises(strata.InvalidArgumentError, match="AppendCondition"):
        courses.append_with([("a", b"")], Query.all())


# ----------------------------------------------------------------------------------------------
# Conditional appends


def test_a_condition_succeeds_then_fails_with_the_position_and_writes_nothing(courses):
    course = Query.tags("course:c1")
    result = courses.append_with([tagged("student_subscribed", "course:c1", "student:cid")], AppendCondition(course, after=5))
    assert (result.first_position, result.last_position) == (6, 6)
    assert list(courses.read_all(from_position=6))[0].stream_id == strata.DEFAULT_STREAM == "$dcb"
    with pytest.raises(strata.ConditionFailedError) as failed:
        courses.append_with([tagged("student_subscribed", "course:c1", "student:dan")], AppendCondition(course, after=2))
    error = failed.value
    assert (error.position, error.after) == (4, 2)
    assert isinstance(error, strata.StrataError)
    assert (error.code, error.status) == (16, "STRATA_CONDITION_FAILED")
    assert "position 4" in str(error)
    assert courses.last_position == 6
    # Query.all() as a condition: any event after `after`.
    with pytest.raises(strata.ConditionFailedError) as failed:
        courses.append_with([("a", b"")], AppendCondition(Query.all(), after=5))
    assert failed.value.position == 6
    courses.append_with([("a", b"")], AppendCondition(Query.all(), after=6))
    assert courses.last_position == 7


def test_a_retry_with_the_same_ids_is_answered_as_the_retry(store):
    event = NewEvent("a", tags=["k"], event_id=b"\x01" * 16)
    first = store.append_with([event], AppendCondition(Query.tags("k")))
    again = store.append_with([event], AppendCondition(Query.tags("k")))
    assert again.already_stored and again.first_position == first.first_position


def test_a_named_stream_with_an_expected_version_and_a_condition(courses):
    condition = AppendCondition(Query.tags("course:c9"), after=0)
    with pytest.raises(strata.ConflictError) as conflict:
        courses.append_with([tagged("a", "course:c9")], condition, stream_id="course-c9", expected=3)
    assert conflict.value.actual_version == 0
    result = courses.append_with([tagged("a", "course:c9")], condition, stream_id="course-c9", expected=strata.NO_STREAM)
    assert (result.first_position, result.last_version) == (6, 1)
    with pytest.raises(strata.ConditionFailedError):
        courses.append_with([tagged("a", "course:c9")], condition, stream_id="course-c9", expected=1)
    assert courses.stream_info("course-c9").version == 1


def test_append_multi_with_checks_the_condition_and_every_part(courses):
    parts = [("m-1", [tagged("a", "course:c1")], strata.NO_STREAM), ("m-2", [("b", b"")], strata.ANY)]
    with pytest.raises(strata.ConditionFailedError) as failed:
        courses.append_multi_with(parts, AppendCondition(Query.tags("course:c1"), after=3))
    assert failed.value.position == 4
    assert courses.last_position == 5
    results = courses.append_multi_with(parts, AppendCondition(Query.tags("course:c1"), after=5))
    assert [r.first_position for r in results] == [6, 7]
    with pytest.raises(strata.ConflictError):
        courses.append_multi_with(parts, AppendCondition(Query.tags("course:c1"), after=7))


def test_conflicting_deciders_in_threads_never_both_commit(tmp_path):
    import threading

    with strata.open(tmp_path / "s.db", durability="fast") as store:
        query = Query.tags("seat:1")
        wins, losses = [], []
        barrier = threading.Barrier(4)

        def take(name):
            events, head = store.read_query_with_head(query)
            barrier.wait()
            try:
                store.append_with([tagged("taken", "seat:1", data=name.encode())], AppendCondition(query, head))
                wins.append(name)
            except strata.ConditionFailedError:
                losses.append(name)

        threads = [threading.Thread(target=take, args=(f"t{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1 and len(losses) == 3
        assert [e.data.decode() for e in store.read_query(query)] == wins


# ----------------------------------------------------------------------------------------------
# Subscriptions by query


def test_subscribe_with_a_query_delivers_history_then_live_events(courses):
    with courses.subscribe(query=Query.tags("student:ann")) as subscription:
        assert [subscription.next(timeout=1).position for _ in range(2)] == [2, 3]
        assert subscription.next(timeout=0.05) is None
        courses.append("late", [("noise", b""), tagged("student_subscribed", "student:ann")])
        event = subscription.next(timeout=5)
        assert event.position == 7 and event.tags == ("student:ann",)
    # Combined with the other filters; Query.all() filters nothing.
    with courses.subscribe(from_position=3, event_types=["student_subscribed"], query=Query.tags("course:c1")) as subscription:
        assert subscription.next(timeout=1).position == 4
        assert subscription.next(timeout=0.05) is None
    with courses.subscribe(query=Query.all()) as subscription:
        assert subscription.next(timeout=1).position == 1


# ----------------------------------------------------------------------------------------------
# The README's DCB example


def test_the_readme_dcb_example_runs_and_is_in_the_readme(tmp_path):
    example = (PACKAGE_ROOT / "dcb_example.py").read_text()
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Tags, queries and conditional appends", 1)[1].split("\n## ", 1)[0]
    assert f"```python\n{example}```" in section, "README.md's DCB section must hold bindings/python/dcb_example.py verbatim"
    output = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert output.stdout == (
        "ann c1: True\n"
        "bob c1: True\n"
        "cid c1: False (the course is full)\n"
        "ann c2: True\n"
        "ann c3: False (ann has her two courses)\n"
        "condition failed: event 4 came after position 3\n"
        "4 $dcb student_subscribed ('course:c1', 'student:ann')\n"
        "6 $dcb student_subscribed ('course:c2', 'student:ann')\n"
    )
