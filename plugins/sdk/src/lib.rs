//! `strata-plugin`: write strata projections in Rust, compiled to WebAssembly components.
//!
//! A projection folds events into a key-value state kept by the host. With this crate, a
//! plugin is a type implementing [`Plugin`] plus one [`export_plugin!`] line:
//!
//! ```ignore
//! use strata_plugin::serde::Deserialize;
//! use strata_plugin::{export_plugin, state, Error, Event, Plugin};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "strata_plugin::serde")]
//! struct Deposited { account: String, amount: i64 }
//!
//! struct Balances;
//!
//! impl Plugin for Balances {
//!     const NAME: &'static str = "balances";
//!     const VERSION: u32 = 1;
//!     const EVENT_TYPES: &'static [&'static str] = &["deposited"];
//!
//!     fn apply(event: &Event) -> Result<(), Error> {
//!         let deposit: Deposited = event.decode()?;
//!         let key = format!("balance:{}", deposit.account);
//!         let balance: i64 = state::get(&key)?.unwrap_or(0);
//!         state::put(&key, &(balance + deposit.amount))
//!     }
//!
//!     fn query(request: &[u8]) -> Result<Vec<u8>, Error> {
//!         let account: String = strata_plugin::decode(request)?;
//!         let balance: Option<i64> = state::get(format!("balance:{account}"))?;
//!         strata_plugin::encode(&balance)
//!     }
//! }
//!
//! export_plugin!(Balances);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (`cargo build --release --target wasm32-wasip2`);
//! the `.wasm` produced is a component the host (`strata-wasm`) loads.
//!
//! Conventions: event data, state values, query requests and responses are MessagePack with
//! named fields ([`encode`] / [`decode`]), so other languages can read them. Keep every
//! piece of memory in the state: the host may restart an instance at any time. Use the event's
//! `recorded_at`, never a clock, so that rebuilds give the same state. The host makes clocks
//! virtual anyway (they read the unix epoch at the start of every call and move only when the
//! plugin sleeps; sleeps return at once) and seeds WASI randomness from the projection's name,
//! version and the call's first position, so code that reads them folds the same way on every
//! rebuild that cuts the log into the same batches (batching depends on the batch size and on
//! when catch-up ran: do not let the fold depend on clocks or randomness).
#![warn(missing_docs)]

extern crate self as strata_plugin;

/// Re-exported for plugins that want MessagePack options beyond [`encode`] / [`decode`].
pub use rmp_serde;
/// Re-exported so that plugins need no dependency of their own: derive with
/// `#[derive(strata_plugin::serde::Deserialize)]` and `#[serde(crate = "strata_plugin::serde")]`.
pub use serde;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Guest bindings generated from `wit/strata.wit`. Use the typed API of this crate instead
/// when you can.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "projection",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_projection_world",
        default_bindings_module: "strata_plugin::bindings",
        runtime_path: "strata_plugin::__private::wit_bindgen::rt",
    });
}

use bindings::strata::projection::log as wit_log;
use bindings::strata::projection::state as wit_state;
use bindings::strata::projection::types as wit_types;

/// An error a plugin returns: the message ends up in the projection's fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with `context` (`context: message`).
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(error: rmp_serde::decode::Error) -> Self {
        Error::new(format!("MessagePack decoding failed: {error}"))
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(error: rmp_serde::encode::Error) -> Self {
        Error::new(format!("MessagePack encoding failed: {error}"))
    }
}

