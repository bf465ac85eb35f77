//! `strata import`: events from a JSON Lines file, in batches, each batch all or nothing.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use strata::{ExpectedVersion, NewEvent, Options, Store, StreamAppend};

use crate::cmd::open_existing;
use crate::error::{CliError, CliResult};
use crate::jsonl::{derived_id, EventLine};
use crate::term;

/// Longest line `import` accepts, in bytes, unless told otherwise.
pub const DEFAULT_MAX_LINE_BYTES: usize = 32 * 1024 * 1024;
/// Largest `--max-line-bytes`.
pub const MAX_LINE_BYTES_LIMIT: usize = 512 * 1024 * 1024;

/// What `strata import` was asked to do.
pub struct ImportArgs {
    /// The store.
    pub db: PathBuf,
    /// The JSON Lines file (`-` for stdin).
    pub file: PathBuf,
    /// Lines per batch.
    pub batch: usize,
    /// Longest line accepted.
    pub max_line_bytes: usize,
}

/// One parsed line waiting in a batch.
struct Pending {
    line_number: u64,
    stream: String,
    event: NewEvent,
}

/// One event line of an import file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportLine {
    /// The stream it goes to.
    pub stream: String,
    /// The event, its id given by the line or derived from it.
    pub event: NewEvent,
}

/// The parsing half of `strata import`, without I/O: turns the lines of a file, in file order,
/// into events. It remembers how many lines of each stream it has parsed, because a line
/// without `"event_id"` gets an id derived from its stream, its rank among that stream's lines
/// (1 for the first), its type, data and metadata: the same file derives the same ids every
/// time, and two equal lines of one stream still get two ids.
#[derive(Debug, Default)]
pub struct LineParser {
    /// Lines parsed so far, per stream.
    ranks: HashMap<String, u64>,
}

impl LineParser {
    /// Parses one line (without its line break). `Ok(None)` for a blank line, which counts for
    /// nothing; `Err` says why the line is not an event (a bad line leaves no trace either).
    pub fn parse(&mut self, line: &[u8]) -> Result<Option<ImportLine>, String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let line: EventLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let rank = self.ranks.get(&line.stream).copied().unwrap_or(0) + 1;
        let event = line.to_new_event(|data, metadata, tags| {
            derived_id(&line.stream, rank, &line.event_type, data, metadata, tags)
        })?;
        self.ranks.insert(line.stream.clone(), rank);
        Ok(Some(ImportLine {
            stream: line.stream,
            event,
        }))
    }
}

/// Reads one line of at most `max` bytes (newline excluded). `Ok(None)` at the end.
fn read_line(
    reader: &mut impl BufRead,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let read = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(true));
    }
    if buf.len() > max {
        // Too long: the caller stops at this line and names it.
        return Ok(Some(false));
    }
    Ok(Some(true)) // last line without newline
}

