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
//! - A message that is not a strata event is terminated (never redelivered) and counted.
//! - Another event already at a replicated version (someone else wrote into the prefixed stream)
//!   stops the ingester with [`ReplicationError::Diverged`]; it is not retried.
//!
//! A batch of messages normally goes in as one atomic multi-stream append; if that fails (a
//! redelivery mixes stored and new events, or versions are out of order), the batch's events
//! are appended one at a time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use strata::{AppendError, ExpectedVersion, Store, StreamAppend};

use crate::retry::Progress;
use crate::wire::{self, ReplicatedEvent};
use crate::{connect, ensure_stream, subject, ReplicationError};

/// Where to read from and how.
#[derive(Clone, Debug)]
pub struct IngesterConfig {
    /// NATS server URL, such as `nats://127.0.0.1:4222`.
    pub server: String,
    /// JetStream stream name (created if missing, like the publisher does).
    pub stream: String,
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
            connect_timeout: Duration::from_secs(3),
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
    /// Messages that were not strata events (terminated).
    pub rejected: u64,
}

/// An ingester into one target store.
#[derive(Clone, Debug)]
pub struct Ingester {
    store: Store,
    config: IngesterConfig,
    progress: Progress,
}

impl Ingester {
    /// An ingester appending into `store`.
    pub fn new(store: Store, config: IngesterConfig) -> Result<Self, ReplicationError> {
        config.validate(&store)?;
        Ok(Ingester {
            store,
            config,
            progress: Progress::new(),
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

    /// Connects, makes sure the stream and the durable consumer exist, and ingests until
    /// `until` (or an error).
    pub async fn run(&self, until: Until) -> Result<IngestReport, ReplicationError> {
        let config = &self.config;
        let client = connect(&config.server, config.connect_timeout).await?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let stream = ensure_stream(
            &jetstream,
            &config.stream,
            &config.subject_prefix,
            config.duplicate_window,
        )
        .await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &config.durable,
                pull::Config {
                    durable_name: Some(config.durable.clone()),
                    ack_policy: AckPolicy::Explicit,
                    deliver_policy: DeliverPolicy::All,
                    ack_wait: config.ack_wait,
                    max_ack_pending: 20_000,
                    filter_subject: subject::wildcard(&config.subject_prefix),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                ReplicationError::JetStream(format!("consumer {}: {e}", config.durable))
            })?;

        let mut report = IngestReport::default();
        let mut last_message = Instant::now();
        let result = loop {
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
            if let Err(error) = self.ingest(messages, &mut report).await {
                break Err(error);
            }
            if report.deferred == deferred_before {
                last_message = Instant::now();
            }
        };
        // Acknowledgements are plain publishes: send them before going.
        let flushed = client.flush().await;
        result?;
        flushed.map_err(|e| ReplicationError::JetStream(format!("flush: {e}")))?;
        Ok(report)
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
    ) -> Result<(), ReplicationError> {
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            match wire::decode(message.headers.as_ref(), &message.payload) {
                Ok(event) => events.push((message, event)),
                Err(reason) => {
                    tracing::warn!(subject = %message.subject, %reason, "not a strata event; terminated");
                    ack(&message, AckKind::Term).await?;
                    report.rejected += 1;
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
                Err(AppendError::Conflict { .. } | AppendError::DuplicateEventId { .. }) => {}
                Err(error) => return Err(ReplicationError::Store(error.to_string())),
            }
        }
        self.one_by_one(events, report).await
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
    ) -> Result<(), ReplicationError> {
        // Each event is checked against its stream's current version on its own: an event whose
        // predecessor is deferred is deferred too, and one whose predecessor comes later in
        // the batch goes in (JetStream may redeliver in any order).
        for (message, event) in events {
            let target = self.target_stream(&event.stream_id);
            let store = self.store.clone();
            let part = StreamAppend::new(
                target.clone(),
                ExpectedVersion::Exact(event.version - 1),
                vec![event.to_new_event()],
            );
            let outcome = tokio::task::spawn_blocking(move || store.append_multi(vec![part]))
                .await
                .map_err(|e| ReplicationError::Store(format!("append task: {e}")))?;
            match outcome {
                Ok(results) => {
                    if results.iter().all(|r| r.already_stored) {
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
                Err(
                    error @ (AppendError::Conflict { .. }
                    | AppendError::DuplicateEventId { .. }
                    | AppendError::Invalid(_)),
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
