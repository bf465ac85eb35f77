//! The commands that work on a store file: init, append, import, read, export, check, stats,
//! bucket.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use strata::maintenance::{MaintenanceError, RetentionAction};
use strata::{
    BucketWidth, Direction, Event, ExpectedVersion, Options, ReadError, Store, StreamAppend, Uuid,
};

use crate::error::{CliError, CliResult};
use crate::jsonl::{derived_id, EventLine};
use crate::term;

/// Longest line `import` accepts, in bytes, unless told otherwise.
pub const DEFAULT_MAX_LINE_BYTES: usize = 32 * 1024 * 1024;
/// Largest `--max-line-bytes`.
pub const MAX_LINE_BYTES_LIMIT: usize = 512 * 1024 * 1024;

/// Opens an existing store; a missing file is a user error (stores are created by `init`).
pub fn open_existing(db: &Path) -> CliResult<Store> {
    if !db.exists() {
        return Err(CliError::user(format!(
            "no store at {} (create one with `strata init --db {}`)",
            db.display(),
            db.display()
        )));
    }
    Ok(Store::open(db, Options::default())?)
}

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

/// `strata init`.
pub fn init(db: &Path, width: BucketWidth) -> CliResult {
    if db.exists() && std::fs::metadata(db).is_ok_and(|m| m.len() > 0) {
        return Err(CliError::user(format!("{} already exists", db.display())));
    }
    let store = Store::open(
        db,
        Options {
            bucket_width: Some(width),
            ..Options::default()
        },
    )?;
    println!(
        "created store {} (bucket width {})",
        db.display(),
        store.bucket_width()
    );
    Ok(())
}

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
pub fn append(
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
    event: strata::NewEvent,
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
        // Too long: skip the rest of it so that the error names the right line.
        return Ok(Some(false));
    }
    Ok(Some(true)) // last line without newline
}

/// `strata import`.
pub fn import(args: ImportArgs) -> CliResult {
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

    let mut ranks: HashMap<String, u64> = HashMap::new();
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
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = serde_json::from_slice::<EventLine>(&buf)
                .map_err(|e| e.to_string())
                .and_then(|line| {
                    let rank = ranks.get(&line.stream).copied().unwrap_or(0) + 1;
                    let event = line.to_new_event(|data, metadata| {
                        derived_id(&line.stream, rank, &line.event_type, data, metadata)
                    })?;
                    Ok((line.stream, rank, event))
                });
            match parsed {
                Ok((stream, rank, event)) => {
                    ranks.insert(stream.clone(), rank);
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

/// Which events `read` shows.
pub enum Selection {
    /// One stream, from a version.
    Stream {
        /// The stream.
        stream: String,
        /// Newest first.
        backwards: bool,
    },
    /// The whole log.
    All,
    /// Events of these types.
    Types(Vec<String>),
}

/// Output format of `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the format of export and import).
    Jsonl,
    /// A table.
    Table,
}

fn archived_hint(error: ReadError) -> CliError {
    match &error {
        ReadError::Archived { last_position, .. } | ReadError::Dropped { last_position, .. } => {
            CliError::user(format!(
                "{error} (read from position {} with --from to skip it)",
                last_position + 1
            ))
        }
        _ => error.into(),
    }
}

/// `strata read`.
pub fn read(
    db: &Path,
    selection: Selection,
    from: Option<u64>,
    limit: Option<u64>,
    format: Format,
) -> CliResult {
    let store = open_existing(db)?;
    read_from_store(&store, selection, from, limit, format)
}

fn read_from_store(
    store: &Store,
    selection: Selection,
    from: Option<u64>,
    limit: Option<u64>,
    format: Format,
) -> CliResult {
    let events: Box<dyn Iterator<Item = Result<Event, ReadError>>> = match selection {
        Selection::Stream { stream, backwards } => {
            let direction = if backwards {
                Direction::Backwards
            } else {
                Direction::Forwards
            };
            match from {
                None => Box::new(store.iter_stream(&stream, direction)),
                Some(version) => {
                    Box::new(StreamFrom::new(store.clone(), stream, version, direction))
                }
            }
        }
        Selection::All => Box::new(store.iter_all(from.unwrap_or(1))),
        Selection::Types(types) => {
            let names: Vec<&str> = types.iter().map(String::as_str).collect();
            let from = from.unwrap_or(1);
            Box::new(
                store
                    .iter_by_type(&names, i64::MIN..i64::MAX)
                    .filter(move |e| e.as_ref().map_or(true, |e| e.position >= from)),
            )
        }
    };
    let events =
        events.take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)));
    match format {
        Format::Jsonl => {
            let mut out = Out::new();
            for event in events {
                let event = event.map_err(archived_hint)?;
                if !out.line(&EventLine::from_event(&event).to_json())? {
                    break;
                }
            }
            out.finish()
        }
        Format::Table => {
            let mut table = term::table([
                "position",
                "stream",
                "version",
                "type",
                "recorded at",
                "data",
            ]);
            for event in events {
                let event = event.map_err(archived_hint)?;
                let line = EventLine::from_event(&event);
                let mut data = match (&line.data, &line.data_hex) {
                    (Some(value), _) => value.to_string(),
                    (None, Some(hex)) => format!("0x{hex}"),
                    (None, None) => String::new(),
                };
                if data.chars().count() > 80 {
                    data = data.chars().take(79).collect::<String>() + "…";
                }
                table.add_row(vec![
                    event.position.to_string(),
                    event.stream_id.to_string(),
                    event.version.to_string(),
                    event.event_type.to_string(),
                    term::time(event.recorded_at),
                    data,
                ]);
            }
            let mut out = Out::new();
            out.line(&table.to_string())?;
            out.finish()
        }
    }
}

