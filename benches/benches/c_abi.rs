//! The C ABI against the same calls in Rust, in one process and one run (issue #5).
//!
//! - `c_abi/c_append_batch` vs `c_abi/rust_append_batch`: one append of 1,000 events of 200
//!   bytes (Fast), cycling over 1,000 streams, `Any` expected version. The C side passes
//!   `strata_new_event`s pointing at the caller's bytes (the library copies them, as a C caller
//!   requires); the Rust side clones a prepared `Vec<NewEvent>` (payloads shared).
//! - `c_abi/c_read_stream` vs `c_abi/rust_read_stream`: a 100-event stream read whole (cache
//!   on): `strata_read_stream` + `strata_cursor_next_batch` (until `STRATA_DONE`) +
//!   `strata_cursor_free` against `Store::read_stream` and iterating the `Vec`.
//!   `c_abi/c_read_stream_next` is the same read with one `strata_cursor_next` per event.
//!
//! `cargo bench -p strata-benches --bench c_abi`, then
//! `cargo run -p strata-benches --bin bench-report` prints the ratios (goal >= 0.9x).

use std::ffi::CString;
use std::hint::black_box;
use std::ptr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::{Direction, Durability, ExpectedVersion, Options, Store};
use strata_benches::{batch, payload_200};
use strata_ffi as ffi;

const BATCH: usize = 1_000;
const STREAMS: usize = 1_000;
const READ: usize = 100;

fn fast() -> Options {
    Options {
        durability: Durability::Fast,
        ..Options::default()
    }
}

fn c_options() -> ffi::strata_options {
    let mut options = ffi::strata_options::default();
    // SAFETY: the pointers passed are live locals that outlive the call.
    assert_eq!(
        unsafe { ffi::strata_options_init(&mut options) },
        ffi::strata_status::STRATA_OK
    );
    options.durability = ffi::STRATA_FAST;
    options
}

fn c_open(path: &std::path::Path) -> *mut ffi::strata_store {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let mut store = ptr::null_mut();
    let options = c_options();
    // SAFETY: the pointers passed are live locals that outlive the call.
    assert_eq!(
        unsafe { ffi::strata_open(path.as_ptr(), &options, &mut store) },
        ffi::strata_status::STRATA_OK
    );
    store
}

