//! `strata`: the command line of the strata embedded event store.

mod cmd;
mod dcb;
mod error;
mod jsonl;
mod out;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::{BucketWidth, ExpectedVersion, Query, Uuid};

use cmd::bucket::BucketCommand;
use cmd::projection::ProjectionCommand;
use cmd::read::{Format, Selection};
use cmd::replicate::ReplicateCommand;
use error::{CliError, CliResult};

/// strata: an embedded event store in one SQLite file.
///
/// Exit codes: 0 success; 1 user error (bad input, conflict — an expected version or an
/// append condition that does not hold —, a damaged store found by check), with a one-line
/// message on stderr; 2 internal error.
///
/// Tags and queries (Dynamic Consistency Boundaries): `append --tag` tags an event;
/// `append --fail-if-match QUERY --after P` appends only if no event matching QUERY comes
/// after position P; `read --query QUERY` or `read --tag T [--type E]` reads the matching
/// events. QUERY is JSON: an array of items `{"types": [...], "tags": [...]}`; an event
/// matches when it matches any item; an item matches an event whose type is one of `types`
/// (any type when absent or empty) and that carries every one of `tags` (any tags when absent
/// or empty); each item names at least one type or tag. The word `all` (or the JSON string
/// "all") matches every event; `[]` is refused. A tag is 1..=255 bytes of UTF-8, at most 64
/// per event.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about)]
struct Cli {
    /// The store file. Also read from the STRATA_DB environment variable.
    #[arg(long, global = true, env = "STRATA_DB", value_name = "PATH")]
    db: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the users-and-orders workload, append it, read it back and report.
    ///
    /// Appends N events of a deterministic users-and-orders workload (user_created,
    /// user_updated, account_verified, order_created, payment_confirmed, inventory_reserved,
    /// order_completed) to a store, reads them back, and prints counts per event type, the
    /// bucket list, append and read throughput, and per-user order statistics. Without --db the
    /// store lives in a temporary directory, removed at the end; running the demo twice on one
    /// --db file stores the events once (the workload's event ids derive from the seed).
    ///
    /// Example: strata demo --events 200000
    ///
    /// Example: strata demo --events 50000 --db /tmp/demo.strata
    Demo {
        /// Number of events to generate.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Events per append call (each call is one atomic multi-stream append).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Seed of the workload generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Use Fast durability (no fsync per commit) instead of Durable.
        #[arg(long)]
        fast: bool,
    },

    /// Create a new, empty store file.
    ///
    /// Example: strata init --db events.strata --bucket-width day
    Init {
        /// Time span of each bucket table, fixed at creation: hour, day, week or month.
        #[arg(long, default_value = "month", value_parser = parse_width)]
        bucket_width: BucketWidth,
    },

