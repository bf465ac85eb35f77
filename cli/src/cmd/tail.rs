//! `strata tail`: the end of the log, then (with `--follow`) every event committed later.

use std::path::Path;
use std::time::Duration;

use crate::cmd::open_existing;
use crate::cmd::read::{read_from_store, tags_cell, Format, Selection};
use crate::error::CliResult;
use crate::jsonl::EventLine;
use crate::out::Out;
use crate::term;

/// `strata tail`: the last `count` events of the log, oldest first; with `follow`, then every
/// event committed later (by any process), through a store subscription, until stdout closes.
pub fn run(db: &Path, count: u64, follow: bool, format: Format) -> CliResult {
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
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        event.position,
                        event.stream_id,
                        event.version,
                        event.event_type,
                        term::time(event.recorded_at),
                        tags_cell(&event)
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
