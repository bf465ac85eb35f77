//! Helpers shared by the integration tests: the shared test setup of `strata-testkit`, under the
//! names these tests have always used (`mod common;` then `common::temp_store`, ...).
#![allow(dead_code, unused_imports)]

pub use strata_testkit::setup::*;
