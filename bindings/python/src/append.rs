//! Python events to append, turned into core `NewEvent`s under the GIL (the append itself runs
//! without it).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString, PyTuple};
use strata::{Bytes, ExpectedVersion, NewEvent, Query, QueryItem, Uuid};

use crate::errors::Fail;

static PACKB: GILOnceCell<PyObject> = GILOnceCell::new();

/// A payload: bytes-like values as they are, `None` as nothing, anything else as MessagePack
/// (msgpack's `packb`, bin for bytes).
fn payload(value: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<Bytes> {
    let py = value.py();
    if value.is_none() {
        return Ok(Bytes::new());
    }
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(bytes.as_bytes()));
    }
    if let Ok(array) = value.downcast::<PyByteArray>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    if value.is_instance_of::<pyo3::types::PyMemoryView>() {
        let bytes: Vec<u8> = py
            .get_type::<PyBytes>()
            .call1((value,))?
            .downcast_into::<PyBytes>()?
            .as_bytes()
            .to_vec();
        return Ok(Bytes::from(bytes));
    }
    let packb = PACKB.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("msgpack")?.getattr("packb")?.unbind())
    })?;
    let packed = packb.bind(py).call1((value,)).map_err(|error| {
        Fail::invalid(format!(
            "{} cannot be encoded as MessagePack: {error}",
            what()
        ))
        .into_py_err(py)
    })?;
    Ok(Bytes::copy_from_slice(
        packed.downcast::<PyBytes>()?.as_bytes(),
    ))
}

fn event_id(value: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<Option<Uuid>> {
    let py = value.py();
    if value.is_none() {
        return Ok(None);
    }
    let raw = if let Ok(bytes) = value.downcast::<PyBytes>() {
        bytes.clone()
    } else if let Ok(bytes) = value.getattr(intern!(py, "bytes")) {
        // a uuid.UUID
        bytes.downcast_into::<PyBytes>()?
    } else {
        return Err(
            Fail::invalid(format!("{} must be a uuid.UUID or 16 bytes", what())).into_py_err(py),
        );
    };
    let raw: [u8; 16] = raw.as_bytes().try_into().map_err(|_| {
        Fail::invalid(format!(
            "{}: an event id is 16 bytes, got {}",
            what(),
            raw.as_bytes().len()
        ))
        .into_py_err(py)
    })?;
    Ok(Some(Uuid::from_bytes(raw)))
}

fn event_type(value: &Bound<'_, PyAny>, index: usize) -> PyResult<String> {
    match value.downcast::<PyString>() {
        Ok(text) => Ok(text.to_str()?.to_owned()),
        Err(_) => Err(Fail::invalid(format!(
            "events[{index}]: the event type must be a str, got {}",
            value.repr()?
        ))
        .into_py_err(value.py())),
    }
}

/// The tags of event `index`: `None` for none, else an iterable of str (not a str itself).
/// Their lengths and number are checked by the store with the rest of the append.
fn tags(value: &Bound<'_, PyAny>, index: usize) -> PyResult<Vec<String>> {
    let py = value.py();
    if value.is_none() {
        return Ok(Vec::new());
    }
    if value.is_instance_of::<PyString>() {
        return Err(Fail::invalid(format!(
            "events[{index}].tags must be an iterable of str, not a str ({}): wrap one tag in a list",
            value.repr()?
        ))
        .into_py_err(py));
    }
    let items = value.try_iter().map_err(|_| {
        Fail::invalid(format!(
            "events[{index}].tags must be an iterable of str, got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
        .into_py_err(py)
    })?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item?;
        match item.downcast::<PyString>() {
            Ok(text) => out.push(text.to_str()?.to_owned()),
            Err(_) => {
                return Err(Fail::invalid(format!(
                    "events[{index}].tags[{i}] must be a str, got {}",
                    item.repr()?
                ))
                .into_py_err(py))
            }
        }
    }
    Ok(out)
}

/// One event: a `strata.NewEvent`, a `(type, data[, metadata[, id[, tags]]])` tuple, or a dict
/// with `type`, `data`, `metadata`, `id`, `tags`.
fn new_event<'py>(value: &Bound<'py, PyAny>, index: usize) -> PyResult<NewEvent> {
    let py = value.py();
    let none = py.None().into_bound(py);
    let (kind, data, metadata, id, tag_list) = if let Ok(tuple) = value.downcast::<PyTuple>() {
        if tuple.is_empty() || tuple.len() > 5 {
            return Err(Fail::invalid(format!(
                "events[{index}]: a tuple event is (type, data[, metadata[, id[, tags]]]), got {} items",
                tuple.len()
            ))
            .into_py_err(py));
        }
        let item = |i: usize| -> PyResult<Bound<'py, PyAny>> {
            if i < tuple.len() {
                tuple.get_item(i)
            } else {
                Ok(none.clone())
            }
        };
        (item(0)?, item(1)?, item(2)?, item(3)?, item(4)?)
    } else if let Ok(dict) = value.downcast::<PyDict>() {
        let get = |key: &str| -> PyResult<Bound<'py, PyAny>> {
            Ok(dict.get_item(key)?.unwrap_or_else(|| none.clone()))
        };
        let Some(kind) = dict.get_item("type")? else {
            return Err(
                Fail::invalid(format!("events[{index}]: a dict event needs a \"type\""))
                    .into_py_err(py),
            );
        };
        (
            kind,
            get("data")?,
            get("metadata")?,
            get("id")?,
            get("tags")?,
        )
    } else if let Ok(kind) = value.getattr(intern!(py, "event_type")) {
        // `tags` is optional on such objects (a NewEvent has it).
        let tag_list = match value.getattr(intern!(py, "tags")) {
            Ok(tags) => tags,
            Err(_) => none.clone(),
        };
        (
            kind,
            value.getattr(intern!(py, "data"))?,
            value.getattr(intern!(py, "metadata"))?,
            value.getattr(intern!(py, "event_id"))?,
            tag_list,
        )
    } else {
        return Err(Fail::invalid(format!(
            "events[{index}] is not an event (NewEvent, tuple or dict): {}",
            value.repr()?
        ))
        .into_py_err(py));
    };
    let mut event = NewEvent::new(
        event_type(&kind, index)?,
        payload(&data, &|| format!("events[{index}].data"))?,
    );
    event.metadata = payload(&metadata, &|| format!("events[{index}].metadata"))?;
    event.event_id = event_id(&id, &|| format!("events[{index}].id"))?;
    event.tags = tags(&tag_list, index)?;
    Ok(event)
}

