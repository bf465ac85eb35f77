//! The decision model of Dynamic Consistency Boundaries: read → decide → append.
//!
//! A command names the small projections it decides on, each by its query ("the course's
//! capacity", "the course's subscriptions", "the student's subscriptions"). [`Store::decide`]
//! reads the events of all of them in one query and one snapshot, hands them to the decision as
//! a [`DecisionModel`] (from which each projection is folded), and appends what the decision
//! returns with the condition "nothing matching the combined query after the snapshot". When
//! another append got there first, the condition fails and the whole read → decide → append
//! runs again, up to a bound.

use crate::error::{AppendError, ReadError};
use crate::event::{AppendResult, Event, ExpectedVersion, NewEvent, Position, StreamAppend};
use crate::query::{AppendCondition, Query, QueryItem};
use crate::store::Store;

/// The events a decision is made on: every event matching any of its projections' queries, as
/// of one snapshot of the log.
#[derive(Clone, Debug)]
pub struct DecisionModel {
    query: Query,
    events: Vec<Event>,
    head: Position,
}

impl DecisionModel {
    /// Folds the events matching `query` (one of the projections' queries) from `initial`.
    pub fn fold<S>(&self, query: &Query, initial: S, apply: impl FnMut(S, &Event) -> S) -> S {
        self.events
            .iter()
            .filter(|event| query.matches(event))
            .fold(initial, apply)
    }

    /// Every event read, in position order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The combined query of the projections.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The last position of the log when the events were read.
    pub fn head(&self) -> Position {
        self.head
    }

    /// The condition that protects a decision made on these events.
    pub fn condition(&self) -> AppendCondition {
        AppendCondition::new(self.query.clone(), self.head)
    }
}

/// What a decision wants appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Append these events to the default stream ([`crate::DEFAULT_STREAM`]).
    Append(Vec<NewEvent>),
    /// Append these parts, with their expected versions, atomically.
    AppendParts(Vec<StreamAppend>),
    /// Nothing to append (the command changes nothing).
    Nothing,
}

/// Why [`Store::decide`] appended nothing.
#[derive(Debug, thiserror::Error)]
pub enum DecideError<E> {
    /// The decision refused the command.
    #[error("the decision refused: {0}")]
    Refused(E),
    /// Every attempt's condition failed: other appends kept changing the decision's events.
    #[error("the decision's events changed during each of {attempts} attempts")]
    TooManyAttempts {
        /// Attempts made.
        attempts: u32,
    },
    /// Reading the decision's events failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The append failed for another reason than its condition.
    #[error(transparent)]
    Append(AppendError),
}

/// The union of `queries`: every item of each, or every event if one of them is `Query::all`.
pub fn combined_query(queries: &[Query]) -> Query {
    let mut items: Vec<QueryItem> = Vec::new();
    for query in queries {
        match query.items() {
            None => return Query::all(),
            Some(own) => {
                for item in own {
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
            }
        }
    }
    Query::from_items(items)
}

impl Store {
    /// Reads the events of `queries` (one per projection of the decision) in one snapshot,
    /// calls `decide` with them, and appends what it decides with the condition that none of
    /// those events changed meanwhile; on a failed condition, starts again, at most
    /// `max_attempts` times (at least once). Returns the append's results (empty for
    /// [`Decision::Nothing`]).
    pub fn decide<E>(
        &self,
        queries: &[Query],
        max_attempts: u32,
        mut decide: impl FnMut(&DecisionModel) -> Result<Decision, E>,
    ) -> Result<Vec<AppendResult>, DecideError<E>> {
        let query = combined_query(queries);
        let attempts = max_attempts.max(1);
        for _ in 0..attempts {
            let (events, head) = self.read_query_with_head(&query, 0)?;
            let model = DecisionModel {
                query: query.clone(),
                events,
                head,
            };
            let parts = match decide(&model).map_err(DecideError::Refused)? {
                Decision::Nothing => return Ok(Vec::new()),
                Decision::Append(events) => vec![StreamAppend::new(
                    crate::DEFAULT_STREAM,
                    ExpectedVersion::Any,
                    events,
                )],
                Decision::AppendParts(parts) => parts,
            };
            match self.append_multi_with(parts, model.condition()) {
                Ok(results) => return Ok(results),
                Err(AppendError::ConditionFailed { .. }) => continue,
                Err(error) => return Err(DecideError::Append(error)),
            }
        }
        Err(DecideError::TooManyAttempts { attempts })
    }
}
