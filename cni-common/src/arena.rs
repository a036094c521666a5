//! A bump allocator for the plugin processes, which live for milliseconds.
//!
//! A plugin allocates a few hundred kilobytes in small pieces (JSON, netlink messages, nftables
//! plans) and exits. With the static musl build, musl's allocator made portmap's ADD 40 % slower
//! than the glibc build; bumping a pointer through one lazily mapped region is faster than either,
//! and freeing is (almost) free: memory is returned to the region only when the freed block is the
//! last one handed out, and to the system when the process exits. A process that asks for more
//! than [`ARENA_BYTES`] in total goes on with the system allocator, so the arena bounds what a
//! long-running caller could waste; it is meant for short-lived binaries only, which opt in with
//! `#[global_allocator] static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size of the region (virtual: pages are only backed when touched). An ADD or DEL uses a few
/// hundred kilobytes; a process that allocates more (retried reads of a large ruleset under
/// contention, GC of many attachments) goes on with the system allocator, which reuses freed
/// memory, so the bytes never returned stay under this bound.
pub const ARENA_BYTES: usize = 4 << 20;

/// See the module documentation.
pub struct Arena {
    /// Start of the region; 0 until the first allocation, 1 while it is being mapped, and
    /// [`usize::MAX`] if mapping failed (then everything goes to the system allocator).
    base: AtomicUsize,
    /// Bytes of the region handed out (the next free offset).
    used: AtomicUsize,
}

const UNMAPPED: usize = 0;
const MAPPING: usize = 1;
const FAILED: usize = usize::MAX;

impl Arena {
    pub const fn new() -> Arena {
        Arena { base: AtomicUsize::new(UNMAPPED), used: AtomicUsize::new(0) }
    }

    /// The region's start, mapping it on first use; `None` if it cannot be had.
    fn base(&self) -> Option<usize> {
        loop {
            match self.base.load(Ordering::Acquire) {
                FAILED => return None,
                MAPPING => std::hint::spin_loop(),
                UNMAPPED => {
                    if self.base.compare_exchange(UNMAPPED, MAPPING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        // SAFETY: a valid, non-zero layout; the system allocator maps a region this
                        // large on demand, and it is never freed (the process exits instead).
                        let p = unsafe { System.alloc(Layout::from_size_align_unchecked(ARENA_BYTES, 4096)) };
                        let b = if p.is_null() { FAILED } else { p as usize };
                        self.base.store(b, Ordering::Release);
                        return (b != FAILED).then_some(b);
                    }
                }
                b => return Some(b),
            }
        }
    }

    fn contains(&self, p: *mut u8) -> Option<usize> {
        let b = self.base.load(Ordering::Acquire);
        let a = p as usize;
        (b != UNMAPPED && b != MAPPING && b != FAILED && a >= b && a < b + ARENA_BYTES).then_some(b)
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

// SAFETY: every block handed out is inside the region, aligned as asked, not overlapping any other
// live block (offsets only grow, except when the last block itself is freed or resized), or comes
// from the system allocator, which then also frees it.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(base) = self.base() else { return System.alloc(layout) };
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let start = (base + used).next_multiple_of(layout.align()) - base;
            let end = match start.checked_add(layout.size()) {
                Some(e) if e <= ARENA_BYTES => e,
                _ => return System.alloc(layout),
            };
            match self.used.compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.contains(ptr) {
            // The last block handed out goes back; any other stays until exit.
            Some(base) => {
                let start = ptr as usize - base;
                let _ = self.used.compare_exchange(start + layout.size(), start, Ordering::Relaxed, Ordering::Relaxed);
            }
            None => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(base) = self.contains(ptr) {
            // The last block grows or shrinks in place when the region has room.
            let start = ptr as usize - base;
            if let Some(new_end) = start.checked_add(new_size).filter(|e| *e <= ARENA_BYTES) {
                if self
                    .used
                    .compare_exchange(start + layout.size(), new_end, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return ptr;
                }
            }
            if new_size <= layout.size() {
                return ptr;
            }
        } else if self.base.load(Ordering::Acquire) == FAILED {
            return System.realloc(ptr, layout, new_size);
        }
        // Move: a new block (arena or system), then free the old one where it came from.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn aligned_disjoint_and_writable() {
        let a = Arena::new();
        let mut blocks = Vec::new();
        for (i, align) in [1usize, 8, 16, 64, 4096, 2, 32].iter().cycle().take(200).enumerate() {
            let l = layout(1 + i * 7 % 300, *align);
            let p = unsafe { a.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "alignment {align}");
            unsafe { std::ptr::write_bytes(p, i as u8, l.size()) };
            blocks.push((p, l, i as u8));
        }
        for (p, l, v) in &blocks {
            let s = unsafe { std::slice::from_raw_parts(*p, l.size()) };
            assert!(s.iter().all(|b| b == v), "block overwritten");
        }
        for (p, l, _) in blocks {
            unsafe { a.dealloc(p, l) };
        }
    }

    #[test]
    fn last_block_is_reused_and_resized_in_place() {
        let a = Arena::new();
        let l = layout(100, 8);
        let p = unsafe { a.alloc(l) };
        unsafe { a.dealloc(p, l) };
        assert_eq!(unsafe { a.alloc(l) }, p, "the freed last block comes back");
        unsafe { std::ptr::write_bytes(p, 7, 100) };
        let q = unsafe { a.realloc(p, l, 1000) };
        assert_eq!(q, p, "the last block grows in place");
        assert!(unsafe { std::slice::from_raw_parts(q, 100) }.iter().all(|b| *b == 7));
        let other = unsafe { a.alloc(layout(10, 1)) };
        let r = unsafe { a.realloc(q, layout(1000, 8), 5000) };
        assert_ne!(r, q, "a block that is not the last moves");
        assert!(unsafe { std::slice::from_raw_parts(r, 100) }.iter().all(|b| *b == 7), "content kept");
        unsafe {
            a.dealloc(other, layout(10, 1));
            a.dealloc(r, layout(5000, 8));
        }
    }

    #[test]
    fn beyond_the_region_the_system_allocator_takes_over() {
        let a = Arena::new();
        let big = layout(ARENA_BYTES - 64, 8);
        let p = unsafe { a.alloc(big) };
        assert!(a.contains(p).is_some());
        let l = layout(4096, 8);
        let q = unsafe { a.alloc(l) };
        assert!(!q.is_null() && a.contains(q).is_none(), "no room left: system memory");
        unsafe { std::ptr::write_bytes(q, 1, 4096) };
        let r = unsafe { a.realloc(q, l, 8192) };
        assert!(!r.is_null() && a.contains(r).is_none());
        unsafe {
            a.dealloc(r, layout(8192, 8));
            a.dealloc(p, big);
        }
    }

    #[test]
    fn threads_get_disjoint_blocks() {
        let a = Arena::new();
        let ptrs: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let a = &a;
                    s.spawn(move || {
                        (0..500)
                            .map(|_| {
                                let p = unsafe { a.alloc(layout(24, 8)) };
                                unsafe { std::ptr::write_bytes(p, t as u8, 24) };
                                p as usize
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = ptrs.clone();
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|w| w[1] - w[0] >= 24), "overlapping blocks");
    }
}
