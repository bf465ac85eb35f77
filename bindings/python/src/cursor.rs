//! `strata.Cursor`: an iterator over stored events that reads a page per native call.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;
use strata::{Direction, Query, Store};

use crate::errors::Fail;
use crate::event::{Event, EventBuilder};

/// Events read from the store per page: one native call, one SQLite read, then a Python object
/// per event built without returning to Python in between.
pub const CURSOR_PAGE: usize = 1_000;

/// Where a cursor continues.
pub enum Source {
    Stream {
        stream_id: String,
        /// 0: no more events (went below version 1 backwards).
        next_version: u64,
        direction: Direction,
    },
    All {
        next_position: u64,
    },
    ByType {
        types: Vec<String>,
        recorded: Range<i64>,
        next_position: u64,
    },
    /// A DCB query: the events after `after` that match it.
    Query {
        query: Query,
        after: u64,
    },
}

impl Source {
    /// Reads the next page of at most `want` events and moves past it.
    fn read(&mut self, store: &Store, want: usize) -> Result<Vec<strata::Event>, Fail> {
        let page = match self {
            Source::Stream {
                stream_id,
                next_version,
                direction,
            } => {
                if *next_version == 0 {
                    return Ok(Vec::new());
                }
                let page = store.read_stream(stream_id, *next_version, *direction, want)?;
                if let Some(last) = page.last() {
                    *next_version = match direction {
                        Direction::Forwards => last.version + 1,
                        Direction::Backwards => last.version - 1,
                    };
                }
                page
            }
            Source::All { next_position } => {
                let page = store.read_all(*next_position, want)?;
                if let Some(last) = page.last() {
                    *next_position = last.position + 1;
                }
                page
            }
            Source::ByType {
                types,
                recorded,
                next_position,
            } => {
                let names: Vec<&str> = types.iter().map(String::as_str).collect();
                let page = store.read_by_type(&names, recorded.clone(), *next_position, want)?;
                if let Some(last) = page.last() {
                    *next_position = last.position + 1;
                }
                page
            }
            Source::Query { query, after } => {
                let page = store.read_query(query, *after, want)?;
                if let Some(last) = page.last() {
                    *after = last.position;
                }
                page
            }
        };
        Ok(page)
    }
}

/// An iterator over stored events, in the order the read asked for. Reads a page of events at a
/// time; :meth:`next_page` hands over a whole page as a list. Use it from one thread at a time;
/// it is also a context manager (:meth:`close` releases its page early).
#[pyclass(module = "strata", name = "Cursor")]
pub struct Cursor {
    store: Store,
    /// The store's closed flag: once the store is closed its cursors raise `ClosedError`.
    closed: Arc<AtomicBool>,
    source: Source,
    /// Events still to deliver (`u64::MAX`: no limit).
    remaining: u64,
    exhausted: bool,
    page: std::vec::IntoIter<Py<Event>>,
    builder: EventBuilder,
}

impl Cursor {
    /// A cursor with its first page read, so that bad arguments fail at the call that made it.
    pub fn open(
        py: Python<'_>,
        store: Store,
        closed: Arc<AtomicBool>,
        source: Source,
        limit: u64,
    ) -> PyResult<Cursor> {
        let mut cursor = Cursor {
            store,
            closed,
            source,
            remaining: if limit == 0 { u64::MAX } else { limit },
            exhausted: false,
            page: Vec::new().into_iter(),
            builder: EventBuilder::default(),
        };
        let first = cursor.read_page(py)?;
        cursor.page = first.into_iter();
        Ok(cursor)
    }

    /// The next page as Python events (empty once the read is exhausted).
    fn read_page(&mut self, py: Python<'_>) -> PyResult<Vec<Py<Event>>> {
        if self.closed.load(Ordering::SeqCst) {
            self.exhausted = true;
            return Err(Fail::closed("the store of this cursor").into_py_err(py));
        }
        if self.exhausted || self.remaining == 0 {
            self.exhausted = true;
            return Ok(Vec::new());
        }
        let want = self.remaining.min(CURSOR_PAGE as u64) as usize;
        let (store, source) = (&self.store, &mut self.source);
        let events = py
            .allow_threads(|| source.read(store, want))
            .map_err(|fail| fail.into_py_err(py))?;
        if events.len() < want {
            self.exhausted = true;
        }
        self.remaining -= events.len() as u64;
        events
            .iter()
            .map(|event| self.builder.event(py, event))
            .collect()
    }
}

#[pymethods]
impl Cursor {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<Event>>> {
        if let Some(event) = self.page.next() {
            return Ok(Some(event));
        }
        if self.exhausted {
            return Ok(None);
        }
        self.page = self.read_page(py)?.into_iter();
        Ok(self.page.next())
    }

    /// The events of the rest of the current page, or of the next page when it is used up, as
    /// a list (up to 1,000 events); an empty list once the read is exhausted.
    fn next_page<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rest: Vec<Py<Event>> = self.page.by_ref().collect();
        let events = if rest.is_empty() && !self.exhausted {
            self.read_page(py)?
        } else {
            rest
        };
        PyList::new(py, events)
    }

    /// Stops the read and releases its page. Closing twice does nothing.
    fn close(&mut self) {
        self.exhausted = true;
        self.page = Vec::new().into_iter();
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&mut self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }
}
