//! Host bindings generated from the contract, one module per supported version:
//! `wit/strata.wit` (0.2.0, the current one) and `wit/0.1.0/strata.wit` (components built
//! before events carried tags). Both versions' imports are added to one linker; the version a
//! component was built against is found from its exports (see `projection.rs`).
//!
//! Every import is trappable: the host's own functions check the call's time budget and trap
//! when it is spent, so that time spent in the host counts against the plugin's budget.

/// `strata:projection@0.2.0`.
pub(crate) mod current {
    wasmtime::component::bindgen!({
        world: "projection",
        path: "../../wit",
        imports: { default: trappable },
    });
}

/// `strata:projection@0.1.0`: events without tags; the imports are the same functions.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        world: "projection",
        path: "../../wit/0.1.0",
        imports: { default: trappable },
    });
}

use strata::Event;
use wasmtime::component::{InstancePre, Linker};
use wasmtime::AsContextMut;

pub(crate) use current::strata::projection::types::Info;

/// The contract versions this host runs, newest first, as they appear in export names.
pub(crate) const VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];

/// Adds the imports of every supported version to `linker`.
pub(crate) fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: 'static
        + current::strata::projection::state::Host
        + current::strata::projection::log::Host
        + current::strata::projection::types::Host
        + v0_1::strata::projection::state::Host
        + v0_1::strata::projection::log::Host
        + v0_1::strata::projection::types::Host,
{
    use wasmtime::component::HasSelf;
    current::Projection::add_to_linker::<T, HasSelf<T>>(linker, |data| data)?;
    v0_1::Projection::add_to_linker::<T, HasSelf<T>>(linker, |data| data)
}

/// A component ready to instantiate, with the contract version it exports.
pub(crate) enum ContractPre<T: 'static> {
    Current(current::ProjectionPre<T>),
    V0_1(v0_1::ProjectionPre<T>),
}

impl<T: 'static> ContractPre<T> {
    /// Finds which version's exports `pre` has: the current one first, then the older ones.
    /// The error names what every version was missing.
    pub(crate) fn new(pre: InstancePre<T>) -> wasmtime::Result<Self> {
        let current_error = match current::ProjectionPre::new(pre.clone()) {
            Ok(pre) => return Ok(ContractPre::Current(pre)),
            Err(error) => error,
        };
        match v0_1::ProjectionPre::new(pre) {
            Ok(pre) => Ok(ContractPre::V0_1(pre)),
            Err(old_error) => Err(wasmtime::format_err!(
                "it exports neither strata:projection@{} ({current_error:#}) nor @{} ({old_error:#})",
                VERSIONS[0],
                VERSIONS[1]
            )),
        }
    }

    /// The contract version the component was built against.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            ContractPre::Current(_) => VERSIONS[0],
            ContractPre::V0_1(_) => VERSIONS[1],
        }
    }

    pub(crate) fn instantiate(
        &self,
        store: impl AsContextMut<Data = T>,
    ) -> wasmtime::Result<Contract> {
        Ok(match self {
            ContractPre::Current(pre) => Contract::Current(pre.instantiate(store)?),
            ContractPre::V0_1(pre) => Contract::V0_1(pre.instantiate(store)?),
        })
    }
}

/// A live instance's exports, at its contract version.
pub(crate) enum Contract {
    Current(current::Projection),
    V0_1(v0_1::Projection),
}

impl Contract {
    pub(crate) fn describe<T: 'static>(
        &self,
        store: impl AsContextMut<Data = T>,
    ) -> wasmtime::Result<Info> {
        match self {
            Contract::Current(p) => p.call_describe(store),
            Contract::V0_1(p) => {
                let info = p.call_describe(store)?;
                Ok(Info {
                    name: info.name,
                    version: info.version,
                    event_types: info.event_types,
                })
            }
        }
    }

    /// Converts `events` to the instance's version of the `event` record and calls `apply`.
    pub(crate) fn apply<T: 'static>(
        &self,
        store: impl AsContextMut<Data = T>,
        events: &[Event],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Contract::Current(p) => {
                let events: Vec<_> = events.iter().map(to_current).collect();
                p.call_apply(store, &events)
            }
            Contract::V0_1(p) => {
                let events: Vec<_> = events.iter().map(to_v0_1).collect();
                p.call_apply(store, &events)
            }
        }
    }

    pub(crate) fn query<T: 'static>(
        &self,
        store: impl AsContextMut<Data = T>,
        request: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Contract::Current(p) => p.call_query(store, request),
            Contract::V0_1(p) => p.call_query(store, request),
        }
    }
}

/// An event as the current contract carries it.
pub(crate) fn to_current(event: &Event) -> current::strata::projection::types::Event {
    current::strata::projection::types::Event {
        position: event.position,
        stream_id: event.stream_id.to_string(),
        version: event.version,
        event_type: event.event_type.to_string(),
        event_id: event.event_id.as_u64_pair(),
        recorded_at: event.recorded_at,
        data: event.data.to_vec(),
        metadata: event.metadata.to_vec(),
        tags: event.tags.to_vec(),
    }
}

/// An event as 0.1.0 carries it: the same fields, no tags.
fn to_v0_1(event: &Event) -> v0_1::strata::projection::types::Event {
    v0_1::strata::projection::types::Event {
        position: event.position,
        stream_id: event.stream_id.to_string(),
        version: event.version,
        event_type: event.event_type.to_string(),
        event_id: event.event_id.as_u64_pair(),
        recorded_at: event.recorded_at,
        data: event.data.to_vec(),
        metadata: event.metadata.to_vec(),
    }
}