    /// Append one event; its data is JSON, stored as MessagePack.
    ///
    /// Prints the stored position, the stream's new version and the event id as JSON
    /// ({"stream", "position", "version", "event_id", "already_stored"}).
    /// With --event-id, appending the same event again stores it once.
    ///
    /// With --fail-if-match QUERY --after P the append is conditional (DCB): it fails, writing
    /// nothing, if any event matching QUERY is at a position after P (the last position the
    /// decision read; 0 counts every event). The condition is checked together with
    /// --expected-version inside the store's write transaction. A failed condition exits with
    /// 1, like an expected-version conflict, and the message names the first conflicting
    /// position: "conflict: append condition failed: the event at position N matches
    /// --fail-if-match and comes after position P (--after); nothing was written".
    ///
    /// Example: strata append --db events.strata user-1 user_created '{"user_id":"user-1","name":"Ada"}' --expected-version no-stream
    ///
    /// Example: strata append --db events.strata '$dcb' student_subscribed '{"student":"s1"}' --tag course:c1 --tag student:s1
    ///
    /// Example: strata append --db events.strata '$dcb' student_subscribed '{"student":"s1"}' --tag course:c1 --fail-if-match '[{"types":["student_subscribed"],"tags":["course:c1"]}]' --after 41
    Append {
        /// The stream (1..=255 bytes).
        stream: String,
        /// The event type (1..=255 bytes).
        event_type: String,
        /// The data, as JSON.
        data: String,
        /// Metadata, as JSON.
        #[arg(long)]
        metadata: Option<String>,
        /// Expected version of the stream: any, no-stream, exists, or a number (0 = no events).
        #[arg(long, default_value = "any", value_parser = cmd::append::parse_expected)]
        expected_version: ExpectedVersion,
        /// The event id (a UUID); generated when absent.
        #[arg(long)]
        event_id: Option<Uuid>,
        /// A tag on the event (repeatable; 1..=255 bytes of UTF-8, at most 64 distinct;
        /// repeats are stored once). Example: --tag course:c1 --tag student:s1
        #[arg(long = "tag", value_name = "TAG", value_parser = dcb::parse_tag)]
        tags: Vec<String>,
        /// Append only if no event matching this query is after position --after (requires
        /// --after). QUERY is JSON: [{"types":[...],"tags":[...]}, ...], or all.
        /// Example: --fail-if-match '[{"tags":["course:c1"]}]' --after 12
        #[arg(long, value_name = "QUERY", value_parser = dcb::parse_query, requires = "after")]
        fail_if_match: Option<Query>,
        /// The position the condition counts from: only events after it conflict (requires
        /// --fail-if-match). Example: --after 12
        #[arg(long, value_name = "POSITION", requires = "fail_if_match")]
        after: Option<u64>,
    },

    /// Import events from a JSON Lines file, in batches.
    ///
    /// Each line is one event: {"stream": ..., "type": ..., "tags": [...], "data": <JSON>,
    /// "metadata": <JSON>, "event_id": <UUID>} ("data_hex"/"metadata_hex" carry raw bytes;
    /// "tags" is an array of strings, absent or [] for none, each 1..=255 bytes, at most 64
    /// distinct; a malformed "tags" stops the import with FILE:LINE and the reason). Lines written by
    /// `strata export` import unchanged: "position", "version" and "recorded_at" are
    /// ignored, the store assigns them, in the file's order. Blank lines are skipped.
    ///
    /// Lines are parsed a batch at a time; a malformed line stops the import with FILE:LINE and
    /// the reason, and nothing of its batch is stored (earlier batches are). Re-running the
    /// import is safe: events are stored once, by event id. Lines without "event_id" get a
    /// UUIDv5 derived from their stream, their rank among that stream's lines in the file, their
    /// type, data, metadata and tags, so the same file derives the same ids every time.
    ///
    /// Example: strata import --db events.strata events.jsonl
    Import {
        /// The JSON Lines file; - for standard input.
        file: PathBuf,
        /// Lines per batch (1..=10000).
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        /// Longest line accepted, in bytes.
        #[arg(long, default_value_t = cmd::import::DEFAULT_MAX_LINE_BYTES)]
        max_line_bytes: usize,
    },

