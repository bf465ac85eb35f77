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

use std::collections::{HashSet, VecDeque};
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use strata::{Event, Store, SubscriptionFilter};
use tokio::sync::mpsc;

use crate::checkpoint::Checkpoints;
use crate::dead_letter::{now_micros, DeadLetter, DeadLetters, Holds, Side};
use crate::retry::{Progress, StopHandle};
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
            connect_timeout: crate::DEFAULT_CONNECT_TIMEOUT,
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
    /// Events dead-lettered in this run (passed over, see [`crate::dead_letter`]).
    pub dead_lettered: u64,
    /// Dead letters of this checkpoint name in the store at the end of the run.
    pub dead_letters: u64,
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
    stop: StopHandle,
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
            stop: StopHandle::new(),
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

    /// Asks a running [`Publisher::run`] (of this publisher or a clone) to stop: it awaits the
    /// acknowledgements in flight, stores its checkpoint and returns its report.
    pub fn stop_handle(&self) -> &StopHandle {
        &self.stop
    }

    /// Connects, makes sure the JetStream stream exists, and publishes from the checkpoint
    /// until `until` (or an error, or a stop). An event that can never be published (larger
    /// than the server's or the stream's maximum message size) is dead-lettered
    /// ([`crate::dead_letter`]) with the later events of its stream, and the run goes on.
    pub async fn run(&self, until: Until) -> Result<PublishReport, ReplicationError> {
        let config = &self.config;
        if self.stop.is_stopped() {
            let checkpoint = self.checkpoint()?;
            return Ok(PublishReport {
                checkpoint,
                ..PublishReport::default()
            });
        }
        let client = connect(&config.server, config.connect_timeout).await?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(config.ack_timeout);
        let limit = message_limit(&client, &jetstream, config).await?;

        let mut checkpoints =
            CheckpointWriter::open(self.path.clone(), config.checkpoint_name.clone()).await?;
        let mut holds = Holds::open(&self.path, Side::Push, &config.checkpoint_name)?;
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
            report.dead_letters = holds.table().count(Side::Push, &config.checkpoint_name)?;
            return Ok(report);
        }

        let mut events = follow(self.store.clone(), start + 1, config.max_in_flight)?;
        let mut in_flight: VecDeque<(u64, Pending)> = VecDeque::with_capacity(config.max_in_flight);
        let mut acked = start;
        let mut sent = start;
        let mut last_store = Instant::now();
        let sender = Sender {
            jetstream: &jetstream,
            config,
            limit: &limit,
        };
        let result: Result<(), ReplicationError> = async {
            loop {
                let stopping = self.stop.is_stopped();
                // Fill the pipeline with what is already committed (nothing new once stopping).
                while !stopping && in_flight.len() < config.max_in_flight && sent < target {
                    match events.try_recv() {
                        Ok(event) => {
                            let event = event?;
                            sent = event.position;
                            in_flight.push_back(sender.send(event, &mut holds).await?);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            return Err(ReplicationError::Store("the log reader stopped".into()))
                        }
                    }
                }
                let Some((position, pending)) = in_flight.pop_front() else {
                    // Nothing in flight: everything read is acknowledged.
                    checkpoints.store(acked).await?;
                    last_store = Instant::now();
                    if acked >= target || stopping {
                        return Ok(());
                    }
                    let next = tokio::select! {
                        next = events.recv() => next,
                        _ = self.stop.stopped() => continue,
                    };
                    match next {
                        Some(event) => {
                            let event = event?;
                            sent = event.position;
                            in_flight.push_back(sender.send(event, &mut holds).await?);
                            continue;
                        }
                        None => {
                            return Err(ReplicationError::Store("the log reader stopped".into()))
                        }
                    }
                };
                match pending {
                    Pending::DeadLettered => report.dead_lettered += 1,
                    Pending::Ack(ack) => {
                        let ack = ack.await.map_err(|e| {
                            ReplicationError::JetStream(format!(
                                "publish of position {position}: {e}"
                            ))
                        })?;
                        if ack.duplicate {
                            report.duplicates += 1;
                        }
                        report.published += 1;
                    }
                }
                acked = position;
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
        report.dead_letters = holds
            .table()
            .count(Side::Push, &config.checkpoint_name)
            .unwrap_or(0);
        result?;
        stored?;
        Ok(report)
    }

    /// Publishes this publisher's dead letters again, in position order, removing each one
    /// JetStream acknowledges. A stream whose dead letter fails again keeps it and every later
    /// one (order within a stream is kept); its reason is updated.
    pub async fn retry_dead_letters(&self) -> Result<RetryReport, ReplicationError> {
        let config = &self.config;
        let client = connect(&config.server, config.connect_timeout).await?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(config.ack_timeout);
        let limit = message_limit(&client, &jetstream, config).await?;
        let table = DeadLetters::open(&self.path)?;
        let mut failed: HashSet<String> = HashSet::new();
        let mut report = RetryReport::default();
        for letter in table.list(Some(Side::Push), Some(&config.checkpoint_name))? {
            let stream_id = letter.stream_id.clone().unwrap_or_default();
            if failed.contains(&stream_id) {
                report.still_dead += 1;
                continue;
            }
            let event = self
                .store
                .read_all(letter.id, 1)
                .map_err(|e| ReplicationError::Store(e.to_string()))?
                .into_iter()
                .next()
                .filter(|e| e.position == letter.id)
                .ok_or_else(|| {
                    ReplicationError::Store(format!(
                        "dead letter at position {} names an event the store does not hold",
                        letter.id
                    ))
                })?;
            let (subject, headers, payload) = wire::encode(&config.subject_prefix, &event);
            if let Some(reason) = limit.refuses(wire::message_size(&headers, &payload)) {
                table.record(&push_letter(&config.checkpoint_name, &event, reason))?;
                failed.insert(stream_id);
                report.still_dead += 1;
                continue;
            }
            jetstream
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| ReplicationError::JetStream(format!("publish: {e}")))?
                .await
                .map_err(|e| {
                    ReplicationError::JetStream(format!("publish of position {}: {e}", letter.id))
                })?;
            table.remove(Side::Push, &config.checkpoint_name, letter.id)?;
            report.replicated += 1;
        }
        Ok(report)
    }
}

