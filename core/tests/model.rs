//! A property test: random appends and reads against an in-memory model of the log.

mod common;

use std::collections::HashMap;

use proptest::prelude::*;
use strata::{AppendError, Direction, ExpectedVersion, NewEvent, Store, StreamAppend};

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u8,
        expected: Expected,
        count: u8,
    },
    MultiAppend {
        streams: Vec<(u8, Expected, u8)>,
    },
    ReadStream {
        stream: u8,
        from: u8,
        backwards: bool,
        max: u8,
    },
    ReadAll {
        from: u8,
        max: u8,
    },
}

#[derive(Clone, Copy, Debug)]
enum Expected {
    Any,
    NoStream,
    StreamExists,
    Exact(u8),
}

fn expected_strategy() -> impl Strategy<Value = Expected> {
    prop_oneof![
        Just(Expected::Any),
        Just(Expected::NoStream),
        Just(Expected::StreamExists),
        (0u8..6).prop_map(Expected::Exact),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, expected_strategy(), 1u8..5).prop_map(|(stream, expected, count)| Op::Append { stream, expected, count }),
        1 => proptest::collection::vec((0u8..4, expected_strategy(), 1u8..3), 1..3)
            .prop_map(|streams| Op::MultiAppend { streams }),
        2 => (0u8..4, 0u8..12, any::<bool>(), 1u8..8).prop_map(|(stream, from, backwards, max)| Op::ReadStream { stream, from, backwards, max }),
        1 => (0u8..40, 1u8..10).prop_map(|(from, max)| Op::ReadAll { from, max }),
    ]
}

fn to_expected(expected: Expected) -> ExpectedVersion {
    match expected {
        Expected::Any => ExpectedVersion::Any,
        Expected::NoStream => ExpectedVersion::NoStream,
        Expected::StreamExists => ExpectedVersion::StreamExists,
        Expected::Exact(v) => ExpectedVersion::Exact(u64::from(v)),
    }
}

/// The model: the log as a list of (stream, version, data).
#[derive(Default)]
struct Model {
    log: Vec<(String, u64, Vec<u8>)>,
    versions: HashMap<String, u64>,
}

impl Model {
    fn append(&mut self, parts: &[(String, ExpectedVersion, Vec<Vec<u8>>)]) -> Result<(), u64> {
        for (stream, expected, _) in parts {
            let current = self.versions.get(stream).copied().unwrap_or(0);
            if !expected.accepts(current) {
                return Err(current);
            }
        }
        for (stream, _, datas) in parts {
            for data in datas {
                let version = self.versions.entry(stream.clone()).or_insert(0);
                *version += 1;
                self.log.push((stream.clone(), *version, data.clone()));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(
        ops in proptest::collection::vec(op_strategy(), 1..40),
        // 1: every commit merges the indexes' level 0 (and level 1 every 16 entries); 3: some
        // entries merged, some not; 4,096: nothing merged in a run this short.
        index_merge_entries in prop_oneof![Just(1u64), Just(3), Just(4_096)],
    ) {
        let store = Store::open_in_memory(strata::Options {
            index_merge_entries,
            ..common::fast()
        })
        .unwrap();
        let mut model = Model::default();
        let mut counter = 0u32;
        for op in ops {
            match op {
                Op::Append { stream, expected, count } => {
                    let parts = vec![(stream, expected, count)];
                    apply_append(&store, &mut model, &parts, &mut counter)?;
                }
                Op::MultiAppend { streams } => {
                    let mut seen = std::collections::HashSet::new();
                    let unique: Vec<_> = streams.into_iter().filter(|(s, _, _)| seen.insert(*s)).collect();
                    apply_append(&store, &mut model, &unique, &mut counter)?;
                }
                Op::ReadStream { stream, from, backwards, max } => {
                    let name = format!("s{stream}");
                    let direction = if backwards { Direction::Backwards } else { Direction::Forwards };
                    let got: Vec<(u64, Vec<u8>)> = store
                        .read_stream(&name, u64::from(from), direction, usize::from(max))
                        .unwrap()
                        .into_iter()
                        .map(|e| (e.version, e.data.to_vec()))
                        .collect();
                    let mut expected: Vec<(u64, Vec<u8>)> = model
                        .log
                        .iter()
                        .filter(|(s, v, _)| *s == name && if backwards { *v <= u64::from(from) } else { *v >= u64::from(from) })
                        .map(|(_, v, d)| (*v, d.clone()))
                        .collect();
                    if backwards {
                        expected.reverse();
                    }
                    expected.truncate(usize::from(max));
                    prop_assert_eq!(got, expected);
                }
                Op::ReadAll { from, max } => {
                    let got: Vec<(u64, String, u64)> = store
                        .read_all(u64::from(from), usize::from(max))
                        .unwrap()
                        .into_iter()
                        .map(|e| (e.position, e.stream_id.to_string(), e.version))
                        .collect();
                    let expected: Vec<(u64, String, u64)> = model
                        .log
                        .iter()
                        .enumerate()
                        .map(|(i, (s, v, _))| (i as u64 + 1, s.clone(), *v))
                        .filter(|(p, _, _)| *p >= u64::from(from))
                        .take(usize::from(max))
                        .collect();
                    prop_assert_eq!(got, expected);
                }
            }
        }
        prop_assert_eq!(store.last_position().unwrap(), model.log.len() as u64);
        let report = store.check().unwrap();
        prop_assert!(report.is_ok(), "{:?}", report.problems);
    }
}

fn apply_append(
    store: &Store,
    model: &mut Model,
    parts: &[(u8, Expected, u8)],
    counter: &mut u32,
) -> Result<(), TestCaseError> {
    let parts: Vec<(String, ExpectedVersion, Vec<Vec<u8>>)> = parts
        .iter()
        .map(|(stream, expected, count)| {
            let datas = (0..*count)
                .map(|_| {
                    *counter += 1;
                    counter.to_le_bytes().to_vec()
                })
                .collect();
            (format!("s{stream}"), to_expected(*expected), datas)
        })
        .collect();
    let request: Vec<StreamAppend> = parts
        .iter()
        .map(|(stream, expected, datas)| {
            StreamAppend::new(
                stream.clone(),
                *expected,
                datas
                    .iter()
                    .map(|d| NewEvent::new("e", d.clone()))
                    .collect(),
            )
        })
        .collect();
    let got = store.append_multi(request);
    let want = model.append(&parts);
    match (got, want) {
        (Ok(_), Ok(())) => Ok(()),
        (Err(AppendError::Conflict { actual, .. }), Err(model_actual)) => {
            prop_assert_eq!(actual, model_actual);
            Ok(())
        }
        (got, want) => Err(TestCaseError::fail(format!(
            "store {got:?} vs model {want:?}"
        ))),
    }
}