    /// Read events: one stream, the whole log (--all), some types (--type), some tags (--tag)
    /// or a query (--query), as JSON Lines or a table.
    ///
    /// --query QUERY prints the events matching the query in position order; QUERY is JSON,
    /// [{"types":[...],"tags":[...]}, ...] (an event matches when it matches any item: one of
    /// the item's types, or any type when it has none, and every one of its tags), or all.
    /// --tag T (repeatable) is the one-item query shorthand: events carrying every --tag and,
    /// when --type is given too, of one of the --type types. --from is the first position
    /// (inclusive) and --limit the most events, as with --all. JSON Lines carry "tags" (left
    /// out when an event has none); the table has a tags column (a JSON array).
    ///
    /// Reading a range that was archived fails with the path of the archive file that holds it.
    ///
    /// Example: strata read --db events.strata order-42
    ///
    /// Example: strata read --db events.strata --all --from 1000 --limit 10 --format table
    ///
    /// Example: strata read --db events.strata --type order_created --type order_completed
    ///
    /// Example: strata read --db events.strata --tag course:c1 --type student_subscribed
    ///
    /// Example: strata read --db events.strata --query '[{"types":["course_defined"],"tags":["course:c1"]},{"tags":["student:s1"]}]' --from 10 --limit 100
    Read {
        /// The stream to read.
        #[arg(required_unless_present_any = ["all", "event_type", "tags", "query"], conflicts_with_all = ["all", "event_type", "tags", "query"])]
        stream: Option<String>,
        /// Read the whole log in position order.
        #[arg(long, conflicts_with_all = ["event_type", "tags", "query"])]
        all: bool,
        /// Read events of this type (repeatable, OR), in position order; with --tag, only
        /// events of these types that carry every --tag.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Vec<String>,
        /// Read events that carry this tag (repeatable: every one of them), in position
        /// order; combinable with --type. Example: --tag course:c1 --tag student:s1
        #[arg(long = "tag", value_name = "TAG", value_parser = dcb::parse_tag)]
        tags: Vec<String>,
        /// Read the events matching this query, in position order. QUERY is JSON,
        /// [{"types":[...],"tags":[...]}, ...], or all.
        /// Example: --query '[{"types":["student_subscribed"],"tags":["course:c1"]}]'
        #[arg(long, value_name = "QUERY", value_parser = dcb::parse_query, conflicts_with_all = ["event_type", "tags"])]
        query: Option<Query>,
        /// First version (stream) or position (--all, --type, --tag, --query) to read.
        #[arg(long)]
        from: Option<u64>,
        /// Most events to print.
        #[arg(long)]
        limit: Option<u64>,
        /// Newest first (stream reads only).
        #[arg(long, requires = "stream")]
        backwards: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },

