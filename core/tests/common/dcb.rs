//! Shared setup of the DCB tests: the read → decide → append loop, and the DCB specification's
//! example domains (course subscriptions, unique usernames, invoice numbers) written as a user
//! of strata would write them.
#![allow(dead_code)]

use strata::{AppendCondition, AppendError, Event, NewEvent, Position, Query, QueryItem, Store};

/// What one decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// The events were appended; the last one at this position.
    Appended(Position),
    /// The decision refused, for this reason; nothing appended.
    Refused(String),
}

/// Reads `query`, lets `decide` choose events from what it read, and appends them with the
/// condition "nothing matching `query` after what I read"; on a failed condition, reads and
/// decides again. Returns the outcome and how many condition failures it retried.
pub fn decide_and_append(
    store: &Store,
    query: &Query,
    mut decide: impl FnMut(&[Event]) -> Result<Vec<NewEvent>, String>,
) -> (Decided, u32) {
    let mut retries = 0;
    loop {
        let (events, head) = store
            .read_query_with_head(query, 0)
            .expect("read the query");
        let new_events = match decide(&events) {
            Ok(new_events) => new_events,
            Err(reason) => return (Decided::Refused(reason), retries),
        };
        match store.append_with(new_events, AppendCondition::new(query.clone(), head)) {
            Ok(result) => return (Decided::Appended(result.last_position), retries),
            Err(AppendError::ConditionFailed { position, after }) => {
                assert!(
                    position > after,
                    "the conflict comes after the condition's position"
                );
                retries += 1;
            }
            Err(other) => panic!("append failed: {other}"),
        }
    }
}

// --- Course subscriptions: a course holds at most its capacity, a student at most N courses.

pub fn course_tag(course: &str) -> String {
    format!("course:{course}")
}

pub fn student_tag(student: &str) -> String {
    format!("student:{student}")
}

/// Defines a course with its capacity (data: capacity, u32 little-endian).
pub fn define_course(store: &Store, course: &str, capacity: u32) {
    let query = Query::item(QueryItem::types(["course_defined"]).with_tags([course_tag(course)]));
    let (decided, _) = decide_and_append(store, &query, |events| {
        if !events.is_empty() {
            return Err(format!("course {course} exists"));
        }
        Ok(vec![NewEvent::new(
            "course_defined",
            capacity.to_le_bytes().to_vec(),
        )
        .with_tags([course_tag(course)])])
    });
    assert!(matches!(decided, Decided::Appended(_)), "{decided:?}");
}

/// The decision of "student subscribes to course", from the events of three small projections
/// (the course's capacity, its subscriptions, the student's subscriptions) read in one query.
pub fn subscribe_student(
    store: &Store,
    course: &str,
    student: &str,
    student_limit: usize,
) -> (Decided, u32) {
    let query = Query::from_items([
        QueryItem::types(["course_defined"]).with_tags([course_tag(course)]),
        QueryItem::types(["student_subscribed"]).with_tags([course_tag(course)]),
        QueryItem::types(["student_subscribed"]).with_tags([student_tag(student)]),
    ]);
    decide_and_append(store, &query, |events| {
        let capacity = events
            .iter()
            .find(|e| &*e.event_type == "course_defined")
            .map(|e| u32::from_le_bytes(e.data[..4].try_into().unwrap()) as usize)
            .ok_or_else(|| format!("no course {course}"))?;
        let subscriptions = |tag: &str| {
            events
                .iter()
                .filter(|e| &*e.event_type == "student_subscribed" && e.has_tag(tag))
                .count()
        };
        let course_tag = course_tag(course);
        let student_tag = student_tag(student);
        if events
            .iter()
            .any(|e| e.has_tag(&course_tag) && e.has_tag(&student_tag))
        {
            return Err("already subscribed".into());
        }
        if subscriptions(&course_tag) >= capacity {
            return Err("course full".into());
        }
        if subscriptions(&student_tag) >= student_limit {
            return Err("student limit".into());
        }
        Ok(vec![
            NewEvent::new("student_subscribed", Vec::new()).with_tags([course_tag, student_tag])
        ])
    })
}

// --- Unique usernames: claimed once, free again after the owner changes name.

pub fn username_tag(name: &str) -> String {
    format!("username:{name}")
}

fn username_query(name: &str) -> Query {
    Query::item(
        QueryItem::types(["account_registered", "username_changed"])
            .with_tags([username_tag(name)]),
    )
}

/// Whether `name` is taken according to the events that carry its tag: the last one either
/// claims it (a registration, or a change to it) or frees it (a change away from it).
fn is_taken(events: &[Event], name: &str) -> bool {
    events.last().is_some_and(|last| {
        let data = std::str::from_utf8(&last.data).unwrap();
        match &*last.event_type {
            "account_registered" => true,
            // data: "<old>\n<new>"
            _ => data.split('\n').nth(1) == Some(name),
        }
    })
}

pub fn register(store: &Store, name: &str) -> Decided {
    decide_and_append(store, &username_query(name), |events| {
        if is_taken(events, name) {
            return Err(format!("username {name} is taken"));
        }
        Ok(vec![NewEvent::new(
            "account_registered",
            name.as_bytes().to_vec(),
        )
        .with_tags([username_tag(name)])])
    })
    .0
}

/// Changes `old` to `new`: the condition covers both names.
pub fn rename(store: &Store, old: &str, new: &str) -> Decided {
    let query =
        username_query(old).or(QueryItem::types(["account_registered", "username_changed"])
            .with_tags([username_tag(new)]));
    decide_and_append(store, &query, |events| {
        let of = |name: &str| -> Vec<Event> {
            events
                .iter()
                .filter(|e| e.has_tag(&username_tag(name)))
                .cloned()
                .collect()
        };
        if !is_taken(&of(old), old) {
            return Err(format!("username {old} is not registered"));
        }
        if is_taken(&of(new), new) {
            return Err(format!("username {new} is taken"));
        }
        Ok(vec![NewEvent::new(
            "username_changed",
            format!("{old}\n{new}").into_bytes(),
        )
        .with_tags([username_tag(old), username_tag(new)])])
    })
    .0
}

// --- Invoice numbers without gaps: the next number is the last one plus one.

pub fn create_invoice(store: &Store) -> (u64, u32) {
    let query = Query::types(["invoice_created"]);
    let mut number = 0;
    let (decided, retries) = decide_and_append(store, &query, |events| {
        number = events
            .last()
            .map_or(0, |e| u64::from_le_bytes(e.data[..8].try_into().unwrap()))
            + 1;
        Ok(vec![NewEvent::new(
            "invoice_created",
            number.to_le_bytes().to_vec(),
        )
        .with_tags([format!("invoice:{number}")])])
    });
    assert!(matches!(decided, Decided::Appended(_)));
    (number, retries)
}
