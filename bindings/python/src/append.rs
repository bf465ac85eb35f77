//! Python events to append, turned into core `NewEvent`s under the GIL (the append itself runs
//! without it).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString, PyTuple};
use strata::{Bytes, ExpectedVersion, NewEvent, Uuid};

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

/// One event: a `strata.NewEvent`, a `(type, data[, metadata[, id]])` tuple, or a dict with
/// `type`, `data`, `metadata`, `id`.
fn new_event<'py>(value: &Bound<'py, PyAny>, index: usize) -> PyResult<NewEvent> {
    let py = value.py();
    let none = py.None().into_bound(py);
    let (kind, data, metadata, id) = if let Ok(tuple) = value.downcast::<PyTuple>() {
        if tuple.is_empty() || tuple.len() > 4 {
            return Err(Fail::invalid(format!(
                "events[{index}]: a tuple event is (type, data[, metadata[, id]]), got {} items",
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
        (item(0)?, item(1)?, item(2)?, item(3)?)
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
        (kind, get("data")?, get("metadata")?, get("id")?)
    } else if let Ok(kind) = value.getattr(intern!(py, "event_type")) {
        (
            kind,
            value.getattr(intern!(py, "data"))?,
            value.getattr(intern!(py, "metadata"))?,
            value.getattr(intern!(py, "event_id"))?,
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
