//! A counting global allocator, for tests that prove a code path makes no heap allocation
//! (or bound the bytes it asks for).
//!
//! Enabled by the `alloc-counter` feature. Install it in a test binary of its own:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ioloop_sys::alloc_counter::CountingAlloc = ioloop_sys::alloc_counter::CountingAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Forwards to [`System`] and counts the allocations (and reallocations) made by the current
/// thread, and the bytes they request.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

/// Allocations and reallocations made so far by the calling thread.
pub fn allocations() -> u64 {
    COUNT.with(Cell::get)
}

/// Bytes requested by the allocations and reallocations (their new size) made so far by
/// the calling thread.
pub fn allocated_bytes() -> u64 {
    BYTES.with(Cell::get)
}

fn bump(size: usize) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract holds exactly as it does for `System`; counting touches only
// const-initialised thread-local `Cell`s, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(new_size);
        // SAFETY: `ptr`/`layout` came from this allocator; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