    /// Print the last events of the log, oldest first; with --follow, then every new event as
    /// it is committed (by any process), until interrupted.
    ///
    /// JSON Lines as `strata read` prints them ("tags" left out when an event has none).
    /// --format table prints the table of `strata read` (with its tags column); with --follow
    /// it prints one tab-separated line per event instead: position, stream, version, type,
    /// recorded at, tags (a JSON array, empty when none).
    ///
    /// Example: strata tail --db events.strata -n 20
    ///
    /// Example: strata tail --db events.strata --follow
    Tail {
        /// How many events.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Keep running and print events appended later (by this or another process).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },

    /// Export the log as JSON Lines that `strata import` takes back unchanged.
    ///
    /// Each line holds position, stream, version, type, tags (an array of strings, left out
    /// when the event has none), event_id, recorded_at, data (JSON, or data_hex for bytes that
    /// are not MessagePack) and metadata.
    ///
    /// Example: strata export --db events.strata --output events.jsonl
    Export {
        /// Write to this file (must not exist) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// First position to export (use it to skip archived buckets).
        #[arg(long, default_value_t = 1)]
        from: u64,
    },

    /// Verify the store: SQLite's integrity check and strata's invariants.
    ///
    /// Checks gap-free positions, contiguous stream versions, the bucket catalog against the
    /// bucket tables, the streams table, every event's checksum and the event id index. Prints
    /// each problem; exits with 1 when any is found.
    ///
    /// Example: strata check --db events.strata
    Check,

    /// Print the store's metrics as Prometheus (OpenMetrics) text.
    ///
    /// Gauges describe the store file (positions, buckets, size); counters count what this
    /// process did, so they are zero for a fresh `strata stats`.
    ///
    /// Example: strata stats --db events.strata
    Stats,

    /// Manage bucket tables: list, seal, archive, drop, retention.
    ///
    /// Example: strata bucket list --db events.strata
    #[command(subcommand)]
    Bucket(BucketCommand),

    /// Replicate through NATS JetStream: push, pull, status.
    ///
    /// Example: strata replicate push --db a.strata --stream DEVICE_A --subject-prefix strata.device-a
    #[command(subcommand)]
    Replicate(ReplicateCommand),
    /// WebAssembly projections: add, list, status, rebuild, reset, query, catch-up.
    ///
    /// `add` stores the component's bytes in the store file (table `projection_modules`), so
    /// every later command, in any process, can run it.
    ///
    /// Example: strata projection add --db events.strata user_stats.wasm
    ///
    /// Example: strata projection query --db events.strata user-stats '{"top": 3}'
    #[command(subcommand)]
    Projection(ProjectionCommand),
}

fn parse_width(text: &str) -> Result<BucketWidth, String> {
    BucketWidth::parse(text).ok_or_else(|| format!("{text:?} is not one of hour, day, week, month"))
}

fn db(cli_db: Option<PathBuf>) -> CliResult<PathBuf> {
    cli_db.ok_or_else(|| CliError::user("no store given: pass --db PATH or set STRATA_DB"))
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Demo {
            events,
            batch,
            seed,
            fast,
        } => cmd::demo::run(cmd::demo::DemoArgs {
            events,
            db: cli.db,
            batch,
            seed,
            fast,
        }),
        Command::Init { bucket_width } => cmd::init::run(&db(cli.db)?, bucket_width),
        Command::Append {
            stream,
            event_type,
            data,
            metadata,
            expected_version,
            event_id,
            tags,
            fail_if_match,
            after,
        } => cmd::append::run(
            &db(cli.db)?,
            cmd::append::AppendArgs {
                stream: &stream,
                event_type: &event_type,
                data: &data,
                metadata: metadata.as_deref(),
                expected: expected_version,
                event_id,
                tags,
                // clap makes --fail-if-match and --after go together.
                condition: fail_if_match.zip(after),
            },
        ),
        Command::Import {
            file,
            batch,
            max_line_bytes,
        } => cmd::import::run(cmd::import::ImportArgs {
            db: db(cli.db)?,
            file,
            batch,
            max_line_bytes,
        }),
        Command::Read {
            stream,
            all,
            event_type,
            tags,
            query,
            from,
            limit,
            backwards,
            format,
        } => {
            let selection = match (stream, all, query) {
                (Some(stream), _, _) => Selection::Stream { stream, backwards },
                (None, true, _) => Selection::All,
                (None, false, Some(query)) => Selection::Query(query),
                (None, false, None) if !tags.is_empty() => Selection::Query(
                    dcb::shorthand_query(event_type, tags).map_err(CliError::User)?,
                ),
                (None, false, None) => Selection::Types(event_type),
            };
            cmd::read::run(&db(cli.db)?, selection, from, limit, format)
        }
        Command::Tail {
            lines,
            follow,
            format,
        } => cmd::tail::run(&db(cli.db)?, lines, follow, format),
        Command::Export { output, from } => {
            cmd::export::run(&db(cli.db)?, output.as_deref(), from.max(1))
        }
        Command::Check => cmd::check::run(&db(cli.db)?),
        Command::Stats => cmd::stats::run(&db(cli.db)?),
        Command::Replicate(command) => cmd::replicate::run(&db(cli.db)?, command),
        Command::Projection(command) => cmd::projection::run(&db(cli.db)?, command),
        Command::Bucket(command) => cmd::bucket::run(&db(cli.db)?, command),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // A usage error is a user error: one line (clap's first), exit code 1. When that
            // line ends with a colon (a missing argument), the line it announces goes with it.
            let rendered = error.render().to_string();
            let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
            let first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            let message = match (first.ends_with(':'), lines.next()) {
                (true, Some(next)) => format!("{first} {}", next.trim()),
                _ => first.to_owned(),
            };
            eprintln!("strata: {message} (see strata --help)");
            return ExitCode::from(1);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
