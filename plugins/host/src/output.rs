//! A plugin's stdout and stderr: forwarded line by line to `tracing`, and the tail of stderr
//! kept so that a trap (a Rust panic prints its message there first) can say why.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line forwarded as one log record; longer lines are split.
const MAX_LINE: usize = 4096;
/// How much of the end of stderr is kept for error messages.
const TAIL: usize = 2048;

/// Which stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Stdout,
    Stderr,
}

/// One of a plugin's output streams. Clones share the buffer.
#[derive(Clone)]
pub(crate) struct PluginOutput {
    kind: Kind,
    name: Arc<OnceLock<String>>,
    inner: Arc<Mutex<Buffers>>,
}

#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    tail: VecDeque<u8>,
}

impl PluginOutput {
    pub(crate) fn new(kind: Kind, name: Arc<OnceLock<String>>) -> Self {
        PluginOutput {
            kind,
            name,
            inner: Arc::new(Mutex::new(Buffers::default())),
        }
    }

    /// The last bytes written (up to 2 KiB), lossily decoded; emptied by the call.
    pub(crate) fn take_tail(&self) -> String {
        let mut inner = self.inner.lock();
        let bytes: Vec<u8> = inner.tail.drain(..).collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    /// Forgets the kept tail (before a new call).
    pub(crate) fn clear_tail(&self) {
        self.inner.lock().tail.clear();
    }

    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock();
        if self.kind == Kind::Stderr {
            inner.tail.extend(bytes.iter().copied());
            let excess = inner.tail.len().saturating_sub(TAIL);
            inner.tail.drain(..excess);
        }
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut inner.line);
                self.emit(&line);
            } else {
                inner.line.push(byte);
                if inner.line.len() >= MAX_LINE {
                    let line = std::mem::take(&mut inner.line);
                    self.emit(&line);
                }
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let plugin = self.name.get().map(String::as_str).unwrap_or("<loading>");
        match self.kind {
            Kind::Stdout => {
                tracing::info!(target: "strata_wasm::plugin", plugin, stream = "stdout", "{line}")
            }
            Kind::Stderr => {
                tracing::warn!(target: "strata_wasm::plugin", plugin, stream = "stderr", "{line}")
            }
        }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
