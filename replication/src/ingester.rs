//! The ingester: reads a JetStream stream through a durable pull consumer and appends every
//! event into a target store, under a stream-id prefix.
//!
//! - **Exactly-once storage.** Each event is appended with its source event id and the expected
//!   version `Exact(source version - 1)`. A redelivered event is already stored under its id at
//!   that place, which the store answers as an idempotent success; so is a copy JetStream stored
//!   twice (published again after the duplicate window).
//! - **Per-stream order.** A message whose predecessor in its stream is not stored yet (JetStream
//!   holds them out of order after a publisher retry, or the predecessor is being redelivered)
//!   is negatively acknowledged with a delay: JetStream delivers it again later, after the
//!   predecessor. Versions in the target stream equal versions in the source stream.
//! - **Ack after commit.** A message is acknowledged only after the append that stored it (or
//!   found it stored) committed. A crash between the two redelivers it: see the first point.
//! - A message that cannot be ingested (not a strata event, a target stream id over 255 bytes,
//!   an event the target store refuses) is recorded as a dead letter in the target store, then
//!   terminated (never redelivered) and counted; later events of its stream are held behind it
//!   ([`crate::dead_letter`]). Other streams go on.
//! - Another event already at a replicated version (someone else wrote into the prefixed stream)
//!   stops the ingester with [`ReplicationError::Diverged`]; it is not retried.
//!
//! A batch of messages normally goes in as one atomic multi-stream append; if that fails (a
//! redelivery mixes stored and new events, or versions are out of order), the batch's events
//! are appended one at a time.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use strata::limits::MAX_STREAM_ID_BYTES;
use strata::{AppendError, ExpectedVersion, Store, StreamAppend};

use crate::dead_letter::{now_micros, DeadLetter, DeadLetters, Holds, Side};
use crate::publisher::RetryReport;
use crate::retry::{Progress, StopHandle};
use crate::wire::{self, ReplicatedEvent};
use crate::{connect, ensure_stream, subject, ReplicationError};

/// Where to read from and how.
#[derive(Clone, Debug)]
pub struct IngesterConfig {
    /// NATS server URL, such as `nats://127.0.0.1:4222`.
    pub server: String,
    /// JetStream stream name.
    pub stream: String,
    /// Create the stream if it does not exist (otherwise a missing stream is an error: a
    /// misspelt name must not silently create an empty stream).
    pub create_stream: bool,
    /// Subject prefix the source publishes under; the consumer filters on `<prefix>.>`.
    pub subject_prefix: String,
    /// Durable consumer name: the consumer's position survives restarts of the ingester and
    /// of the server.
    pub durable: String,
    /// Prefix added to every source stream id in the target store, such as `device-a/`.
    pub stream_prefix: String,
    /// Messages per fetch, and so events per append (1..=1,000).
    pub batch: usize,
    /// How long a fetch waits for messages.
    pub fetch_wait: Duration,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// Delay before a message that arrived before its predecessor is delivered again.
    pub gap_retry_delay: Duration,
    /// De-duplication window, used if this ingester creates the stream.
    pub duplicate_window: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a JetStream request (stream and consumer set-up) or the final flush may take.
    pub request_timeout: Duration,
}

impl IngesterConfig {
    /// Defaults for everything but the server, stream, subject prefix, durable name and the
    /// target stream-id prefix.
    pub fn new(
        server: impl Into<String>,
        stream: impl Into<String>,
        subject_prefix: impl Into<String>,
        durable: impl Into<String>,
        stream_prefix: impl Into<String>,
    ) -> Self {
        IngesterConfig {
            server: server.into(),
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            durable: durable.into(),
            stream_prefix: stream_prefix.into(),
            batch: 500,
            fetch_wait: Duration::from_millis(500),
            ack_wait: Duration::from_secs(30),
            gap_retry_delay: Duration::from_millis(200),
            duplicate_window: Duration::from_secs(3_600),
            connect_timeout: crate::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Duration::from_secs(5),
            create_stream: false,
        }
    }

