//! Projections: folds of the log into read models, kept in SQLite.
//!
//! A [`Projection`] is anything that can describe itself, apply a batch of events to its
//! key-value [`ProjectionState`], and answer queries from it. Native Rust projections implement
//! the trait directly; `strata-wasm` implements it for WebAssembly components. The runner reads
//! events from the projection's checkpoint in batches and commits the state writes of a batch
//! together with the new checkpoint, in one SQLite transaction.

mod runner;
mod state;
mod state_cache;

pub use runner::{
    BackgroundRunner, BatchOutcome, ProjectionPhase, ProjectionRunner, ProjectionStatus,
    RunnerError, RunnerOptions, MAX_BATCH_SIZE,
};
pub use state::{
    CommittedState, MemoryState, ProjectionState, StateEntry, StateError, StateLimits,
};

use crate::event::Event;

/// What a projection says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionInfo {
    /// Unique name within a store, such as `user-stats`. 1..=64 bytes of `[a-z0-9_-]`.
    pub name: String,
    /// Version of its logic. A higher version rebuilds its state from position 1.
    pub version: u32,
    /// Event types it wants; empty means all. The runner reads only these from SQLite.
    pub event_types: Vec<String>,
}

/// Why a projection call failed. Any of these rolls the batch back and faults the projection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The projection returned an error of its own.
    #[error("projection reported an error: {0}")]
    Failed(String),
    /// The code trapped (WebAssembly trap, Rust panic inside a plugin).
    #[error("projection trapped: {0}")]
    Trap(String),
    /// The call ran past its time budget.
    #[error("projection ran past its time budget of {budget_ms} ms")]
    Timeout {
        /// The budget.
        budget_ms: u64,
    },
    /// The call tried to grow memory past its limit.
    #[error("projection exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        /// The limit.
        limit_bytes: u64,
    },
    /// The projection returned something that does not follow the contract.
    #[error("projection returned a malformed result: {0}")]
    Malformed(String),
    /// A state operation failed (limit, read-only state, SQLite).
    #[error("state error: {0}")]
    State(#[from] StateError),
    /// The projection could not be loaded or instantiated.
    #[error("projection could not be loaded: {0}")]
    Load(String),
}

/// A fold of events into a key-value state.
///
/// Implementations must be deterministic: the same events applied to the same state give the
/// same writes. That is what makes rebuilds and crash recovery exact.
pub trait Projection: Send + 'static {
    /// Name, version and wanted event types. Called once when the projection is registered.
    fn describe(&mut self) -> Result<ProjectionInfo, ProjectionError>;

    /// Applies a batch of events, in position order, writing to `state`. On error the runner
    /// discards every write of the batch.
    fn apply(
        &mut self,
        events: &[Event],
        state: &mut ProjectionState,
    ) -> Result<(), ProjectionError>;

    /// Answers `request` from committed state. `state` is read-only here.
    fn query(
        &mut self,
        request: &[u8],
        state: &mut ProjectionState,
    ) -> Result<Vec<u8>, ProjectionError>;
}
