//! The native half of `strata.Subscription`: waits for events without the GIL and hands them
//! over in batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::Fail;
use crate::event::EventBuilder;

/// How long one wait runs without the GIL before it checks for signals (Ctrl-C) and for
/// `close()` from another thread.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// History from a position, then live events. Used through `strata.Subscription`.
#[pyclass(frozen, module = "strata._native")]
pub struct NativeSubscription {
    /// `None` once closed.
    subscription: Mutex<Option<strata::Subscription>>,
    builder: Mutex<EventBuilder>,
    /// The store's closed flag: after the store closes, the events committed before are still
    /// delivered, then `next_batch` reports the end.
    store_closed: Arc<AtomicBool>,
}

impl NativeSubscription {
    pub fn new(subscription: strata::Subscription, store_closed: Arc<AtomicBool>) -> Self {
        NativeSubscription {
            subscription: Mutex::new(Some(subscription)),
            builder: Mutex::new(EventBuilder::default()),
            store_closed,
        }
    }
}

enum Waited {
    Events(Vec<strata::Event>),
    Nothing,
    Ended,
}

#[pymethods]
impl NativeSubscription {
    /// Waits up to `timeout` seconds (`None`: until an event comes or the store closes) for
    /// the next event, then takes it and up to `max_count - 1` more that are already read.
    /// Returns `(events, ended)`: `ended` is true once the store was closed and every event
    /// committed before was delivered.
    #[pyo3(signature = (max_count, timeout=None))]
    fn next_batch<'py>(
        &self,
        py: Python<'py>,
        max_count: usize,
        timeout: Option<f64>,
    ) -> PyResult<(Bound<'py, PyList>, bool)> {
        if let Some(t) = timeout {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(
                    Fail::invalid(format!("timeout must be >= 0 seconds, got {t}")).into_py_err(py),
                );
            }
        }
        let max_count = max_count.max(1);
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
        loop {
            let slice = match deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(WAIT_SLICE),
                None => WAIT_SLICE,
            };
            let waited = py.allow_threads(|| -> Result<Waited, Fail> {
                let mut guard = self.subscription.lock();
                let subscription = guard
                    .as_mut()
                    .ok_or_else(|| Fail::closed("the subscription"))?;
                let Some(first) = subscription.next_timeout(slice)? else {
                    return Ok(if self.store_closed.load(Ordering::SeqCst) {
                        Waited::Ended
                    } else {
                        Waited::Nothing
                    });
                };
                let more = subscription.buffered().min(max_count - 1);
                let mut events = Vec::with_capacity(1 + more);
                events.push(first);
                for _ in 0..more {
                    match subscription.try_next()? {
                        Some(event) => events.push(event),
                        None => break,
                    }
                }
                Ok(Waited::Events(events))
            });
            match waited.map_err(|fail| fail.into_py_err(py))? {
                Waited::Events(events) => {
                    let list = self.builder.lock().list(py, &events)?;
                    return Ok((list, false));
                }
                Waited::Ended => return Ok((PyList::empty(py), true)),
                Waited::Nothing => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((PyList::empty(py), false));
            }
            py.check_signals()?;
        }
    }

    /// Releases the subscription; a `next_batch` waiting in another thread ends within 0.2 s.
    fn close(&self, py: Python<'_>) {
        let taken = py.allow_threads(|| self.subscription.lock().take());
        drop(taken);
    }
}
