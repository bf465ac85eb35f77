//! The native half of `strata.Store`: an open store, its appends, reads, subscriptions,
//! projections and metrics. Every call that can wait (appends wait for their fsync, reads for
//! SQLite) runs without the GIL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use strata::{
    AppendCondition, BackgroundRunner, BucketWidth, Direction, Durability, Options,
    ProjectionPhase, ProjectionRunner, ProjectionStatus, RunnerOptions, Store, StreamAppend,
    SubscriptionFilter, DEFAULT_STREAM,
};

/// A query as the Python layer passes it: `None` (every event) or `(types, tags)` per item.
type QueryItems = Option<Vec<(Vec<String>, Vec<String>)>>;

use crate::append::{expected_version, new_events, query};
use crate::cursor::{Cursor, Source};
use crate::errors::{Fail, Kind};
use crate::subscription::NativeSubscription;

#[derive(Default)]
struct Projections {
    runner: Option<ProjectionRunner>,
    background: Option<BackgroundRunner>,
}

/// An open store (used through `strata.Store`). Safe to share between threads.
#[pyclass(frozen, module = "strata._native")]
pub struct NativeStore {
    /// `None` once closed.
    store: RwLock<Option<Store>>,
    /// Set by `close`; cursors and subscriptions read it.
    closed: Arc<AtomicBool>,
    projections: Mutex<Projections>,
}

/// `(first_position, last_position, last_version, already_stored)`.
type AppendTuple = (u64, u64, u64, bool);

/// `(name, version, phase, checkpoint, lag, fault_position, fault_message)`.
type StatusTuple = (String, u32, &'static str, u64, u64, u64, Option<String>);

fn append_tuple(result: &strata::AppendResult) -> AppendTuple {
    (
        result.first_position,
        result.last_position,
        result.last_version,
        result.already_stored,
    )
}

fn status_tuple(status: ProjectionStatus) -> StatusTuple {
    let (phase, fault_position, fault_message) = match status.phase {
        ProjectionPhase::CatchingUp => ("catching_up", 0, None),
        ProjectionPhase::Live => ("live", 0, None),
        ProjectionPhase::Faulted { position, message } => ("faulted", position, Some(message)),
        ProjectionPhase::Rebuilding => ("rebuilding", 0, None),
        ProjectionPhase::Retired => ("retired", 0, None),
    };
    (
        status.name,
        status.version,
        phase,
        status.checkpoint,
        status.lag,
        fault_position,
        fault_message,
    )
}

fn options(
    durability: &str,
    bucket_width: Option<&str>,
    cache_bytes: Option<usize>,
    max_events_per_append: Option<usize>,
    read_connections: Option<usize>,
) -> Result<Options, Fail> {
    let durability = match durability {
        "durable" => Durability::Durable,
        "fast" => Durability::Fast,
        other => {
            return Err(Fail::invalid(format!(
                "durability must be 'durable' or 'fast', got {other:?}"
            )))
        }
    };
    let mut options = Options {
        durability,
        ..Options::default()
    };
    options.bucket_width = match bucket_width {
        None => None,
        Some("hour") => Some(BucketWidth::Hour),
        Some("day") => Some(BucketWidth::Day),
        Some("week") => Some(BucketWidth::Week),
        Some("month") => Some(BucketWidth::Month),
        Some(other) => {
            return Err(Fail::invalid(format!(
                "bucket_width must be 'hour', 'day', 'week' or 'month', got {other:?}"
            )))
        }
    };
    if let Some(value) = cache_bytes {
        options.cache_bytes = value;
    }
    if let Some(value) = max_events_per_append {
        options.max_events_per_append = value;
    }
    if let Some(value) = read_connections {
        options.read_connections = value;
    }
    Ok(options)
}

impl NativeStore {
    fn new(store: Store) -> NativeStore {
        NativeStore {
            store: RwLock::new(Some(store)),
            closed: Arc::new(AtomicBool::new(false)),
            projections: Mutex::new(Projections::default()),
        }
    }

    fn store(&self) -> Result<Store, Fail> {
        self.store
            .read()
            .clone()
            .ok_or_else(|| Fail::closed("the store"))
    }

    fn runner(&self) -> Result<ProjectionRunner, Fail> {
        let store = self.store()?;
        let mut projections = self.projections.lock();
        if let Some(runner) = &projections.runner {
            return Ok(runner.clone());
        }
        let runner = ProjectionRunner::new(&store, RunnerOptions::default())?;
        projections.runner = Some(runner.clone());
        Ok(runner)
    }

    /// Runs `call` without the GIL and raises its failure.
    fn detached<T: Send>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(&Self) -> Result<T, Fail> + Send,
    ) -> PyResult<T> {
        py.allow_threads(|| call(self))
            .map_err(|fail| fail.into_py_err(py))
    }

    fn projection_call(
        &self,
        py: Python<'_>,
        name: &str,
        call: impl FnOnce(&ProjectionRunner, &str) -> Result<ProjectionStatus, strata::RunnerError>
            + Send,
    ) -> PyResult<StatusTuple> {
        self.detached(py, |this| {
            let runner = this.runner()?;
            Ok(status_tuple(call(&runner, name)?))
        })
    }

    fn cursor(&self, py: Python<'_>, source: Source, limit: u64) -> PyResult<Cursor> {
        let store = self.store().map_err(|f| f.into_py_err(py))?;
        Cursor::open(py, store, self.closed.clone(), source, limit)
    }
}

