//! `strata.Event`: an immutable stored event, built in native code a page at a time.

use std::collections::HashMap;

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// A stored event (immutable). ``data`` and ``metadata`` are the stored bytes (MessagePack by
/// convention: :meth:`decode`); ``recorded_at`` is unix microseconds (UTC).
#[pyclass(frozen, module = "strata", name = "Event")]
pub struct Event {
    /// Its global position (1, 2, ...): commit order.
    #[pyo3(get)]
    position: u64,
    /// The stream it belongs to.
    #[pyo3(get)]
    stream_id: Py<PyString>,
    /// Its version in the stream (the stream's first event is 1).
    #[pyo3(get)]
    version: u64,
    /// Its type, such as ``"order_created"``.
    #[pyo3(get)]
    event_type: Py<PyString>,
    id: [u8; 16],
    /// When the writer stored it, unix microseconds (UTC).
    #[pyo3(get)]
    recorded_at: i64,
    /// Its payload bytes.
    #[pyo3(get)]
    data: Py<PyBytes>,
    /// Its metadata bytes (``b""`` when none).
    #[pyo3(get)]
    metadata: Py<PyBytes>,
    /// Its tags (DCB), a tuple of str sorted by their UTF-8 bytes, without repeats (``()``
    /// when it has none).
    #[pyo3(get)]
    tags: Py<PyTuple>,
}

static UNPACKB: GILOnceCell<PyObject> = GILOnceCell::new();
static UUID_CLASS: GILOnceCell<PyObject> = GILOnceCell::new();

fn imported(
    py: Python<'_>,
    cell: &'static GILOnceCell<PyObject>,
    module: &str,
    name: &str,
) -> PyResult<PyObject> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.clone_ref(py))
}

/// MessagePack bytes decoded to Python values (msgpack's `unpackb`: str as str, bin as bytes).
pub fn unpack(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<PyObject> {
    let unpackb = imported(py, &UNPACKB, "msgpack", "unpackb")?;
    unpackb.call1(py, (data,))
}

#[pymethods]
impl Event {
    /// The caller's idempotency key, a :class:`uuid.UUID`.
    #[getter]
    fn event_id(&self, py: Python<'_>) -> PyResult<PyObject> {
        let uuid = imported(py, &UUID_CLASS, "uuid", "UUID")?;
        let kwargs = [("bytes", PyBytes::new(py, &self.id))].into_py_dict(py)?;
        uuid.call(py, (), Some(&kwargs))
    }

    /// ``data`` decoded from MessagePack to Python values (``None`` when ``data`` is empty).
    fn decode(&self, py: Python<'_>) -> PyResult<PyObject> {
        if self.data.bind(py).as_bytes().is_empty() {
            return Ok(py.None());
        }
        unpack(py, self.data.bind(py))
    }

    /// ``metadata`` decoded from MessagePack (``None`` when empty).
    fn decode_metadata(&self, py: Python<'_>) -> PyResult<PyObject> {
        if self.metadata.bind(py).as_bytes().is_empty() {
            return Ok(py.None());
        }
        unpack(py, self.metadata.bind(py))
    }

    /// Whether the event carries ``tag``.
    fn has_tag(&self, py: Python<'_>, tag: &str) -> PyResult<bool> {
        for item in self.tags.bind(py).iter() {
            if item.downcast::<PyString>()?.to_str()? == tag {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let data = self.data.bind(py).as_bytes();
        let shown = PyBytes::new(py, &data[..data.len().min(32)]).repr()?;
        let more = if data.len() > 32 { "..." } else { "" };
        let tags = self.tags.bind(py);
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(", tags={}", tags.repr()?)
        };
        Ok(format!(
            "Event(position={}, stream_id={}, version={}, event_type={}, data={shown}{more} ({} bytes){tags})",
            self.position,
            self.stream_id.bind(py).repr()?,
            self.version,
            self.event_type.bind(py).repr()?,
            data.len(),
        ))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<PyObject> {
        let py = other.py();
        let Ok(other) = other.downcast::<Event>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let equal = self.position == other.position
            && self.version == other.version
            && self.id == other.id
            && self.recorded_at == other.recorded_at
            && self.stream_id.bind(py).to_str()? == other.stream_id.bind(py).to_str()?
            && self.event_type.bind(py).to_str()? == other.event_type.bind(py).to_str()?
            && self.data.bind(py).as_bytes() == other.data.bind(py).as_bytes()
            && self.metadata.bind(py).as_bytes() == other.metadata.bind(py).as_bytes()
            && self.tags.bind(py).eq(other.tags.bind(py))?;
        Ok(match op {
            CompareOp::Eq => equal.into_pyobject(py)?.to_owned().into_any().unbind(),
            CompareOp::Ne => (!equal).into_pyobject(py)?.to_owned().into_any().unbind(),
            _ => py.NotImplemented(),
        })
    }

    fn __hash__(&self) -> u64 {
        // Event ids are unique store-wide; position distinguishes stores sharing ids.
        let id = u64::from_le_bytes(self.id[..8].try_into().expect("8 bytes"));
        id ^ self.position.rotate_left(32)
    }
}

use pyo3::types::IntoPyDict;

/// Builds Python events from core events, sharing one `str` object per distinct stream id and
/// event type (they repeat from event to event; creating each anew was most of the cost).
#[derive(Default)]
pub struct EventBuilder {
    strings: HashMap<Box<str>, Py<PyString>>,
}

/// Distinct strings kept between pages before the table is emptied (bounds its memory).
const MAX_SHARED_STRINGS: usize = 4_096;

impl EventBuilder {
    fn string(&mut self, py: Python<'_>, value: &str) -> Py<PyString> {
        if let Some(shared) = self.strings.get(value) {
            return shared.clone_ref(py);
        }
        if self.strings.len() >= MAX_SHARED_STRINGS {
            self.strings.clear();
        }
        let made = PyString::new(py, value).unbind();
        self.strings.insert(value.into(), made.clone_ref(py));
        made
    }

    pub fn event(&mut self, py: Python<'_>, event: &strata::Event) -> PyResult<Py<Event>> {
        let value = Event {
            position: event.position,
            stream_id: self.string(py, &event.stream_id),
            version: event.version,
            event_type: self.string(py, &event.event_type),
            id: *event.event_id.as_bytes(),
            recorded_at: event.recorded_at,
            data: PyBytes::new(py, &event.data).unbind(),
            metadata: PyBytes::new(py, &event.metadata).unbind(),
            tags: PyTuple::new(py, event.tags.iter().map(String::as_str))?.unbind(),
        };
        Py::new(py, value)
    }

    /// A page of events as a Python list.
    pub fn list<'py>(
        &mut self,
        py: Python<'py>,
        events: &[strata::Event],
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for event in events {
            list.append(self.event(py, event)?)?;
        }
        Ok(list)
    }
}
