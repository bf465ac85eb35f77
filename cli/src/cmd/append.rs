//! `strata append`: one event, its data given as JSON; optionally with tags and a DCB
//! condition (`--fail-if-match QUERY --after P`).

use std::path::Path;

use serde_json::json;
use strata::{AppendCondition, AppendError, ExpectedVersion, Query, Uuid};

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

/// What `strata append` was asked to do.
pub struct AppendArgs<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// The data, as JSON text.
    pub data: &'a str,
    /// The metadata, as JSON text.
    pub metadata: Option<&'a str>,
    /// The stream's expected version.
    pub expected: ExpectedVersion,
    /// The event id, if given.
    pub event_id: Option<Uuid>,
    /// The event's tags.
    pub tags: Vec<String>,
    /// `--fail-if-match` and `--after`: the append's condition.
    pub condition: Option<(Query, u64)>,
}

/// `strata append`.
pub fn run(db: &Path, args: AppendArgs<'_>) -> CliResult {
    let AppendArgs {
        stream,
        event_type,
        data,
        metadata,
        expected,
        event_id,
        tags,
        condition,
    } = args;
    let parse = |what: &str, text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| CliError::user(format!("{what} is not valid JSON: {e}")))
    };
    let line = EventLine {
        position: None,
        stream: stream.to_owned(),
        version: None,
        event_type: event_type.to_owned(),
        tags,
        event_id,
        recorded_at: None,
        data: Some(parse("data", data)?),
        data_hex: None,
        metadata: metadata.map(|m| parse("--metadata", m)).transpose()?,
        metadata_hex: None,
    };
    let event = line
        .to_new_event(|_, _, _| Uuid::now_v7())
        .map_err(CliError::User)?;
    let store = open_existing(db)?;
    let result = match condition {
        None => store.append(stream, expected, vec![event])?,
        Some((query, after)) => store
            .append_to_with(
                stream,
                expected,
                vec![event],
                AppendCondition::new(query, after),
            )
            .map_err(|error| match error {
                AppendError::ConditionFailed { position, after } => CliError::user(format!(
                    "conflict: append condition failed: the event at position {position} matches \
                     --fail-if-match and comes after position {after} (--after); nothing was written"
                )),
                other => other.into(),
            })?,
    };
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
