#![deny(unsafe_code)]
//! `strata._native`: the native module of strata's Python package, PyO3 over the `strata` core
//! crate (and `strata-wasm` for projections). Events are read a page per call and built into
//! Python objects here, without a round trip through Python per event; every call that waits
//! (an append's fsync, a read, a subscription) releases the GIL. The Python side
//! (`strata/__init__.py`) adds keyword arguments, value types, exceptions and asyncio.

mod append;
mod cursor;
mod errors;
mod event;
mod store;
mod subscription;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<event::Event>()?;
    m.add_class::<cursor::Cursor>()?;
    m.add_class::<store::NativeStore>()?;
    m.add_class::<subscription::NativeSubscription>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("CURSOR_PAGE", cursor::CURSOR_PAGE)?;
    Ok(())
}
