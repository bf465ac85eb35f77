//! The tag index: `(tag, position) -> type_key`, kept in three levels like the stream and id
//! indexes (see `index.rs` for why), and the scans that answer DCB queries and conditions.
//!
//! Each commit inserts one entry per tag of each event into level 0; the writer moves level 0
//! into level 1, and level 1 into the merged level, in key order, when it merges the other
//! indexes. An entry is in exactly one level; scans read all three and merge them. The type key
//! in each entry lets an item of types and tags be answered from the index alone; items of
//! types only are answered from the bucket tables' `(type_key, recorded_at)` index.
//!
//! Tags themselves are stored in the event row (column `tags`, covered by its checksum) as a
//! sequence of `length byte, UTF-8 bytes`, sorted, without repeats; NULL when an event has none.
//! The index is keyed by the tag's text rather than by an interned key: interning would insert
//! every new tag into a unique index on names, one random page per new tag per commit.

use std::sync::{Arc, LazyLock};

use rusqlite::{params, Connection, OptionalExtension};

use crate::catalog::{self, BucketInfo, BucketState};
use crate::event::Position;
use crate::query::Query;

/// The tag index's tables, newest level first.
pub(crate) const TAG_LEVELS: [&str; 3] = ["tag_index_l0", "tag_index_l1", "tag_index"];

/// Index entries read per step when a scan filters candidates (by type or further tags).
const SCAN_CHUNK: usize = 256;

static NO_TAGS: LazyLock<Arc<[String]>> = LazyLock::new(|| Arc::from(Vec::new()));

/// The tags of an untagged event: one shared empty list, no allocation per event.
pub(crate) fn no_tags() -> Arc<[String]> {
    NO_TAGS.clone()
}

/// Sorts and removes repeats, as the store keeps them.
pub(crate) fn normalize(tags: &mut Vec<String>) {
    tags.sort_unstable();
    tags.dedup();
}

/// The stored form of normalized `tags`: `None` when there are none.
pub(crate) fn encode(tags: &[String]) -> Option<Vec<u8>> {
    if tags.is_empty() {
        return None;
    }
    let mut blob = Vec::with_capacity(tags.iter().map(|t| t.len() + 1).sum());
    for tag in tags {
        let len = u8::try_from(tag.len()).expect("tags are validated to at most 255 bytes");
        blob.push(len);
        blob.extend_from_slice(tag.as_bytes());
    }
    Some(blob)
}

/// Reads the stored form back; an error describes what is malformed.
pub(crate) fn decode(blob: Option<&[u8]>) -> Result<Arc<[String]>, String> {
    let Some(mut rest) = blob else {
        return Ok(no_tags());
    };
    if rest.is_empty() {
        return Err("the tags column is an empty blob (untagged events store NULL)".into());
    }
    let mut tags: Vec<String> = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return Err(format!(
                "malformed tags: a tag of {len} bytes where {} remain",
                tail.len()
            ));
        }
        let tag = std::str::from_utf8(&tail[..len])
            .map_err(|_| "malformed tags: a tag is not UTF-8".to_string())?;
        if tags.last().is_some_and(|last| last.as_str() >= tag) {
            return Err("malformed tags: not sorted or repeated".into());
        }
        tags.push(tag.to_owned());
        rest = &tail[len..];
    }
    Ok(tags.into())
}

/// Records the tags of the event at `position` in level 0.
pub(crate) fn insert_entries(
    conn: &Connection,
    tags: &[String],
    position: Position,
    type_key: i64,
) -> rusqlite::Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO tag_index_l0 (tag, position, type_key) VALUES (?1, ?2, ?3)")?;
    for tag in tags {
        insert.execute(params![tag, position as i64, type_key])?;
    }
    Ok(())
}