    fn validate(&self, store: &Store) -> Result<(), ReplicationError> {
        subject::validate_prefix(&self.subject_prefix)?;
        let fail = |what: &str| Err(ReplicationError::Config(what.to_owned()));
        if !(1..=1_000).contains(&self.batch) || self.batch > store.options().max_events_per_append
        {
            return fail("batch must be 1..=1000 and within the store's max_events_per_append");
        }
        if self.durable.is_empty()
            || !self
                .durable
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return fail("the durable name must be non-empty [A-Za-z0-9_-]");
        }
        if self.fetch_wait < Duration::from_millis(10) || self.fetch_wait > Duration::from_secs(60)
        {
            return fail("fetch_wait must be 10 ms..=60 s");
        }
        Ok(())
    }
}

/// Most messages delivered and not acknowledged yet, per durable consumer.
const MAX_ACK_PENDING: i64 = 20_000;

/// When a run ends without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Never: keep consuming.
    Forever,
    /// Once no message arrived for this long (and nothing is waiting for a predecessor).
    Idle(Duration),
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Events appended (new in the target store).
    pub appended: u64,
    /// Events that were already stored (redeliveries, copies).
    pub already_stored: u64,
    /// Deliveries put back because their predecessor was not stored yet.
    pub deferred: u64,
    /// Messages dead-lettered in this run (not strata events, or events that cannot be
    /// stored here: see [`crate::dead_letter`]); they are terminated in JetStream.
    pub rejected: u64,
    /// Dead letters of this durable in the store at the end of the run.
    pub dead_letters: u64,
}

/// An ingester into one target store.
#[derive(Clone, Debug)]
pub struct Ingester {
    store: Store,
    config: IngesterConfig,
    path: PathBuf,
    progress: Progress,
    stop: StopHandle,
}

impl Ingester {
    /// An ingester appending into `store`.
    pub fn new(store: Store, config: IngesterConfig) -> Result<Self, ReplicationError> {
        config.validate(&store)?;
        let path = store.path().ok_or_else(|| {
            ReplicationError::Config(
                "the ingester needs a file store (dead letters live in the file)".into(),
            )
        })?;
        Ok(Ingester {
            store,
            config,
            path,
            progress: Progress::new(),
            stop: StopHandle::new(),
        })
    }

    /// Counts events stored or found stored, across runs.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The configuration.
    pub fn config(&self) -> &IngesterConfig {
        &self.config
    }

    /// Asks a running [`Ingester::run`] (of this ingester or a clone) to stop after the batch
    /// in hand: its appends commit and are acknowledged, then it returns its report.
    pub fn stop_handle(&self) -> &StopHandle {
        &self.stop
    }

    /// Connects, makes sure the stream (created only with `create_stream`) and the durable
    /// consumer exist, and ingests until `until` (or an error, or a stop). A message that
    /// cannot be ingested is dead-lettered ([`crate::dead_letter`]), with the later events of
    /// its stream, and terminated in JetStream; the run goes on.
    pub async fn run(&self, until: Until) -> Result<IngestReport, ReplicationError> {
        let config = &self.config;
        let mut report = IngestReport::default();
        if self.stop.is_stopped() {
            return Ok(report);
        }
        let client = connect(&config.server, config.connect_timeout).await?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(config.request_timeout);
        let stream = ensure_stream(
            &jetstream,
            &config.stream,
            &config.subject_prefix,
            config.duplicate_window,
            config.create_stream,
        )
        .await?;
        let consumer = self.consumer(&stream).await?;
        let mut holds = Holds::open(&self.path, Side::Pull, &config.durable)?;

        let mut last_message = Instant::now();
        let result = loop {
            if self.stop.is_stopped() {
                break Ok(());
            }
            let messages = match self.fetch(&consumer).await {
                Ok(messages) => messages,
                Err(error) => break Err(error),
            };
            if messages.is_empty() {
                if let Until::Idle(idle) = until {
                    if last_message.elapsed() >= idle {
                        break Ok(());
                    }
                }
                continue;
            }
            let deferred_before = report.deferred;
            if let Err(error) = self.ingest(messages, &mut report, &mut holds).await {
                break Err(error);
            }
            if report.deferred == deferred_before {
                last_message = Instant::now();
            }
        };
        // Acknowledgements are plain publishes: send them before going.
        let flushed = tokio::time::timeout(config.request_timeout, client.flush()).await;
        report.dead_letters = holds
            .table()
            .count(Side::Pull, &config.durable)
            .unwrap_or(0);
        result?;
        flushed
            .map_err(|_| ReplicationError::JetStream("flush: timed out".into()))?
            .map_err(|e| ReplicationError::JetStream(format!("flush: {e}")))?;
        Ok(report)
    }