#[pymethods]
impl NativeStore {
    #[staticmethod]
    #[pyo3(signature = (path, durability, bucket_width, cache_bytes, max_events_per_append, read_connections))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        durability: &str,
        bucket_width: Option<&str>,
        cache_bytes: Option<usize>,
        max_events_per_append: Option<usize>,
        read_connections: Option<usize>,
    ) -> PyResult<NativeStore> {
        let options = options(
            durability,
            bucket_width,
            cache_bytes,
            max_events_per_append,
            read_connections,
        )
        .map_err(|f| f.into_py_err(py))?;
        let store = py
            .allow_threads(|| Store::open(&path, options))
            .map_err(|e| Fail::from(e).into_py_err(py))?;
        Ok(NativeStore::new(store))
    }

    #[staticmethod]
    #[pyo3(signature = (durability, bucket_width, cache_bytes, max_events_per_append, read_connections))]
    fn open_in_memory(
        py: Python<'_>,
        durability: &str,
        bucket_width: Option<&str>,
        cache_bytes: Option<usize>,
        max_events_per_append: Option<usize>,
        read_connections: Option<usize>,
    ) -> PyResult<NativeStore> {
        let options = options(
            durability,
            bucket_width,
            cache_bytes,
            max_events_per_append,
            read_connections,
        )
        .map_err(|f| f.into_py_err(py))?;
        let store = py
            .allow_threads(|| Store::open_in_memory(options))
            .map_err(|e| Fail::from(e).into_py_err(py))?;
        Ok(NativeStore::new(store))
    }

    /// Waits for queued appends, stops the writer and the projection runner. Closing twice
    /// does nothing.
    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| {
            let Some(store) = self.store.write().take() else {
                return;
            };
            self.closed.store(true, Ordering::SeqCst);
            // The background runner first: it reads through the store.
            let projections = std::mem::take(&mut *self.projections.lock());
            drop(projections);
            store.close();
        })
    }

    #[getter]
    fn closed(&self) -> bool {
        self.store.read().is_none()
    }

    fn append(
        &self,
        py: Python<'_>,
        stream_id: String,
        events: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
    ) -> PyResult<AppendTuple> {
        let expected = expected_version(expected)?;
        let events = new_events(events)?;
        self.detached(py, |this| {
            let result = this.store()?.append(&stream_id, expected, events)?;
            Ok(append_tuple(&result))
        })
    }

    fn append_multi(&self, py: Python<'_>, parts: &Bound<'_, PyAny>) -> PyResult<Vec<AppendTuple>> {
        let appends = stream_appends(py, parts)?;
        self.detached(py, |this| {
            let results = this.store()?.append_multi(appends)?;
            Ok(results.iter().map(append_tuple).collect())
        })
    }

    /// A conditional append (DCB) to `stream_id` (`None`: the default stream `$dcb`).
    #[pyo3(signature = (stream_id, events, expected, query_items, after))]
    fn append_with(
        &self,
        py: Python<'_>,
        stream_id: Option<String>,
        events: &Bound<'_, PyAny>,
        expected: &Bound<'_, PyAny>,
        query_items: QueryItems,
        after: u64,
    ) -> PyResult<AppendTuple> {
        let expected = expected_version(expected)?;
        let events = new_events(events)?;
        let condition = AppendCondition::new(
            query(query_items, "condition.query").map_err(|f| f.into_py_err(py))?,
            after,
        );
        let stream_id = stream_id.unwrap_or_else(|| DEFAULT_STREAM.to_owned());
        self.detached(py, |this| {
            let result = this
                .store()?
                .append_to_with(&stream_id, expected, events, condition)?;
            Ok(append_tuple(&result))
        })
    }

    /// `append_multi` with a condition (DCB).
    fn append_multi_with(
        &self,
        py: Python<'_>,
        parts: &Bound<'_, PyAny>,
        query_items: QueryItems,
        after: u64,
    ) -> PyResult<Vec<AppendTuple>> {
        let appends = stream_appends(py, parts)?;
        let condition = AppendCondition::new(
            query(query_items, "condition.query").map_err(|f| f.into_py_err(py))?,
            after,
        );
        self.detached(py, |this| {
            let results = this.store()?.append_multi_with(appends, condition)?;
            Ok(results.iter().map(append_tuple).collect())
        })
    }

    /// A cursor over the events after `after` matching the query.
    fn read_query(
        &self,
        py: Python<'_>,
        query_items: QueryItems,
        after: u64,
        limit: u64,
    ) -> PyResult<Cursor> {
        let query = query(query_items, "query").map_err(|f| f.into_py_err(py))?;
        self.cursor(py, Source::Query { query, after }, limit)
    }

    /// The events after `after` matching the query and the log's last position, as of one
    /// snapshot.
    fn read_query_with_head<'py>(
        &self,
        py: Python<'py>,
        query_items: QueryItems,
        after: u64,
    ) -> PyResult<(Bound<'py, pyo3::types::PyList>, u64)> {
        let query = query(query_items, "query").map_err(|f| f.into_py_err(py))?;
        let (events, head) = self.detached(py, |this| {
            Ok(this.store()?.read_query_with_head(&query, after)?)
        })?;
        let list = crate::event::EventBuilder::default().list(py, &events)?;
        Ok((list, head))
    }
    #[pyo3(signature = (stream_id, from_version, backwards, limit))]
    fn read_stream(
        &self,
        py: Python<'_>,
        stream_id: String,
        from_version: u64,
        backwards: bool,
        limit: u64,
    ) -> PyResult<Cursor> {
        let direction = if backwards {
            Direction::Backwards
        } else {
            Direction::Forwards
        };
        let next_version = match (from_version, direction) {
            (0, Direction::Forwards) => 1,
            (0, Direction::Backwards) => u64::MAX,
            (v, _) => v,
        };
        let source = Source::Stream {
            stream_id,
            next_version,
            direction,
        };
        self.cursor(py, source, limit)
    }

    fn read_all(&self, py: Python<'_>, from_position: u64, limit: u64) -> PyResult<Cursor> {
        let source = Source::All {
            next_position: from_position.max(1),
        };
        self.cursor(py, source, limit)
    }

    fn read_by_type(
        &self,
        py: Python<'_>,
        event_types: Vec<String>,
        recorded_from: i64,
        recorded_to: i64,
        from_position: u64,
        limit: u64,
    ) -> PyResult<Cursor> {
        if event_types.is_empty() {
            return Err(
                Fail::invalid("event_types is empty: give at least one type").into_py_err(py),
            );
        }
        let source = Source::ByType {
            types: event_types,
            recorded: recorded_from..recorded_to,
            next_position: from_position.max(1),
        };
        self.cursor(py, source, limit)
    }

    /// `(version, first_position, last_position)`, or `None` for a stream without events.
    fn stream_info(&self, py: Python<'_>, stream_id: String) -> PyResult<Option<(u64, u64, u64)>> {
        self.detached(py, |this| {
            let info = this.store()?.stream_info(&stream_id)?;
            Ok(info.map(|i| (i.version, i.first_position, i.last_position)))
        })
    }

    fn last_position(&self, py: Python<'_>) -> PyResult<u64> {
        self.detached(py, |this| Ok(this.store()?.last_position()?))
    }

    #[pyo3(signature = (from_position, stream_id, stream_prefix, event_types, query_items=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        from_position: u64,
        stream_id: Option<String>,
        stream_prefix: Option<String>,
        event_types: Vec<String>,
        query_items: QueryItems,
    ) -> PyResult<NativeSubscription> {
        // Checked first: `None` is no query filter (every event).
        let query_filter = match query_items {
            None => None,
            Some(items) => Some(query(Some(items), "query").map_err(|f| f.into_py_err(py))?),
        };
        let mut filter = match (stream_id, stream_prefix) {
            (Some(_), Some(_)) => {
                return Err(
                    Fail::invalid("give stream_id or stream_prefix, not both").into_py_err(py)
                )
            }
            (Some(stream), None) => SubscriptionFilter::stream(stream),
            (None, Some(prefix)) => SubscriptionFilter::stream_prefix(prefix),
            (None, None) => SubscriptionFilter::all(),
        };
        if !event_types.is_empty() {
            filter = filter.with_event_types(&event_types);
        }
        filter.query = query_filter;
        let subscription = self.detached(py, |this| {
            Ok(this.store()?.subscribe(from_position, filter)?)
        })?;
        Ok(NativeSubscription::new(subscription, self.closed.clone()))
    }

    fn register_projection(&self, py: Python<'_>, wasm: &[u8]) -> PyResult<StatusTuple> {
        self.detached(py, |this| {
            let runner = this.runner()?;
            let engine = strata_wasm::PluginEngine::shared()?;
            let projection = strata_wasm::WasmProjection::load(
                &engine,
                wasm,
                strata_wasm::PluginLimits::default(),
            )?;
            Ok(status_tuple(runner.register(Box::new(projection))?))
        })
    }

    fn projection_status(&self, py: Python<'_>, name: String) -> PyResult<StatusTuple> {
        self.projection_call(py, &name, |runner, name| runner.status(name))
    }

    fn catch_up(&self, py: Python<'_>, name: String) -> PyResult<StatusTuple> {
        self.projection_call(py, &name, |runner, name| runner.catch_up(name))
    }

    fn reset_projection(&self, py: Python<'_>, name: String) -> PyResult<StatusTuple> {
        self.projection_call(py, &name, |runner, name| runner.reset(name))
    }

    fn resume_projection(&self, py: Python<'_>, name: String) -> PyResult<StatusTuple> {
        self.projection_call(py, &name, |runner, name| runner.resume(name))
    }

    fn start_projections(&self, py: Python<'_>, idle_wake: f64) -> PyResult<()> {
        if !(idle_wake > 0.0 && idle_wake.is_finite()) {
            return Err(
                Fail::invalid(format!("idle_wake must be > 0 seconds, got {idle_wake}"))
                    .into_py_err(py),
            );
        }
        self.detached(py, |this| {
            let runner = this.runner()?;
            let mut projections = this.projections.lock();
            if projections.background.is_some() {
                return Err(Fail::new(
                    Kind::Misuse,
                    "the background projection runner is already running",
                ));
            }
            projections.background = Some(runner.start(Duration::from_secs_f64(idle_wake)));
            Ok(())
        })
    }

    fn stop_projections(&self, py: Python<'_>) -> PyResult<()> {
        self.detached(py, |this| {
            this.store()?;
            let background = this.projections.lock().background.take();
            drop(background);
            Ok(())
        })
    }

    fn query<'py>(
        &self,
        py: Python<'py>,
        name: String,
        request: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let answer = self.detached(py, |this| Ok(this.runner()?.query(&name, request)?))?;
        Ok(PyBytes::new(py, &answer))
    }

    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        self.detached(py, |this| Ok(this.store()?.metrics_text()?))
    }
}

/// `(stream_id, events, expected)` tuples as core appends.
fn stream_appends(py: Python<'_>, parts: &Bound<'_, PyAny>) -> PyResult<Vec<StreamAppend>> {
    let mut appends = Vec::new();
    for (index, part) in parts.try_iter()?.enumerate() {
        let part = part?;
        let (stream_id, events, expected): (String, Bound<'_, PyAny>, Bound<'_, PyAny>) =
            part.extract().map_err(|_| {
                Fail::invalid(format!(
                    "parts[{index}] must be a (stream_id, events, expected) tuple"
                ))
                .into_py_err(py)
            })?;
        appends.push(StreamAppend::new(
            stream_id,
            expected_version(&expected)?,
            new_events(&events)?,
        ));
    }
    Ok(appends)
}
