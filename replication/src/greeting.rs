//! Finding out whether the server at an address speaks NATS, before the NATS client tries.
//!
//! A NATS server sends its `INFO` line as soon as it accepts a connection. Something that
//! accepts the connection and then stays silent (nats-server's HTTP monitoring port, any HTTP
//! server waiting for a request, a stuck process) or sends anything else is not a NATS server:
//! retrying would only wait the same way again. The client itself cannot tell these cases apart
//! from a server that is down (it only reports a timeout), so one plain TCP connection reads the
//! greeting first.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::{humanize, ReplicationError};

/// Bytes of a foreign greeting shown in the error.
const SHOWN_GREETING: usize = 60;

/// Connects to `address` over TCP and reads the server's first bytes, all within `timeout`.
/// `Ok` when they start with `INFO` (or `-ERR`, a NATS server refusing in NATS); a connection
/// that cannot be made is [`ReplicationError::Connect`] (retryable: the server may be starting);
/// one accepted but silent until `timeout`, or answering in another protocol, is
/// [`ReplicationError::NotNats`]. `url` is the address as shown in messages. WebSocket
/// addresses are not checked (their server speaks HTTP first).
pub(crate) async fn check(
    address: &async_nats::ServerAddr,
    url: &str,
    timeout: Duration,
) -> Result<(), ReplicationError> {
    if address.is_websocket() {
        return Ok(());
    }
    let connect_error = |reason: String| ReplicationError::Connect {
        url: url.to_owned(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let connecting = TcpStream::connect((address.host(), address.port()));
    let mut tcp = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Err(connect_error(error.to_string())),
        Err(_) => {
            return Err(connect_error(format!(
                "no TCP connection within {}",
                humanize(timeout)
            )))
        }
    };
    let mut greeting = Vec::new();
    let reading = async {
        let mut buffer = [0u8; 256];
        while greeting.len() < "INFO".len() && !greeting.contains(&b'\n') {
            match tcp.read(&mut buffer).await? {
                0 => break,
                read => greeting.extend_from_slice(&buffer[..read]),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let read = tokio::time::timeout_at(deadline, reading).await;
    match read {
        Err(_) if greeting.is_empty() => Err(ReplicationError::NotNats {
            url: url.to_owned(),
            reason: format!(
                "it accepted the TCP connection but sent no NATS greeting (INFO) within {}",
                humanize(timeout)
            ),
        }),
        Ok(Err(error)) => Err(connect_error(format!("reading the greeting: {error}"))),
        Ok(Ok(())) if greeting.is_empty() => Err(connect_error(
            "the connection was closed before the server's greeting".into(),
        )),
        _ if greeting.starts_with(b"INFO") || greeting.starts_with(b"-ERR") => Ok(()),
        _ => Err(ReplicationError::NotNats {
            url: url.to_owned(),
            reason: format!(
                "it sent {:?} instead of a NATS greeting (INFO)",
                shown(&greeting)
            ),
        }),
    }
}

/// The first line of `greeting`, as text, at most [`SHOWN_GREETING`] bytes.
fn shown(greeting: &[u8]) -> String {
    let line = greeting.split(|&b| b == b'\r' || b == b'\n').next();
    let line = line.unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(SHOWN_GREETING)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A listener on 127.0.0.1 that answers its first connection by writing `chunks`, 50 ms
    /// apart, then closing; its address as a URL.
    async fn server(chunks: &'static [&'static [u8]]) -> async_nats::ServerAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            for chunk in chunks {
                tcp.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        format!("nats://127.0.0.1:{port}").parse().unwrap()
    }

    async fn checked(chunks: &'static [&'static [u8]]) -> Result<(), ReplicationError> {
        check(&server(chunks).await, "the url", Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn a_nats_greeting_passes_even_when_it_arrives_in_pieces() {
        checked(&[b"IN", b"FO {\"server_id\":\"x\"}\r\n"])
            .await
            .unwrap();
        checked(&[b"-ERR 'maximum connections exceeded'\r\n"])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn another_protocol_is_not_nats_and_shows_its_first_line() {
        let error = checked(&[b"SSH-2.0-OpenSSH_9.2\r\nmore"])
            .await
            .unwrap_err();
        assert!(
            matches!(error, ReplicationError::NotNats { .. }),
            "{error:?}"
        );
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .contains("it sent \"SSH-2.0-OpenSSH_9.2\" instead of a NATS greeting"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_before_any_greeting_is_retryable() {
        let error = checked(&[]).await.unwrap_err();
        assert!(
            matches!(error, ReplicationError::Connect { .. }),
            "{error:?}"
        );
        assert!(error.is_retryable());
        assert!(
            error
                .to_string()
                .contains("closed before the server's greeting"),
            "{error}"
        );
    }
}
