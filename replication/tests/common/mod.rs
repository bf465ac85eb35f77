//! A real `nats-server` with JetStream for the tests, on 127.0.0.1 and a free port, storing in
//! a temporary directory; and helpers to compare stores.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata::{Direction, Event, Options, Store};

/// Finds the `nats-server` binary: `$NATS_SERVER`, then `PATH`, then Debian's `/usr/sbin`.
/// Panics with instructions when it is missing: these tests must not pass without a server.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/sbin/nats-server"));
    candidates.push(PathBuf::from("/usr/local/bin/nats-server"));
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (looked at $NATS_SERVER, PATH, /usr/sbin): these tests \
                 need a real NATS server. Install it with `apt-get install -y nats-server` \
                 (Debian) or set NATS_SERVER to its path."
            )
        })
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for a test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` child process; killed on drop.
pub struct NatsServer {
    pub port: u16,
    store_dir: PathBuf,
    log: PathBuf,
    /// A configuration file passed with `-c`, when the server needs settings flags lack.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server storing JetStream data under `dir`.
    pub fn start(dir: &Path) -> NatsServer {
        NatsServer::start_with_config(dir, "")
    }

    /// Starts a server with `config` (nats-server configuration syntax, such as
    /// `max_payload: 4096`) besides the usual flags.
    pub fn start_with_config(dir: &Path, config: &str) -> NatsServer {
        let mut server = NatsServer {
            port: free_port(),
            store_dir: dir.join("jetstream"),
            log: dir.join("nats-server.log"),
            config: None,
            child: None,
        };
        server.set_config(dir, config);
        server.restart();
        server
    }

    /// Replaces the configuration used by the next [`NatsServer::restart`].
    pub fn set_config(&mut self, dir: &Path, config: &str) {
        if config.is_empty() {
            self.config = None;
            return;
        }
        let path = dir.join(format!("nats-server-{}.conf", self.port));
        std::fs::write(&path, config).unwrap();
        self.config = Some(path);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and storage; waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("could not start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "nats-server exited ({status}) at start: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn open(path: &Path) -> Store {
    Store::open(path, Options::default()).unwrap()
}

/// Every event of `store`, in position order.
pub fn all_events(store: &Store) -> Vec<Event> {
    store.iter_all(1).map(|e| e.unwrap()).collect()
}

/// Asserts that every stream of `source` is in `central` under `prefix`, with the same events
/// (ids, versions, types, data, metadata, tags) in the same order, and that `central` holds nothing
/// else under `prefix`.
pub fn assert_replicated(source: &Store, central: &Store, prefix: &str) {
    let source_events = all_events(source);
    let mut streams: Vec<String> = source_events
        .iter()
        .map(|e| e.stream_id.to_string())
        .collect();
    streams.sort();
    streams.dedup();
    for stream in &streams {
        let expected = source
            .read_stream(stream, 1, Direction::Forwards, 100_000)
            .unwrap();
        let target = format!("{prefix}{stream}");
        let actual = central
            .read_stream(&target, 1, Direction::Forwards, 100_000)
            .unwrap();
        assert_eq!(actual.len(), expected.len(), "stream {target:?}");
        for (a, e) in actual.iter().zip(&expected) {
            assert_eq!(
                (
                    a.event_id,
                    a.version,
                    &a.event_type,
                    &a.data,
                    &a.metadata,
                    &a.tags
                ),
                (
                    e.event_id,
                    e.version,
                    &e.event_type,
                    &e.data,
                    &e.metadata,
                    &e.tags
                ),
                "stream {target:?}"
            );
        }
    }
    let in_central = all_events(central)
        .iter()
        .filter(|e| e.stream_id.starts_with(prefix))
        .count();
    assert_eq!(
        in_central,
        source_events.len(),
        "events under {prefix:?} in the central store"
    );
}

/// Polls `condition` every 20 ms until it holds; panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP listener on 127.0.0.1 that accepts connections and never says anything (as a
/// firewall or a stuck process would); stops with the test process.
pub fn silent_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    format!("nats://127.0.0.1:{port}")
}

/// A tiny HTTP server on 127.0.0.1: it answers every connection with an HTTP response once it
/// got a request or waited 200 ms for one (as nats-server's monitoring port or any web server
/// would, to a client that does not speak HTTP).
pub fn http_server() -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer);
                let _ = stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\nBad Request",
                );
                // Keep the connection open, like a keep-alive server.
                std::thread::sleep(Duration::from_secs(60));
            });
        }
    });
    format!("nats://127.0.0.1:{port}")
}
