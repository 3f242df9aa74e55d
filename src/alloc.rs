//! The global allocator: the system allocator, except that huge blocks are mapped with
//! `MAP_NORESERVE`.
//!
//! tiny_http drains an unread request body by allocating a buffer of the whole remaining
//! declared size (ENGINEERING.md trap 1). Under the kernel's default overcommit heuristic a
//! `Content-Length: 100000000000` makes that allocation fail, and a failed allocation aborts
//! the process. Mapped without a reservation the buffer costs address space only: the drain
//! touches a socket buffer's worth of it per read. Nothing of ours allocates blocks this big.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are mapped directly.
const HUGE: usize = 64 << 20;
const PAGE: usize = 4096;

pub(crate) struct Allocator;

fn huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p.cast() }
}

// SAFETY: every block is returned to the allocator that produced it, decided by its layout
// size, which the caller must pass unchanged to dealloc and realloc.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if huge(&layout) { unsafe { map(layout.size()) } } else { unsafe { System.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Fresh anonymous mappings are zero-filled.
        if huge(&layout) { unsafe { map(layout.size()) } } else { unsafe { System.alloc_zeroed(layout) } }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(&layout) {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc guarantees new_size is a valid size for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !huge(&layout) && !huge(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_buffer_larger_than_memory_can_be_allocated_and_freed() {
        // 100 GB: more than this machine has, as tiny_http asks for on `Content-Length: 1e11`.
        let mut v = vec![0u8; 100_000_000_000];
        v[0] = 1;
        v[99_999_999_999] = 2;
        assert_eq!((v[0], v[99_999_999_999], v[50_000_000_000]), (1, 2, 0));
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_content() {
        let mut v: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
        v.resize(80 << 20, 7);
        assert_eq!((v[255], v[256], v[1 << 20], v.len()), (255, 0, 7, 80 << 20));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u8>>());
    }
}
