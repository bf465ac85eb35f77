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
//! - [`dead_letter`] keeps, in the store file, the events one side could not replicate (too
//!   large for the server, a target stream id that cannot exist): recorded with their reason,
//!   then passed over, so one event never stalls a source; they can be listed and retried.
//!
//! Every NATS operation is bounded in time: connecting and the server's greeting by the
//! connect timeout, JetStream requests by the request (ack) timeout. Errors that a retry would
//! only repeat (a bad URL, refused credentials, a listener that does not greet in NATS, a
//! missing stream or durable, a changed consumer setting that cannot be applied) are not
//! retryable ([`ReplicationError::is_retryable`]).
//!
//! Delivery is at least once; storage is exactly once by event id; order is kept per stream.
//! [`retry::run_with_retry`] restarts either side after a failure with bounded backoff.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod dead_letter;
mod greeting;
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
pub use retry::{run_with_retry, run_with_retry_or_stop, Progress, RetryPolicy, StopHandle};

/// Why replication stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The NATS server could not be reached, or did not finish the client's handshake within
    /// the connect timeout after greeting as a NATS server (retryable: it may be starting).
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Connect {
        /// The server URL given.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The NATS server refused us for good (credentials, authorization, TLS set-up).
    #[error("the NATS server at {url} refused the connection: {reason}")]
    Refused {
        /// The server URL given.
        url: String,
        /// What the server or client said.
        reason: String,
    },
    /// Something accepted connections at the server's address, but did not greet in the NATS
    /// protocol within the connect timeout (silent, or another protocol).
    #[error("the server at {url} does not speak NATS (is it the client port, not an HTTP or monitoring port?): {reason}")]
    NotNats {
        /// The server URL given.
        url: String,
        /// What the client read.
        reason: String,
    },
    /// A JetStream stream or durable consumer that must exist does not.
    #[error("{0}")]
    NotFound(String),
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
            ReplicationError::Config(_)
            | ReplicationError::Refused { .. }
            | ReplicationError::NotNats { .. }
            | ReplicationError::NotFound(_)
            | ReplicationError::Diverged { .. } => false,
        }
    }
}

/// Default bound on connecting to the server and receiving its greeting (`INFO`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to `url` (a `nats://host:port` URL or `host:port`). The server's greeting is read
/// first on a plain TCP connection, within `timeout`: an address that refuses or does not
/// answer is a [`ReplicationError::Connect`] naming the URL (retryable: the server may be
/// starting); a listener that accepts the connection but sends no NATS `INFO` within `timeout`
/// (nats-server's HTTP monitoring port, any HTTP server, a stuck process), or answers in
/// another protocol, a [`ReplicationError::NotNats`]. Then the client's own handshake (TCP,
/// `INFO`, our `CONNECT`) must finish within `timeout` again. An unparsable URL is a
/// [`ReplicationError::Config`], refused credentials a [`ReplicationError::Refused`]. Those
/// last three are not retried. User credentials (`nats://user:password@host:port`) or a token
/// (`nats://token@host:port`) in the URL are used, and never shown in messages. Once
/// connected, the client reconnects by itself.
pub async fn connect(url: &str, timeout: Duration) -> Result<async_nats::Client, ReplicationError> {
    let address = match url.parse::<async_nats::ServerAddr>() {
        Ok(address) => address,
        Err(error) => {
            return Err(ReplicationError::Config(format!(
                "invalid NATS server URL {:?}: {error} (expected nats://host:port or host:port)",
                redact(url)
            )))
        }
    };
    // The client does not read credentials from the URL by itself.
    let mut options = async_nats::ConnectOptions::new();
    match (address.username(), address.password()) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.to_owned(), password.to_owned())
        }
        (Some(token), None) => options = options.token(token.to_owned()),
        _ => {}
    }
    let shown = redact(url);
    let url = shown.as_str();
    let options = options
        .connection_timeout(timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            // No wait before the first attempt; then 100 ms doubling up to 2 s.
            if attempts <= 1 {
                Duration::ZERO
            } else {
                Duration::from_millis((50u64 << attempts.min(6)).min(2_000))
            }
        });
    greeting::check(&address, url, timeout).await?;
    let connecting = options.connect(address);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => {
            use async_nats::ConnectErrorKind as Kind;
            let reason = error.to_string();
            let url = url.to_owned();
            Err(match error.kind() {
                Kind::ServerParse => {
                    ReplicationError::Config(format!("invalid NATS server URL {url:?}: {reason}"))
                }
                Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls => {
                    ReplicationError::Refused { url, reason }
                }
                // Something answered, but not in NATS (an HTTP server, say).
                Kind::Io if reason.contains("invalid server operation") => {
                    ReplicationError::NotNats { url, reason }
                }
                _ => ReplicationError::Connect { url, reason },
            })
        }
        Err(_) => Err(ReplicationError::Connect {
            url: url.to_owned(),
            reason: format!(
                "it greeted as a NATS server but the handshake did not finish within {}",
                humanize(timeout)
            ),
        }),
    }
}

