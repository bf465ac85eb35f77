//! Showing the bucket catalog.

use comfy_table::Table;
use strata::BucketInfo;

use crate::term;

/// The bucket catalog as a table.
pub fn bucket_table(buckets: &[BucketInfo]) -> Table {
    let mut table = term::table([
        "id",
        "state",
        "from",
        "to",
        "positions",
        "events",
        "archive",
    ]);
    for bucket in buckets {
        let positions = match (bucket.first_position, bucket.last_position) {
            (Some(first), Some(last)) => format!("{first}..={last}"),
            _ => "-".into(),
        };
        table.add_row(vec![
            bucket.id.to_string(),
            bucket.state.as_str().to_owned(),
            term::time(bucket.start_micros),
            term::time(bucket.end_micros),
            positions,
            term::thousands(bucket.event_count),
            bucket.archive_path.clone().unwrap_or_default(),
        ]);
    }
    table
}
