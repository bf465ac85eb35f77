//! `strata read`: one stream, the whole log, some event types, or the events matching a DCB
//! query (`--query`, or `--type`/`--tag` as a one-item query), as JSON Lines or a table.

use std::path::Path;

use strata::{Direction, Event, Query, ReadError, Store};

use crate::cmd::{archived_hint, open_existing};
use crate::error::CliResult;
use crate::jsonl::EventLine;
use crate::out::Out;
use crate::term;

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
    /// Events matching a query, in position order.
    Query(Query),
}

/// Output format of `read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the format of export and import).
    Jsonl,
    /// A table.
    Table,
}

/// `strata read`.
pub fn run(
    db: &Path,
    selection: Selection,
    from: Option<u64>,
    limit: Option<u64>,
    format: Format,
) -> CliResult {
    let store = open_existing(db)?;
    read_from_store(&store, selection, from, limit, format)
}

pub fn read_from_store(
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
        // `--from` is the first position: the query reads after the one before it.
        Selection::Query(query) => {
            Box::new(store.iter_query(&query, from.unwrap_or(1).saturating_sub(1)))
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
                "tags",
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
                    tags_cell(&event),
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

/// An event's tags for the table formats: a JSON array (unambiguous whatever the tags hold),
/// empty when there are none.
pub fn tags_cell(event: &Event) -> String {
    if event.tags.is_empty() {
        return String::new();
    }
    serde_json::to_string(&event.tags[..]).expect("strings always serialise")
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
