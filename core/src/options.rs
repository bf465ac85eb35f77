//! Store options and their limits.

use std::fmt;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::OpenError;

/// How hard an append works to survive a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an append returns only after the WAL is fsynced. The default.
    #[default]
    Durable,
    /// `synchronous=NORMAL`: appends survive an application crash, but the last commits may be
    /// lost on power failure. Several times faster for small appends.
    Fast,
}

/// The time span of one bucket table. Fixed when the store is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BucketWidth {
    /// One table per UTC hour.
    Hour,
    /// One table per UTC day.
    Day,
    /// One table per ISO week (Monday 00:00 UTC).
    Week,
    /// One table per calendar month (UTC). The default.
    #[default]
    Month,
}

impl BucketWidth {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketWidth::Hour => "hour",
            BucketWidth::Day => "day",
            BucketWidth::Week => "week",
            BucketWidth::Month => "month",
        }
    }

    /// Parses a name written by [`BucketWidth::as_str`].
    pub fn parse(name: &str) -> Option<BucketWidth> {
        match name {
            "hour" => Some(BucketWidth::Hour),
            "day" => Some(BucketWidth::Day),
            "week" => Some(BucketWidth::Week),
            "month" => Some(BucketWidth::Month),
            _ => None,
        }
    }
}

impl fmt::Display for BucketWidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hard ceilings on options: a store never accepts more than these, whatever it is told.
pub mod limits {
    /// Largest `max_payload_bytes` accepted (data + metadata of one event).
    pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024 * 1024;
    /// Largest `max_events_per_append` accepted.
    pub const MAX_EVENTS_PER_APPEND: usize = 1_000_000;
    /// Longest stream id, in bytes.
    pub const MAX_STREAM_ID_BYTES: usize = 255;
    /// Longest event type, in bytes.
    pub const MAX_EVENT_TYPE_BYTES: usize = 255;
    /// Most events one read page returns.
    pub const MAX_PAGE_SIZE: usize = 100_000;
    /// Most append requests the writer commits in one transaction (group commit).
    pub const MAX_REQUESTS_PER_COMMIT: usize = 4_096;
    /// Most events the writer commits in one transaction, unless one request alone has more.
    pub const MAX_EVENTS_PER_COMMIT: usize = 100_000;
    /// Most read connections in the pool.
    pub const MAX_READ_CONNECTIONS: usize = 64;
    /// Largest `cache_bytes` accepted (16 GiB).
    pub const MAX_CACHE_BYTES: u64 = 16 << 30;
    /// Largest `index_merge_entries` accepted.
    pub const MAX_INDEX_MERGE_ENTRIES: u64 = 1 << 20;
    /// Level 1 of the indexes is merged into level 2 at this many times `index_merge_entries`.
    pub const INDEX_LEVEL1_FACTOR: u64 = 16;
    /// Longest tag, in bytes (UTF-8); the shortest is 1.
    pub const MAX_TAG_BYTES: usize = 255;
    /// Most tags one event carries (after removing repeats).
    pub const MAX_TAGS_PER_EVENT: usize = 64;
    /// Most items in one query (each item costs index lookups on every conditional append).
    pub const MAX_QUERY_ITEMS: usize = 256;
    /// Most event types, and most tags, in one query item.
    pub const MAX_QUERY_ITEM_ENTRIES: usize = 64;
}

