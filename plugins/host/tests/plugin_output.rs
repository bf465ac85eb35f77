//! What a plugin prints and logs reaches the host's `tracing`, tagged with the plugin's name.

mod common;

use std::sync::{Arc, Mutex};

use strata::MemoryState;
use strata_wasm::PluginLimits;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use common::{apply, load, Log};

/// A subscriber that keeps `LEVEL target plugin=.. stream=.. message` for every event.
#[derive(Clone, Default)]
struct Recorder {
    lines: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    plugin: String,
    stream: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "stream" => self.stream = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        self.lines.lock().unwrap().push(format!(
            "{} {} plugin={} stream={} {}",
            meta.level(),
            meta.target(),
            fields.plugin,
            fields.stream,
            fields.message
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn stdout_stderr_and_logs_go_to_tracing() {
    let mut projection = load("hostile", PluginLimits::default());
    let committed = Arc::new(MemoryState::new());
    let mut log = Log::default();
    log.raw("chatty");

    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        apply(&mut projection, &committed, &log.events).unwrap();
    });
    let lines = recorder.lines.lock().unwrap().clone();
    let expect = |wanted: &str| {
        assert!(
            lines.iter().any(|line| line == wanted),
            "no {wanted:?} in {lines:#?}"
        )
    };
    let target = "strata_wasm::plugin plugin=hostile";
    expect(&format!(
        "{} {target} stream=stdout hostile says hello on stdout",
        Level::INFO
    ));
    expect(&format!(
        "{} {target} stream=stderr hostile says hello on stderr",
        Level::WARN
    ));
    expect(&format!(
        "{} {target} stream= hostile logs at debug",
        Level::DEBUG
    ));
    expect(&format!(
        "{} {target} stream= hostile logs at info",
        Level::INFO
    ));
    expect(&format!(
        "{} {target} stream= hostile logs at warn",
        Level::WARN
    ));
    expect(&format!(
        "{} {target} stream= hostile logs at error",
        Level::ERROR
    ));
}