/// What a retry of dead letters did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Dead letters replicated (and removed).
    pub replicated: u64,
    /// Dead letters that failed again or wait behind one that did.
    pub still_dead: u64,
}

enum Pending {
    Ack(AckFuture),
    /// Recorded as a dead letter: counts as done for the checkpoint.
    DeadLettered,
}

/// Publishes one event, or dead-letters it when it can never be published or its stream is
/// held behind a dead letter.
struct Sender<'a> {
    jetstream: &'a async_nats::jetstream::Context,
    config: &'a PublisherConfig,
    limit: &'a MessageLimit,
}

impl Sender<'_> {
    async fn send(
        &self,
        event: Event,
        holds: &mut Holds,
    ) -> Result<(u64, Pending), ReplicationError> {
        let (subject, headers, payload) = wire::encode(&self.config.subject_prefix, &event);
        let refusal = match holds.held_by(&event.stream_id)? {
            Some(first) => Some(format!(
                "held behind the dead letter at position {first} of the same stream"
            )),
            None => self.limit.refuses(wire::message_size(&headers, &payload)),
        };
        if let Some(reason) = refusal {
            tracing::warn!(position = event.position, stream = %event.stream_id, %reason, "dead-lettered");
            holds.record(&push_letter(&self.config.checkpoint_name, &event, reason))?;
            return Ok((event.position, Pending::DeadLettered));
        }
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| {
                ReplicationError::JetStream(format!("publish of position {}: {e}", event.position))
            })?;
        Ok((event.position, Pending::Ack(ack.into_future())))
    }
}

/// The largest message the server and the stream accept, and which of them sets it.
struct MessageLimit {
    bytes: usize,
    what: &'static str,
}

impl MessageLimit {
    /// Why a message of `size` bytes can never be published, if it cannot.
    fn refuses(&self, size: usize) -> Option<String> {
        (size > self.bytes).then(|| {
            format!(
                "message of {size} bytes exceeds the {} of {} bytes",
                self.what, self.bytes
            )
        })
    }
}

/// Makes sure the stream exists and learns the message size limit: the server's `max_payload`
/// (from its INFO) or the stream's `max_msg_size`, whichever is smaller.
async fn message_limit(
    client: &async_nats::Client,
    jetstream: &async_nats::jetstream::Context,
    config: &PublisherConfig,
) -> Result<MessageLimit, ReplicationError> {
    let mut stream = ensure_stream(
        jetstream,
        &config.stream,
        &config.subject_prefix,
        config.duplicate_window,
        true,
    )
    .await?;
    let mut limit = MessageLimit {
        bytes: client.server_info().max_payload,
        what: "server's max_payload",
    };
    let stream_max = stream
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {}: {e}", config.stream)))?
        .config
        .max_message_size;
    if stream_max > 0 && (stream_max as usize) < limit.bytes {
        limit = MessageLimit {
            bytes: stream_max as usize,
            what: "stream's max_msg_size",
        };
    }
    Ok(limit)
}

fn push_letter(name: &str, event: &Event, reason: String) -> DeadLetter {
    DeadLetter {
        side: Side::Push,
        name: name.to_owned(),
        id: event.position,
        source_position: Some(event.position),
        stream_id: Some(event.stream_id.to_string()),
        event_id: Some(event.event_id.to_string()),
        reason,
        recorded_at: now_micros(),
        subject: None,
        headers: None,
        payload: None,
    }
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
                conn.register(&name)?;
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