/// Options for [`crate::Store::open`]. Start from `Options::default()` and change fields.
#[derive(Clone)]
pub struct Options {
    /// Durability of appends. Default: `Durable`.
    pub durability: Durability,
    /// Width of a bucket table. Used when the store is created (`None` means `Month`); when an
    /// existing store is opened, `None` accepts the stored width and `Some` must match it.
    pub bucket_width: Option<BucketWidth>,
    /// Largest data + metadata of one event, in bytes. Default 16 MiB.
    pub max_payload_bytes: usize,
    /// Most events in one append call (all streams together). Default 10,000.
    pub max_events_per_append: usize,
    /// Append requests that may wait for the writer before `append` blocks. Default 1,024.
    pub writer_queue_len: usize,
    /// Read connections kept open. Default 4.
    pub read_connections: usize,
    /// SQLite page cache per connection, in KiB. Default 16 MiB for the writer, a quarter of
    /// that for each reader.
    pub page_cache_kib: usize,
    /// The writer's source of time; tests inject a manual clock to cross bucket boundaries.
    pub clock: Arc<dyn Clock>,
    /// How long a connection waits for another process's write lock, in milliseconds.
    /// Default 5,000.
    pub busy_timeout_ms: u32,
    /// Bytes the in-process event cache may hold (events by position and stream pages,
    /// measured with [`crate::Event::approximate_size`] plus a fixed overhead per entry).
    /// Default 64 MiB; 0 turns the cache off.
    pub cache_bytes: usize,
    /// Most pages the store file may grow to (SQLite's `max_page_count`), applied to every
    /// connection; `None` (the default) leaves SQLite's own limit. An append that would grow the
    /// file past it fails with SQLite's `SQLITE_FULL` and stores nothing, as on a full disk.
    pub max_page_count: Option<u32>,
    /// Entries that level 0 of the stream and id indexes collects before the writer merges it
    /// into level 1 (level 1 goes into the merged level at `INDEX_LEVEL1_FACTOR` times this).
    /// Larger means fewer, bigger merges; smaller means smaller level tables per commit.
    /// Default 4,096; 1..=`MAX_INDEX_MERGE_ENTRIES`. Tests set it low to exercise merges.
    pub index_merge_entries: u64,
    /// The name of a registered SQLite VFS to open the store file through (every connection);
    /// `None` (the default) is SQLite's default VFS. For tests that put a VFS between SQLite
    /// and the disk, such as the power-loss simulation of `testvfs`; ignored for in-memory
    /// stores.
    pub vfs: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Durable,
            bucket_width: None,
            max_payload_bytes: 16 * 1024 * 1024,
            max_events_per_append: 10_000,
            writer_queue_len: 1_024,
            read_connections: 4,
            page_cache_kib: 16 * 1024,
            clock: Arc::new(SystemClock),
            busy_timeout_ms: 5_000,
            cache_bytes: 64 * 1024 * 1024,
            max_page_count: None,
            index_merge_entries: 4_096,
            vfs: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("bucket_width", &self.bucket_width)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_events_per_append", &self.max_events_per_append)
            .field("writer_queue_len", &self.writer_queue_len)
            .field("read_connections", &self.read_connections)
            .field("page_cache_kib", &self.page_cache_kib)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("cache_bytes", &self.cache_bytes)
            .field("max_page_count", &self.max_page_count)
            .field("index_merge_entries", &self.index_merge_entries)
            .field("vfs", &self.vfs)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Checks every option against its range.
    pub fn validate(&self) -> Result<(), OpenError> {
        fn check(ok: bool, what: String) -> Result<(), OpenError> {
            if ok {
                Ok(())
            } else {
                Err(OpenError::InvalidOption(what))
            }
        }
        check(
            (1..=limits::MAX_PAYLOAD_BYTES).contains(&self.max_payload_bytes),
            format!(
                "max_payload_bytes must be 1..={}",
                limits::MAX_PAYLOAD_BYTES
            ),
        )?;
        check(
            (1..=limits::MAX_EVENTS_PER_APPEND).contains(&self.max_events_per_append),
            format!(
                "max_events_per_append must be 1..={}",
                limits::MAX_EVENTS_PER_APPEND
            ),
        )?;
        check(
            (1..=65_536).contains(&self.writer_queue_len),
            "writer_queue_len must be 1..=65536".into(),
        )?;
        check(
            (1..=limits::MAX_READ_CONNECTIONS).contains(&self.read_connections),
            format!(
                "read_connections must be 1..={}",
                limits::MAX_READ_CONNECTIONS
            ),
        )?;
        check(
            (256..=4 * 1024 * 1024).contains(&self.page_cache_kib),
            "page_cache_kib must be 256..=4194304".into(),
        )?;
        check(
            self.cache_bytes as u64 <= limits::MAX_CACHE_BYTES,
            format!("cache_bytes must be 0..={}", limits::MAX_CACHE_BYTES),
        )?;
        check(
            (1..=limits::MAX_INDEX_MERGE_ENTRIES).contains(&self.index_merge_entries),
            format!(
                "index_merge_entries must be 1..={}",
                limits::MAX_INDEX_MERGE_ENTRIES
            ),
        )?;
        Ok(())
    }
}
