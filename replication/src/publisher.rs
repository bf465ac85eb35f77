//! The publisher: follows a store's log from its checkpoint and publishes every committed event,
//! in position order, to a JetStream stream.
//!
//! Publishes are pipelined: up to `max_in_flight` events are sent before the oldest
//! acknowledgement is awaited, and acknowledgements are awaited in publish order, so the
//! checkpoint only ever moves over a contiguous prefix of acknowledged events. Any publish or
//! acknowledgement failure ends the run with an error after storing the checkpoint of that
//! prefix; the next run (see [`crate::run_with_retry`]) publishes again from there, and the
//! event id as `Nats-Msg-Id` makes JetStream drop the copies it already stored — as long as
//! they are within the stream's duplicate window. Copies older than the window are stored
//! twice in JetStream and dropped by the ingester, which de-duplicates by event id too.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use strata::{Event, Store, SubscriptionFilter};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpoints;
use crate::retry::Progress;
use crate::{connect, ensure_stream, wire, ReplicationError};

type AckFuture = Pin<
    Box<
        dyn Future<
                Output = Result<
                    async_nats::jetstream::publish::PublishAck,
                    async_nats::jetstream::context::PublishError,
                >,
            > + Send,
    >,
>;

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// NATS server URL, such as `nats://127.0.0.1:4222`.
    pub server: String,
    /// JetStream stream name (created if missing, capturing `<subject_prefix>.>`).
    pub stream: String,
    /// Subject prefix: events go to `<subject_prefix>.<escaped stream id>`.
    pub subject_prefix: String,
    /// Name of the checkpoint in the source store.
    pub checkpoint_name: String,
    /// Most publishes awaiting their acknowledgement (1..=10,000).
    pub max_in_flight: usize,
    /// De-duplication window of a stream this publisher creates. It must cover the longest
    /// time between a publish and its retry (a publisher down that long re-publishes events
    /// JetStream would then store twice; the ingester still stores them once).
    pub duplicate_window: Duration,
    /// Store the checkpoint at least every this many acknowledged events (besides whenever
    /// nothing is in flight).
    pub checkpoint_every: u64,
    /// How long an acknowledgement may take before the run fails.
    pub ack_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl PublisherConfig {
    /// Defaults for everything but the server, stream and subject prefix; the checkpoint is
    /// named after the stream.
    pub fn new(
        server: impl Into<String>,
        stream: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Self {
        let stream = stream.into();
        PublisherConfig {
            server: server.into(),
            checkpoint_name: format!("nats:{stream}"),
            stream,
            subject_prefix: subject_prefix.into(),
            max_in_flight: 256,
            duplicate_window: Duration::from_secs(3_600),
            checkpoint_every: 1_000,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
        }
    }

    fn validate(&self) -> Result<(), ReplicationError> {
        crate::subject::validate_prefix(&self.subject_prefix)?;
        if !(1..=10_000).contains(&self.max_in_flight) {
            return Err(ReplicationError::Config(
                "max_in_flight must be 1..=10000".into(),
            ));
        }
        if self.checkpoint_name.is_empty() || self.stream.is_empty() {
            return Err(ReplicationError::Config(
                "stream and checkpoint names must not be empty".into(),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(ReplicationError::Config(
                "checkpoint_every must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What one run published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Events acknowledged by JetStream in this run.
    pub published: u64,
    /// Of those, how many JetStream recognised as duplicates (already stored).
    pub duplicates: u64,
    /// The checkpoint at the end of the run.
    pub checkpoint: u64,
}

/// When a run ends without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Never: follow the log (the run ends only with an error or by being dropped).
    Forever,
    /// Once every event committed when the run started is acknowledged.
    CaughtUp,
}

/// A publisher for one store.
#[derive(Clone, Debug)]
pub struct Publisher {
    store: Store,
    path: PathBuf,
    config: PublisherConfig,
    progress: Progress,
}

impl Publisher {
    /// A publisher for `store`, which must be a file store (the checkpoint lives in the file).
    pub fn new(store: Store, config: PublisherConfig) -> Result<Self, ReplicationError> {
        config.validate()?;
        let path = store.path().ok_or_else(|| {
            ReplicationError::Config("replication needs a file store, not an in-memory one".into())
        })?;
        Ok(Publisher {
            store,
            path,
            config,
            progress: Progress::new(),
        })
    }

    /// Counts events acknowledged, across runs.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.config
    }

    /// The stored checkpoint.
    pub fn checkpoint(&self) -> Result<u64, ReplicationError> {
        Ok(Checkpoints::open(&self.path)?.get(&self.config.checkpoint_name)?)
    }

    /// Connects, makes sure the JetStream stream exists, and publishes from the checkpoint
    /// until `until` (or an error).
    pub async fn run(&self, until: Until) -> Result<PublishReport, ReplicationError> {
        let config = &self.config;
        let client = connect(&config.server, config.connect_timeout).await?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(config.ack_timeout);
        ensure_stream(
            &jetstream,
            &config.stream,
            &config.subject_prefix,
            config.duplicate_window,
        )
        .await?;

        let mut checkpoints =
            CheckpointWriter::open(self.path.clone(), config.checkpoint_name.clone()).await?;
        let start = checkpoints.stored;
        let target = match until {
            Until::Forever => u64::MAX,
            Until::CaughtUp => self
                .store
                .last_position()
                .map_err(|e| ReplicationError::Store(e.to_string()))?,
        };
        let mut report = PublishReport {
            checkpoint: start,
            ..PublishReport::default()
        };
        if start >= target {
            return Ok(report);
        }

        let mut events = follow(self.store.clone(), start + 1, config.max_in_flight)?;
        let mut in_flight: VecDeque<(u64, AckFuture)> =
            VecDeque::with_capacity(config.max_in_flight);
        let mut acked = start;
        let mut sent = start;
        let mut last_store = Instant::now();
        let result: Result<(), ReplicationError> = async {
            loop {
                // Fill the pipeline with what is already committed.
                while in_flight.len() < config.max_in_flight && sent < target {
                    match events.try_recv() {
                        Ok(event) => {
                            let event = event?;
                            sent = event.position;
                            in_flight.push_back(
                                publish(&jetstream, &config.subject_prefix, &event).await?,
                            );
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            return Err(ReplicationError::Store("the log reader stopped".into()))
                        }
                    }
                }
                let Some((position, ack)) = in_flight.pop_front() else {
                    // Nothing in flight: everything read is acknowledged.
                    checkpoints.store(acked).await?;
                    last_store = Instant::now();
                    if acked >= target {
                        return Ok(());
                    }
                    match events.recv().await {
                        Some(event) => {
                            let event = event?;
                            sent = event.position;
                            in_flight.push_back(
                                publish(&jetstream, &config.subject_prefix, &event).await?,
                            );
                            continue;
                        }
                        None => {
                            return Err(ReplicationError::Store("the log reader stopped".into()))
                        }
                    }
                };
                let ack = ack.await.map_err(|e| {
                    ReplicationError::JetStream(format!("publish of position {position}: {e}"))
                })?;
                if ack.duplicate {
                    report.duplicates += 1;
                }
                acked = position;
                report.published += 1;
                self.progress.add(1);
                if acked - checkpoints.stored >= config.checkpoint_every
                    || last_store.elapsed() >= Duration::from_millis(500)
                {
                    checkpoints.store(acked).await?;
                    last_store = Instant::now();
                }
                if acked >= target && in_flight.is_empty() {
                    checkpoints.store(acked).await?;
                    return Ok(());
                }
            }
        }
        .await;
        // Whatever happened, keep the acknowledged prefix.
        let stored = checkpoints.store(acked).await;
        report.checkpoint = checkpoints.stored;
        result?;
        stored?;
        Ok(report)
    }
}

async fn publish(
    jetstream: &async_nats::jetstream::Context,
    prefix: &str,
    event: &Event,
) -> Result<(u64, AckFuture), ReplicationError> {
    let (subject, headers, payload) = wire::encode(prefix, event);
    let ack = jetstream
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|e| {
            ReplicationError::JetStream(format!("publish of position {}: {e}", event.position))
        })?;
    Ok((event.position, ack.into_future()))
}

/// Reads the log from `from` on a thread of its own (the store's reads block), into a bounded
/// channel. The thread ends when the receiver is dropped or the store is closed.
fn follow(
    store: Store,
    from: u64,
    capacity: usize,
) -> Result<mpsc::Receiver<Result<Event, ReplicationError>>, ReplicationError> {
    let page = capacity.clamp(1, 1_000);
    let mut subscription = store
        .subscribe(from, SubscriptionFilter::all())
        .and_then(|s| s.with_page_size(page))
        .map_err(|e| ReplicationError::Store(e.to_string()))?;
    let (sender, receiver) = mpsc::channel(capacity);
    std::thread::Builder::new()
        .name("strata-nats-log".into())
        .spawn(move || {
            const WAIT: Duration = Duration::from_millis(200);
            while !sender.is_closed() {
                let started = Instant::now();
                let next = match subscription.next_timeout(WAIT) {
                    Ok(Some(event)) => Ok(event),
                    // Returned early without an event: the store is closed.
                    Ok(None) if started.elapsed() < WAIT => {
                        Err(ReplicationError::Store("the store was closed".into()))
                    }
                    Ok(None) => continue,
                    Err(error) => Err(ReplicationError::Store(error.to_string())),
                };
                let stop = next.is_err();
                if sender.blocking_send(next).is_err() || stop {
                    return;
                }
            }
        })
        .map_err(|e| ReplicationError::Store(format!("could not start the log reader: {e}")))?;
    Ok(receiver)
}

/// The checkpoint connection, used off the async threads.
struct CheckpointWriter {
    conn: Option<Checkpoints>,
    name: String,
    stored: u64,
}

impl CheckpointWriter {
    async fn open(path: PathBuf, name: String) -> Result<Self, ReplicationError> {
        let (conn, stored) = tokio::task::spawn_blocking({
            let name = name.clone();
            move || -> rusqlite::Result<(Checkpoints, u64)> {
                let conn = Checkpoints::open(&path)?;
                let stored = conn.get(&name)?;
                Ok((conn, stored))
            }
        })
        .await
        .map_err(|e| ReplicationError::Store(format!("checkpoint task: {e}")))??;
        Ok(CheckpointWriter {
            conn: Some(conn),
            name,
            stored,
        })
    }

    async fn store(&mut self, position: u64) -> Result<(), ReplicationError> {
        if position <= self.stored {
            return Ok(());
        }
        let conn = self
            .conn
            .take()
            .ok_or_else(|| ReplicationError::Store("checkpoint connection lost".into()))?;
        let name = self.name.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = conn.set(&name, position);
            (conn, result)
        })
        .await
        .map_err(|e| ReplicationError::Store(format!("checkpoint task: {e}")))?;
        self.conn = Some(conn);
        result?;
        self.stored = position;
        Ok(())
    }
}
