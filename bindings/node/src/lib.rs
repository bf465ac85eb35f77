//! The native half of strata's Node.js package (napi-rs), over the core crate and strata-wasm.
//!
//! This layer is private to the package: `index.js` wraps it in the public API (async
//! iterators, `Error` subclasses, MessagePack). Its shape is chosen for few boundary crossings:
//! an append is one call with the whole batch packed in a few buffers, a read is one call per
//! page answering columns (typed arrays, one payload buffer, a table of distinct strings)
//! rather than one JavaScript object per event. Every call that may touch the disk or wait
//! (open, append, read, subscription wait, projection work, close) runs on the tokio blocking
//! pool and answers a promise, so the event loop never waits for an fsync.

mod error;
mod page;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Float64Array, Uint32Array};
use napi_derive::napi;
use parking_lot::Mutex;
use strata::{
    BucketWidth, Direction, Durability, ExpectedVersion, NewEvent, Options, ProjectionPhase,
    ProjectionRunner, ProjectionStatus, RunnerOptions, Store, Subscription, SubscriptionFilter,
    Uuid,
};

use crate::error::{joined, Fail};
use crate::page::EventPage;

/// Runs `work` on the blocking pool and turns its failure into a rejected promise.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> napi::Result<T> {
    joined(tokio::task::spawn_blocking(work).await)
}

/// Options of `open` (every field optional; the defaults are the core's).
#[napi(object)]
pub struct OpenOptions {
    /// `"durable"` (default: an append returns after fsync) or `"fast"`.
    pub durability: Option<String>,
    /// `"hour"`, `"day"`, `"week"` or `"month"`; fixed when the store is created.
    pub bucket_width: Option<String>,
    /// Bytes of the in-process event cache (0 turns it off).
    pub cache_bytes: Option<f64>,
    /// Read connections kept open.
    pub read_connections: Option<u32>,
    /// Largest data + metadata of one event, in bytes.
    pub max_payload_bytes: Option<u32>,
    /// Most events in one append.
    pub max_events_per_append: Option<u32>,
    /// How long to wait for another process's write lock, in milliseconds.
    pub busy_timeout_ms: Option<u32>,
}

fn core_options(options: Option<OpenOptions>) -> Result<Options, Fail> {
    let mut core = Options::default();
    let Some(options) = options else {
        return Ok(core);
    };
    if let Some(durability) = options.durability {
        core.durability = match durability.as_str() {
            "durable" => Durability::Durable,
            "fast" => Durability::Fast,
            other => {
                return Err(Fail::invalid(format!(
                    "durability must be \"durable\" or \"fast\", got {other:?}"
                )))
            }
        };
    }
    if let Some(width) = options.bucket_width {
        core.bucket_width = Some(BucketWidth::parse(&width).ok_or_else(|| {
            Fail::invalid(format!(
                "bucketWidth must be \"hour\", \"day\", \"week\" or \"month\", got {width:?}"
            ))
        })?);
    }
    if let Some(bytes) = options.cache_bytes {
        core.cache_bytes = whole_number(bytes, "cacheBytes")? as usize;
    }
    if let Some(count) = options.read_connections {
        core.read_connections = count as usize;
    }
    if let Some(bytes) = options.max_payload_bytes {
        core.max_payload_bytes = bytes as usize;
    }
    if let Some(count) = options.max_events_per_append {
        core.max_events_per_append = count as usize;
    }
    if let Some(ms) = options.busy_timeout_ms {
        core.busy_timeout_ms = ms;
    }
    Ok(core)
}

/// A JavaScript number that must be a whole number in 0..=2^53.
fn whole_number(value: f64, what: &str) -> Result<u64, Fail> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if (0.0..=MAX_SAFE).contains(&value) && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(Fail::invalid(format!(
            "{what} must be a whole number from 0 to 2^53-1, got {value}"
        )))
    }
}

/// The store and its projection runner, shared by the handle and its subscriptions.
struct Shared {
    /// `None` once closed.
    store: Mutex<Option<Store>>,
    /// Created by the first projection call.
    runner: Mutex<Option<ProjectionRunner>>,
}

impl Shared {
    fn store(&self) -> Result<Store, Fail> {
        self.store.lock().clone().ok_or_else(Fail::closed)
    }

    fn runner(&self) -> Result<ProjectionRunner, Fail> {
        let store = self.store()?;
        let mut runner = self.runner.lock();
        if let Some(runner) = &*runner {
            return Ok(runner.clone());
        }
        let created = ProjectionRunner::new(&store, RunnerOptions::default())?;
        *runner = Some(created.clone());
        Ok(created)
    }
}

