//! Host bindings generated from `wit/strata.wit`.
//!
//! Every import is trappable: the host's own functions check the call's time budget and trap
//! when it is spent, so that time spent in the host counts against the plugin's budget.

wasmtime::component::bindgen!({
    world: "projection",
    path: "../../wit",
    imports: { default: trappable },
});