/// Encodes `value` as MessagePack with named fields (maps), the strata convention.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes MessagePack bytes into `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// One stored event, as handed to [`Plugin::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Global position in the log, from 1, gap-free.
    pub position: u64,
    /// The stream, such as `order-42`.
    pub stream_id: String,
    /// Version within the stream, from 1.
    pub version: u64,
    /// What happened, such as `order_created`.
    pub event_type: String,
    /// The event's UUID, as its 16 bytes.
    pub event_id: [u8; 16],
    /// When the store recorded it: unix microseconds, UTC.
    pub recorded_at: i64,
    /// The payload (MessagePack by convention).
    pub data: Vec<u8>,
    /// The metadata (may be empty).
    pub metadata: Vec<u8>,
    /// The event's tags (Dynamic Consistency Boundaries), such as `course:c1`: sorted, without
    /// repeats; empty for an event appended without tags.
    pub tags: Vec<String>,
}

impl Event {
    /// Decodes the data from MessagePack into `T`; the error names the event.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(&self.data).map_err(|e| {
            e.context(format!(
                "event {} ({}) at position {}",
                self.event_type, self.stream_id, self.position
            ))
        })
    }

    /// Decodes the metadata from MessagePack into `T`.
    pub fn decode_metadata<T: DeserializeOwned>(&self) -> Result<T, Error> {
        decode(&self.metadata)
            .map_err(|e| e.context(format!("metadata of event at position {}", self.position)))
    }

    /// Whether the event carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok()
    }

    /// The event id in the usual UUID text form.
    pub fn event_id_string(&self) -> String {
        let b = &self.event_id;
        let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl From<wit_types::Event> for Event {
    fn from(event: wit_types::Event) -> Self {
        let (high, low) = event.event_id;
        let mut event_id = [0u8; 16];
        event_id[..8].copy_from_slice(&high.to_be_bytes());
        event_id[8..].copy_from_slice(&low.to_be_bytes());
        Event {
            position: event.position,
            stream_id: event.stream_id,
            version: event.version,
            event_type: event.event_type,
            event_id,
            recorded_at: event.recorded_at,
            data: event.data,
            metadata: event.metadata,
            tags: event.tags,
        }
    }
}

/// The projection's key-value state, with values encoded as MessagePack.
///
/// During `apply`, reads see this batch's writes; writes are committed with the batch. During
/// `query` the state is read-only. A failed state call also fails the whole host call, so
/// propagate errors with `?`.
pub mod state {
    use super::*;

    /// The value under `key`, decoded.
    pub fn get<T: DeserializeOwned>(key: impl AsRef<[u8]>) -> Result<Option<T>, Error> {
        match raw::get(key.as_ref())? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Several values at once, in the order asked.
    pub fn get_many<T: DeserializeOwned, K: AsRef<[u8]>>(
        keys: &[K],
    ) -> Result<Vec<Option<T>>, Error> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_ref().to_vec()).collect();
        raw::get_many(&keys)?
            .into_iter()
            .map(|value| value.map(|bytes| decode(&bytes)).transpose())
            .collect()
    }

    /// Stores `value` (encoded) under `key`.
    pub fn put<T: Serialize + ?Sized>(key: impl AsRef<[u8]>, value: &T) -> Result<(), Error> {
        raw::put(key.as_ref(), &encode(value)?)
    }

    /// Removes `key`.
    pub fn delete(key: impl AsRef<[u8]>) -> Result<(), Error> {
        raw::delete(key.as_ref())
    }

    /// Up to `limit` entries under `prefix` with keys greater than `after`, decoded.
    pub fn scan_prefix<T: DeserializeOwned>(
        prefix: impl AsRef<[u8]>,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, T)>, Error> {
        raw::scan_prefix(prefix.as_ref(), after, limit)?
            .into_iter()
            .map(|(key, bytes)| Ok((key, decode(&bytes)?)))
            .collect()
    }

    /// Every entry under `prefix`, decoded, fetched page by page (`page` entries per host call).
    pub fn scan_all<T: DeserializeOwned>(
        prefix: impl AsRef<[u8]>,
        page: u32,
    ) -> Result<Vec<(Vec<u8>, T)>, Error> {
        let prefix = prefix.as_ref();
        let page = page.max(1);
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = raw::scan_prefix(prefix, after.as_deref(), page)?;
            let done = batch.len() < page as usize;
            after = batch.last().map(|(key, _)| key.clone());
            for (key, bytes) in batch {
                all.push((key, decode(&bytes)?));
            }
            if done || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The same operations on raw bytes.
    pub mod raw {
        use super::super::{wit_state, Error};

        /// Key-value pairs, in key order.
        pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

        /// The bytes under `key`.
        pub fn get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            wit_state::get(key).map_err(Error::new)
        }

        /// The bytes under several keys.
        pub fn get_many(keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, Error> {
            wit_state::get_many(keys).map_err(Error::new)
        }

        /// Stores `value` under `key`.
        pub fn put(key: &[u8], value: &[u8]) -> Result<(), Error> {
            wit_state::put(key, value).map_err(Error::new)
        }

        /// Removes `key`.
        pub fn delete(key: &[u8]) -> Result<(), Error> {
            wit_state::delete(key).map_err(Error::new)
        }

        /// Up to `limit` raw entries under `prefix` after `after`.
        pub fn scan_prefix(
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: u32,
        ) -> Result<Entries, Error> {
            wit_state::scan_prefix(prefix, after, limit).map_err(Error::new)
        }
    }
}

/// Logging into the host's `tracing`, tagged with the plugin's name.
pub mod log {
    use super::wit_log::{self, Level};

    /// Debugging detail.
    pub fn debug(message: &str) {
        wit_log::log(Level::Debug, message);
    }

    /// Normal operation.
    pub fn info(message: &str) {
        wit_log::log(Level::Info, message);
    }

    /// Something unexpected that the plugin handled.
    pub fn warn(message: &str) {
        wit_log::log(Level::Warn, message);
    }

    /// Something failed.
    pub fn error(message: &str) {
        wit_log::log(Level::Error, message);
    }
}

/// A projection plugin. Implement it on a unit type and export it with [`export_plugin!`].
pub trait Plugin {
    /// Unique name: 1..=64 bytes of `[a-z0-9_-]`.
    const NAME: &'static str;
    /// Version of the logic; raising it rebuilds the state from position 1.
    const VERSION: u32;
    /// Event types to receive; empty means all.
    const EVENT_TYPES: &'static [&'static str];

    /// Folds one event into the state.
    fn apply(event: &Event) -> Result<(), Error>;

    /// Folds a batch, in position order. The default calls [`Plugin::apply`] for each event
    /// and names the failing event in the error.
    fn apply_batch(events: &[Event]) -> Result<(), Error> {
        for event in events {
            Self::apply(event).map_err(|e| {
                e.context(format!(
                    "{} at position {}",
                    event.event_type, event.position
                ))
            })?;
        }
        Ok(())
    }

    /// Answers a query from the (read-only) state.
    fn query(request: &[u8]) -> Result<Vec<u8>, Error>;
}