/// Moves level 0 into level 1, and level 1 into the merged level once it holds
/// `level1_entries`, inside the caller's write transaction, in key order.
pub(crate) fn merge(conn: &Connection, level1_entries: u64) -> rusqlite::Result<()> {
    move_level(conn, 0)?;
    let in_level1: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", TAG_LEVELS[1]),
        [],
        |r| r.get(0),
    )?;
    if in_level1 as u64 >= level1_entries {
        move_level(conn, 1)?;
    }
    Ok(())
}

fn move_level(conn: &Connection, from: usize) -> rusqlite::Result<()> {
    let (source, target) = (TAG_LEVELS[from], TAG_LEVELS[from + 1]);
    conn.execute_batch(&format!(
        "INSERT INTO {target} (tag, position, type_key)
             SELECT tag, position, type_key FROM {source} ORDER BY tag, position;
         DELETE FROM {source};"
    ))
}

/// Up to `limit` `(position, type_key)` entries of `tag` after position `after`, in position
/// order, merged across the levels.
fn tag_entries(
    conn: &Connection,
    tag: &str,
    after: Position,
    limit: usize,
) -> rusqlite::Result<Vec<(Position, i64)>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    for table in TAG_LEVELS {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT position, type_key FROM {table} WHERE tag = ?1 AND position > ?2 ORDER BY position LIMIT ?3"
        ))?;
        let rows = statement.query_map(params![tag, after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            entries.push(row?);
        }
    }
    entries.sort_unstable();
    entries.truncate(limit);
    Ok(entries)
}

/// Whether the event at `position` carries `tag`, according to the index.
fn has_tag(conn: &Connection, tag: &str, position: Position) -> rusqlite::Result<bool> {
    conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM {0} WHERE tag = ?1 AND position = ?2)
             OR EXISTS (SELECT 1 FROM {1} WHERE tag = ?1 AND position = ?2)
             OR EXISTS (SELECT 1 FROM {2} WHERE tag = ?1 AND position = ?2)",
        TAG_LEVELS[0], TAG_LEVELS[1], TAG_LEVELS[2]
    ))?
    .query_row(params![tag, position as i64], |r| r.get(0))
}

/// A query item with its type names turned into keys.
#[derive(Debug)]
pub(crate) struct ResolvedItem {
    /// `None`: any type.
    type_keys: Option<Vec<i64>>,
    /// Sorted, without repeats.
    tags: Vec<String>,
}

/// A query as the indexes answer it.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// Every event.
    All,
    /// Items that can match something (an item naming only unknown types matches nothing and
    /// is left out; so an empty list matches nothing).
    Items(Vec<ResolvedItem>),
}

/// Resolves a validated query against the file's event types.
pub(crate) fn resolve(conn: &Connection, query: &Query) -> rusqlite::Result<Resolved> {
    let Some(items) = query.items() else {
        return Ok(Resolved::All);
    };
    let mut lookup = conn.prepare_cached("SELECT type_key FROM event_types WHERE name = ?1")?;
    let mut resolved = Vec::with_capacity(items.len());
    for item in items {
        let type_keys = if item.event_types.is_empty() {
            None
        } else {
            let mut keys = Vec::with_capacity(item.event_types.len());
            for name in &item.event_types {
                if let Some(key) = lookup
                    .query_row([name], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    keys.push(key);
                }
            }
            if keys.is_empty() {
                continue;
            }
            keys.sort_unstable();
            keys.dedup();
            Some(keys)
        };
        let mut tags = item.tags.clone();
        normalize(&mut tags);
        resolved.push(ResolvedItem { type_keys, tags });
    }
    Ok(Resolved::Items(resolved))
}

/// The live bucket tables that may hold positions after `after`, oldest first; the active
/// bucket always (the writer's catalog row lags inside its own transaction).
fn tables_after(conn: &Connection, after: Position) -> Result<Vec<String>, ScanError> {
    let mut tables = Vec::new();
    for bucket in catalog::list_buckets(conn)? {
        let relevant = bucket.state == BucketState::Active
            || bucket.last_position.is_some_and(|last| last > after);
        if !relevant {
            continue;
        }
        if !bucket.state.is_live() {
            return Err(ScanError::Unavailable(bucket));
        }
        tables.push(bucket.table_name);
    }
    Ok(tables)
}

