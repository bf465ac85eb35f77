//! `strata stats`: the store's metrics as Prometheus text.

use std::path::Path;

use crate::cmd::open_existing;
use crate::error::CliResult;
use crate::out::Out;

/// `strata stats`.
pub fn run(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    let text = store.metrics_text()?;
    let mut out = Out::new();
    out.line(text.trim_end())?;
    out.finish()
}
