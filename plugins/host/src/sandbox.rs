//! What makes a guest deterministic and keeps its calls inside their budget: virtual clocks,
//! seeded randomness, sleeps that return at once, and the per-call budget that the host's own
//! functions check.
//!
//! - **Clocks.** `wasi:clocks/wall-clock` and `wasi:clocks/monotonic-clock` do not read the
//!   host's clocks. Both answer from the call's *virtual time*, which is 0 (the wall clock at
//!   the unix epoch, 1970-01-01T00:00:00Z) at the start of every call, whichever instance runs
//!   it, and moves only when the guest sleeps.
//! - **Sleeps.** `subscribe-duration` and `subscribe-instant` return a pollable that is ready at
//!   once and advance virtual time by the time asked for. So `std::thread::sleep(d)` returns
//!   immediately, the guest sees `d` pass, and `d` counts against the call's budget: a guest
//!   that sleeps past its budget is stopped with a timeout at once, not after the sleep.
//! - **Randomness.** `wasi:random/random` and `wasi:random/insecure` are streams reseeded at the
//!   start of every call from the projection's name, version and the position of the first
//!   event of the call (0 for `describe` and `query`); `insecure-seed` is fixed per name and
//!   version. None of it is secret: it is there so that code that draws random numbers (hash
//!   maps, ...) folds the same way on every rebuild.
//!
//! So what a guest reads from a clock or a random stream is a function of the call: the
//! projection, the first position of the call's batch and the guest's own sleeps in it. A
//! rebuild that cuts the log into the same batches sees the same values; batch boundaries
//! depend on the batch size and on when catch-up ran, so a fold that must not depend on them
//! must not depend on clocks or randomness (take time from the event's `recorded_at`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::clocks::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi::p2::{DynPollable, Pollable};

/// The WASI clocks interface version wasmtime-wasi 48 defines (guests importing any 0.2.x are
/// matched to it by semver).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// A call's virtual time in nanoseconds: reset to 0 at the start of each call, moved only by the
/// guest's own sleeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct VirtualTime(Arc<AtomicU64>);

impl VirtualTime {
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to the epoch, at the start of a call.
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Moves time forward by `nanos` (saturating), never back.
    fn advance(&self, nanos: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(nanos))
            });
    }

    /// Moves time forward to `instant` if it lies ahead.
    fn advance_to(&self, instant: u64) {
        self.0.fetch_max(instant, Ordering::Relaxed);
    }

    pub(crate) fn wall_clock(&self) -> impl HostWallClock + 'static {
        GuestClock(self.clone())
    }

    pub(crate) fn monotonic_clock(&self) -> impl HostMonotonicClock + 'static {
        GuestClock(self.clone())
    }
}

/// Both WASI clocks of a guest, reading its virtual time.
struct GuestClock(VirtualTime);

impl HostWallClock for GuestClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    /// The unix epoch plus the virtual time.
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.now())
    }
}

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.now()
    }
}

/// A deterministic random stream (SplitMix64), shared between the WASI context that draws from
/// it and the host that reseeds it before each call. Not cryptographic, and not meant to be.
#[derive(Clone, Debug)]
pub(crate) struct SeededRandom(Arc<Mutex<u64>>);

impl SeededRandom {
    pub(crate) fn new(seed: u64) -> Self {
        SeededRandom(Arc::new(Mutex::new(seed)))
    }

    pub(crate) fn reseed(&self, seed: u64) {
        *self.0.lock() = seed;
    }

    fn next(&self) -> u64 {
        let mut state = self.0.lock();
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(*state)
    }
}

impl rand_core::TryRng for SeededRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which random stream a seed is for, so that the streams differ.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stream {
    Secure = 1,
    Insecure = 2,
    InsecureSeed = 3,
}

/// A seed from the projection's name, version and a position: FNV-1a over the bytes, then
/// mixed. Stable across platforms and Rust versions (no `std` hasher).
pub(crate) fn seed(stream: Stream, name: &str, version: u32, position: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&[stream as u8]);
    feed(name.as_bytes());
    feed(&[0xff]);
    feed(&version.to_le_bytes());
    feed(&position.to_le_bytes());
    mix(hash)
}

/// The 128-bit `insecure-seed` of a projection (fixed per name and version).
pub(crate) fn insecure_seed(name: &str, version: u32) -> u128 {
    let high = seed(Stream::InsecureSeed, name, version, 0);
    let low = mix(high ^ 0x5354_5241_5441_0001);
    (u128::from(high) << 64) | u128::from(low)
}