/// Every event of an iterable.
pub fn new_events(events: &Bound<'_, PyAny>) -> PyResult<Vec<NewEvent>> {
    let mut out = Vec::with_capacity(events.len().unwrap_or(0));
    for (index, value) in events.try_iter()?.enumerate() {
        out.push(new_event(&value?, index)?);
    }
    Ok(out)
}

/// `ANY`, `NO_STREAM`, `STREAM_EXISTS` (their string values) or an exact version `>= 0`.
pub fn expected_version(value: &Bound<'_, PyAny>) -> PyResult<ExpectedVersion> {
    let py = value.py();
    if let Ok(text) = value.downcast::<PyString>() {
        match text.to_str()? {
            "any" => return Ok(ExpectedVersion::Any),
            "no_stream" => return Ok(ExpectedVersion::NoStream),
            "stream_exists" => return Ok(ExpectedVersion::StreamExists),
            _ => {}
        }
    } else if !value.is_instance_of::<pyo3::types::PyBool>() {
        if let Ok(version) = value.extract::<u64>() {
            return Ok(ExpectedVersion::Exact(version));
        }
    }
    Err(Fail::invalid(format!(
        "expected must be ANY, NO_STREAM, STREAM_EXISTS or a version >= 0, got {}",
        value.repr()?
    ))
    .into_py_err(py))
}

/// A query from the Python layer: `None` (every event) or `(types, tags)` pairs, one per item;
/// checked against the rules and limits (`InvalidArgumentError`).
pub fn query(items: Option<Vec<(Vec<String>, Vec<String>)>>, what: &str) -> Result<Query, Fail> {
    let Some(items) = items else {
        return Ok(Query::all());
    };
    let query = Query::from_items(
        items
            .into_iter()
            .map(|(types, tags)| QueryItem::types(types).with_tags(tags)),
    );
    query.validate().map_err(|error| {
        // Spelled as in Python.
        let message = error
            .to_string()
            .replace("Query::all()", "strata.Query.all()");
        Fail::invalid(format!("{what}: {message}"))
    })?;
    Ok(query)
}