fn stream_names() -> Vec<CString> {
    (0..STREAMS)
        .map(|i| CString::new(format!("stream-{i}")).unwrap())
        .collect()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let events = batch(BATCH, 1);
    let types: Vec<CString> = events
        .iter()
        .map(|e| CString::new(e.event_type.clone()).unwrap())
        .collect();
    let c_events: Vec<ffi::strata_new_event> = events
        .iter()
        .zip(&types)
        .map(|(e, t)| ffi::strata_new_event {
            event_type: t.as_ptr(),
            data: e.data.as_ptr(),
            data_len: e.data.len(),
            metadata: ptr::null(),
            metadata_len: 0,
            event_id: ptr::null(),
            tags: ptr::null(),
            n_tags: 0,
        })
        .collect();
    let names = stream_names();
    let c_store = c_open(&dir.path().join("c.db"));
    let rust_store = Store::open(dir.path().join("rust.db"), fast()).unwrap();

    let mut group = c.benchmark_group("c_abi");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    let mut i = 0;
    group.bench_function("c_append_batch", |b| {
        b.iter(|| {
            i += 1;
            let mut result = ffi::strata_append_result::default();
            // SAFETY: the pointers passed are live locals that outlive the call.
            let status = unsafe {
                ffi::strata_append(
                    c_store,
                    names[i % STREAMS].as_ptr(),
                    ffi::STRATA_EXPECT_ANY,
                    0,
                    c_events.as_ptr(),
                    c_events.len(),
                    &mut result,
                )
            };
            assert_eq!(status, ffi::strata_status::STRATA_OK);
            black_box(result.last_position)
        })
    });
    let rust_names: Vec<String> = (0..STREAMS).map(|i| format!("stream-{i}")).collect();
    let mut i = 0;
    group.bench_function("rust_append_batch", |b| {
        b.iter(|| {
            i += 1;
            let result = rust_store
                .append(
                    &rust_names[i % STREAMS],
                    ExpectedVersion::Any,
                    events.clone(),
                )
                .unwrap();
            black_box(result.last_position)
        })
    });
    group.finish();
    // SAFETY: the pointers passed are live locals that outlive the call.
    unsafe { ffi::strata_store_free(c_store) };
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let c_store = c_open(&dir.path().join("c.db"));
    let rust_store = Store::open(dir.path().join("rust.db"), fast()).unwrap();
    let events = batch(READ, 7);
    let stream = CString::new("read-me").unwrap();
    let types: Vec<CString> = events
        .iter()
        .map(|e| CString::new(e.event_type.clone()).unwrap())
        .collect();
    let c_events: Vec<ffi::strata_new_event> = events
        .iter()
        .zip(&types)
        .map(|(e, t)| ffi::strata_new_event {
            event_type: t.as_ptr(),
            data: e.data.as_ptr(),
            data_len: e.data.len(),
            metadata: ptr::null(),
            metadata_len: 0,
            event_id: ptr::null(),
            tags: ptr::null(),
            n_tags: 0,
        })
        .collect();
    // SAFETY: the pointers passed are live locals that outlive the call.
    let status = unsafe {
        ffi::strata_append(
            c_store,
            stream.as_ptr(),
            ffi::STRATA_EXPECT_ANY,
            0,
            c_events.as_ptr(),
            c_events.len(),
            ptr::null_mut(),
        )
    };
    assert_eq!(status, ffi::strata_status::STRATA_OK);
    rust_store
        .append("read-me", ExpectedVersion::Any, events.clone())
        .unwrap();
    // Other streams around it, so that the read is not of the whole file.
    for i in 0..20 {
        rust_store
            .append(&format!("other-{i}"), ExpectedVersion::Any, batch(100, i))
            .unwrap();
    }
    black_box(payload_200(0));

    let mut group = c.benchmark_group("c_abi");
    group.throughput(Throughput::Elements(READ as u64));
    // The caller's buffer of event views, reused across reads as a C caller would.
    let mut events = [ffi::strata_event::default(); 128];
    group.bench_function("c_read_stream", |b| {
        b.iter(|| {
            let mut cursor = ptr::null_mut();
            // SAFETY: the pointers passed are live locals that outlive the call.
            let status = unsafe {
                ffi::strata_read_stream(
                    c_store,
                    stream.as_ptr(),
                    1,
                    ffi::STRATA_FORWARDS,
                    READ as u64,
                    &mut cursor,
                )
            };
            assert_eq!(status, ffi::strata_status::STRATA_OK);
            let mut sum = 0u64;
            let mut count = 0;
            let mut got = 0;
            // SAFETY: the pointers passed are live locals that outlive the call.
            while unsafe {
                ffi::strata_cursor_next_batch(cursor, events.as_mut_ptr(), events.len(), &mut got)
            } == ffi::strata_status::STRATA_OK
            {
                for event in &events[..got] {
                    sum += event.position + event.data_len as u64;
                }
                count += got;
            }
            assert_eq!(count, READ);
            // SAFETY: the pointers passed are live locals that outlive the call.
            unsafe { ffi::strata_cursor_free(cursor) };
            black_box(sum)
        })
    });
    group.bench_function("c_read_stream_next", |b| {
        b.iter(|| {
            let mut cursor = ptr::null_mut();
            // SAFETY: the pointers passed are live locals that outlive the call.
            let status = unsafe {
                ffi::strata_read_stream(
                    c_store,
                    stream.as_ptr(),
                    1,
                    ffi::STRATA_FORWARDS,
                    READ as u64,
                    &mut cursor,
                )
            };
            assert_eq!(status, ffi::strata_status::STRATA_OK);
            let mut event = ffi::strata_event::default();
            let mut sum = 0u64;
            let mut count = 0;
            // SAFETY: the pointers passed are live locals that outlive the call.
            while unsafe { ffi::strata_cursor_next(cursor, &mut event) }
                == ffi::strata_status::STRATA_OK
            {
                sum += event.position + event.data_len as u64;
                count += 1;
            }
            assert_eq!(count, READ);
            // SAFETY: the pointers passed are live locals that outlive the call.
            unsafe { ffi::strata_cursor_free(cursor) };
            black_box(sum)
        })
    });
    group.bench_function("rust_read_stream", |b| {
        b.iter(|| {
            let events = rust_store
                .read_stream("read-me", 1, Direction::Forwards, READ)
                .unwrap();
            let mut sum = 0u64;
            for e in &events {
                sum += e.position + e.data.len() as u64;
            }
            assert_eq!(events.len(), READ);
            black_box(sum)
        })
    });
    group.finish();
    // SAFETY: the pointers passed are live locals that outlive the call.
    unsafe { ffi::strata_store_free(c_store) };
}

criterion_group!(benches, append, read);
criterion_main!(benches);
