//! Dynamic Consistency Boundaries on [`Store`]: reading by [`Query`] and appending with an
//! [`AppendCondition`].
//!
//! Streams stay: every event still belongs to one stream. Appends that name none
//! ([`Store::append_with`]) go to one default stream, [`DEFAULT_STREAM`]; ARCHITECTURE.md says
//! why. Appends that name streams ([`Store::append_multi_with`], [`Store::append_to_with`])
//! combine the condition with per-stream expected versions, all checked in one savepoint.

use rusqlite::Connection;

use crate::error::{AppendError, ReadError};
use crate::event::{AppendResult, Event, ExpectedVersion, NewEvent, Position, StreamAppend};
use crate::query::{AppendCondition, Query};
use crate::reader::{self, ReadPool};
use crate::store::Store;
use crate::tags::{self, Resolved, ScanError};

/// The stream of appends that name none ([`Store::append_with`]).
pub const DEFAULT_STREAM: &str = "$dcb";

/// Events per page fetched by [`QueryIter`].
const QUERY_PAGE_SIZE: usize = 1_000;

impl Store {
    /// Appends `events` to the default stream ([`DEFAULT_STREAM`], no version check) unless
    /// an event matching `condition.fail_if_events_match` was appended after
    /// `condition.after`: then nothing is written and the error is
    /// [`AppendError::ConditionFailed`], naming the first such position. The condition is
    /// checked by the writer inside the write transaction, so two appends whose conditions
    /// overlap never both succeed, in this process or another. A retry of an append already
    /// stored (same event ids) succeeds with the original positions.
    pub fn append_with(
        &self,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        self.append_to_with(DEFAULT_STREAM, ExpectedVersion::Any, events, condition)
    }

    /// [`Store::append_with`] to a stream the caller names, with its expected version too.
    pub fn append_to_with(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        condition: AppendCondition,
    ) -> Result<AppendResult, AppendError> {
        let mut results = self.send_append(
            vec![StreamAppend::new(stream_id, expected, events)],
            Some(condition),
        )?;
        Ok(results.remove(0))
    }

    /// [`Store::append_multi`] with a condition: every part's expected version and the
    /// condition must hold, or nothing is written.
    pub fn append_multi_with(
        &self,
        parts: Vec<StreamAppend>,
        condition: AppendCondition,
    ) -> Result<Vec<AppendResult>, AppendError> {
        self.send_append(parts, Some(condition))
    }

    /// Up to `limit` events after position `after` that match `query`, in position order,
    /// across buckets. Found through the tag index (and the type index for items of types
    /// only): events that match no item are not read.
    pub fn read_query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<Vec<Event>, ReadError> {
        reader::check_page_size(limit)?;
        query.validate()?;
        self.readers()
            .with_snapshot(|conn, pool| read_query_in(conn, pool, query, after, limit))
    }

    /// The events matching `query` after `after` as of one snapshot, and the last position of
    /// the log in that snapshot: the `after` of a condition that protects a decision made on
    /// these events. At most `limits::MAX_PAGE_SIZE` events; more is an error (decide on a
    /// smaller query).
    pub fn read_query_with_head(
        &self,
        query: &Query,
        after: Position,
    ) -> Result<(Vec<Event>, Position), ReadError> {
        query.validate()?;
        let limit = crate::options::limits::MAX_PAGE_SIZE;
        self.readers().with_snapshot(|conn, pool| {
            let head: i64 = conn
                .prepare_cached("SELECT last_position FROM head WHERE id = 1")?
                .query_row([], |r| r.get(0))?;
            let events = read_query_in(conn, pool, query, after, limit)?;
            if events.len() == limit {
                return Err(crate::error::InvalidInput::Other(format!(
                    "more than {limit} events match the query: too many to decide on in one read"
                ))
                .into());
            }
            Ok((events, head as Position))
        })
    }

    /// Every event after `after` that matches `query`, fetched page by page.
    pub fn iter_query(&self, query: &Query, after: Position) -> QueryIter {
        QueryIter {
            store: self.clone(),
            query: query.clone(),
            after,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// Reads a page of `query` on the caller's snapshot.
pub(crate) fn read_query_in(
    conn: &Connection,
    pool: &ReadPool,
    query: &Query,
    after: Position,
    limit: usize,
) -> Result<Vec<Event>, ReadError> {
    let items = match tags::resolve(conn, query)? {
        Resolved::All => return reader::read_all(conn, pool, after.saturating_add(1), limit),
        Resolved::Items(items) => items,
    };
    let positions =
        tags::matching_positions(conn, &items, after, limit).map_err(|error| match error {
            ScanError::Sqlite(error) => ReadError::Sqlite(error),
            ScanError::Unavailable(bucket) => match reader::check_live(&bucket) {
                Err(error) => error,
                Ok(()) => unreachable!("only buckets outside the live store are unavailable"),
            },
        })?;
    let events = events_at_positions(conn, pool, &positions)?;
    for event in &events {
        if !query.matches(event) {
            return Err(ReadError::Corrupt {
                position: event.position,
                reason: format!(
                    "the tag or type index lists position {} for the query, but its event (type {:?}, tags {:?}) does not match",
                    event.position, event.event_type, event.tags
                ),
            });
        }
    }
    Ok(events)
}

/// The events at `positions` (ascending), each fetched by primary key from its bucket.
fn events_at_positions(
    conn: &Connection,
    pool: &ReadPool,
    positions: &[Position],
) -> Result<Vec<Event>, ReadError> {
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let buckets = crate::catalog::list_buckets(conn)?;
    let mut events = Vec::with_capacity(positions.len());
    for &position in positions {
        let bucket =
            reader::bucket_holding(&buckets, position).ok_or_else(|| ReadError::Corrupt {
                position,
                reason: format!(
                    "the tag index points at position {position}, which no bucket holds"
                ),
            })?;
        reader::check_live(bucket)?;
        let mut statement = conn.prepare_cached(&format!(
            "SELECT s.stream_id, {} FROM {} e JOIN streams s ON s.stream_key = e.stream_key WHERE e.position = ?1",
            reader::EVENT_COLUMNS,
            bucket.table_name
        ))?;
        let mut rows = statement.query([position as i64])?;
        let row = rows.next()?.ok_or_else(|| ReadError::Corrupt {
            position,
            reason: format!("the tag index points at position {position}, which is not stored"),
        })?;
        events.push(reader::event_from_row(row, pool, conn, None)?);
    }
    Ok(events)
}

/// Every event matching a query after a position, read a page at a time
/// ([`Store::iter_query`]). An error is returned once and ends the iteration.
pub struct QueryIter {
    store: Store,
    query: Query,
    after: Position,
    page: std::vec::IntoIter<Event>,
    done: bool,
}

impl Iterator for QueryIter {
    type Item = Result<Event, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(event) = self.page.next() {
            return Some(Ok(event));
        }
        if self.done {
            return None;
        }
        match self
            .store
            .read_query(&self.query, self.after, QUERY_PAGE_SIZE)
        {
            Ok(page) => {
                self.done = page.len() < QUERY_PAGE_SIZE;
                if let Some(last) = page.last() {
                    self.after = last.position;
                }
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
