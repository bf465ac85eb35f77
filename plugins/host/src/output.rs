//! A plugin's stdout and stderr: forwarded line by line to `tracing`, and the tail of stderr
//! kept so that a trap (a Rust panic prints its message there first) can say why.
//!
//! Everything a plugin writes in one call (stdout, stderr and the `log` import together) is
//! capped by an [`OutputBudget`]; past it, output is dropped and one notice says so.

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

/// The bytes of output one call may still write, shared by a plugin's stdout, stderr and `log`
/// import. Reset at the start of each call.
#[derive(Clone, Debug)]
pub(crate) struct OutputBudget {
    inner: Arc<Mutex<BudgetState>>,
}

#[derive(Debug)]
struct BudgetState {
    per_call: usize,
    remaining: usize,
    dropped: bool,
}

impl OutputBudget {
    pub(crate) fn new(per_call: usize) -> Self {
        OutputBudget {
            inner: Arc::new(Mutex::new(BudgetState {
                per_call,
                remaining: per_call,
                dropped: false,
            })),
        }
    }

    /// A new call: the full budget again.
    pub(crate) fn reset(&self) {
        let mut state = self.inner.lock();
        state.remaining = state.per_call;
        state.dropped = false;
    }

    /// How many of `len` bytes may be written, and, at the first refusal of a call, the budget
    /// (so that the caller says once that output is being dropped).
    pub(crate) fn take(&self, len: usize) -> (usize, Option<usize>) {
        let mut state = self.inner.lock();
        let granted = len.min(state.remaining);
        state.remaining -= granted;
        let first_refusal = if granted < len && !state.dropped {
            state.dropped = true;
            Some(state.per_call)
        } else {
            None
        };
        (granted, first_refusal)
    }
}

/// Says, once per call, that a plugin's output went over its budget.
pub(crate) fn warn_dropped(plugin: &str, per_call: usize) {
    tracing::warn!(
        target: "strata_wasm::plugin",
        plugin,
        "plugin output over {per_call} bytes in one call; the rest of this call's output is dropped"
    );
}

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
    budget: OutputBudget,
}

#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    tail: VecDeque<u8>,
}

impl PluginOutput {
    pub(crate) fn new(kind: Kind, name: Arc<OnceLock<String>>, budget: OutputBudget) -> Self {
        PluginOutput {
            kind,
            name,
            inner: Arc::new(Mutex::new(Buffers::default())),
            budget,
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
            let recent = &bytes[bytes.len().saturating_sub(TAIL)..];
            inner.tail.extend(recent.iter().copied());
            let excess = inner.tail.len().saturating_sub(TAIL);
            inner.tail.drain(..excess);
        }
        let (granted, first_refusal) = self.budget.take(bytes.len());
        if let Some(per_call) = first_refusal {
            let plugin = self.name.get().map(String::as_str).unwrap_or("<loading>");
            warn_dropped(plugin, per_call);
        }
        for &byte in &bytes[..granted] {
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
