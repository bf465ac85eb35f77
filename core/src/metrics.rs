//! Metrics: counters, gauges and a latency histogram, readable as a [`MetricsSnapshot`] and as
//! Prometheus (OpenMetrics) text encoded by `prometheus-client`.
//!
//! Counters count what this process's [`Store`] handle did since it was opened (appends made by
//! other processes on the same file are not counted); gauges describe the store file as it is
//! when read (positions, buckets, size), so they include every process's commits.
//!
//! | name | type | what |
//! |---|---|---|
//! | `strata_appends` | counter | append requests committed (retries answered as already stored included) |
//! | `strata_append_events` | counter | events written |
//! | `strata_append_bytes` | counter | data + metadata bytes written |
//! | `strata_append_conflicts` | counter | appends refused by their expected version or their DCB condition |
//! | `strata_append_errors` | counter | appends failed otherwise (invalid, duplicate id, SQLite) |
//! | `strata_commits` | counter | write transactions (group commit: one per batch of appends) |
//! | `strata_append_latency_seconds` | histogram | from `append` being queued to its commit |
//! | `strata_last_position` | gauge | position of the last event of the log |
//! | `strata_live_events` | gauge | events in active and sealed buckets |
//! | `strata_buckets{state}` | gauge | buckets per state |
//! | `strata_store_bytes` | gauge | database file plus WAL |
//! | `strata_projection_lag_events{projection}` | gauge | head position minus checkpoint |
//! | `strata_projection_faulted{projection}` | gauge | 1 while a projection is stopped on a fault |
//! | `strata_cache_hits` | counter | reads answered from the event cache |
//! | `strata_cache_misses` | counter | reads that went to SQLite |
//! | `strata_cache_evictions` | counter | cache entries evicted to stay within the byte budget |
//! | `strata_cache_bytes` | gauge | bytes the event cache holds |
//!
//! Projection gauges come from the projection statuses stored in the file (every projection
//! registered by any process), read when the metrics are.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::catalog::{BucketInfo, BucketState};
use crate::error::AppendError;
use crate::event::{AppendResult, Position};
use crate::projection::ProjectionPhase;
use crate::store::Store;
use crate::writer::AppendRequest;

type Labels = Vec<(String, String)>;

