//! A counting global allocator that attributes allocations and frees to threads.
//!
//! Install it in a binary or test crate:
//! ```
//! #[global_allocator]
//! static ALLOC: engine::alloc_count::CountingAlloc = engine::alloc_count::CountingAlloc;
//! ```
//! then mark the realtime threads with [`track_this_thread`]. Every allocation and every free
//! made by a tracked thread is counted, per thread and in total; untracked threads
//! (housekeeping, progress bars, logging) are not counted. This is how the tests prove that the
//! steady-state loops neither allocate nor free.
//!
//! What counts as what: `alloc` and `alloc_zeroed` are one allocation; `dealloc` is one free;
//! `realloc` is one allocation *and* one free (it may move the block: the old one is given
//! back, a new one taken), whether or not the system allocator grew the block in place.
//!
//! The counters are `Cell`s in `const`-initialised thread locals (no allocation, no lock) and
//! relaxed atomics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting what tracked threads allocate and free.
pub struct CountingAlloc;

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static FREES: Cell<u64> = const { Cell::new(0) };
}

static TOTAL_ALLOCS: AtomicU64 = AtomicU64::new(0);
static TOTAL_FREES: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicU64 = AtomicU64::new(0);

/// Counts `allocs` allocations and `frees` frees if the calling thread is tracked. Touches
/// only thread-local `Cell`s and atomics: never allocates, never locks (and `try_with`, so it
/// is safe while the thread's locals are being torn down).
#[inline]
fn note(allocs: u64, frees: u64) {
    let tracked = TRACKED.try_with(|t| t.get()).unwrap_or(false);
    INSTALLED.store(1, Ordering::Relaxed);
    if tracked {
        if allocs > 0 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + allocs));
            TOTAL_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
        }
        if frees > 0 {
            let _ = FREES.try_with(|c| c.set(c.get() + frees));
            TOTAL_FREES.fetch_add(frees, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only thread-local `Cell`s and atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1, 0);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(1, 0);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // One allocation and one free (see the module docs).
        note(1, 1);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, 1);
        // SAFETY: same contract as ours, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts (or stops) counting the calling thread's allocations and frees.
pub fn track_this_thread(on: bool) {
    TRACKED.with(|t| t.set(on));
}

/// Allocations the calling thread made while tracked.
pub fn this_thread_allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// Frees the calling thread made while tracked.
pub fn this_thread_frees() -> u64 {
    FREES.with(|c| c.get())
}

/// Allocations all tracked threads made, in total.
pub fn tracked_allocations() -> u64 {
    TOTAL_ALLOCS.load(Ordering::Relaxed)
}

/// Frees all tracked threads made, in total.
pub fn tracked_frees() -> u64 {
    TOTAL_FREES.load(Ordering::Relaxed)
}

/// Whether [`CountingAlloc`] is this process's global allocator (known after the first
/// allocation, which every Rust program makes before `main`).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed) == 1
}

/// Counts the calling thread's allocations and frees from its creation until
/// [`allocations`](Self::allocations) and [`frees`](Self::frees).
pub struct AllocScope {
    start_allocs: u64,
    start_frees: u64,
    was_tracked: bool,
}

impl AllocScope {
    /// Begins counting on this thread.
    pub fn begin() -> AllocScope {
        let was_tracked = TRACKED.with(|t| t.get());
        track_this_thread(true);
        AllocScope {
            start_allocs: this_thread_allocations(),
            start_frees: this_thread_frees(),
            was_tracked,
        }
    }

    /// Allocations made on this thread since [`begin`](Self::begin).
    pub fn allocations(&self) -> u64 {
        this_thread_allocations() - self.start_allocs
    }

    /// Frees made on this thread since [`begin`](Self::begin).
    pub fn frees(&self) -> u64 {
        this_thread_frees() - self.start_frees
    }
}

impl Drop for AllocScope {
    fn drop(&mut self) {
        track_this_thread(self.was_tracked);
    }
}
