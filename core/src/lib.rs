//! strata: an embedded event store. See the crate README and ARCHITECTURE.md.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod error;
pub mod event;
pub mod options;
pub mod projection;

pub use bytes::Bytes;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{
    AppendError, DecodeError, EncodeError, Error, InvalidInput, OpenError, ReadError, Result,
};
pub use event::{
    AppendResult, Event, ExpectedVersion, NewEvent, Position, StreamAppend, StreamVersion,
};
pub use options::{BucketWidth, Durability, Options};
pub use projection::{
    CommittedState, MemoryState, Projection, ProjectionError, ProjectionInfo, ProjectionState,
    StateError, StateLimits,
};
pub use uuid::Uuid;
