//! `strata replicate`: push a store's events to NATS JetStream, pull them into another store,
//! and show the lag on both sides (crate `strata-nats`).

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use strata_nats::{
    run_with_retry, status, IngestUntil, Ingester, IngesterConfig, PublishUntil, Publisher,
    PublisherConfig, ReplicationError, RetryPolicy,
};

use crate::commands::open_existing;
use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum ReplicateCommand {
    /// Publish the store's events, in order, to a JetStream stream, from a checkpoint kept in
    /// the store (table replication_checkpoints), which moves only over events JetStream
    /// acknowledged. Follows the log until stopped (or with --once, until caught up).
    ///
    /// Each event goes to SUBJECT_PREFIX.<escaped stream id> with its event id as Nats-Msg-Id.
    /// The JetStream stream is created if missing (file storage, capturing SUBJECT_PREFIX.>).
    /// Failures (server down, timeouts) are retried with exponential backoff up to
    /// --max-backoff, giving up after --max-failures consecutive failures without progress.
    ///
    /// Example: strata replicate push --db device-a.strata --stream DEVICE_A --subject-prefix strata.device-a
    Push {
        #[command(flatten)]
        nats: NatsArgs,
        /// Checkpoint name in the store (default nats:<stream>).
        #[arg(long)]
        name: Option<String>,
        /// Publishes awaiting their acknowledgement at most.
        #[arg(long, default_value_t = 256)]
        max_in_flight: usize,
        /// JetStream de-duplication window of a stream this command creates; it must cover the
        /// longest time between a publish and its retry (such as a publisher down and restarted).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        duplicate_window: Duration,
        /// Exit once every event committed at start is acknowledged.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Read a JetStream stream through a durable consumer and append its events into the store,
    /// under --prefix + the source stream id, idempotently by event id, keeping each stream's
    /// versions. Messages are acknowledged after the append committed. Runs until stopped (or
    /// with --idle-exit, until no message came for that long).
    ///
    /// Example: strata replicate pull --db central.strata --stream DEVICE_A --subject-prefix strata.device-a --durable central --prefix device-a/
    Pull {
        #[command(flatten)]
        nats: NatsArgs,
        /// Durable consumer name ([A-Za-z0-9_-]); its position survives restarts.
        #[arg(long)]
        durable: String,
        /// Prefix of the stream ids in this store, such as device-a/.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Messages per fetch (and per append).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// How long JetStream waits for an acknowledgement before delivering again.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        ack_wait: Duration,
        /// Exit after no message arrived for this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_exit: Option<Duration>,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Replication lag: on the source store (last position - checkpoint) and, with --durable, on
    /// JetStream (the consumer's pending and unacknowledged messages). Prints JSON.
    ///
    /// Example: strata replicate status --db device-a.strata --stream DEVICE_A --durable central
    Status {
        /// NATS server URL.
        #[arg(long, env = "STRATA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        server: String,
        /// JetStream stream name.
        #[arg(long)]
        stream: String,
        /// Checkpoint name in the store (default nats:<stream>).
        #[arg(long)]
        name: Option<String>,
        /// Durable consumer whose lag to show.
        #[arg(long)]
        durable: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "STRATA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// JetStream stream name.
    #[arg(long)]
    stream: String,
    /// Subject prefix (`.`-separated tokens): events go to PREFIX.<escaped stream id>.
    #[arg(long, default_value = "strata")]
    subject_prefix: String,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Longest wait between retries.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
    /// Consecutive failures without progress before giving up.
    #[arg(long, default_value_t = 100)]
    max_failures: u32,
}

impl RetryArgs {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(100).min(self.max_backoff),
            max_delay: self.max_backoff,
            max_failures: self.max_failures.max(1),
        }
    }
}

fn error(e: ReplicationError) -> CliError {
    match e {
        ReplicationError::Store(_) | ReplicationError::Checkpoint(_) => {
            CliError::Internal(e.to_string())
        }
        _ => CliError::user(e.to_string()),
    }
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Internal(format!("could not start the async runtime: {e}")))
}

fn report_failure(side: &'static str) -> impl FnMut(&ReplicationError, u32, Duration) {
    move |error, failures, delay| {
        eprintln!(
            "strata: replicate {side}: {error}; retrying in {} (failure {failures})",
            humantime::format_duration(delay)
        );
    }
}

pub fn run(db: &Path, command: ReplicateCommand) -> CliResult {
    match command {
        ReplicateCommand::Push {
            nats,
            name,
            max_in_flight,
            duplicate_window,
            once,
            retry,
        } => {
            let store = open_existing(db)?;
            let mut config = PublisherConfig::new(nats.server, nats.stream, nats.subject_prefix);
            if let Some(name) = name {
                config.checkpoint_name = name;
            }
            config.max_in_flight = max_in_flight;
            config.duplicate_window = duplicate_window;
            let publisher = Publisher::new(store, config).map_err(error)?;
            let until = if once {
                PublishUntil::CaughtUp
            } else {
                PublishUntil::Forever
            };
            let report = runtime()?
                .block_on(run_with_retry(
                    &retry.policy(),
                    publisher.progress(),
                    report_failure("push"),
                    || publisher.run(until),
                ))
                .map_err(error)?;
            println!(
                "{}",
                serde_json::json!({
                    "published": report.published,
                    "duplicates": report.duplicates,
                    "checkpoint": report.checkpoint,
                })
            );
            Ok(())
        }
        ReplicateCommand::Pull {
            nats,
            durable,
            prefix,
            batch,
            ack_wait,
            idle_exit,
            retry,
        } => {
            let store = open_existing(db)?;
            let mut config = IngesterConfig::new(
                nats.server,
                nats.stream,
                nats.subject_prefix,
                durable,
                prefix,
            );
            config.batch = batch;
            config.ack_wait = ack_wait;
            let ingester = Ingester::new(store, config).map_err(error)?;
            let until = idle_exit.map_or(IngestUntil::Forever, IngestUntil::Idle);
            let report = runtime()?
                .block_on(run_with_retry(
                    &retry.policy(),
                    ingester.progress(),
                    report_failure("pull"),
                    || ingester.run(until),
                ))
                .map_err(error)?;
            println!(
                "{}",
                serde_json::json!({
                    "appended": report.appended,
                    "already_stored": report.already_stored,
                    "deferred": report.deferred,
                    "rejected": report.rejected,
                })
            );
            Ok(())
        }
        ReplicateCommand::Status {
            server,
            stream,
            name,
            durable,
        } => {
            let store = open_existing(db)?;
            let name = name.unwrap_or_else(|| format!("nats:{stream}"));
            let source = status::source_lag(&store, &name).map_err(error)?;
            let mut out = serde_json::json!({
                "source": {
                    "checkpoint_name": name,
                    "last_position": source.last_position,
                    "checkpoint": source.checkpoint,
                    "lag": source.lag(),
                }
            });
            if let Some(durable) = durable {
                let lag = runtime()?
                    .block_on(status::consumer_lag(
                        &server,
                        &stream,
                        &durable,
                        Duration::from_secs(3),
                    ))
                    .map_err(error)?;
                out["jetstream"] = serde_json::json!({
                    "stream": stream,
                    "messages": lag.stream_messages,
                    "durable": durable,
                    "pending": lag.pending,
                    "ack_pending": lag.ack_pending,
                    "lag": lag.pending + lag.ack_pending,
                });
            }
            println!("{out}");
            Ok(())
        }
    }
}
