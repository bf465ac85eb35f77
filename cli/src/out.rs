//! Standard output for commands that print many lines.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{CliError, CliResult};

/// stdout, buffered; a closed pipe (`strata read | head`) ends the output quietly.
pub struct Out {
    writer: BufWriter<std::io::StdoutLock<'static>>,
    closed: bool,
}

impl Out {
    /// Buffered stdout.
    pub fn new() -> Self {
        Out {
            writer: BufWriter::new(std::io::stdout().lock()),
            closed: false,
        }
    }

    /// Writes one line. `Ok(false)` once the reader has gone away.
    pub fn line(&mut self, text: &str) -> CliResult<bool> {
        if self.closed {
            return Ok(false);
        }
        match writeln!(self.writer, "{text}") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(CliError::io(Path::new("<stdout>"), e)),
        }
    }

    /// Flushes what was written so far. `Ok(false)` once the reader has gone away.
    pub fn flush(&mut self) -> CliResult<bool> {
        if self.closed {
            return Ok(false);
        }
        match self.writer.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(CliError::io(Path::new("<stdout>"), e)),
        }
    }

    /// Flushes.
    pub fn finish(mut self) -> CliResult {
        match self.writer.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(CliError::io(Path::new("<stdout>"), e))
            }
            _ => Ok(()),
        }
    }
}
