//! Errors: one enum per operation, and [`Error`], their union.
//!
//! SQLite failures keep SQLite's own error (code and message) as their source, so that callers
//! can tell a full disk (`SQLITE_FULL`) from a locked file (`SQLITE_BUSY`).

use std::path::PathBuf;

use uuid::Uuid;

use crate::event::{ExpectedVersion, Position, StreamVersion};

/// Why a store could not be opened. The file is left untouched in every case but `Sqlite`
/// during creation of a new store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file exists but is not an SQLite database (wrong header). Check the path.
    #[error("{path} is not an SQLite database file")]
    NotADatabase {
        /// The file that was opened.
        path: PathBuf,
    },
    /// The file is an SQLite database, but not a strata store (it holds other tables, or another
    /// application's id). strata refuses to write into it.
    #[error(
        "{path} is an SQLite database but not a strata store (application id {application_id:#x})"
    )]
    NotAStrataStore {
        /// The file that was opened.
        path: PathBuf,
        /// The `PRAGMA application_id` found in the file.
        application_id: i32,
    },
    /// The store was written by a newer strata. Upgrade strata to open it.
    #[error("store schema version {found} is newer than this strata supports ({supported}); upgrade strata")]
    SchemaTooNew {
        /// The schema version found in the file.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// An option is out of its range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The store file was created with another bucket width; the width is fixed at creation.
    #[error(
        "the store was created with bucket width {stored}; it cannot be changed to {requested}"
    )]
    BucketWidthMismatch {
        /// Width stored in the file.
        stored: String,
        /// Width asked for in the options.
        requested: String,
    },
    /// The writer thread could not be started.
    #[error("could not start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// SQLite failed; its code and message are kept.
    #[error("SQLite error while opening the store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Why an append stored nothing. An append is all or nothing: after any of these errors none of
/// its events is stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Optimistic concurrency: the stream's version is not what the caller expected. Reload the
    /// stream and retry.
    #[error("conflict on stream {stream_id:?}: expected {expected:?}, actual version {actual}")]
    Conflict {
        /// The stream whose check failed.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's current version (0 when it has no events).
        actual: StreamVersion,
    },
    /// An event id is already stored, but not as this same append (another stream, another order,
    /// or only some of the events). Event ids are unique store-wide.
    #[error("event id {event_id} is already stored at position {position}, not as part of this same append")]
    DuplicateEventId {
        /// The id in question.
        event_id: Uuid,
        /// Where the stored event with that id is (0 when the clash is inside the request itself).
        position: Position,
    },
    /// The append's condition failed: an event matching `fail_if_events_match` was appended
    /// after the condition's `after` position. Nothing was written. Read the query again from
    /// `after`, decide again, and retry with the new last position.
    #[error("append condition failed: the event at position {position} matches the condition's query and comes after position {after}")]
    ConditionFailed {
        /// The first position after `after` whose event matches the query.
        position: Position,
        /// The condition's `after`.
        after: Position,
    },
    /// The request breaks a limit or is malformed; the message says which.
    #[error("invalid append: {0}")]
    Invalid(#[from] InvalidInput),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// SQLite failed (disk full, I/O error, ...); nothing of the append is stored.
    #[error("SQLite error during append: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Input that breaks a documented rule or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A stream id must be 1..=255 bytes.
    #[error("stream id must be 1..=255 bytes of UTF-8, got {len} bytes")]
    StreamIdLength {
        /// Its length in bytes.
        len: usize,
    },
    /// An event type must be 1..=255 bytes.
    #[error("event type must be 1..=255 bytes of UTF-8, got {len} bytes")]
    EventTypeLength {
        /// Its length in bytes.
        len: usize,
    },
    /// `data` + `metadata` of one event exceed `Options::max_payload_bytes`.
    #[error("event payload is {len} bytes (data + metadata), over the limit of {limit}")]
    PayloadTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An append carries more events than `Options::max_events_per_append`.
    #[error("append carries {count} events, over the limit of {limit}")]
    TooManyEvents {
        /// Events in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An append (or one stream's part of it) carries no events.
    #[error("append carries no events")]
    NoEvents,
    /// The same stream appears twice in one multi-stream append.
    #[error("stream {0:?} appears more than once in one append")]
    RepeatedStream(String),
    /// A tag must be 1..=255 bytes of UTF-8 (`limits::MAX_TAG_BYTES`).
    #[error("a tag must be 1..={limit} bytes of UTF-8, got {len} bytes")]
    TagLength {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An event carries more distinct tags than `limits::MAX_TAGS_PER_EVENT`.
    #[error("an event carries {count} distinct tags, over the limit of {limit}")]
    TooManyTags {
        /// Distinct tags of the event.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A query item names neither an event type nor a tag; it would match every event. Use
    /// `Query::all()` for that.
    #[error("query item {index} has neither event types nor tags; use Query::all() to match every event")]
    EmptyQueryItem {
        /// The item's index in the query.
        index: usize,
    },
    /// A query built from items has none; use `Query::all()` to match every event.
    #[error("a query needs at least one item; use Query::all() to match every event")]
    EmptyQuery,
    /// A query or one of its items is larger than `limits::MAX_QUERY_ITEMS` or
    /// `limits::MAX_QUERY_ITEM_ENTRIES`.
    #[error("query too large: {what} is {count}, over the limit of {limit}")]
    QueryTooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A read asked for zero or too many events per page.
    #[error("page size must be 1..={limit}, got {requested}")]
    PageSize {
        /// Requested.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// A string that must be UTF-8 is not (C ABI and CLI inputs).
    #[error("{what} is not valid UTF-8")]
    NotUtf8 {
        /// Which input.
        what: &'static str,
    },
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The request breaks a limit.
    #[error("invalid read: {0}")]
    Invalid(#[from] InvalidInput),
    /// The requested range lies in a bucket that was archived to its own file.
    #[error("positions {first_position}..={last_position} were archived to {archive_path}")]
    Archived {
        /// First position of the archived bucket.
        first_position: Position,
        /// Last position of the archived bucket.
        last_position: Position,
        /// The SQLite file that holds them.
        archive_path: String,
    },
    /// The requested range lies in a bucket that was dropped by retention.
    #[error("positions {first_position}..={last_position} were dropped by retention")]
    Dropped {
        /// First position of the dropped bucket.
        first_position: Position,
        /// Last position of the dropped bucket.
        last_position: Position,
    },
    /// A stored row does not decode (corruption, or a file edited by hand). Run `strata check`.
    #[error("corrupt row at position {position}: {reason}")]
    Corrupt {
        /// The row's position.
        position: Position,
        /// What is wrong with it.
        reason: String,
    },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// SQLite failed.
    #[error("SQLite error during read: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A value could not be encoded as MessagePack.
#[derive(Debug, thiserror::Error)]
#[error("could not encode event data as MessagePack: {0}")]
pub struct EncodeError(#[source] pub rmp_serde::encode::Error);

/// Event data could not be decoded into the requested type.
#[derive(Debug, thiserror::Error)]
#[error("could not decode the data of the event at position {position}: {source}")]
pub struct DecodeError {
    /// The event's position.
    pub position: Position,
    /// What rmp-serde said.
    #[source]
    pub source: rmp_serde::decode::Error,
}

/// Any strata error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Appending failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Encoding event data failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Decoding event data failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// SQLite failed outside the operations above (maintenance, checks).
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file operation failed (archives).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Invalid input to an operation outside append and read.
    #[error("invalid input: {0}")]
    Invalid(#[from] InvalidInput),
}

/// `Result` with strata's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