/// The metrics of one open store (shared by its clones and its writer thread).
pub(crate) struct Metrics {
    registry: Registry,
    appends: Counter,
    events: Counter,
    bytes: Counter,
    conflicts: Counter,
    errors: Counter,
    commits: Counter,
    latency: Histogram,
    /// The histogram's count and sum, for snapshots (the crate does not expose them).
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    last_position: Gauge,
    live_events: Gauge,
    buckets: Family<Labels, Gauge>,
    store_bytes: Gauge,
    projection_lag: Family<Labels, Gauge>,
    projection_faulted: Family<Labels, Gauge>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_bytes: Gauge,
    /// The cache counters as last read (`None` while the cache is off).
    cache: Mutex<Option<CacheMetrics>>,
    /// The projections as last read, for snapshots (families cannot be listed).
    projections: Mutex<Vec<ProjectionMetrics>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let metrics = Metrics {
            appends: Counter::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            conflicts: Counter::default(),
            errors: Counter::default(),
            commits: Counter::default(),
            // 50 µs .. ~1.6 s, doubling.
            latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            latency_count: AtomicU64::new(0),
            latency_sum_nanos: AtomicU64::new(0),
            last_position: Gauge::default(),
            live_events: Gauge::default(),
            buckets: Family::default(),
            store_bytes: Gauge::default(),
            projection_lag: Family::default(),
            projection_faulted: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache: Mutex::new(None),
            projections: Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "appends",
            "Append requests committed by this process",
            metrics.appends.clone(),
        );
        registry.register(
            "append_events",
            "Events written by this process",
            metrics.events.clone(),
        );
        registry.register_with_unit(
            "append",
            "Data and metadata bytes written by this process",
            Unit::Bytes,
            metrics.bytes.clone(),
        );
        registry.register(
            "append_conflicts",
            "Appends refused because of their expected version or their DCB condition",
            metrics.conflicts.clone(),
        );
        registry.register(
            "append_errors",
            "Appends that failed for another reason",
            metrics.errors.clone(),
        );
        registry.register(
            "commits",
            "Write transactions (one per group of appends)",
            metrics.commits.clone(),
        );
        registry.register_with_unit(
            "append_latency",
            "Time from an append being queued to its commit",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        registry.register(
            "last_position",
            "Position of the last event of the log",
            metrics.last_position.clone(),
        );
        registry.register(
            "live_events",
            "Events in active and sealed buckets",
            metrics.live_events.clone(),
        );
        registry.register("buckets", "Buckets per state", metrics.buckets.clone());
        registry.register_with_unit(
            "store",
            "Size of the database file plus its WAL",
            Unit::Bytes,
            metrics.store_bytes.clone(),
        );
        registry.register(
            "projection_lag_events",
            "Events between the head of the log and a projection's checkpoint",
            metrics.projection_lag.clone(),
        );
        registry.register(
            "projection_faulted",
            "1 while a projection is stopped on an event it failed to apply",
            metrics.projection_faulted.clone(),
        );
        registry.register(
            "cache_hits",
            "Reads answered from the event cache",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Reads that went to SQLite instead of the event cache",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Event cache entries evicted to stay within the byte budget",
            metrics.cache_evictions.clone(),
        );
        registry.register_with_unit(
            "cache",
            "Bytes held by the event cache",
            Unit::Bytes,
            metrics.cache_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Called by the writer after a transaction committed: one result per request.
    pub(crate) fn record_commit(
        &self,
        batch: &[AppendRequest],
        results: &[Result<Vec<AppendResult>, AppendError>],
    ) {
        self.commits.inc();
        for (request, result) in batch.iter().zip(results) {
            match result {
                Ok(parts) => {
                    self.appends.inc();
                    if !parts.iter().any(|part| part.already_stored) {
                        let events: usize = request.parts.iter().map(|p| p.events.len()).sum();
                        let bytes: usize = request
                            .parts
                            .iter()
                            .flat_map(|p| p.events.iter())
                            .map(|e| e.data.len() + e.metadata.len())
                            .sum();
                        self.events.inc_by(events as u64);
                        self.bytes.inc_by(bytes as u64);
                    }
                    let latency = request.enqueued.elapsed();
                    self.latency.observe(latency.as_secs_f64());
                    self.latency_count.fetch_add(1, Ordering::Relaxed);
                    self.latency_sum_nanos.fetch_add(
                        u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
                Err(AppendError::Conflict { .. } | AppendError::ConditionFailed { .. }) => {
                    self.conflicts.inc();
                }
                Err(_) => {
                    self.errors.inc();
                }
            }
        }
    }

    /// Called by the writer when a whole transaction failed.
    pub(crate) fn record_failed_commit(&self, requests: usize) {
        self.errors.inc_by(requests as u64);
    }

    /// Replaces the projection gauges with `projections` (retired versions left out).
    pub(crate) fn set_projections(&self, projections: Vec<ProjectionMetrics>) {
        self.projection_lag.clear();
        self.projection_faulted.clear();
        for projection in &projections {
            let labels = projection_label(&projection.name);
            self.projection_lag
                .get_or_create(&labels)
                .set(i64::try_from(projection.lag).unwrap_or(i64::MAX));
            self.projection_faulted
                .get_or_create(&labels)
                .set(i64::from(projection.faulted));
        }
        *self.projections.lock() = projections;
    }

    /// Brings the cache metrics up to the cache's own counters.
    pub(crate) fn set_cache(&self, stats: crate::cache::CacheStats) {
        let mut last = self.cache.lock();
        // The cache's counters only grow: advance ours by the difference.
        let advance = |counter: &Counter, now: u64| {
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        };
        advance(&self.cache_hits, stats.hits);
        advance(&self.cache_misses, stats.misses);
        advance(&self.cache_evictions, stats.evictions);
        self.cache_bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        *last = (stats.capacity_bytes > 0).then_some(CacheMetrics {
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            bytes: stats.bytes,
        });
    }

    /// Refreshes the gauges that describe the store file.
    pub(crate) fn refresh(&self, last_position: Position, buckets: &[BucketInfo], bytes: u64) {
        self.last_position
            .set(i64::try_from(last_position).unwrap_or(i64::MAX));
        let live: u64 = buckets
            .iter()
            .filter(|b| b.state.is_live())
            .map(|b| b.event_count)
            .sum();
        self.live_events
            .set(i64::try_from(live).unwrap_or(i64::MAX));
        for state in ALL_STATES {
            let count = buckets.iter().filter(|b| b.state == state).count();
            self.buckets
                .get_or_create(&vec![("state".to_owned(), state.as_str().to_owned())])
                .set(count as i64);
        }
        self.store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The registry as OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// A snapshot of every value.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let bucket_count = |state: BucketState| {
            self.buckets
                .get(&vec![("state".to_owned(), state.as_str().to_owned())])
                .map_or(0, |g| g.get() as u64)
        };
        MetricsSnapshot {
            appends: self.appends.get(),
            events: self.events.get(),
            bytes: self.bytes.get(),
            conflicts: self.conflicts.get(),
            append_errors: self.errors.get(),
            commits: self.commits.get(),
            append_latency_count: self.latency_count.load(Ordering::Relaxed),
            append_latency_sum: Duration::from_nanos(
                self.latency_sum_nanos.load(Ordering::Relaxed),
            ),
            last_position: self.last_position.get() as u64,
            live_events: self.live_events.get() as u64,
            buckets_active: bucket_count(BucketState::Active),
            buckets_sealed: bucket_count(BucketState::Sealed),
            buckets_archived: bucket_count(BucketState::Archived),
            buckets_dropped: bucket_count(BucketState::Dropped),
            store_bytes: self.store_bytes.get() as u64,
            cache: *self.cache.lock(),
            projections: self.projections.lock().clone(),
        }
    }
}

const ALL_STATES: [BucketState; 4] = [
    BucketState::Active,
    BucketState::Sealed,
    BucketState::Archived,
    BucketState::Dropped,
];

fn projection_label(projection: &str) -> Labels {
    vec![("projection".to_owned(), projection.to_owned())]
}

/// Hits, misses and evictions of the event cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheMetrics {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that went to SQLite.
    pub misses: u64,
    /// Entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Bytes currently held.
    pub bytes: u64,
}

/// Lag and fault state of one projection, from its stored status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionMetrics {
    /// The projection's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Head position minus its checkpoint.
    pub lag: u64,
    /// Whether it is stopped on an event it failed to apply.
    pub faulted: bool,
    /// Its phase, as stored (`catching_up`, `live`, `faulted`, `rebuilding`).
    pub phase: String,
}

/// Every metric at one moment. Counters cover this process since the store was opened;
/// gauges describe the store file.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// Append requests committed.
    pub appends: u64,
    /// Events written.
    pub events: u64,
    /// Data + metadata bytes written.
    pub bytes: u64,
    /// Appends refused by their expected version or their DCB condition.
    pub conflicts: u64,
    /// Appends that failed otherwise.
    pub append_errors: u64,
    /// Write transactions.
    pub commits: u64,
    /// Appends whose latency was observed.
    pub append_latency_count: u64,
    /// Sum of their latencies (queued to committed).
    pub append_latency_sum: Duration,
    /// Position of the last event.
    pub last_position: Position,
    /// Events in live buckets.
    pub live_events: u64,
    /// Active buckets (0 or 1).
    pub buckets_active: u64,
    /// Sealed buckets.
    pub buckets_sealed: u64,
    /// Archived buckets.
    pub buckets_archived: u64,
    /// Dropped buckets.
    pub buckets_dropped: u64,
    /// Database file plus WAL, in bytes.
    pub store_bytes: u64,
    /// Event cache hits, misses and evictions; `None` while the cache is off
    /// (`Options::cache_bytes` = 0).
    pub cache: Option<CacheMetrics>,
    /// Per projection lag and fault state (empty when no projection is stored).
    pub projections: Vec<ProjectionMetrics>,
}

