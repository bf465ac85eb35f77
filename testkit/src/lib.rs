//! `strata-testkit`: what strata's tests, benches and the CLI's demo share, kept out of the
//! `strata` crate so that an application linking strata builds none of it (no `rand`, no
//! cargo-running plugin builder).
//!
//! - [`workload`]: the seeded users-and-orders workload (a deterministic generator of appends).
//! - [`reference`]: the native reference folds that projections are checked against (per-user
//!   order statistics, events per type), as plain functions over events and as native
//!   [`strata::Projection`]s with the example plugins' state layout.
//! - [`examples`]: builds the example WASM plugins of this repository (`plugins/examples`) with
//!   cargo; needs a checkout of the repository.
//! - [`setup`]: stores in temporary directories, test options, simple events.
//! - [`cli`]: running the `strata` binary in tests and reading its output.
//!
//! Used as a dev-dependency by `strata` (core), `strata-wasm` and the bindings, and as a
//! dependency by the benches and the CLI (whose `demo` is the workload and the examples).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod examples;
pub mod reference;
pub mod setup;
pub mod workload;