/// Opens (or creates) the store file at `path`.
#[napi]
pub async fn open_store(path: String, options: Option<OpenOptions>) -> napi::Result<NativeStore> {
    let options = core_options(options).map_err(napi::Error::from)?;
    let store = blocking(move || Ok(Store::open(&path, options)?)).await?;
    Ok(NativeStore {
        shared: Arc::new(Shared {
            store: Mutex::new(Some(store)),
            runner: Mutex::new(None),
        }),
    })
}

/// A batch of events for one append, packed by `index.js`: event `i` has type
/// `types[typeIndex[i]]`, data `payload[offsets[2i]..offsets[2i+1]]` and metadata
/// `payload[offsets[2i+1]..offsets[2i+2]]`.
#[napi(object)]
pub struct AppendBatch {
    pub types: Vec<String>,
    pub type_index: Uint32Array,
    pub payload: Buffer,
    pub offsets: Float64Array,
    /// One id per event (a UUID string, or null to let the store generate one); absent: all
    /// generated.
    pub event_ids: Option<Vec<Option<String>>>,
}

/// What one append stored.
#[napi(object)]
pub struct AppendOutcome {
    pub stream_id: String,
    pub first_position: f64,
    pub last_position: f64,
    pub last_version: f64,
    /// The event ids in order, 36 characters each, concatenated (one string for the batch).
    pub event_ids: String,
    pub already_stored: bool,
}

fn unpack_batch(batch: AppendBatch) -> Result<Vec<NewEvent>, Fail> {
    let count = batch.type_index.len();
    if batch.offsets.len() != 2 * count + 1 {
        return Err(Fail::invalid(
            "append batch: offsets do not match the events",
        ));
    }
    if let Some(ids) = &batch.event_ids {
        if ids.len() != count {
            return Err(Fail::invalid(
                "append batch: event ids do not match the events",
            ));
        }
    }
    // One copy of the payload; each event's data and metadata are slices of it.
    let payload = strata::Bytes::copy_from_slice(&batch.payload);
    let offset = |i: usize| -> Result<usize, Fail> {
        let at = batch.offsets[i];
        if at.fract() != 0.0 || !(0.0..=payload.len() as f64).contains(&at) {
            return Err(Fail::invalid(
                "append batch: an offset lies outside the payload",
            ));
        }
        Ok(at as usize)
    };
    let mut events = Vec::with_capacity(count);
    for i in 0..count {
        let event_type = batch
            .types
            .get(batch.type_index[i] as usize)
            .ok_or_else(|| Fail::invalid("append batch: a type index is out of range"))?;
        let (start, middle, end) = (offset(2 * i)?, offset(2 * i + 1)?, offset(2 * i + 2)?);
        if start > middle || middle > end {
            return Err(Fail::invalid("append batch: offsets go backwards"));
        }
        let mut event = NewEvent::new(event_type.clone(), payload.slice(start..middle))
            .with_metadata(payload.slice(middle..end));
        if let Some(Some(id)) = batch.event_ids.as_ref().map(|ids| &ids[i]) {
            let id = Uuid::parse_str(id).map_err(|e| {
                Fail::invalid(format!("event {i}: eventId {id:?} is not a UUID: {e}"))
            })?;
            event = event.with_id(id);
        }
        events.push(event);
    }
    Ok(events)
}

/// `expected` from `index.js`: -1 any, -2 no stream, -3 stream exists, n >= 0 exactly n.
fn expected_version(expected: f64) -> Result<ExpectedVersion, Fail> {
    Ok(if expected == -1.0 {
        ExpectedVersion::Any
    } else if expected == -2.0 {
        ExpectedVersion::NoStream
    } else if expected == -3.0 {
        ExpectedVersion::StreamExists
    } else {
        ExpectedVersion::Exact(whole_number(expected, "expectedVersion")?)
    })
}

/// A projection's status.
#[napi(object)]
pub struct ProjectionInfo {
    pub name: String,
    pub version: u32,
    /// The event types it reads (empty: all).
    pub event_types: Vec<String>,
    /// The last position folded into its state.
    pub checkpoint: f64,
    /// Events between the checkpoint and the head of the log.
    pub lag: f64,
    /// `catching_up`, `live`, `faulted`, `rebuilding` or `retired`.
    pub phase: String,
    /// When faulted: the position of the event it failed on, and why.
    pub fault_position: Option<f64>,
    pub fault_message: Option<String>,
}

