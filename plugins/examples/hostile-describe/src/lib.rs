//! Test-only plugin: `describe()` sleeps for 30 s before answering, so that adding or loading
//! it would block for that long if sleeping blocked. The host must fault it within the describe
//! budget. Written against the raw bindings, because `export_plugin!` answers `describe` from
//! constants.

use strata_plugin::bindings::strata::projection::types::{Event, Info};
use strata_plugin::bindings::Guest;

struct SlowDescribe;

impl Guest for SlowDescribe {
    fn describe() -> Info {
        std::thread::sleep(std::time::Duration::from_secs(30));
        Info {
            name: "hostile-describe".to_string(),
            version: 1,
            event_types: Vec::new(),
        }
    }

    fn apply(_events: Vec<Event>) -> Result<(), String> {
        Ok(())
    }

    fn query(_request: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(vec![0xc0])
    }
}

strata_plugin::bindings::__export_projection_world!(SlowDescribe with_types_in strata_plugin::bindings);