/// `strata import`.
pub fn run(args: ImportArgs) -> CliResult {
    let max_batch = Options::default().max_events_per_append;
    if args.batch == 0 || args.batch > max_batch {
        return Err(CliError::user(format!("--batch must be 1..={max_batch}")));
    }
    if args.max_line_bytes == 0 || args.max_line_bytes > MAX_LINE_BYTES_LIMIT {
        return Err(CliError::user(format!(
            "--max-line-bytes must be 1..={MAX_LINE_BYTES_LIMIT}"
        )));
    }
    let name = args.file.display().to_string();
    let (reader, total_bytes): (Box<dyn Read>, u64) = if args.file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = File::open(&args.file).map_err(|e| CliError::io(&args.file, e))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let store = open_existing(&args.db)?;
    let bar = term::progress(total_bytes, "import");

    let mut lines = LineParser::default();
    let mut buf = Vec::new();
    let mut line_number = 0u64;
    let mut batch: Vec<Pending> = Vec::with_capacity(args.batch);
    let (mut stored, mut already) = (0u64, 0u64);
    let mut consumed = 0u64;
    loop {
        let line = read_line(&mut reader, args.max_line_bytes, &mut buf)
            .map_err(|e| CliError::io(&args.file, e))?;
        let done = line.is_none();
        if let Some(complete) = line {
            line_number += 1;
            consumed += buf.len() as u64 + 1;
            if !complete {
                bar.abandon();
                return Err(CliError::user(format!(
                    "{name}:{line_number}: line longer than {} bytes (see --max-line-bytes); nothing of its batch (from line {}) was imported",
                    args.max_line_bytes,
                    batch.first().map_or(line_number, |p| p.line_number)
                )));
            }
            match lines.parse(&buf) {
                Ok(None) => continue,
                Ok(Some(ImportLine { stream, event })) => {
                    batch.push(Pending {
                        line_number,
                        stream,
                        event,
                    });
                }
                Err(why) => {
                    bar.abandon();
                    return Err(CliError::user(format!(
                        "{name}:{line_number}: {why}; nothing of its batch (from line {}) was imported, {} events before it were",
                        batch.first().map_or(line_number, |p| p.line_number),
                        stored + already
                    )));
                }
            }
        }
        if batch.len() >= args.batch || (done && !batch.is_empty()) {
            let (new, old) = append_batch(&store, &name, std::mem::take(&mut batch))?;
            stored += new;
            already += old;
            bar.set_position(consumed.min(total_bytes));
        }
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    println!(
        "imported {} events from {name} ({} new, {} already stored)",
        stored + already,
        stored,
        already
    );
    Ok(())
}

/// Appends a parsed batch in file order. The batch is cut into chunks in which every stream
/// appears as one run of consecutive lines; each chunk is one atomic multi-stream append, so
/// positions follow the file's order. Returns (new events, events already stored).
fn append_batch(store: &Store, name: &str, batch: Vec<Pending>) -> CliResult<(u64, u64)> {
    let (mut new, mut old) = (0u64, 0u64);
    let mut chunk: Vec<StreamAppend> = Vec::new();
    let mut chunk_lines: (u64, u64) = (0, 0);
    let mut in_chunk: HashSet<String> = HashSet::new();
    let flush = |chunk: &mut Vec<StreamAppend>,
                 in_chunk: &mut HashSet<String>,
                 lines: (u64, u64),
                 new: &mut u64,
                 old: &mut u64|
     -> CliResult {
        if chunk.is_empty() {
            return Ok(());
        }
        in_chunk.clear();
        let results = store.append_multi(std::mem::take(chunk)).map_err(|e| {
            let error = CliError::from(e);
            let message = format!(
                "{name}:{}-{}: {}; nothing of these lines was imported",
                lines.0,
                lines.1,
                match &error {
                    CliError::User(m) | CliError::Internal(m) => m.clone(),
                }
            );
            match error {
                CliError::User(_) => CliError::User(message),
                CliError::Internal(_) => CliError::Internal(message),
            }
        })?;
        for result in results {
            let count = result.last_position - result.first_position + 1;
            if result.already_stored {
                *old += result.event_ids.len() as u64;
            } else {
                *new += count;
            }
        }
        Ok(())
    };
    for pending in batch {
        let continues_run = chunk
            .last()
            .is_some_and(|part| part.stream_id == pending.stream);
        if !continues_run && in_chunk.contains(&pending.stream) {
            flush(&mut chunk, &mut in_chunk, chunk_lines, &mut new, &mut old)?;
        }
        if chunk.is_empty() {
            chunk_lines.0 = pending.line_number;
        }
        chunk_lines.1 = pending.line_number;
        match chunk.last_mut() {
            Some(part) if part.stream_id == pending.stream => part.events.push(pending.event),
            _ => {
                in_chunk.insert(pending.stream.clone());
                chunk.push(StreamAppend::new(
                    pending.stream,
                    ExpectedVersion::Any,
                    vec![pending.event],
                ));
            }
        }
    }
    flush(&mut chunk, &mut in_chunk, chunk_lines, &mut new, &mut old)?;
    Ok((new, old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::Uuid;

    fn parse_all(lines: &[&str]) -> Vec<Result<Option<ImportLine>, String>> {
        let mut parser = LineParser::default();
        lines
            .iter()
            .map(|line| parser.parse(line.as_bytes()))
            .collect()
    }

    fn event(result: &Result<Option<ImportLine>, String>) -> &ImportLine {
        result.as_ref().unwrap().as_ref().unwrap()
    }

    #[test]
    fn a_line_is_an_event_of_its_stream_with_its_own_id_kept() {
        let id = "00000000-0000-4000-8000-000000000001";
        let parsed = parse_all(&[&format!(
            r#"{{"stream":"order-1","type":"order_created","event_id":"{id}","data":{{"n":1}}}}"#
        )]);
        let line = event(&parsed[0]);
        assert_eq!(line.stream, "order-1");
        assert_eq!(line.event.event_type, "order_created");
        assert_eq!(line.event.event_id, Some(id.parse().unwrap()));
        assert_eq!(
            rmp_serde::from_slice::<serde_json::Value>(&line.event.data).unwrap(),
            serde_json::json!({"n": 1})
        );
    }

    #[test]
    fn blank_lines_are_skipped_and_count_for_nothing() {
        let parsed = parse_all(&["", "   \t", r#"{"stream":"s","type":"t","data":1}"#]);
        assert_eq!(parsed[0], Ok(None));
        assert_eq!(parsed[1], Ok(None));
        let after_blanks = event(&parsed[2]).event.event_id;
        let alone = event(&parse_all(&[r#"{"stream":"s","type":"t","data":1}"#])[0])
            .event
            .event_id;
        assert_eq!(after_blanks, alone);
    }

    #[test]
    fn derived_ids_are_the_same_for_the_same_file_and_differ_for_equal_lines_of_a_stream() {
        let file = [
            r#"{"stream":"a","type":"t","data":1}"#,
            r#"{"stream":"b","type":"t","data":1}"#,
            r#"{"stream":"a","type":"t","data":1}"#,
        ];
        let ids = |parsed: Vec<Result<Option<ImportLine>, String>>| -> Vec<Uuid> {
            parsed
                .iter()
                .map(|p| event(p).event.event_id.unwrap())
                .collect()
        };
        let first = ids(parse_all(&file));
        assert_eq!(first, ids(parse_all(&file)));
        assert_ne!(
            first[0], first[2],
            "the second equal line of `a` has rank 2"
        );
        assert_ne!(first[0], first[1], "another stream, another id");
        assert_eq!(
            first[0],
            derived_id("a", 1, "t", &rmp_serde::to_vec(&1).unwrap(), b"", &[])
        );
    }

    #[test]
    fn a_bad_line_says_why_and_does_not_use_up_a_rank() {
        let parsed = parse_all(&[
            r#"{"stream":"a","type":"t","data":1"#,
            r#"{"stream":"a","type":"","data":1}"#,
            r#"{"stream":"a","type":"t","data":1,"colour":"red"}"#,
            r#"{"stream":"a","type":"t","data":1}"#,
        ]);
        assert!(
            parsed[0].as_ref().unwrap_err().contains("EOF"),
            "{parsed:?}"
        );
        assert_eq!(parsed[1].as_ref().unwrap_err(), "type is empty");
        assert!(
            parsed[2].as_ref().unwrap_err().contains("colour"),
            "{parsed:?}"
        );
        let first_good = event(&parsed[3]).event.event_id.unwrap();
        assert_eq!(
            first_good,
            derived_id("a", 1, "t", &rmp_serde::to_vec(&1).unwrap(), b"", &[])
        );
    }

    #[test]
    fn lines_are_read_up_to_their_limit_without_the_line_break() {
        let mut input = std::io::Cursor::new(b"ab\r\ncdef\nxyz".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, 3, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"ab");
        // A line longer than the limit is reported as incomplete (import stops there).
        assert_eq!(read_line(&mut input, 3, &mut buf).unwrap(), Some(false));
        let mut rest = Vec::new();
        while let Some(complete) = read_line(&mut input, 3, &mut buf).unwrap() {
            rest.push((complete, buf.clone()));
        }
        // What follows is read on; a last line without a line break is complete.
        assert_eq!(rest, [(true, b"".to_vec()), (true, b"xyz".to_vec())]);
    }
}