impl From<ProjectionStatus> for ProjectionInfo {
    fn from(status: ProjectionStatus) -> ProjectionInfo {
        let (fault_position, fault_message) = match &status.phase {
            ProjectionPhase::Faulted { position, message } => {
                (Some(*position as f64), Some(message.clone()))
            }
            _ => (None, None),
        };
        ProjectionInfo {
            phase: status.phase.as_str().to_owned(),
            name: status.name,
            version: status.version,
            event_types: status.event_types,
            checkpoint: status.checkpoint as f64,
            lag: status.lag as f64,
            fault_position,
            fault_message,
        }
    }
}

/// An open store.
#[napi]
pub struct NativeStore {
    shared: Arc<Shared>,
}

#[napi]
impl NativeStore {
    /// Appends a packed batch to `stream_id`; see `expected_version` for `expected`.
    #[napi]
    pub async fn append(
        &self,
        stream_id: String,
        expected: f64,
        batch: AppendBatch,
    ) -> napi::Result<AppendOutcome> {
        let shared = self.shared.clone();
        blocking(move || {
            let expected = expected_version(expected)?;
            let events = unpack_batch(batch)?;
            let store = shared.store()?;
            let result = store.append(&stream_id, expected, events)?;
            let mut ids = String::with_capacity(36 * result.event_ids.len());
            for id in &result.event_ids {
                ids.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
            }
            Ok(AppendOutcome {
                stream_id: result.stream_id,
                first_position: result.first_position as f64,
                last_position: result.last_position as f64,
                last_version: result.last_version as f64,
                event_ids: ids,
                already_stored: result.already_stored,
            })
        })
        .await
    }

    /// Up to `max_count` events of `stream_id` from version `from_version` (inclusive).
    #[napi]
    pub async fn read_stream(
        &self,
        stream_id: String,
        from_version: f64,
        backwards: bool,
        max_count: u32,
    ) -> napi::Result<EventPage> {
        let shared = self.shared.clone();
        blocking(move || {
            let from = if from_version == f64::INFINITY {
                u64::MAX
            } else {
                whole_number(from_version, "fromVersion")?
            };
            let direction = if backwards {
                Direction::Backwards
            } else {
                Direction::Forwards
            };
            let events =
                shared
                    .store()?
                    .read_stream(&stream_id, from, direction, max_count as usize)?;
            Ok(EventPage::new(&events))
        })
        .await
    }

    /// Up to `max_count` events from position `from` (inclusive), in position order.
    #[napi]
    pub async fn read_all(&self, from: f64, max_count: u32) -> napi::Result<EventPage> {
        let shared = self.shared.clone();
        blocking(move || {
            let from = whole_number(from, "fromPosition")?;
            let events = shared.store()?.read_all(from, max_count as usize)?;
            Ok(EventPage::new(&events))
        })
        .await
    }

    /// Up to `max_count` events of the given types recorded in `[recorded_from, recorded_to)`
    /// (unix microseconds), from position `from`.
    #[napi]
    pub async fn read_by_type(
        &self,
        event_types: Vec<String>,
        recorded_from: f64,
        recorded_to: f64,
        from: f64,
        max_count: u32,
    ) -> napi::Result<EventPage> {
        let shared = self.shared.clone();
        blocking(move || {
            let from = whole_number(from, "fromPosition")?;
            let clamp = |t: f64| t.clamp(i64::MIN as f64, i64::MAX as f64) as i64;
            let types: Vec<&str> = event_types.iter().map(String::as_str).collect();
            let events = shared.store()?.read_by_type(
                &types,
                clamp(recorded_from)..clamp(recorded_to),
                from,
                max_count as usize,
            )?;
            Ok(EventPage::new(&events))
        })
        .await
    }

    /// The position of the last committed event (0 for an empty store), other processes'
    /// commits included.
    #[napi]
    pub async fn last_position(&self) -> napi::Result<f64> {
        let shared = self.shared.clone();
        blocking(move || Ok(shared.store()?.last_position()? as f64)).await
    }

    /// The current version of `stream_id` (0 when it has no events).
    #[napi]
    pub async fn stream_version(&self, stream_id: String) -> napi::Result<f64> {
        let shared = self.shared.clone();
        blocking(move || {
            let info = shared.store()?.stream_info(&stream_id)?;
            Ok(info.map_or(0.0, |info| info.version as f64))
        })
        .await
    }

