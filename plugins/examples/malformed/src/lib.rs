//! Test-only plugin: its `describe()` returns a name that breaks the contract (upper case,
//! spaces, punctuation), so the host must refuse to load it with `Malformed`.

use strata_plugin::{export_plugin, Error, Event, Plugin};

struct Malformed;

impl Plugin for Malformed {
    const NAME: &'static str = "Not A Valid Name!";
    const VERSION: u32 = 1;
    const EVENT_TYPES: &'static [&'static str] = &["order_created"];

    fn apply(_event: &Event) -> Result<(), Error> {
        Ok(())
    }

    fn query(_request: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(vec![0xc1]) // a byte MessagePack never uses
    }
}

export_plugin!(Malformed);
