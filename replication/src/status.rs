//! Replication lag on both sides.

use std::path::Path;
use std::time::Duration;

use crate::checkpoint::Checkpoints;
use crate::dead_letter::{DeadLetters, Side};
use crate::{connect, ReplicationError};

/// The source side: how far the publisher's checkpoint is behind the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLag {
    /// The store's last position.
    pub last_position: u64,
    /// The publisher's checkpoint.
    pub checkpoint: u64,
    /// Dead letters of this checkpoint name (events passed over).
    pub dead_letters: u64,
}

impl SourceLag {
    /// Events committed but not yet acknowledged by JetStream.
    pub fn lag(&self) -> u64 {
        self.last_position.saturating_sub(self.checkpoint)
    }
}

/// Lag of checkpoint `name` in the store `store` (open already: the last position counts
/// commits of every process). A store without that checkpoint is
/// [`ReplicationError::NotFound`] ([`no_checkpoint`]).
pub fn source_lag(store: &strata::Store, name: &str) -> Result<SourceLag, ReplicationError> {
    match find_source_lag(store, name)? {
        Some(lag) => Ok(lag),
        None => Err(no_checkpoint(store, name)),
    }
}

/// The error for a store without checkpoint `name`, naming the checkpoints it has (a typo in
/// a stream name shows).
pub fn no_checkpoint(store: &strata::Store, name: &str) -> ReplicationError {
    let known = store_path(store).and_then(|path| Ok(Checkpoints::open_read_only(&path)?.names()?));
    ReplicationError::NotFound(match known {
        Ok(known) if !known.is_empty() => {
            format!("no checkpoint {name:?} in this store; it has {known:?}")
        }
        _ => format!("no checkpoint {name:?} in this store: nothing was ever pushed from it"),
    })
}

/// [`source_lag`], or `None` when the store has no checkpoint `name` (nothing was pushed from
/// it under that name: a pull-side store, say).
pub fn find_source_lag(
    store: &strata::Store,
    name: &str,
) -> Result<Option<SourceLag>, ReplicationError> {
    let path = store_path(store)?;
    let Some(checkpoint) = Checkpoints::open_read_only(&path)?.find(name)? else {
        return Ok(None);
    };
    let dead_letters = DeadLetters::open_read_only(&path)?.count(Side::Push, name)?;
    Ok(Some(SourceLag {
        last_position: last_position(store)?,
        checkpoint,
        dead_letters,
    }))
}

/// The pull side of one durable consumer, as this (target) store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetState {
    /// The store's last position.
    pub last_position: u64,
    /// Dead letters of this durable (messages passed over).
    pub dead_letters: u64,
}

/// What the store `store` holds of the pull through durable `durable`.
pub fn target_state(store: &strata::Store, durable: &str) -> Result<TargetState, ReplicationError> {
    let path = store_path(store)?;
    Ok(TargetState {
        last_position: last_position(store)?,
        dead_letters: DeadLetters::open_read_only(&path)?.count(Side::Pull, durable)?,
    })
}

fn store_path(store: &strata::Store) -> Result<std::path::PathBuf, ReplicationError> {
    store
        .path()
        .ok_or_else(|| ReplicationError::Config("not a file store".into()))
}

fn last_position(store: &strata::Store) -> Result<u64, ReplicationError> {
    store
        .last_position()
        .map_err(|e| ReplicationError::Store(e.to_string()))
}

/// The JetStream side: what the durable consumer has not finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Messages in the stream not yet delivered to the consumer.
    pub pending: u64,
    /// Messages delivered but not acknowledged yet.
    pub ack_pending: u64,
    /// Messages in the JetStream stream.
    pub stream_messages: u64,
}

/// Lag of the durable consumer `durable` on the JetStream stream `stream`.
pub async fn consumer_lag(
    server: &str,
    stream: &str,
    durable: &str,
    timeout: Duration,
) -> Result<ConsumerLag, ReplicationError> {
    let client = connect(server, timeout).await?;
    let jetstream = async_nats::jetstream::new(client);
    let mut js_stream = jetstream.get_stream(stream).await.map_err(|e| {
        use async_nats::jetstream::context::GetStreamErrorKind;
        match e.kind() {
            GetStreamErrorKind::JetStream(js)
                if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                ReplicationError::NotFound(format!("JetStream stream {stream} does not exist"))
            }
            _ => ReplicationError::JetStream(format!("stream {stream}: {e}")),
        }
    })?;
    let stream_messages = js_stream
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {stream}: {e}")))?
        .state
        .messages;
    let info = js_stream.consumer_info(durable).await.map_err(|e| {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        match e.kind() {
            ConsumerInfoErrorKind::NotFound => ReplicationError::NotFound(format!(
                "durable consumer {durable} does not exist on JetStream stream {stream}"
            )),
            ConsumerInfoErrorKind::JetStream(js)
                if js.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
            {
                ReplicationError::NotFound(format!(
                    "durable consumer {durable} does not exist on JetStream stream {stream}"
                ))
            }
            _ => ReplicationError::JetStream(format!("consumer {durable}: {e}")),
        }
    })?;
    Ok(ConsumerLag {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending as u64,
        stream_messages,
    })
}

/// Replication gauges of the store file at `path`, as Prometheus text: every publisher
/// checkpoint (`strata_replication_checkpoint{name}`) and the dead letters per side and name
/// (`strata_replication_dead_letters{side,name}`), for scraping beside the store's own
/// metrics (`Store::metrics_text`), which know nothing of replication.
pub fn metrics_text(path: &Path) -> Result<String, ReplicationError> {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let checkpoints = Checkpoints::open_read_only(path)?;
    let mut out = String::new();
    let label = |text: &str| {
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    out.push_str("# TYPE strata_replication_checkpoint gauge\n");
    out.push_str(
        "# HELP strata_replication_checkpoint Last source position acknowledged by JetStream.\n",
    );
    for name in checkpoints.names()? {
        let position = checkpoints.get(&name)?;
        let _ = writeln!(
            out,
            "strata_replication_checkpoint{{name=\"{}\"}} {position}",
            label(&name)
        );
    }
    let mut counts: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
    for letter in DeadLetters::open_read_only(path)?.list(None, None)? {
        *counts
            .entry((letter.side.as_str(), letter.name))
            .or_default() += 1;
    }
    out.push_str("# TYPE strata_replication_dead_letters gauge\n");
    out.push_str(
        "# HELP strata_replication_dead_letters Events passed over and kept as dead letters.\n",
    );
    for ((side, name), count) in counts {
        let _ = writeln!(
            out,
            "strata_replication_dead_letters{{side=\"{side}\",name=\"{}\"}} {count}",
            label(&name)
        );
    }
    out.push_str("# EOF\n");
    Ok(out)
}
