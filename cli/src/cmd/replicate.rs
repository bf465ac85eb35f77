//! `strata replicate`: push a store's events to NATS JetStream, pull them into another store,
//! show the lag on both sides, and list or retry dead letters (crate `strata-nats`).
//!
//! Exit codes of push, pull and retry: 0 when everything was replicated, 3 when the run
//! completed but dead-lettered (push, pull) or left dead (retry) at least one event, 1 for a
//! user error (bad URL, refused credentials, missing stream or durable, unreachable server
//! after the retries), 2 for an internal error. SIGINT and SIGTERM make push and pull finish
//! the batch in flight, store their checkpoint and print their summary (exit 0, or 3).

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use strata_nats::dead_letter::{DeadLetters, Side};
use strata_nats::{
    run_with_retry_or_stop, status, IngestUntil, Ingester, IngesterConfig, PublishUntil, Publisher,
    PublisherConfig, ReplicationError, RetryPolicy, StopHandle,
};

use crate::cmd::open_existing;
use crate::error::{CliError, CliResult};

/// Exit code of a run that dead-lettered (or left dead) at least one event.
const EXIT_DEAD_LETTERS: i32 = 3;

#[derive(Debug, Subcommand)]
pub enum ReplicateCommand {
    /// Publish the store's events, in order, to a JetStream stream, from a checkpoint kept in
    /// the store (table replication_checkpoints), which moves only over events JetStream
    /// acknowledged. Follows the log until stopped (SIGINT/SIGTERM: the publishes in flight
    /// are awaited, the checkpoint stored, the summary printed) or, with --once, until caught
    /// up.
    ///
    /// Each event goes to SUBJECT_PREFIX.<escaped stream id> with its event id as Nats-Msg-Id.
    /// The JetStream stream is created if missing (file storage, capturing SUBJECT_PREFIX.>).
    /// An event larger than the server's max_payload (or the stream's max_msg_size) is recorded
    /// as a dead letter (see `replicate dead-letters`) with the later events of its stream, and
    /// passed over. Transient failures (server down or refusing connections, timeouts) are
    /// retried with exponential backoff up to --max-backoff, giving up after --max-failures
    /// consecutive failures without progress (by default 100, or 6 with --once); permanent ones
    /// (bad URL, refused credentials, a listener that does not greet in NATS within
    /// --connect-timeout) are reported at once.
    ///
    /// Exit codes: 0 done, 3 done but events were dead-lettered in this run, 1 user error,
    /// 2 internal error.
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
        /// Exit once every event committed at start is acknowledged (or dead-lettered).
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Read a JetStream stream through a durable consumer and append its events into the store,
    /// under --prefix + the source stream id, idempotently by event id, keeping each stream's
    /// versions. Messages are acknowledged after the append committed. Runs until stopped
    /// (SIGINT/SIGTERM: the batch in hand is appended and acknowledged, the summary printed) or,
    /// with --idle-exit, until no message came for that long.
    ///
    /// The stream must exist unless --create-stream is given. An existing durable whose
    /// --ack-wait differs is updated; one that filters other subjects is refused. A message
    /// that cannot be stored (not a strata event, a target stream id over 255 bytes, an event
    /// the store refuses) is recorded as a dead letter in this store with the later events of
    /// its stream, terminated in JetStream, and passed over. Failures are retried as for push
    /// (by default 100 times, or 6 with --idle-exit).
    ///
    /// Exit codes: 0 done, 3 done but messages were dead-lettered in this run, 1 user error,
    /// 2 internal error.
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
        /// How long JetStream waits for an acknowledgement before delivering again (applied to
        /// an existing durable too).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        ack_wait: Duration,
        /// Exit after no message arrived for this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        idle_exit: Option<Duration>,
        /// Create the JetStream stream if it does not exist (otherwise that is an error).
        #[arg(long)]
        create_stream: bool,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Replication lag, as JSON. "source": on a store that pushes (last position - checkpoint,
    /// and its dead letters). With --durable, "jetstream": the consumer's pending and
    /// unacknowledged messages, and "target": this store as the pull side of that durable (its
    /// last position and the durable's dead letters). On a store that only pulls (no push
    /// checkpoint) give --durable; without it, a missing checkpoint is an error, as is a stream
    /// or durable that does not exist.
    ///
    /// Example: strata replicate status --db device-a.strata --stream DEVICE_A --durable central
    ///
    /// Example: strata replicate status --db central.strata --stream DEVICE_A --durable central
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
        /// How long connecting (TCP and the NATS handshake) may take.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        connect_timeout: Duration,
    },
    /// Replication gauges of this store as Prometheus text: each publisher checkpoint and the
    /// dead letters per side and name (the store's own metrics: `strata stats`).
    ///
    /// Example: strata replicate metrics --db device-a.strata
    Metrics,
    /// List the dead letters kept in this store (events push or pull passed over), one JSON
    /// object a line: side, name (checkpoint or durable), id (source position for push,
    /// JetStream sequence for pull), source_position, stream_id, event_id, reason, recorded_at.
    ///
    /// Example: strata replicate dead-letters --db central.strata --side pull
    DeadLetters {
        /// Only this side's.
        #[arg(long, value_enum)]
        side: Option<SideArg>,
        /// Only this checkpoint name (push) or durable (pull).
        #[arg(long)]
        name: Option<String>,
    },
    /// Replicate dead letters again, in order; each one that goes through is removed. With
    /// --durable, the pull side's (appended from the copy kept in this store, under --prefix);
    /// otherwise the push side's of checkpoint --name (published to the server again). A stream
    /// whose dead letter fails again keeps it and every later one. Prints JSON.
    ///
    /// Exit codes: 0 all replicated, 3 some still dead, 1 user error, 2 internal error.
    ///
    /// Example: strata replicate retry --db device-a.strata --stream DEVICE_A --subject-prefix strata.device-a
    Retry {
        #[command(flatten)]
        nats: NatsArgs,
        /// Push side: checkpoint name (default nats:<stream>).
        #[arg(long)]
        name: Option<String>,
        /// Pull side: the durable whose dead letters to ingest again.
        #[arg(long)]
        durable: Option<String>,
        /// Pull side: prefix of the stream ids in this store.
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SideArg {
    Push,
    Pull,
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
    /// How long connecting (TCP and the NATS handshake) may take before the attempt fails.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Longest wait between retries.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
    /// Consecutive failures without progress before giving up. Default: 100 when following
    /// the log (about 15 minutes of retries); 6 with push --once or pull --idle-exit, so an
    /// unreachable server is reported after about 3 s of retries (a refused connection) or
    /// 6 x --connect-timeout + 3 s (an address that does not answer).
    #[arg(long)]
    max_failures: Option<u32>,
}

impl RetryArgs {
    /// The policy of a run that follows the log, or (`one_shot`) stops once caught up.
    fn policy(&self, one_shot: bool) -> RetryPolicy {
        let defaults = if one_shot {
            RetryPolicy::one_shot()
        } else {
            RetryPolicy::default()
        };
        RetryPolicy {
            initial_delay: defaults.initial_delay.min(self.max_backoff),
            max_delay: self.max_backoff,
            max_failures: self.max_failures.unwrap_or(defaults.max_failures).max(1),
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

/// On the first SIGINT or SIGTERM, asks `stop` to stop (the side finishes its batch and
/// reports); a second one exits at once.
fn stop_on_signals(runtime: &tokio::runtime::Runtime, stop: StopHandle, side: &'static str) {
    runtime.spawn(async move {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            signals += 1;
            if signals > 1 {
                eprintln!("strata: replicate {side}: stopped without finishing the batch");
                std::process::exit(130);
            }
            eprintln!("strata: replicate {side}: stopping after the batch in flight");
            stop.stop();
        }
    });
}

/// Prints `summary`; exits with [`EXIT_DEAD_LETTERS`] when `dead_lettered`. Everything that
/// holds the store must be dropped before (the exit skips destructors).
fn finish(summary: serde_json::Value, dead_lettered: bool) -> CliResult {
    println!("{summary}");
    if dead_lettered {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(EXIT_DEAD_LETTERS);
    }
    Ok(())
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
            let summary = {
                let store = open_existing(db)?;
                let mut config =
                    PublisherConfig::new(nats.server, nats.stream, nats.subject_prefix);
                if let Some(name) = name {
                    config.checkpoint_name = name;
                }
                config.max_in_flight = max_in_flight;
                config.duplicate_window = duplicate_window;
                config.connect_timeout = nats.connect_timeout;
                let publisher = Publisher::new(store, config).map_err(error)?;
                let until = if once {
                    PublishUntil::CaughtUp
                } else {
                    PublishUntil::Forever
                };
                let runtime = runtime()?;
                stop_on_signals(&runtime, publisher.stop_handle().clone(), "push");
                let report = runtime
                    .block_on(run_with_retry_or_stop(
                        &retry.policy(once),
                        publisher.progress(),
                        publisher.stop_handle(),
                        report_failure("push"),
                        || publisher.run(until),
                    ))
                    .map_err(error)?;
                serde_json::json!({
                    "published": report.published,
                    "duplicates": report.duplicates,
                    "dead_lettered": report.dead_lettered,
                    "dead_letters": report.dead_letters,
                    "checkpoint": report.checkpoint,
                    "stopped": publisher.stop_handle().is_stopped(),
                })
            };
            let rejected = summary["dead_lettered"].as_u64() > Some(0);
            finish(summary, rejected)
        }
        ReplicateCommand::Pull {
            nats,
            durable,
            prefix,
            batch,
            ack_wait,
            idle_exit,
            create_stream,
            retry,
        } => {
            let summary = {
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
                config.create_stream = create_stream;
                config.connect_timeout = nats.connect_timeout;
                let ingester = Ingester::new(store, config).map_err(error)?;
                let until = idle_exit.map_or(IngestUntil::Forever, IngestUntil::Idle);
                let runtime = runtime()?;
                stop_on_signals(&runtime, ingester.stop_handle().clone(), "pull");
                let report = runtime
                    .block_on(run_with_retry_or_stop(
                        &retry.policy(idle_exit.is_some()),
                        ingester.progress(),
                        ingester.stop_handle(),
                        report_failure("pull"),
                        || ingester.run(until),
                    ))
                    .map_err(error)?;
                serde_json::json!({
                    "appended": report.appended,
                    "already_stored": report.already_stored,
                    "deferred": report.deferred,
                    "rejected": report.rejected,
                    "dead_letters": report.dead_letters,
                    "stopped": ingester.stop_handle().is_stopped(),
                })
            };
            let rejected = summary["rejected"].as_u64() > Some(0);
            finish(summary, rejected)
        }
        ReplicateCommand::Status {
            server,
            stream,
            name,
            durable,
            connect_timeout,
        } => {
            let store = open_existing(db)?;
            let name = name.unwrap_or_else(|| format!("nats:{stream}"));
            let mut out = serde_json::json!({});
            match status::find_source_lag(&store, &name).map_err(error)? {
                Some(source) => {
                    out["source"] = serde_json::json!({
                        "checkpoint_name": name,
                        "last_position": source.last_position,
                        "checkpoint": source.checkpoint,
                        "lag": source.lag(),
                        "dead_letters": source.dead_letters,
                    })
                }
                // Without a push checkpoint only the pull side (--durable) can be shown.
                None if durable.is_none() => {
                    return Err(CliError::user(format!(
                        "{}; on a store that pulls, pass --durable to see the pull side",
                        status::no_checkpoint(&store, &name)
                    )))
                }
                None => {}
            }
            if let Some(durable) = durable {
                let target = status::target_state(&store, &durable).map_err(error)?;
                let lag = runtime()?
                    .block_on(status::consumer_lag(
                        &server,
                        &stream,
                        &durable,
                        connect_timeout,
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
                out["target"] = serde_json::json!({
                    "durable": durable,
                    "last_position": target.last_position,
                    "dead_letters": target.dead_letters,
                });
            }
            println!("{out}");
            Ok(())
        }
        ReplicateCommand::Metrics => {
            open_existing(db)?;
            print!("{}", status::metrics_text(db).map_err(error)?);
            Ok(())
        }
        ReplicateCommand::DeadLetters { side, name } => {
            open_existing(db)?;
            let side = side.map(|side| match side {
                SideArg::Push => Side::Push,
                SideArg::Pull => Side::Pull,
            });
            let letters = DeadLetters::open_read_only(db)
                .and_then(|table| table.list(side, name.as_deref()))
                .map_err(|e| CliError::Internal(format!("dead letters: {e}")))?;
            for letter in letters {
                println!(
                    "{}",
                    serde_json::json!({
                        "side": letter.side.as_str(),
                        "name": letter.name,
                        "id": letter.id,
                        "source_position": letter.source_position,
                        "stream_id": letter.stream_id,
                        "event_id": letter.event_id,
                        "reason": letter.reason,
                        "recorded_at": letter.recorded_at,
                    })
                );
            }
            Ok(())
        }
        ReplicateCommand::Retry {
            nats,
            name,
            durable,
            prefix,
        } => {
            let summary = {
                let store = open_existing(db)?;
                let report = match durable {
                    Some(durable) => {
                        let mut config = IngesterConfig::new(
                            nats.server,
                            nats.stream,
                            nats.subject_prefix,
                            durable,
                            prefix,
                        );
                        config.connect_timeout = nats.connect_timeout;
                        let ingester = Ingester::new(store, config).map_err(error)?;
                        runtime()?
                            .block_on(ingester.retry_dead_letters())
                            .map_err(error)?
                    }
                    None => {
                        let mut config =
                            PublisherConfig::new(nats.server, nats.stream, nats.subject_prefix);
                        if let Some(name) = name {
                            config.checkpoint_name = name;
                        }
                        config.connect_timeout = nats.connect_timeout;
                        let publisher = Publisher::new(store, config).map_err(error)?;
                        runtime()?
                            .block_on(publisher.retry_dead_letters())
                            .map_err(error)?
                    }
                };
                serde_json::json!({
                    "replicated": report.replicated,
                    "still_dead": report.still_dead,
                })
            };
            let still_dead = summary["still_dead"].as_u64() > Some(0);
            finish(summary, still_dead)
        }
    }
}
