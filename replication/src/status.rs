//! Replication lag on both sides.

use std::path::Path;
use std::time::Duration;

use crate::checkpoint::Checkpoints;
use crate::{connect, ReplicationError};

/// The source side: how far the publisher's checkpoint is behind the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLag {
    /// The store's last position.
    pub last_position: u64,
    /// The publisher's checkpoint.
    pub checkpoint: u64,
}

impl SourceLag {
    /// Events committed but not yet acknowledged by JetStream.
    pub fn lag(&self) -> u64 {
        self.last_position.saturating_sub(self.checkpoint)
    }
}

/// Lag of checkpoint `name` in the store `store` (open already: the last position counts
/// commits of every process).
pub fn source_lag(store: &strata::Store, name: &str) -> Result<SourceLag, ReplicationError> {
    let path = store
        .path()
        .ok_or_else(|| ReplicationError::Config("not a file store".into()))?;
    let checkpoint = Checkpoints::open_read_only(Path::new(&path))?.get(name)?;
    let last_position = store
        .last_position()
        .map_err(|e| ReplicationError::Store(e.to_string()))?;
    Ok(SourceLag {
        last_position,
        checkpoint,
    })
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
    let mut js_stream = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {stream}: {e}")))?;
    let stream_messages = js_stream
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {stream}: {e}")))?
        .state
        .messages;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js_stream
        .get_consumer(durable)
        .await
        .map_err(|e| ReplicationError::JetStream(format!("consumer {durable}: {e}")))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("consumer {durable}: {e}")))?;
    Ok(ConsumerLag {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending as u64,
        stream_messages,
    })
}
