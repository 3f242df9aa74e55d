//! The global allocator: the system allocator, except that huge blocks are mapped with
//! `MAP_NORESERVE`.
//!
//! tiny_http drains an unread request body by allocating a buffer of the whole remaining
//! declared size and reading into it (see `refusal`). Under the kernel's default overcommit
//! heuristic a `Content-Length: 100000000000` makes that allocation fail, and a failed
//! allocation aborts the process. So blocks of `HUGE` bytes and more are mapped without a
//! reservation: they cost address space only, and the drain touches no more of its buffer than
//! one read brings (its connection's read side is shut first, so that is nothing). Beyond
//! `ABSURD` not even the address space is there (a few concurrent drains of 100 TB would exhaust
//! a 64-bit process's, and a 32-bit one has 3 GiB): such a block is a *window*, a mapping of
//! only `window()` bytes, more than any single read from a socket can write (the kernel's
//! largest receive buffer, doubled). Only tiny_http's drain asks for blocks that large.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Blocks at least this large are mapped directly.
const HUGE: usize = 64 << 20;
/// Blocks larger than this get a window (see above): 1 TiB in a 64-bit process, 512 MiB in a
/// 32-bit one (whose largest declared body, 4 GiB, is more than its address space).
const ABSURD: usize = if usize::BITS >= 64 { (1u64 << 40) as usize } else { 512 << 20 };
/// The window's size: at least 256 MiB (32 MiB in a 32-bit process), more if the kernel allows
/// larger receive buffers.
static WINDOW: AtomicUsize = AtomicUsize::new(if usize::BITS >= 64 { 256 << 20 } else { 32 << 20 });

/// Address space the huge blocks of concurrent drains may hold at once: an eighth of a 64-bit
/// process's 128 TiB, or 1 GiB of a 32-bit one's 3 GiB. Windows are small enough for thousands
/// at once; blocks of up to `ABSURD` each are mapped whole, and past the budget wait their turn.
const DRAIN_BUDGET: usize = if usize::BITS >= 64 { (16u64 << 40) as usize } else { 1 << 30 };
static DRAINING: Mutex<usize> = Mutex::new(0);
static DRAIN_DONE: Condvar = Condvar::new();

/// A drain's share of `DRAIN_BUDGET`, for as long as the value lives.
pub(crate) struct DrainShare(usize);

/// Takes the share of the address space that draining `declared` body bytes maps (none below
/// `HUGE`), waiting while other drains hold too much of it. Only the accounting is serialized,
/// never the drains themselves: a flood of absurd lengths must not queue its connections
/// behind one another.
pub(crate) fn drain_share(declared: u64) -> DrainShare {
    let size = match usize::try_from(declared) {
        Ok(n) if n >= HUGE && n <= isize::MAX as usize => mapped(n),
        _ => return DrainShare(0),
    };
    let mut used = DRAINING.lock().unwrap_or_else(PoisonError::into_inner);
    while *used > 0 && used.saturating_add(size) > DRAIN_BUDGET {
        used = DRAIN_DONE.wait(used).unwrap_or_else(PoisonError::into_inner);
    }
    *used += size;
    DrainShare(size)
}

impl Drop for DrainShare {
    fn drop(&mut self) {
        if self.0 > 0 {
            *DRAINING.lock().unwrap_or_else(PoisonError::into_inner) -= self.0;
            DRAIN_DONE.notify_all();
        }
    }
}

/// Tunes the C allocator for a long-running server that sees bursts: blocks of 128 KiB and
/// more are mapped and given back to the kernel as soon as they are freed (glibc otherwise
/// raises that threshold after the first large free and keeps freed memory in its heaps), the
/// heaps are trimmed past 128 KiB of free space at their top, and there are at most four of
/// them (glibc makes up to eight per core, one per thread that ever allocated).
pub(crate) fn tune_malloc() {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Returns the C allocator's free pages to the kernel, in every heap (not only their tops, as
/// the trim threshold does): after a burst of many threads, their freed buffers otherwise stay
/// resident.
pub(crate) fn give_back() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

/// Called by a thread about to end: gives back the pages of its stack that it touched below the
/// current frame. glibc keeps the stacks of ended threads for reuse (up to 40 MiB of them), and
/// with them every page the thread ever touched, so after a burst of threads those pages would
/// stay resident.
pub(crate) fn release_own_stack() {
    // SAFETY: pthread_getattr_np fills the attr we pass for the calling thread; the range given
    // to madvise lies inside this thread's stack, below the frames still in use (with a margin).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return;
        }
        let marker = 0u8;
        let here = &marker as *const u8 as usize;
        let top = here.saturating_sub(64 << 10) & !(PAGE - 1);
        let low = (low as usize).next_multiple_of(PAGE);
        if top > low {
            libc::madvise(low as *mut libc::c_void, top - low, libc::MADV_DONTNEED);
        }
    }
}

/// Sizes the window from the kernel's largest TCP receive buffer (call once at startup, before
/// any connection).
pub(crate) fn size_window() {
    let max_rmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(0);
    let core_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let needed = max_rmem.max(core_max).saturating_mul(2).next_multiple_of(PAGE);
    WINDOW.fetch_max(needed, Ordering::AcqRel);
}

/// The bytes actually mapped for a huge block of `size` bytes.
fn mapped(size: usize) -> usize {
    if size > ABSURD { WINDOW.load(Ordering::Acquire) } else { size }
}
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
        if huge(&layout) { unsafe { map(mapped(layout.size())) } } else { unsafe { System.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Fresh anonymous mappings are zero-filled.
        if huge(&layout) {
            unsafe { map(mapped(layout.size())) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(&layout) {
            unsafe { libc::munmap(ptr.cast(), mapped(layout.size())) };
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
                let old_bytes = if huge(&layout) { mapped(layout.size()) } else { layout.size() };
                let new_bytes = if huge(&new_layout) { mapped(new_size) } else { new_size };
                std::ptr::copy_nonoverlapping(ptr, new, old_bytes.min(new_bytes));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_buffer_larger_than_memory_can_be_allocated_and_freed() {
        // 100 GB: more than this machine has, as tiny_http asks for on `Content-Length: 1e11`.
        let mut v = vec![0u8; 100_000_000_000];
        v[0] = 1;
        v[99_999_999_999] = 2;
        assert_eq!((v[0], v[99_999_999_999], v[50_000_000_000]), (1, 2, 0));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn absurd_blocks_get_a_window_many_at_once() {
        // tiny_http's drain of `Content-Length: 10^14`, sixteen at once: 1.6 PB of address
        // space, more than a process has, if each were mapped whole.
        let mut drains: Vec<Vec<u8>> = (0..16).map(|_| vec![0u8; 100_000_000_000_000]).collect();
        for d in &mut drains {
            d[0] = 1;
            d[(200 << 20) - 1] = 2;
        }
        assert!(drains.iter().all(|d| d[0] == 1 && d[(200 << 20) - 1] == 2 && d[4096] == 0));
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
