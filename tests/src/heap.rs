//! A counting global allocator for tests that bound what an input may make a
//! process allocate: a test binary installs `Counting` as its
//! `#[global_allocator]` and wraps each case in `within_heap_limit`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; the counters
// only observe sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let ptr = unsafe { std::alloc::System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Runs `f` and fails if the heap grew by more than `limit` bytes at any
/// moment while it ran (whatever else in the process allocated meanwhile
/// counts too: run such tests one per binary, or accept the noise).
pub fn within_heap_limit<R>(what: &str, limit: usize, f: impl FnOnce() -> R) -> R {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let result = f();
    let grew = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    assert!(
        grew <= limit,
        "{what} allocated {grew} bytes at its peak (limit {limit})"
    );
    result
}

/// Watches the heap's peak growth from the moment it is made (for work that
/// spans await points, where a closure does not fit).
pub struct Watch {
    start: usize,
}

impl Watch {
    pub fn start() -> Watch {
        let start = LIVE.load(Ordering::Relaxed);
        PEAK.store(start, Ordering::Relaxed);
        Watch { start }
    }

    /// Bytes the heap grew by at its peak since `start`.
    pub fn growth(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.start)
    }
}