/// `url` with its password (or token) replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme_and_credentials, rest)) = url.rsplit_once('@') else {
        return url.to_owned();
    };
    let (scheme, credentials) = match scheme_and_credentials.split_once("://") {
        Some((scheme, credentials)) => (format!("{scheme}://"), credentials),
        None => (String::new(), scheme_and_credentials),
    };
    let shown = match credentials.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}{shown}@{rest}")
}

/// `1.5s`, `300ms`: for messages.
pub(crate) fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
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

/// Gets the JetStream stream `name`, creating it with [`stream_config`] if missing and
/// `create` is set; a missing stream is otherwise [`ReplicationError::NotFound`]. An existing
/// stream must capture `<prefix>.>`.
pub async fn ensure_stream(
    jetstream: &async_nats::jetstream::Context,
    name: &str,
    subject_prefix: &str,
    duplicate_window: Duration,
    create: bool,
) -> Result<async_nats::jetstream::stream::Stream, ReplicationError> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    subject::validate_prefix(subject_prefix)?;
    let wanted = subject::wildcard(subject_prefix);
    let mut stream = match jetstream.get_stream(name).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(error.kind(), GetStreamErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            if !create {
                let hint = match jetstream.stream_by_subject(wanted.clone()).await {
                    Ok(other) => format!("; stream {other} captures {wanted}: did you mean it?"),
                    Err(_) => String::new(),
                };
                return Err(ReplicationError::NotFound(format!(
                    "JetStream stream {name} does not exist{hint} (pass --create-stream to \
                     create it)"
                )));
            }
            jetstream
                .create_stream(stream_config(name, subject_prefix, duplicate_window))
                .await
                .map_err(|e| match e.kind() {
                    async_nats::jetstream::context::CreateStreamErrorKind::JetStream(js)
                        if js.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP =>
                    {
                        ReplicationError::Config(format!(
                            "cannot create JetStream stream {name}: its subjects {wanted} are \
                             already captured by another stream; use that stream's name, or \
                             another subject prefix"
                        ))
                    }
                    _ => ReplicationError::JetStream(format!("create stream {name}: {e}")),
                })?
        }
        Err(error) => {
            return Err(match error.kind() {
                GetStreamErrorKind::InvalidStreamName | GetStreamErrorKind::EmptyName => {
                    ReplicationError::Config(format!("invalid JetStream stream name {name:?}"))
                }
                _ => ReplicationError::JetStream(format!("stream {name}: {error}")),
            })
        }
    };
    let info = stream
        .info()
        .await
        .map_err(|e| ReplicationError::JetStream(format!("stream {name} info: {e}")))?;
    if !info.config.subjects.contains(&wanted) {
        return Err(ReplicationError::Config(format!(
            "JetStream stream {name} exists but captures {:?}, not {wanted:?}: use another \
             stream name, or the subject prefix it was created with",
            info.config.subjects
        )));
    }
    Ok(stream)
}
