//! A counting global allocator that attributes allocations to threads.
//!
//! Install it in a binary or test crate:
//! ```
//! #[global_allocator]
//! static ALLOC: engine::alloc_count::CountingAlloc = engine::alloc_count::CountingAlloc;
//! ```
//! then mark the realtime threads with [`track_this_thread`]. Every allocation, reallocation
//! or deallocation-free growth made by a tracked thread is counted, per thread and in total;
//! untracked threads (housekeeping, progress bars, logging) are not counted. This is how the
//! tests prove that the steady-state loops allocate nothing.
//!
//! The counters are a `Cell` in a `const`-initialised thread local (no allocation, no lock) and
//! one relaxed atomic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting what tracked threads allocate.
pub struct CountingAlloc;

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

static TOTAL: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);

#[inline]
fn note() {
    let tracked = TRACKED.try_with(|t| t.get()).unwrap_or(false);
    INSTALLED.store(1, Ordering::Relaxed);
    if tracked {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        TOTAL.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only a thread-local `Cell` and an atomic and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts (or stops) counting the calling thread's allocations.
pub fn track_this_thread(on: bool) {
    TRACKED.with(|t| t.set(on));
}

/// Allocations the calling thread made while tracked.
pub fn this_thread_allocations() -> u64 {
    COUNT.with(|c| c.get())
}

/// Allocations all tracked threads made, in total.
pub fn tracked_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// Whether [`CountingAlloc`] is this process's global allocator (known after the first
/// allocation, which every Rust program makes before `main`).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed) == 1
}

/// Counts the calling thread's allocations from its creation until [`allocations`](Self::allocations).
pub struct AllocScope {
    start: u64,
    was_tracked: bool,
}

impl AllocScope {
    /// Begins counting on this thread.
    pub fn begin() -> AllocScope {
        let was_tracked = TRACKED.with(|t| t.get());
        track_this_thread(true);
        AllocScope {
            start: this_thread_allocations(),
            was_tracked,
        }
    }

    /// Allocations made on this thread since [`begin`](Self::begin).
    pub fn allocations(&self) -> u64 {
        this_thread_allocations() - self.start
    }
}

impl Drop for AllocScope {
    fn drop(&mut self) {
        track_this_thread(self.was_tracked);
    }
}
