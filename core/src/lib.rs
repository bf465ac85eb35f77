//! strata: an embedded event store.
//!
//! An append-only event log in one SQLite file, split into time-bucketed tables, with optimistic
//! concurrency, store-wide idempotency and group commit. See README.md for a tour and
//! ARCHITECTURE.md for the map of the code.
//!
//! ```
//! use strata::{Direction, ExpectedVersion, NewEvent, Options, Store};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderCreated { order_id: String, amount_cents: i64 }
//!
//! let store = Store::open_in_memory(Options::default())?;
//! let created = OrderCreated { order_id: "o-1".into(), amount_cents: 1999 };
//! let result = store.append(
//!     "order-1",
//!     ExpectedVersion::NoStream,
//!     vec![NewEvent::from_value("order_created", &created)?],
//! )?;
//! assert_eq!(result.last_version, 1);
//!
//! let events = store.read_stream("order-1", 1, Direction::Forwards, 100)?;
//! let decoded: OrderCreated = events[0].decode()?;
//! assert_eq!(decoded.amount_cents, 1999);
//! # Ok::<(), strata::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregate;
pub mod bus;
pub mod cache;
mod catalog;
pub mod check;
mod checksum;
pub mod clock;
mod connection;
pub mod dcb;
pub mod decision;
pub mod error;
pub mod event;
mod event_id;
mod index;
pub mod maintenance;
pub mod metrics;
mod notify;
pub mod options;
pub mod projection;
pub mod query;
mod reader;
mod schema;
mod staged;
mod store;
pub mod subscription;
mod tags;
mod writer;

pub use bytes::Bytes;
pub use uuid::Uuid;

pub use aggregate::{Aggregate, AggregateError, AggregateRoot, AggregateStore, SnapshotPolicy};
pub use bus::{BusError, EventBus, HandlerHandle, HandlerOptions, HandlerStatus};
pub use cache::CacheStats;
pub use catalog::{BucketInfo, BucketState, StreamInfo};
pub use check::{CheckReport, Problem, ProblemKind};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dcb::{QueryIter, DEFAULT_STREAM};
pub use decision::{DecideError, Decision, DecisionModel};
pub use error::{
    AppendError, DecodeError, EncodeError, Error, InvalidInput, OpenError, ReadError, Result,
};
pub use event::{
    AppendResult, Event, ExpectedVersion, NewEvent, Position, StreamAppend, StreamVersion,
};
pub use maintenance::{
    ArchiveReport, MaintenanceError, RetainedBucket, RetentionAction, SpaceReport,
};
pub use metrics::{CacheMetrics, MetricsSnapshot, ProjectionMetrics};
pub use options::{limits, BucketWidth, Durability, Options};
pub use projection::{
    BackgroundRunner, BatchOutcome, CommittedState, MemoryState, Projection, ProjectionError,
    ProjectionInfo, ProjectionPhase, ProjectionRunner, ProjectionState, ProjectionStatus,
    RunnerError, RunnerOptions, StateError, StateLimits,
};
pub use query::{AppendCondition, Query, QueryItem};
pub use reader::Direction;
pub use schema::{APPLICATION_ID, CURRENT_VERSION as SCHEMA_VERSION};
pub use store::{EventIter, Store};

/// The README's Rust example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub use subscription::{Subscription, SubscriptionFilter, SubscriptionReceiver};
