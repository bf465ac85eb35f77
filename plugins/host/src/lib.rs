//! `strata-wasm`: strata projections written as WebAssembly components.
//!
//! A plugin is a component of the `strata:projection/projection` world defined in
//! `wit/strata.wit` (the `strata-plugin` crate makes writing one in Rust short). This crate
//! runs such components with wasmtime behind the [`strata::Projection`] trait, so the
//! projection runner treats them like native projections.
//!
//! ```no_run
//! use std::sync::Arc;
//! use strata::{MemoryState, Projection, ProjectionState, StateLimits};
//! use strata_wasm::{PluginEngine, PluginLimits, WasmProjection};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = PluginEngine::shared()?;
//! let wasm = std::fs::read("user_stats.wasm")?;
//! let mut projection = WasmProjection::load(&engine, &wasm, PluginLimits::default())?;
//! let info = projection.describe()?;
//!
//! let committed = Arc::new(MemoryState::new());
//! let mut state = ProjectionState::for_batch(committed.clone(), StateLimits::default());
//! projection.apply(&[/* events of one batch */], &mut state)?;
//! committed.commit(state.take_writes());
//! # Ok(()) }
//! ```
//!
//! - One [`PluginEngine`] per process ([`PluginEngine::shared`] or [`PluginEngine::new`] with
//!   a cache directory): it owns the compiler settings, the on-disk cache of compiled
//!   components and the epoch ticker thread that enforces time budgets.
//! - [`WasmProjection::load`] compiles (or loads from cache) and validates a plugin; see its
//!   documentation for the sandbox and for how failures map onto
//!   [`strata::ProjectionError`].
//! - The example plugins of this repository are built by `strata-testkit`
//!   (`strata_testkit::examples::build_and_locate("user-stats")`), not by this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bindings;
mod engine;
mod output;
mod projection;
mod sandbox;

pub use engine::{CacheDir, CacheStats, EngineError, EngineOptions, LoadReport, PluginEngine};
pub use projection::{PluginLimits, WasmProjection};
