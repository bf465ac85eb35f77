//! `strata append`: one event, its data given as JSON.

use std::path::Path;

use serde_json::json;
use strata::{ExpectedVersion, Uuid};

use crate::cmd::open_existing;
use crate::error::{CliError, CliResult};
use crate::jsonl::EventLine;

/// Parses `--expected-version`: any, no-stream, exists, or a number.
pub fn parse_expected(text: &str) -> Result<ExpectedVersion, String> {
    match text {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("{n:?} is not a version: use any, no-stream, exists or a number")),
    }
}

/// `strata append`.
pub fn run(
    db: &Path,
    stream: &str,
    event_type: &str,
    data: &str,
    metadata: Option<&str>,
    expected: ExpectedVersion,
    event_id: Option<Uuid>,
) -> CliResult {
    let parse = |what: &str, text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| CliError::user(format!("{what} is not valid JSON: {e}")))
    };
    let line = EventLine {
        position: None,
        stream: stream.to_owned(),
        version: None,
        event_type: event_type.to_owned(),
        event_id,
        recorded_at: None,
        data: Some(parse("data", data)?),
        data_hex: None,
        metadata: metadata.map(|m| parse("--metadata", m)).transpose()?,
        metadata_hex: None,
    };
    let event = line
        .to_new_event(|_, _| Uuid::now_v7())
        .map_err(CliError::User)?;
    let store = open_existing(db)?;
    let result = store.append(stream, expected, vec![event])?;
    println!(
        "{}",
        json!({
            "stream": result.stream_id,
            "position": result.last_position,
            "version": result.last_version,
            "event_id": result.event_ids[0],
            "already_stored": result.already_stored,
        })
    );
    Ok(())
}