/// Why a scan could not answer.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// A bucket the scan of a type-only item needs was archived or dropped: its events are not
    /// in the live store.
    Unavailable(BucketInfo),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for ScanError {
    fn from(error: rusqlite::Error) -> Self {
        ScanError::Sqlite(error)
    }
}

/// Up to `limit` positions after `after` of events of any of `type_keys`, in position order,
/// from the bucket tables' type index.
fn type_positions(
    conn: &Connection,
    type_keys: &[i64],
    after: Position,
    limit: usize,
) -> Result<Vec<Position>, ScanError> {
    let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
    let mut positions = Vec::new();
    for table in tables_after(conn, after)? {
        // recorded_at never decreases with position: the first event after `after` gives the
        // lower bound of the type index range.
        let floor: Option<i64> = conn
            .prepare_cached(&format!(
                "SELECT recorded_at FROM {table} WHERE position > ?1 ORDER BY position LIMIT 1"
            ))?
            .query_row([after_sql], |r| r.get(0))
            .optional()?;
        let Some(floor) = floor else {
            continue;
        };
        let remaining = limit - positions.len();
        let mut in_table = Vec::new();
        for &type_key in type_keys {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT position FROM {table} WHERE type_key = ?1 AND recorded_at >= ?2 AND position > ?3
                 ORDER BY type_key, recorded_at, position LIMIT ?4"
            ))?;
            let rows = statement
                .query_map(params![type_key, floor, after_sql, remaining as i64], |r| {
                    r.get::<_, i64>(0)
                })?;
            for row in rows {
                in_table.push(row? as u64);
            }
        }
        in_table.sort_unstable();
        in_table.truncate(remaining);
        positions.extend(in_table);
        if positions.len() == limit {
            break;
        }
    }
    Ok(positions)
}

/// Up to `limit` positions after `after` of events matching `item`, in position order.
fn item_positions(
    conn: &Connection,
    item: &ResolvedItem,
    after: Position,
    limit: usize,
) -> Result<Vec<Position>, ScanError> {
    let Some((first_tag, other_tags)) = item.tags.split_first() else {
        let keys = item.type_keys.as_deref().unwrap_or_default();
        return type_positions(conn, keys, after, limit);
    };
    let mut positions = Vec::new();
    let mut from = after;
    loop {
        let chunk = limit.clamp(SCAN_CHUNK, crate::options::limits::MAX_PAGE_SIZE);
        let entries = tag_entries(conn, first_tag, from, chunk)?;
        let Some(&(last, _)) = entries.last() else {
            return Ok(positions);
        };
        for (position, type_key) in entries.iter().copied() {
            let type_ok = item
                .type_keys
                .as_ref()
                .is_none_or(|keys| keys.binary_search(&type_key).is_ok());
            if !type_ok {
                continue;
            }
            let mut all_tags = true;
            for tag in other_tags {
                if !has_tag(conn, tag, position)? {
                    all_tags = false;
                    break;
                }
            }
            if all_tags {
                positions.push(position);
                if positions.len() == limit {
                    return Ok(positions);
                }
            }
        }
        if entries.len() < chunk {
            return Ok(positions);
        }
        from = last;
    }
}

/// Up to `limit` positions after `after` of events matching any of `items`, in position order.
pub(crate) fn matching_positions(
    conn: &Connection,
    items: &[ResolvedItem],
    after: Position,
    limit: usize,
) -> Result<Vec<Position>, ScanError> {
    let mut positions = Vec::new();
    for item in items {
        positions.extend(item_positions(conn, item, after, limit)?);
    }
    positions.sort_unstable();
    positions.dedup();
    positions.truncate(limit);
    Ok(positions)
}