impl MetricsSnapshot {
    /// Mean append latency, if any append was observed.
    pub fn mean_append_latency(&self) -> Option<Duration> {
        (self.append_latency_count > 0).then(|| {
            Duration::from_secs_f64(
                self.append_latency_sum.as_secs_f64() / self.append_latency_count as f64,
            )
        })
    }
}

impl Store {
    /// Every metric now (see the module documentation). Reads the catalog and the file size
    /// to refresh the gauges.
    pub fn metrics(&self) -> Result<MetricsSnapshot, crate::error::ReadError> {
        self.refresh_metrics()?;
        Ok(self.metrics_handle().snapshot())
    }

    /// Every metric now, as Prometheus (OpenMetrics) text, ending with `# EOF`.
    pub fn metrics_text(&self) -> Result<String, crate::error::ReadError> {
        self.refresh_metrics()?;
        Ok(self.metrics_handle().encode())
    }

    fn refresh_metrics(&self) -> Result<(), crate::error::ReadError> {
        let last = self.last_position()?;
        let buckets = self.buckets()?;
        let bytes = match self.path() {
            Some(path) => {
                let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                size(&path) + size(std::path::Path::new(&wal))
            }
            None => {
                let conn = self.readers().get()?;
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                (pages * size) as u64
            }
        };
        self.metrics_handle().refresh(last, &buckets, bytes);
        self.metrics_handle().set_cache(self.cache_stats());
        match crate::projection::ProjectionRunner::list(self) {
            Ok(statuses) => self.metrics_handle().set_projections(
                statuses
                    .into_iter()
                    .filter(|s| !matches!(s.phase, ProjectionPhase::Retired))
                    .map(|s| ProjectionMetrics {
                        faulted: matches!(s.phase, ProjectionPhase::Faulted { .. }),
                        phase: s.phase.as_str().to_owned(),
                        name: s.name,
                        version: s.version,
                        lag: s.lag,
                    })
                    .collect(),
            ),
            Err(error) => tracing::warn!(%error, "projection statuses unavailable for metrics"),
        }
        Ok(())
    }
}