/// The time budget of the call in progress: wall time spent since it started plus virtual
/// time slept by the guest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallBudget {
    started: Instant,
    budget: Duration,
    virtual_start: u64,
}

impl CallBudget {
    pub(crate) fn start(budget: Duration, time: &VirtualTime) -> Self {
        CallBudget {
            started: Instant::now(),
            budget,
            virtual_start: time.now(),
        }
    }

    /// Fails with [`BudgetExceeded`] once the call has used up its budget.
    pub(crate) fn check(&self, time: &VirtualTime) -> wasmtime::Result<()> {
        let slept = Duration::from_nanos(time.now().saturating_sub(self.virtual_start));
        if self.started.elapsed() + slept > self.budget {
            return Err(BudgetExceeded {
                budget: self.budget,
            }
            .into());
        }
        Ok(())
    }
}

/// The trap a host function raises when the call's budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BudgetExceeded {
    pub(crate) budget: Duration,
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the call ran past its time budget of {} ms",
            self.budget.as_millis()
        )
    }
}

impl std::error::Error for BudgetExceeded {}

/// What the linker's clock functions need from a store's data.
pub(crate) trait SandboxData: Send + 'static {
    fn table(&mut self) -> &mut ResourceTable;
    fn virtual_time(&self) -> &VirtualTime;
    fn budget(&self) -> Option<CallBudget>;
}

/// A pollable that is always ready: what every clock subscription returns.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let resource = table.push(Ready)?;
    wasmtime_wasi::p2::subscribe(table, resource)
}

/// Replaces WASI's two blocking clock subscriptions with ones that advance virtual time and
/// return at once (trapping when the sleep takes the call past its budget). Call after adding
/// WASI to `linker`.
pub(crate) fn shadow_sleeps<T: SandboxData>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, T>, (nanos,): (u64,)| {
            let data = store.data_mut();
            data.virtual_time().advance(nanos);
            if let Some(budget) = data.budget() {
                budget.check(data.virtual_time())?;
            }
            Ok((ready(data.table())?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, T>, (instant,): (u64,)| {
            let data = store.data_mut();
            data.virtual_time().advance_to(instant);
            if let Some(budget) = data.budget() {
                budget.check(data.virtual_time())?;
            }
            Ok((ready(data.table())?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn seeds_differ_by_name_version_position_and_stream() {
        let base = seed(Stream::Secure, "a", 1, 1);
        assert_eq!(base, seed(Stream::Secure, "a", 1, 1));
        assert_ne!(base, seed(Stream::Secure, "b", 1, 1));
        assert_ne!(base, seed(Stream::Secure, "a", 2, 1));
        assert_ne!(base, seed(Stream::Secure, "a", 1, 2));
        assert_ne!(base, seed(Stream::Insecure, "a", 1, 1));
        // The name's end is marked, so ("a", ...) and ("a\u{1}", ...) cannot collide by shifting.
        assert_ne!(insecure_seed("a", 1), insecure_seed("b", 1));
    }

    #[test]
    fn a_reseeded_stream_repeats_itself() {
        let mut random = SeededRandom::new(7);
        let mut first = [0u8; 13];
        random.fill_bytes(&mut first);
        random.reseed(7);
        let mut second = [0u8; 13];
        random.fill_bytes(&mut second);
        assert_eq!(first, second);
        assert_ne!(first, [0u8; 13]);
    }

    #[test]
    fn virtual_time_only_moves_forward() {
        let time = VirtualTime::default();
        time.advance(5);
        time.advance_to(3);
        assert_eq!(time.now(), 5);
        time.advance_to(9);
        time.advance(u64::MAX);
        assert_eq!(time.now(), u64::MAX);
    }

    #[test]
    fn the_budget_counts_virtual_sleep() {
        let time = VirtualTime::default();
        let budget = CallBudget::start(Duration::from_secs(10), &time);
        assert!(budget.check(&time).is_ok());
        time.advance(Duration::from_secs(11).as_nanos() as u64);
        let error = budget.check(&time).unwrap_err();
        assert_eq!(
            error.downcast_ref::<BudgetExceeded>(),
            Some(&BudgetExceeded {
                budget: Duration::from_secs(10)
            })
        );
    }
}
