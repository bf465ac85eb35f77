//! A property test: random tagged appends, conditional appends and reads by query against an
//! in-memory model of the log (a list of (type, tags)), with index levels small enough that
//! merges happen in every case.

mod common;

use proptest::prelude::*;
use strata::{
    AppendCondition, AppendError, ExpectedVersion, NewEvent, Options, Query, QueryItem, Store,
};

const TYPES: [&str; 3] = ["t0", "t1", "t2"];
const TAGS: [&str; 4] = ["a", "b", "c", "d"];

/// A query item as bit sets of `TYPES` and `TAGS` (never both empty).
#[derive(Clone, Copy, Debug)]
struct ItemModel {
    types: u8,
    tags: u8,
}

#[derive(Clone, Debug)]
enum QueryModel {
    All,
    Items(Vec<ItemModel>),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        events: Vec<(u8, u8)>,
        condition: Option<(QueryModel, u8)>,
    },
    Read {
        query: QueryModel,
        after: u8,
        limit: u8,
    },
}

fn item_strategy() -> impl Strategy<Value = ItemModel> {
    (0u8..8, 0u8..16).prop_map(|(types, tags)| ItemModel {
        types,
        tags: if types == 0 && tags == 0 { 1 } else { tags },
    })
}

fn query_strategy() -> impl Strategy<Value = QueryModel> {
    prop_oneof![
        1 => Just(QueryModel::All),
        6 => proptest::collection::vec(item_strategy(), 1..4).prop_map(QueryModel::Items),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            proptest::collection::vec((0u8..3, 0u8..16), 1..4),
            proptest::option::of((query_strategy(), 0u8..30)),
        )
            .prop_map(|(events, condition)| Op::Append { events, condition }),
        3 => (query_strategy(), 0u8..30, 1u8..12)
            .prop_map(|(query, after, limit)| Op::Read { query, after, limit }),
    ]
}

fn names<const N: usize>(bits: u8, of: [&'static str; N]) -> Vec<&'static str> {
    (0..N)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| of[i])
        .collect()
}

fn to_query(model: &QueryModel) -> Query {
    match model {
        QueryModel::All => Query::all(),
        QueryModel::Items(items) => Query::from_items(items.iter().map(|item| {
            QueryItem {
                event_types: names(item.types, TYPES)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                tags: names(item.tags, TAGS)
                    .into_iter()
                    .map(String::from)
                    .collect(),
            }
        })),
    }
}

/// The model's answer: does the event (type index, tag bits) match?
fn model_matches(query: &QueryModel, (event_type, tags): (u8, u8)) -> bool {
    match query {
        QueryModel::All => true,
        QueryModel::Items(items) => items.iter().any(|item| {
            (item.types == 0 || item.types & (1 << event_type) != 0)
                && tags & item.tags == item.tags
        }),
    }
}

fn tag_bits(tags: &[String]) -> u8 {
    tags.iter()
        .map(|tag| 1 << TAGS.iter().position(|t| t == tag).unwrap())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tagged_appends_conditions_and_queries_agree_with_the_model(
        ops in proptest::collection::vec(op_strategy(), 1..40)
    ) {
        let store = Store::open_in_memory(Options { index_merge_entries: 4, ..common::fast() }).unwrap();
        let mut log: Vec<(u8, u8)> = Vec::new();
        for op in &ops {
            match op {
                Op::Append { events, condition } => {
                    let new_events: Vec<NewEvent> = events
                        .iter()
                        .map(|&(t, tags)| NewEvent::new(TYPES[t as usize], vec![t]).with_tags(names(tags, TAGS)))
                        .collect();
                    let result = match condition {
                        None => store.append("s", ExpectedVersion::Any, new_events).map(|_| ()),
                        Some((query, after)) => store
                            .append_with(new_events, AppendCondition::new(to_query(query), u64::from(*after)))
                            .map(|_| ()),
                    };
                    let conflict = condition.as_ref().and_then(|(query, after)| {
                        log.iter()
                            .enumerate()
                            .skip(*after as usize)
                            .find(|(_, &event)| model_matches(query, event))
                            .map(|(i, _)| i as u64 + 1)
                    });
                    match (conflict, result) {
                        (None, Ok(())) => log.extend(events.iter().copied()),
                        (Some(expected), Err(AppendError::ConditionFailed { position, .. })) => {
                            prop_assert_eq!(position, expected)
                        }
                        (expected, got) => prop_assert!(false, "model conflict {:?}, store {:?}", expected, got),
                    }
                }
                Op::Read { query, after, limit } => {
                    let read = store.read_query(&to_query(query), u64::from(*after), *limit as usize).unwrap();
                    let got: Vec<(u64, u8, u8)> = read
                        .iter()
                        .map(|e| {
                            let t = TYPES.iter().position(|t| **t == *e.event_type).unwrap() as u8;
                            (e.position, t, tag_bits(&e.tags))
                        })
                        .collect();
                    let expected: Vec<(u64, u8, u8)> = log
                        .iter()
                        .enumerate()
                        .skip(*after as usize)
                        .filter(|(_, &event)| model_matches(query, event))
                        .take(*limit as usize)
                        .map(|(i, &(t, tags))| (i as u64 + 1, t, tags))
                        .collect();
                    prop_assert_eq!(got, expected);
                }
            }
        }
        prop_assert_eq!(store.last_position().unwrap(), log.len() as u64);
        let report = store.check().unwrap();
        prop_assert!(report.is_ok(), "{:?}", report.problems);
    }
}