/// The first position after `after` whose event matches `query`, if any; `head` is the last
/// position of the log as the caller's transaction sees it.
pub(crate) fn first_match_after(
    conn: &Connection,
    query: &Query,
    after: Position,
    head: Position,
) -> Result<Option<Position>, ScanError> {
    if head <= after {
        return Ok(None);
    }
    match resolve(conn, query)? {
        Resolved::All => Ok(Some(after + 1)),
        Resolved::Items(items) => Ok(matching_positions(conn, &items, after, 1)?.first().copied()),
    }
}

/// Verifies the tag index against the events: every tag of every live event has exactly one
/// entry, with the event's type, and the index holds no other entry for a live position.
/// `report` receives each problem found.
pub(crate) fn check_index(
    conn: &Connection,
    buckets: &[BucketInfo],
    report: &mut dyn FnMut(String),
) -> rusqlite::Result<()> {
    let live: Vec<&BucketInfo> = buckets.iter().filter(|b| b.state.is_live()).collect();
    let mut tags_of_live_events: u64 = 0;
    let mut count_entry = conn.prepare(&format!(
        "SELECT (SELECT count(*) FROM {0} WHERE tag = ?1 AND position = ?2 AND type_key = ?3)
              + (SELECT count(*) FROM {1} WHERE tag = ?1 AND position = ?2 AND type_key = ?3)
              + (SELECT count(*) FROM {2} WHERE tag = ?1 AND position = ?2 AND type_key = ?3)",
        TAG_LEVELS[0], TAG_LEVELS[1], TAG_LEVELS[2]
    ))?;
    for bucket in &live {
        let mut rows = conn.prepare(&format!(
            "SELECT position, type_key, tags FROM {} WHERE tags IS NOT NULL ORDER BY position",
            bucket.table_name
        ))?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let position = row.get::<_, i64>(0)? as u64;
            let type_key: i64 = row.get(1)?;
            let blob: Vec<u8> = row.get(2)?;
            let tags = match decode(Some(&blob)) {
                Ok(tags) => tags,
                Err(reason) => {
                    report(format!("the event at position {position}: {reason}"));
                    continue;
                }
            };
            for tag in tags.iter() {
                tags_of_live_events += 1;
                let found: i64 =
                    count_entry.query_row(params![tag, position as i64, type_key], |r| r.get(0))?;
                if found != 1 {
                    report(format!(
                        "tag {tag:?} of the event at position {position} has {found} tag index entries with its type, not 1"
                    ));
                }
            }
        }
    }
    let mut entries_of_live_events: u64 = 0;
    for table in TAG_LEVELS {
        for bucket in &live {
            let (Some(first), Some(last)) = (bucket.first_position, bucket.last_position) else {
                continue;
            };
            let count: i64 = conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE position BETWEEN ?1 AND ?2"),
                params![first as i64, last as i64],
                |r| r.get(0),
            )?;
            entries_of_live_events += count as u64;
        }
    }
    if entries_of_live_events != tags_of_live_events {
        report(format!(
            "the tag index holds {entries_of_live_events} entries for live events, but those events carry {tags_of_live_events} tags"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_their_stored_form() {
        let mut tags = vec!["b".to_string(), "a".into(), "b".into(), "é".repeat(127)];
        normalize(&mut tags);
        let blob = encode(&tags).unwrap();
        assert_eq!(&*decode(Some(&blob)).unwrap(), &tags[..]);
        assert_eq!(encode(&[]), None);
        assert!(decode(None).unwrap().is_empty());
    }

    #[test]
    fn malformed_stored_tags_are_reported() {
        assert!(decode(Some(b"")).is_err());
        assert!(decode(Some(b"\x05ab")).is_err());
        assert!(decode(Some(b"\x01b\x01a")).is_err(), "unsorted");
        assert!(decode(Some(b"\x01a\x01a")).is_err(), "repeated");
        assert!(decode(Some(b"\x01\xff")).is_err(), "not UTF-8");
    }
}