/// Decodes a MessagePack request, runs `handler`, encodes its answer: the body of a typical
/// [`Plugin::query`].
pub fn handle_query<Req, Resp>(
    request: &[u8],
    handler: impl FnOnce(Req) -> Result<Resp, Error>,
) -> Result<Vec<u8>, Error>
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let request: Req = decode(request).map_err(|e| e.context("bad query request"))?;
    encode(&handler(request)?)
}

/// Support code for [`export_plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::*;

    pub fn describe<P: Plugin>() -> wit_types::Info {
        wit_types::Info {
            name: P::NAME.to_string(),
            version: P::VERSION,
            event_types: P::EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
        }
    }

    pub fn apply<P: Plugin>(events: Vec<wit_types::Event>) -> Result<(), String> {
        let events: Vec<Event> = events.into_iter().map(Event::from).collect();
        P::apply_batch(&events).map_err(|e| e.message)
    }

    pub fn query<P: Plugin>(request: Vec<u8>) -> Result<Vec<u8>, String> {
        P::query(&request).map_err(|e| e.message)
    }
}

/// Exports a [`Plugin`] as the component's `strata:projection/projection` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct StrataPluginExport;

            impl $crate::bindings::Guest for StrataPluginExport {
                fn describe() -> $crate::bindings::strata::projection::types::Info {
                    $crate::__private::describe::<$plugin>()
                }

                fn apply(
                    events: ::std::vec::Vec<$crate::bindings::strata::projection::types::Event>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::apply::<$plugin>(events)
                }

                fn query(
                    request: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                    $crate::__private::query::<$plugin>(request)
                }
            }

            $crate::bindings::__export_projection_world!(
                StrataPluginExport with_types_in $crate::bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_event() -> wit_types::Event {
        wit_types::Event {
            position: 3,
            stream_id: "order-1".into(),
            version: 1,
            event_type: "order_created".into(),
            event_id: (0x0123456789abcdef, 0xfedcba9876543210),
            recorded_at: 42,
            data: encode(&std::collections::BTreeMap::from([("amount_cents", 250)])).unwrap(),
            metadata: Vec::new(),
            tags: vec!["course:c1".into(), "student:s1".into()],
        }
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(crate = "strata_plugin::serde")]
    struct Amount {
        amount_cents: i64,
    }

    #[test]
    fn events_decode_their_messagepack_data() {
        let event = Event::from(wit_event());
        assert_eq!(
            event.decode::<Amount>().unwrap(),
            Amount { amount_cents: 250 }
        );
        assert_eq!(event.recorded_at, 42);
    }

    #[test]
    fn the_event_id_is_rebuilt_from_big_endian_halves() {
        let event = Event::from(wit_event());
        assert_eq!(
            event.event_id_string(),
            "01234567-89ab-cdef-fedc-ba9876543210"
        );
        assert_eq!(event.event_id[0], 0x01);
        assert_eq!(event.event_id[15], 0x10);
    }

    #[test]
    fn tags_cross_unchanged_and_are_looked_up_by_value() {
        let event = Event::from(wit_event());
        assert_eq!(event.tags, ["course:c1", "student:s1"]);
        assert!(event.has_tag("student:s1"));
        assert!(!event.has_tag("student:s2"));
        assert!(!event.has_tag("course"));
    }

    #[test]
    fn decoding_errors_name_the_event() {
        let mut raw = wit_event();
        raw.data = encode("not a map").unwrap();
        let error = Event::from(raw).decode::<Amount>().unwrap_err();
        assert!(error.message().contains("position 3"), "{error}");
        assert!(error.message().contains("order_created"), "{error}");
    }

    #[test]
    fn queries_decode_requests_and_encode_answers() {
        let request = encode(&std::collections::BTreeMap::from([("amount_cents", 7)])).unwrap();
        let answer = handle_query(&request, |a: Amount| Ok(a.amount_cents * 2)).unwrap();
        assert_eq!(decode::<i64>(&answer).unwrap(), 14);
        let error = handle_query(b"\xc1", |a: Amount| Ok(a.amount_cents)).unwrap_err();
        assert!(error.message().starts_with("bad query request"), "{error}");
    }

    #[test]
    fn the_description_comes_from_the_plugin_constants() {
        struct P;
        impl Plugin for P {
            const NAME: &'static str = "p";
            const VERSION: u32 = 9;
            const EVENT_TYPES: &'static [&'static str] = &["a", "b"];
            fn apply(_: &Event) -> Result<(), Error> {
                Err(Error::new("nope"))
            }
            fn query(_: &[u8]) -> Result<Vec<u8>, Error> {
                Ok(Vec::new())
            }
        }
        let info = __private::describe::<P>();
        assert_eq!((info.name.as_str(), info.version), ("p", 9));
        assert_eq!(info.event_types, ["a", "b"]);
        let error = __private::apply::<P>(vec![wit_event()]).unwrap_err();
        assert_eq!(error, "order_created at position 3: nope");
    }
}
