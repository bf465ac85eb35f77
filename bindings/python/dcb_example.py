import strata

MAX_COURSES = 2  # a student takes at most this many courses


def subscribe(store: strata.Store, student: str, course: str) -> bool:
    # What the decision depends on: the course (its capacity, its students), the student's courses.
    query = strata.Query(
        strata.QueryItem(types=["course_defined", "student_subscribed"], tags=[f"course:{course}"]),
        strata.QueryItem(types=["student_subscribed"], tags=[f"student:{student}"]),
    )
    while True:
        events, head = store.read_query_with_head(query)  # read
        capacity = sum(e.decode()["capacity"] for e in events if e.event_type == "course_defined")
        subscriptions = [e for e in events if e.event_type == "student_subscribed"]
        taken = sum(e.has_tag(f"course:{course}") for e in subscriptions)
        courses = sum(e.has_tag(f"student:{student}") for e in subscriptions)
        if taken >= capacity or courses >= MAX_COURSES:  # decide
            return False
        event = strata.NewEvent("student_subscribed", {"student": student, "course": course},
                                tags=[f"course:{course}", f"student:{student}"])
        try:  # append, unless an event matching the query came after what we read
            store.append_with([event], strata.AppendCondition(query, after=head))
            return True
        except strata.ConditionFailedError:
            continue  # someone else got there first: read and decide again


with strata.open_in_memory(durability="fast") as store:
    for course, capacity in [("c1", 2), ("c2", 10), ("c3", 10)]:
        store.append_with(
            [strata.NewEvent("course_defined", {"capacity": capacity}, tags=[f"course:{course}"])],
            strata.AppendCondition(strata.Query.tags(f"course:{course}")),  # defined only once
        )
    print("ann c1:", subscribe(store, "ann", "c1"))
    print("bob c1:", subscribe(store, "bob", "c1"))
    print("cid c1:", subscribe(store, "cid", "c1"), "(the course is full)")
    print("ann c2:", subscribe(store, "ann", "c2"))
    print("ann c3:", subscribe(store, "ann", "c3"), "(ann has her two courses)")

    # A decision on course c1 made when the log ended at position 3 is stale: nothing is written.
    try:
        store.append_with([strata.NewEvent("student_subscribed", tags=["course:c1", "student:dan"])],
                          strata.AppendCondition(strata.Query.tags("course:c1"), after=3))
    except strata.ConditionFailedError as failed:
        print("condition failed: event", failed.position, "came after position", failed.after)

    for event in store.read_query(strata.Query.tags("student:ann")):
        print(event.position, event.stream_id, event.event_type, event.tags)