    /// The durable consumer, created if missing. An existing one whose acknowledgement wait or
    /// pending limit differ from this configuration is updated to it; one that filters other
    /// subjects or delivers differently is refused (those cannot be changed in place).
    async fn consumer(
        &self,
        stream: &async_nats::jetstream::stream::Stream,
    ) -> Result<PullConsumer, ReplicationError> {
        let config = &self.config;
        let wanted = pull::Config {
            durable_name: Some(config.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ack_wait: config.ack_wait,
            max_ack_pending: MAX_ACK_PENDING,
            filter_subject: subject::wildcard(&config.subject_prefix),
            ..Default::default()
        };
        let consumer_error = |e: &dyn std::fmt::Display| {
            ReplicationError::JetStream(format!("consumer {}: {e}", config.durable))
        };
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        let current = match stream.consumer_info(&config.durable).await {
            Ok(info) => info.config,
            Err(error) if matches!(error.kind(), ConsumerInfoErrorKind::NotFound) => {
                return stream
                    .create_consumer(wanted)
                    .await
                    .map_err(|e| consumer_error(&e));
            }
            Err(error)
                if matches!(error.kind(), ConsumerInfoErrorKind::JetStream(e)
                    if e.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
            {
                return stream
                    .create_consumer(wanted)
                    .await
                    .map_err(|e| consumer_error(&e));
            }
            Err(error) => return Err(consumer_error(&error)),
        };
        if current.filter_subject != wanted.filter_subject
            || current.deliver_policy != wanted.deliver_policy
            || current.ack_policy != wanted.ack_policy
        {
            return Err(ReplicationError::Config(format!(
                "durable consumer {} on stream {} exists with filter {:?}, deliver policy {:?} \
                 and ack policy {:?}; this pull needs filter {:?}, deliver all, explicit acks, \
                 which cannot be changed in place: use another --durable name",
                config.durable,
                config.stream,
                current.filter_subject,
                current.deliver_policy,
                current.ack_policy,
                wanted.filter_subject
            )));
        }
        if current.ack_wait != wanted.ack_wait || current.max_ack_pending != wanted.max_ack_pending
        {
            tracing::info!(
                durable = %config.durable,
                from = ?current.ack_wait,
                to = ?wanted.ack_wait,
                "updating the durable consumer's settings"
            );
            return stream
                .update_consumer(wanted)
                .await
                .map_err(|e| consumer_error(&e));
        }
        stream
            .get_consumer(&config.durable)
            .await
            .map_err(|e| consumer_error(&e))
    }

    /// What is ready, up to `batch` messages, without waiting; when nothing is, waits up to
    /// `fetch_wait` for the first message (so a trickle of events is not held back to fill a
    /// batch).
    async fn fetch(
        &self,
        consumer: &PullConsumer,
    ) -> Result<Vec<async_nats::jetstream::Message>, ReplicationError> {
        let ready = consumer.fetch().max_messages(self.config.batch).messages();
        // No messages at all may come back as an error status: wait for one below instead.
        if let Ok(messages) = collect(ready, Duration::from_secs(5), self.config.batch).await {
            if !messages.is_empty() {
                return Ok(messages);
            }
        }
        let wait = self.config.fetch_wait;
        let first = consumer.batch().max_messages(1).expires(wait).messages();
        collect(first, wait + Duration::from_secs(5), 1).await
    }

    async fn ingest(
        &self,
        messages: Vec<async_nats::jetstream::Message>,
        report: &mut IngestReport,
        holds: &mut Holds,
    ) -> Result<(), ReplicationError> {
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            match wire::decode(message.headers.as_ref(), &message.payload) {
                Ok(event) => match self.refusal(&event, holds)? {
                    Some(reason) => {
                        self.dead_letter(&message, Some(&event), reason, holds, report)
                            .await?
                    }
                    None => events.push((message, event)),
                },
                Err(reason) => {
                    let reason = format!("not a strata event: {reason}");
                    self.dead_letter(&message, None, reason, holds, report)
                        .await?
                }
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        if let Some(parts) = self.as_one_append(&events) {
            let store = self.store.clone();
            let outcome = tokio::task::spawn_blocking(move || store.append_multi(parts))
                .await
                .map_err(|e| ReplicationError::Store(format!("append task: {e}")))?;
            match outcome {
                Ok(results) => {
                    for result in &results {
                        let n = result.event_ids.len() as u64;
                        if result.already_stored {
                            report.already_stored += n;
                        } else {
                            report.appended += n;
                        }
                    }
                    for (message, _) in &events {
                        ack(message, AckKind::Ack).await?;
                    }
                    self.progress.add(events.len() as u64);
                    return Ok(());
                }
                // One by one below tells which event is the cause.
                Err(
                    AppendError::Conflict { .. }
                    | AppendError::DuplicateEventId { .. }
                    | AppendError::Invalid(_),
                ) => {}
                Err(error) => return Err(ReplicationError::Store(error.to_string())),
            }
        }
        self.one_by_one(events, report, holds).await
    }

    /// Why `event` cannot be stored here, known before appending: its stream waits behind a
    /// dead letter, or its target stream id would be too long.
    fn refusal(
        &self,
        event: &ReplicatedEvent,
        holds: &mut Holds,
    ) -> Result<Option<String>, ReplicationError> {
        if let Some(first) = holds.held_by(&event.stream_id)? {
            return Ok(Some(format!(
                "held behind the dead letter at JetStream sequence {first} of the same stream"
            )));
        }
        let target = self.target_stream(&event.stream_id);
        if target.len() > MAX_STREAM_ID_BYTES {
            return Ok(Some(format!(
                "target stream id {target:?} is {} bytes, over the limit of {MAX_STREAM_ID_BYTES} \
                 (prefix {:?} + source stream id)",
                target.len(),
                self.config.stream_prefix
            )));
        }
        Ok(None)
    }

    /// Records `message` as a dead letter in the store, then terminates it in JetStream (in
    /// that order: a crash in between redelivers it, and recording it again is harmless).
    async fn dead_letter(
        &self,
        message: &async_nats::jetstream::Message,
        event: Option<&ReplicatedEvent>,
        reason: String,
        holds: &mut Holds,
        report: &mut IngestReport,
    ) -> Result<(), ReplicationError> {
        let sequence = message
            .info()
            .map_err(|e| ReplicationError::JetStream(format!("message info: {e}")))?
            .stream_sequence;
        tracing::warn!(subject = %message.subject, sequence, %reason, "dead-lettered; terminated");
        holds.record(&DeadLetter {
            side: Side::Pull,
            name: self.config.durable.clone(),
            id: sequence,
            source_position: event.map(|e| e.position),
            stream_id: event.map(|e| e.stream_id.clone()),
            event_id: event.map(|e| e.event_id.to_string()),
            reason,
            recorded_at: now_micros(),
            subject: Some(message.subject.to_string()),
            headers: message.headers.as_ref().map(wire::headers_to_text),
            payload: Some(message.payload.to_vec()),
        })?;
        ack(message, AckKind::Term).await?;
        report.rejected += 1;
        self.progress.add(1);
        Ok(())
    }

    /// The batch as one multi-stream append, if each stream's events in it have consecutive
    /// versions in delivery order.
    fn as_one_append(
        &self,
        events: &[(async_nats::jetstream::Message, ReplicatedEvent)],
    ) -> Option<Vec<StreamAppend>> {
        let mut parts: Vec<StreamAppend> = Vec::new();
        let mut index: HashMap<&str, (usize, u64)> = HashMap::new();
        for (_, event) in events {
            match index.get_mut(event.stream_id.as_str()) {
                Some((part, last)) => {
                    if event.version != *last + 1 {
                        return None;
                    }
                    *last = event.version;
                    parts[*part].events.push(event.to_new_event());
                }
                None => {
                    index.insert(&event.stream_id, (parts.len(), event.version));
                    parts.push(StreamAppend::new(
                        self.target_stream(&event.stream_id),
                        ExpectedVersion::Exact(event.version - 1),
                        vec![event.to_new_event()],
                    ));
                }
            }
        }
        Some(parts)
    }

    async fn one_by_one(
        &self,
        events: Vec<(async_nats::jetstream::Message, ReplicatedEvent)>,
        report: &mut IngestReport,
        holds: &mut Holds,
    ) -> Result<(), ReplicationError> {
        // Each event is checked against its stream's current version on its own: an event whose
        // predecessor is deferred is deferred too, and one whose predecessor comes later in
        // the batch goes in (JetStream may redeliver in any order).
        for (message, event) in events {
            // An earlier event of this batch may have been dead-lettered.
            if let Some(reason) = self.refusal(&event, holds)? {
                self.dead_letter(&message, Some(&event), reason, holds, report)
                    .await?;
                continue;
            }
            let target = self.target_stream(&event.stream_id);
            match self.append_one(&event).await? {
                Ok(already_stored) => {
                    if already_stored {
                        report.already_stored += 1;
                    } else {
                        report.appended += 1;
                    }
                    ack(&message, AckKind::Ack).await?;
                    self.progress.add(1);
                }
                Err(AppendError::Conflict { actual, .. }) if actual < event.version - 1 => {
                    // The predecessor is not stored yet: have JetStream deliver this again later.
                    tracing::debug!(stream = %target, version = event.version, actual, "waiting for predecessor");
                    ack(&message, AckKind::Nak(Some(self.config.gap_retry_delay))).await?;
                    report.deferred += 1;
                }
                Err(AppendError::Invalid(invalid)) => {
                    let reason = format!("the target store refused it: {invalid}");
                    self.dead_letter(&message, Some(&event), reason, holds, report)
                        .await?;
                }
                Err(
                    error @ (AppendError::Conflict { .. } | AppendError::DuplicateEventId { .. }),
                ) => {
                    return Err(ReplicationError::Diverged {
                        stream_id: target,
                        version: event.version,
                        event_id: event.event_id,
                        detail: error.to_string(),
                    });
                }
                Err(error) => return Err(ReplicationError::Store(error.to_string())),
            }
        }
        Ok(())
    }

    /// Appends one event at its source version; `Ok(Ok(already_stored))` when it is stored.
    async fn append_one(
        &self,
        event: &ReplicatedEvent,
    ) -> Result<Result<bool, AppendError>, ReplicationError> {
        let store = self.store.clone();
        let part = StreamAppend::new(
            self.target_stream(&event.stream_id),
            ExpectedVersion::Exact(event.version - 1),
            vec![event.to_new_event()],
        );
        let outcome = tokio::task::spawn_blocking(move || store.append_multi(vec![part]))
            .await
            .map_err(|e| ReplicationError::Store(format!("append task: {e}")))?;
        Ok(outcome.map(|results| results.iter().all(|r| r.already_stored)))
    }

    /// Ingests this durable's dead letters again from the copies kept in the store (no NATS
    /// needed), in JetStream order, removing each one that is stored. A stream whose dead
    /// letter fails again keeps it and every later one; its reason is updated.
    pub async fn retry_dead_letters(&self) -> Result<RetryReport, ReplicationError> {
        let table = DeadLetters::open(&self.path)?;
        let mut failed: HashSet<String> = HashSet::new();
        let mut report = RetryReport::default();
        for mut letter in table.list(Some(Side::Pull), Some(&self.config.durable))? {
            let headers = letter.headers.as_deref().map(wire::headers_from_text);
            let payload = bytes::Bytes::from(letter.payload.clone().unwrap_or_default());
            let event = match wire::decode(headers.as_ref(), &payload) {
                Ok(event) => event,
                Err(reason) => {
                    letter.reason = format!("not a strata event: {reason}");
                    table.record(&letter)?;
                    report.still_dead += 1;
                    continue;
                }
            };
            if failed.contains(&event.stream_id) {
                report.still_dead += 1;
                continue;
            }
            let target = self.target_stream(&event.stream_id);
            let reason = if target.len() > MAX_STREAM_ID_BYTES {
                Some(format!(
                    "target stream id {target:?} is {} bytes, over the limit of \
                     {MAX_STREAM_ID_BYTES}",
                    target.len()
                ))
            } else {
                match self.append_one(&event).await? {
                    Ok(_) => None,
                    Err(AppendError::Conflict { actual, .. }) if actual < event.version - 1 => {
                        Some(format!(
                            "its predecessor is not stored: {target:?} is at version {actual}"
                        ))
                    }
                    Err(AppendError::Invalid(invalid)) => {
                        Some(format!("the target store refused it: {invalid}"))
                    }
                    Err(
                        error @ (AppendError::Conflict { .. }
                        | AppendError::DuplicateEventId { .. }),
                    ) => Some(format!("diverged: {error}")),
                    Err(error) => return Err(ReplicationError::Store(error.to_string())),
                }
            };
            match reason {
                None => {
                    table.remove(Side::Pull, &self.config.durable, letter.id)?;
                    report.replicated += 1;
                }
                Some(reason) => {
                    letter.reason = reason;
                    letter.recorded_at = now_micros();
                    table.record(&letter)?;
                    failed.insert(event.stream_id);
                    report.still_dead += 1;
                }
            }
        }
        Ok(report)
    }

    fn target_stream(&self, source: &str) -> String {
        format!("{}{source}", self.config.stream_prefix)
    }
}

async fn ack(
    message: &async_nats::jetstream::Message,
    kind: AckKind,
) -> Result<(), ReplicationError> {
    message
        .ack_with(kind)
        .await
        .map_err(|e| ReplicationError::JetStream(format!("ack: {e}")))
}

/// The messages of one pull request, failing after `limit`.
async fn collect<F>(
    request: F,
    limit: Duration,
    capacity: usize,
) -> Result<Vec<async_nats::jetstream::Message>, ReplicationError>
where
    F: std::future::Future<
        Output = Result<
            async_nats::jetstream::consumer::pull::Batch,
            async_nats::jetstream::consumer::pull::BatchError,
        >,
    >,
{
    let deadline = tokio::time::Instant::now() + limit;
    let fetch_error =
        |e: &dyn std::fmt::Display| ReplicationError::JetStream(format!("fetch: {e}"));
    let mut batch = tokio::time::timeout_at(deadline, request)
        .await
        .map_err(|_| fetch_error(&"timed out"))?
        .map_err(|e| fetch_error(&e))?;
    let mut messages = Vec::with_capacity(capacity);
    loop {
        match tokio::time::timeout_at(deadline, batch.next()).await {
            Err(_) => return Err(fetch_error(&"timed out")),
            Ok(None) => return Ok(messages),
            Ok(Some(Ok(message))) => messages.push(message),
            Ok(Some(Err(error))) => {
                if messages.is_empty() {
                    return Err(fetch_error(&error));
                }
                // Keep what arrived; the error shows again on the next fetch if it lasts.
                return Ok(messages);
            }
        }
    }
}
