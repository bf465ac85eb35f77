//! Time: the writer's clock and the calendar arithmetic of buckets.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::options::BucketWidth;

/// A source of wall-clock time in unix microseconds (UTC).
///
/// The writer never lets `recorded_at` go backwards, whatever the clock says.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix microseconds.
    fn now_micros(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(elapsed) => i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
            // A clock set before 1970: the writer clamps to the last recorded time anyway.
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to: for tests that cross bucket boundaries.
#[derive(Debug, Default)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// A clock showing `micros`.
    pub fn new(micros: i64) -> Self {
        ManualClock {
            micros: AtomicI64::new(micros),
        }
    }

    /// Sets the time (it may go backwards: the writer must cope).
    pub fn set(&self, micros: i64) {
        self.micros.store(micros, Ordering::SeqCst);
    }

    /// Moves the time forwards by `micros`.
    pub fn advance(&self, micros: i64) {
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.micros.load(Ordering::SeqCst)
    }
}

/// Unix microseconds for a UTC date and time; a helper for tests and examples.
pub fn utc_micros(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> i64 {
    Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
        .single()
        .expect("a valid UTC date and time")
        .timestamp_micros()
}

fn to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn midnight_micros(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// The half-open time range `[start, end)` of the bucket that holds `micros`.
pub fn bucket_range(width: BucketWidth, micros: i64) -> (i64, i64) {
    const HOUR: i64 = 3_600_000_000;
    let at = to_datetime(micros);
    match width {
        BucketWidth::Hour => {
            let start = micros.div_euclid(HOUR) * HOUR;
            (start, start + HOUR)
        }
        BucketWidth::Day => {
            let day = at.date_naive();
            let next = day + Duration::days(1);
            (midnight_micros(day), midnight_micros(next))
        }
        BucketWidth::Week => {
            let day = at.date_naive();
            let monday = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
            (
                midnight_micros(monday),
                midnight_micros(monday + Duration::days(7)),
            )
        }
        BucketWidth::Month => {
            let first = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).expect("first of month");
            let next = if at.month() == 12 {
                NaiveDate::from_ymd_opt(at.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(at.year(), at.month() + 1, 1)
            }
            .expect("first of next month");
            (midnight_micros(first), midnight_micros(next))
        }
    }
}

/// Formats unix microseconds as RFC 3339 (UTC), for display.
pub fn format_micros(micros: i64) -> String {
    to_datetime(micros).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bucket_spans_the_calendar_month() {
        let t = utc_micros(2024, 2, 29, 23, 59, 59);
        assert_eq!(
            bucket_range(BucketWidth::Month, t),
            (
                utc_micros(2024, 2, 1, 0, 0, 0),
                utc_micros(2024, 3, 1, 0, 0, 0)
            )
        );
        let december = utc_micros(2024, 12, 31, 12, 0, 0);
        assert_eq!(
            bucket_range(BucketWidth::Month, december).1,
            utc_micros(2025, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn hour_day_and_week_buckets() {
        let t = utc_micros(2024, 5, 15, 13, 45, 0); // a Wednesday
        assert_eq!(
            bucket_range(BucketWidth::Hour, t),
            (
                utc_micros(2024, 5, 15, 13, 0, 0),
                utc_micros(2024, 5, 15, 14, 0, 0)
            )
        );
        assert_eq!(
            bucket_range(BucketWidth::Day, t),
            (
                utc_micros(2024, 5, 15, 0, 0, 0),
                utc_micros(2024, 5, 16, 0, 0, 0)
            )
        );
        assert_eq!(
            bucket_range(BucketWidth::Week, t),
            (
                utc_micros(2024, 5, 13, 0, 0, 0),
                utc_micros(2024, 5, 20, 0, 0, 0)
            )
        );
    }

    #[test]
    fn times_before_1970_fall_into_their_own_hour() {
        let (start, end) = bucket_range(BucketWidth::Hour, -1);
        assert_eq!((start, end), (-3_600_000_000, 0));
    }
}
