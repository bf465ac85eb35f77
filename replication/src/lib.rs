//! strata-nats: replicates strata stores through NATS JetStream.
//!
//! - [`publisher`] follows a store's log from a checkpoint kept in that store (table
//!   `replication_checkpoints`) and publishes every committed event, in position order, to a
//!   JetStream stream, with the event id as `Nats-Msg-Id`. The checkpoint only moves over a
//!   contiguous prefix of events that JetStream acknowledged.
//! - [`ingester`] reads a JetStream stream through a durable pull consumer and appends into
//!   another store under a stream-id prefix, idempotently by event id, with each stream's
//!   versions kept; a message is acknowledged only after its append committed.
//! - [`status`] measures the lag on both sides.
//!
//! Delivery is at least once; storage is exactly once by event id; order is kept per stream.
//! [`retry::run_with_retry`] restarts either side after a failure with bounded backoff.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod ingester;
pub mod publisher;
pub mod retry;
pub mod status;
pub mod subject;
pub mod wire;

use std::time::Duration;

pub use ingester::Until as IngestUntil;
pub use ingester::{IngestReport, Ingester, IngesterConfig};
pub use publisher::Until as PublishUntil;
pub use publisher::{PublishReport, Publisher, PublisherConfig};
pub use retry::{run_with_retry, Progress, RetryPolicy};

/// Why replication stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The NATS server could not be reached.
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Connect {
        /// The server URL given.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// A JetStream operation failed (stream or consumer set-up, publish, ack, fetch, timeout).
    #[error("JetStream: {0}")]
    JetStream(String),
    /// The store failed to read or append.
    #[error("store: {0}")]
    Store(String),
    /// The checkpoint table could not be read or written.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] rusqlite::Error),
    /// The target store holds, at a replicated event's version, another event: a writer other
    /// than this ingester wrote into the replicated stream, or two sources share a prefix.
    /// Replication of that stream cannot go on without a person deciding.
    #[error(
        "stream {stream_id:?} in the target store diverged from the source: version {version} \
         is taken by another event (event id {event_id} cannot be stored there): {detail}"
    )]
    Diverged {
        /// The target stream.
        stream_id: String,
        /// The version the source event has.
        version: u64,
        /// The source event's id.
        event_id: strata::Uuid,
        /// The store's error.
        detail: String,
    },
}

impl ReplicationError {
    /// Whether trying again later may succeed (server down, timeouts, a busy store), as opposed
    /// to a configuration or data problem that a retry would only repeat.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::JetStream(_)
            | ReplicationError::Checkpoint(_) => true,
            ReplicationError::Store(_) => true,
            ReplicationError::Config(_) | ReplicationError::Diverged { .. } => false,
        }
    }
}

/// Connects to `url` (a `nats://host:port` URL or `host:port`), failing after `timeout` if the
/// server cannot be reached. Once connected, the client reconnects by itself.
pub async fn connect(url: &str, timeout: Duration) -> Result<async_nats::Client, ReplicationError> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6)).min(2_000))
        });
    options
        .connect(url)
        .await
        .map_err(|error| ReplicationError::Connect {
            url: url.to_owned(),
            reason: error.to_string(),
        })
}

/// The JetStream stream configuration both sides use: file storage, capturing `<prefix>.>`,
/// with `duplicate_window` as the de-duplication window for `Nats-Msg-Id`.
pub fn stream_config(
    name: &str,
    subject_prefix: &str,
    duplicate_window: Duration,
) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subject::wildcard(subject_prefix)],
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window,
        ..Default::default()
    }
}

/// Gets the JetStream stream `name`, creating it with [`stream_config`] if missing. An existing
/// stream must capture `<prefix>.>`.
pub async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
    subject_prefix: &str,
    duplicate_window: Duration,
) -> Result<async_nats::jetstream::stream::Stream, ReplicationError> {
    subject::validate_prefix(subject_prefix)?;
    let mut stream = jetstream
        .get_or_create_stream(stream_config(name, subject_prefix, duplicate_window))
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {name}: {e}")))?;
    let info = stream
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {name} info: {e}")))?;
    let wanted = subject::wildcard(subject_prefix);
    if !info.config.subjects.contains(&wanted) {
        return Err(ReplicationError::Config(format!(
            "JetStream stream {name} exists but captures {:?}, not {wanted:?}: use another \
             stream name, or the subject prefix it was created with",
            info.config.subjects
        )));
    }
    Ok(stream)
}
