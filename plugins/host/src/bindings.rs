//! Host bindings generated from `wit/strata.wit`.

wasmtime::component::bindgen!({
    world: "projection",
    path: "../../wit",
});