/// A stream read from a given version, page by page.
struct StreamFrom {
    store: Store,
    stream: String,
    next: u64,
    direction: Direction,
    page: std::vec::IntoIter<Event>,
    done: bool,
}

impl StreamFrom {
    fn new(store: Store, stream: String, from: u64, direction: Direction) -> Self {
        StreamFrom {
            store,
            stream,
            next: from,
            direction,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl Iterator for StreamFrom {
    type Item = Result<Event, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(event) = self.page.next() {
            return Some(Ok(event));
        }
        if self.done || self.next == 0 {
            return None;
        }
        match self
            .store
            .read_stream(&self.stream, self.next, self.direction, 1_000)
        {
            Ok(page) if page.is_empty() => {
                self.done = true;
                None
            }
            Ok(page) => {
                let last = page.last().expect("not empty").version;
                self.next = match self.direction {
                    Direction::Forwards => last + 1,
                    Direction::Backwards => last - 1,
                };
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// `strata export`.
pub fn export(db: &Path, output: Option<&Path>, from: u64) -> CliResult {
    let store = open_existing(db)?;
    let total = store
        .last_position()?
        .saturating_sub(from.saturating_sub(1));
    let mut count = 0u64;
    match output {
        None => {
            let mut out = Out::new();
            for event in store.iter_all(from) {
                let event = event.map_err(archived_hint)?;
                if !out.line(&EventLine::from_event(&event).to_json())? {
                    break;
                }
            }
            out.finish()
        }
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| CliError::io(path, e))?;
            let mut writer = BufWriter::new(file);
            let bar = term::progress(total, "export");
            for event in store.iter_all(from) {
                let event = event.map_err(archived_hint)?;
                writeln!(writer, "{}", EventLine::from_event(&event).to_json())
                    .map_err(|e| CliError::io(path, e))?;
                count += 1;
                if count.is_multiple_of(1024) {
                    bar.set_position(count);
                }
            }
            writer
                .into_inner()
                .map_err(|e| CliError::io(path, e.into_error()))?
                .sync_all()
                .map_err(|e| CliError::io(path, e))?;
            bar.finish_and_clear();
            eprintln!("exported {count} events to {}", path.display());
            Ok(())
        }
    }
}

/// `strata check`: Ok when the store is sound, a user-visible failure otherwise.
pub fn check(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    let report = store.check()?;
    let mut out = Out::new();
    for problem in &report.problems {
        out.line(&problem.to_string())?;
    }
    if report.problem_count > report.problems.len() as u64 {
        out.line(&format!(
            "... and {} more",
            report.problem_count - report.problems.len() as u64
        ))?;
    }
    out.line(&format!(
        "checked {} buckets, {} streams, {} events (log ends at position {}): {}",
        report.buckets,
        report.streams,
        report.events_checked,
        report.last_position,
        if report.is_ok() {
            "ok".to_owned()
        } else {
            format!("{} problems", report.problem_count)
        }
    ))?;
    out.finish()?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(CliError::user(format!(
            "{} is damaged: {} problems found",
            db.display(),
            report.problem_count
        )))
    }
}

/// `strata stats`.
pub fn stats(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    let text = store.metrics_text()?;
    let mut out = Out::new();
    out.line(text.trim_end())?;
    out.finish()
}

fn maintenance(error: MaintenanceError) -> CliError {
    match error {
        MaintenanceError::Sqlite(_) => CliError::Internal(error.to_string()),
        MaintenanceError::Io { ref source, .. }
            if !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            CliError::Internal(error.to_string())
        }
        other => CliError::User(other.to_string()),
    }
}

fn space(store: &Store, vacuum: bool) -> CliResult {
    if vacuum {
        let report = store.reclaim_space().map_err(maintenance)?;
        println!(
            "store size {} -> {}",
            term::bytes(report.bytes_before),
            term::bytes(report.bytes_after)
        );
    } else {
        println!(
            "store size {} (space is reused by later appends; run without --no-vacuum to shrink the file)",
            term::bytes(store.size_bytes().map_err(maintenance)?)
        );
    }
    Ok(())
}

/// `strata bucket list`.
pub fn bucket_list(db: &Path) -> CliResult {
    let store = open_existing(db)?;
    println!("{}", crate::buckets::bucket_table(&store.buckets()?));
    Ok(())
}

/// `strata bucket seal`.
pub fn bucket_seal(db: &Path, id: i64) -> CliResult {
    let store = open_existing(db)?;
    let bucket = store.seal_bucket(id).map_err(maintenance)?;
    println!("bucket {} is {}", bucket.id, bucket.state.as_str());
    Ok(())
}

/// `strata bucket archive`.
pub fn bucket_archive(db: &Path, id: i64, to: &Path, vacuum: bool) -> CliResult {
    let store = open_existing(db)?;
    let report = store.archive_bucket(id, to).map_err(maintenance)?;
    println!(
        "archived bucket {} ({} events) to {} ({})",
        id,
        report.events,
        report.archive_path.display(),
        term::bytes(report.archive_bytes)
    );
    space(&store, vacuum)
}

/// `strata bucket drop`.
pub fn bucket_drop(db: &Path, id: i64, vacuum: bool) -> CliResult {
    let store = open_existing(db)?;
    let bucket = store.drop_bucket(id).map_err(maintenance)?;
    println!(
        "dropped bucket {} ({} events)",
        bucket.id, bucket.event_count
    );
    space(&store, vacuum)
}

/// `strata bucket retain`.
pub fn bucket_retain(
    db: &Path,
    older_than: Duration,
    action: RetentionAction,
    vacuum: bool,
) -> CliResult {
    let store = open_existing(db)?;
    let done = store.retain(older_than, &action).map_err(maintenance)?;
    if done.is_empty() {
        let age = if older_than.as_secs().is_multiple_of(86_400) && older_than.subsec_nanos() == 0 {
            format!("{} days", older_than.as_secs() / 86_400)
        } else {
            humantime::format_duration(older_than).to_string()
        };
        println!("no sealed bucket ended more than {age} ago");
        return Ok(());
    }
    for item in &done {
        match &item.archive {
            Some(report) => println!(
                "archived bucket {} ({} events) to {}",
                item.bucket.id,
                report.events,
                report.archive_path.display()
            ),
            None => println!(
                "dropped bucket {} ({} events)",
                item.bucket.id, item.bucket.event_count
            ),
        }
    }
    space(&store, vacuum)
}

/// `strata tail`: the last `count` events of the log, oldest first; with `follow`, then every
/// event committed later (by any process), through a store subscription, until stdout closes.
pub fn tail(db: &Path, count: u64, follow: bool, format: Format) -> CliResult {
    let store = open_existing(db)?;
    let last = store.last_position()?;
    let from = last.saturating_sub(count.saturating_sub(1)).max(1);
    if !follow {
        if count == 0 || last == 0 {
            return Ok(());
        }
        return read_from_store(&store, Selection::All, Some(from), Some(count), format);
    }
    // History and live events come from one subscription: no gap, no duplicate.
    let start = if count == 0 { last + 1 } else { from };
    let mut subscription = store.subscribe(start, strata::SubscriptionFilter::all())?;
    let mut out = Out::new();
    loop {
        // Wake up now and then to flush and to notice a closed stdout.
        match subscription.next_timeout(Duration::from_millis(500))? {
            Some(event) => {
                let line = match format {
                    Format::Jsonl => EventLine::from_event(&event).to_json(),
                    Format::Table => format!(
                        "{}\t{}\t{}\t{}\t{}",
                        event.position,
                        event.stream_id,
                        event.version,
                        event.event_type,
                        term::time(event.recorded_at)
                    ),
                };
                if !out.line(&line)? {
                    return Ok(());
                }
                if subscription.buffered() == 0 && !out.flush()? {
                    return Ok(());
                }
            }
            None => {
                if !out.flush()? {
                    return Ok(());
                }
            }
        }
    }
}