    /// Subscribes from position `from` (inclusive) to the events that pass the filter.
    #[napi]
    pub fn subscribe(
        &self,
        from: f64,
        stream: Option<String>,
        stream_prefix: Option<String>,
        event_types: Option<Vec<String>>,
    ) -> napi::Result<NativeSubscription> {
        let subscription = (|| {
            let from = whole_number(from, "fromPosition")?;
            let mut filter = match (stream, stream_prefix) {
                (Some(_), Some(_)) => {
                    return Err(Fail::invalid(
                        "give either stream or streamPrefix, not both",
                    ))
                }
                (Some(stream), None) => SubscriptionFilter::stream(stream),
                (None, Some(prefix)) => SubscriptionFilter::stream_prefix(prefix),
                (None, None) => SubscriptionFilter::all(),
            };
            if let Some(types) = event_types {
                filter = filter.with_event_types(&types);
            }
            Ok(self.shared.store()?.subscribe(from, filter)?)
        })()?;
        Ok(NativeSubscription {
            shared: self.shared.clone(),
            subscription: Arc::new(Mutex::new(Some(subscription))),
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Loads a WebAssembly projection component and registers it with this store's runner.
    #[napi]
    pub async fn register_projection(&self, wasm: Buffer) -> napi::Result<ProjectionInfo> {
        let shared = self.shared.clone();
        let wasm = wasm.to_vec();
        blocking(move || {
            let runner = shared.runner()?;
            let engine = strata_wasm::PluginEngine::shared()?;
            let projection = strata_wasm::WasmProjection::load(
                &engine,
                &wasm,
                strata_wasm::PluginLimits::default(),
            )?;
            Ok(runner.register(Box::new(projection))?.into())
        })
        .await
    }

    /// Folds the events not yet folded into the projection `name`.
    #[napi]
    pub async fn catch_up(&self, name: String) -> napi::Result<ProjectionInfo> {
        let shared = self.shared.clone();
        blocking(move || Ok(shared.runner()?.catch_up(&name)?.into())).await
    }

    /// The stored status of the projection `name`.
    #[napi]
    pub async fn projection_status(&self, name: String) -> napi::Result<ProjectionInfo> {
        let shared = self.shared.clone();
        blocking(move || Ok(shared.runner()?.status(&name)?.into())).await
    }

    /// Answers `request` from the projection's committed state.
    #[napi]
    pub async fn query(&self, name: String, request: Buffer) -> napi::Result<Buffer> {
        let shared = self.shared.clone();
        let request = request.to_vec();
        let response = blocking(move || Ok(shared.runner()?.query(&name, &request)?)).await?;
        Ok(response.into())
    }

    /// Waits for queued appends, stops the writer and the projection runner. Idempotent.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let shared = self.shared.clone();
        blocking(move || {
            let runner = shared.runner.lock().take();
            drop(runner);
            if let Some(store) = shared.store.lock().take() {
                store.close();
            }
            Ok(())
        })
        .await
    }

    /// Whether `close` has been called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.shared.store.lock().is_none()
    }
}

/// A subscription; `index.js` makes it an async iterator.
#[napi]
pub struct NativeSubscription {
    shared: Arc<Shared>,
    /// Taken by the blocking pool while a page is awaited; `None` once closed.
    subscription: Arc<Mutex<Option<Subscription>>>,
    /// Set by `close` without waiting for the lock that a pending `next_page` holds.
    closed: Arc<AtomicBool>,
}

#[napi]
impl NativeSubscription {
    /// Waits up to `wait_ms` for events and answers up to `max_count` of them (an empty page
    /// when none came), or `null` once the subscription or its store is closed and every
    /// committed event was delivered.
    #[napi]
    pub async fn next_page(&self, max_count: u32, wait_ms: u32) -> napi::Result<Option<EventPage>> {
        let shared = self.shared.clone();
        let subscription = self.subscription.clone();
        let closed = self.closed.clone();
        blocking(move || {
            let mut guard = subscription.lock();
            if closed.load(Ordering::Acquire) {
                guard.take();
            }
            let Some(subscription) = guard.as_mut() else {
                return Ok(None);
            };
            let max_count = (max_count as usize).max(1);
            let mut events = Vec::new();
            if let Some(first) = subscription.next_timeout(Duration::from_millis(wait_ms.into()))? {
                events.push(first);
                // The rest of the page already read; no further SQLite read.
                while events.len() < max_count && subscription.buffered() > 0 {
                    match subscription.try_next()? {
                        Some(event) => events.push(event),
                        None => break,
                    }
                }
            }
            let store_closed = shared.store.lock().is_none();
            if events.is_empty() && (store_closed || closed.load(Ordering::Acquire)) {
                guard.take();
                return Ok(None);
            }
            Ok(Some(EventPage::new(&events)))
        })
        .await
    }

    /// Ends the subscription: a pending `next_page` answers `null` within its wait.
    #[napi]
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(mut guard) = self.subscription.try_lock() {
            guard.take();
        }
    }
}
