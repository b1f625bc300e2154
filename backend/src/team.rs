//! A team of threads for the short, back-to-back parallel loops of decoding (one matrix-vector
//! product after another, tens of microseconds apart).
//!
//! Rayon puts an idle worker to sleep soon after a loop ends, and waking it for the next loop is
//! a futex round trip; with ~50–100 products per decoded token that was a sixth to a third of
//! decode's time. The team's helper threads instead spin (with the CPU's pause hint) for
//! [`SPIN`] after their last loop, and only then park, as llama.cpp's thread pool does; a loop
//! hands its indices out through one atomic counter.
//!
//! Protocol: the caller publishes the job, then opens a new epoch in `state`; a helper joins the
//! open epoch by incrementing the joined count in the same word (a compare-and-swap, so it can
//! never join a closed one), takes indices until none is left and leaves. The caller takes
//! indices too, then closes the epoch and waits for the joined count to drop to zero, so the
//! job, which lives on the caller's stack, outlives every use; a helper still parked or spinning
//! elsewhere is not waited for.
//!
//! Guarantees: [`for_each`] calls `f(i)` exactly once for every `i < n` and returns when every
//! call has returned; which thread runs an index is unspecified, so callers compute each index
//! independently of the others (results never depend on the team). Only one loop runs on the
//! team at a time: a concurrent or nested call runs its loop through rayon instead. A panic in
//! `f` on a helper is caught there and resumed on the caller.

use rayon::prelude::*;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a helper spins for the next loop before it parks.
const SPIN: Duration = Duration::from_micros(300);
/// `state` bits: the epoch in the high half, "open" below it, the joined count under that.
const OPEN: u64 = 1 << 31;
const JOINED: u64 = OPEN - 1;

/// One loop: `f` over `0 .. n`, indices handed out by `next`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
        }
    }
}

struct Shared {
    state: AtomicU64,
    /// The open epoch's job (a `Job` on the caller's stack, type-erased).
    job: AtomicPtr<()>,
}

struct Helper {
    thread: Thread,
    parked: Arc<AtomicBool>,
}

struct Team {
    shared: Arc<Shared>,
    helpers: Vec<Helper>,
    /// Held by the caller of the running loop.
    busy: Mutex<()>,
}

/// The team: one helper per rayon thread but one, started on first use. `None` if the helpers
/// could not be started (the loops then run through rayon).
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let shared = Arc::new(Shared { state: AtomicU64::new(0), job: AtomicPtr::new(std::ptr::null_mut()) });
        let mut helpers = Vec::new();
        for i in 1..rayon::current_num_threads() {
            let parked = Arc::new(AtomicBool::new(false));
            let (s, p) = (Arc::clone(&shared), Arc::clone(&parked));
            let handle = thread::Builder::new().name(format!("kiln-team-{i}")).spawn(move || helper(&s, &p)).ok()?;
            helpers.push(Helper { thread: handle.thread().clone(), parked });
        }
        Some(Team { shared, helpers, busy: Mutex::new(()) })
    })
    .as_ref()
}

/// A helper's life: join every open epoch it sees, spin between them, park when idle. Never
/// inlined, so that profiles show its spinning under its own name (`benches/profile.sh`).
#[inline(never)]
fn helper(shared: &Shared, parked: &AtomicBool) {
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        let s = shared.state.load(Acquire);
        let epoch = s >> 32;
        if epoch != seen {
            if s & OPEN == 0 {
                seen = epoch;
                continue;
            }
            if shared.state.compare_exchange_weak(s, s + 1, AcqRel, Relaxed).is_err() {
                continue;
            }
            seen = epoch;
            // SAFETY: the job was published before its epoch opened (the Acquire above pairs
            // with the caller's Release), and the caller keeps it alive until the joined count
            // this helper holds drops back to zero.
            let job = unsafe { &*shared.job.load(Acquire).cast::<Job<'_>>() };
            if panic::catch_unwind(AssertUnwindSafe(|| job.work())).is_err() {
                job.panicked.store(true, Relaxed);
                job.next.store(usize::MAX, Relaxed);
            }
            shared.state.fetch_sub(1, Release);
            idle_since = Instant::now();
            continue;
        }
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(256) || idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        // Park, unless an epoch opened meanwhile (the caller reads `parked` after opening it).
        parked.store(true, SeqCst);
        if shared.state.load(SeqCst) >> 32 == seen {
            thread::park();
        }
        parked.store(false, SeqCst);
        idle_since = Instant::now();
    }
}

/// Calls `f(i)` for every `i < n`, spread over the calling thread and the team's helpers (see
/// the module documentation).
pub(crate) fn for_each(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let Some(team) = team().filter(|t| !t.helpers.is_empty() && n > 1) else {
        (0..n).for_each(f);
        return;
    };
    let _busy = match team.busy.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => {
            (0..n).into_par_iter().for_each(f);
            return;
        }
    };
    let job = Job { f, n, next: AtomicUsize::new(0), panicked: AtomicBool::new(false) };
    let shared = &team.shared;
    shared.job.store((&job as *const Job<'_>).cast_mut().cast(), Release);
    // The previous epoch is closed and drained, so the joined count is zero.
    let epoch = (shared.state.load(Relaxed) >> 32) + 1;
    shared.state.store(epoch << 32 | OPEN, SeqCst);
    for h in &team.helpers {
        if h.parked.load(SeqCst) {
            h.thread.unpark();
        }
    }
    let mine = panic::catch_unwind(AssertUnwindSafe(|| job.work()));
    if mine.is_err() {
        job.next.store(usize::MAX, Relaxed);
    }
    // Close the epoch, then wait for the helpers that joined it.
    let mut s = shared.state.load(Relaxed);
    while let Err(now) = shared.state.compare_exchange_weak(s, s & !OPEN, AcqRel, Relaxed) {
        s = now;
    }
    while shared.state.load(Acquire) & JOINED != 0 {
        std::hint::spin_loop();
    }
    shared.job.store(std::ptr::null_mut(), Relaxed);
    if let Err(payload) = mine {
        panic::resume_unwind(payload);
    }
    if job.panicked.load(Relaxed) {
        panic::resume_unwind(Box::new("a team helper panicked"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once_across_many_loops_and_threads() {
        let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            let n = round % 37 + 1;
            for_each(n, &|i| {
                hits[i].fetch_add(1, Relaxed);
            });
        }
        let expected = |i: usize| (0..2000).filter(|r| i < r % 37 + 1).count();
        assert!(hits.iter().enumerate().all(|(i, h)| h.load(Relaxed) == expected(i)));
        // Loops from several threads at once (the busy ones go through rayon), and after idling.
        thread::sleep(SPIN * 3);
        let total = AtomicUsize::new(0);
        (0..8).into_par_iter().for_each(|_| {
            for _ in 0..50 {
                for_each(64, &|_| {
                    total.fetch_add(1, Relaxed);
                });
            }
        });
        assert_eq!(total.load(Relaxed), 8 * 50 * 64);
    }
}
