//! A bump allocator for the plugin processes, which live for milliseconds.
//!
//! A plugin allocates a few hundred kilobytes in small pieces (JSON, netlink messages, nftables
//! plans) and exits. With the static musl build, musl's allocator made portmap's ADD 40 % slower
//! than the glibc build; bumping a pointer through one lazily mapped region is faster than either.
//!
//! What a process frees is reused, cheaply: small blocks (up to [`MAX_CLASS_BYTES`], alignment up
//! to 16) come in power-of-two size classes, and a freed one goes on its class's free list, from
//! which the next request of that class is served before the region grows. A larger block goes
//! back to the region only when it is the last one handed out. Every page of the region a process
//! touches is a page fault and a zeroed page (2.5–3.5 µs each on the VMs this suite is measured
//! on), so reuse is what keeps an ADD's footprint small: serialising JSON and decoding netlink
//! replies free most of what they allocate. Memory goes back to the system when the process
//! exits. A process that asks for more than [`ARENA_BYTES`] in total goes on with the system
//! allocator, so the arena bounds what a long-running caller could waste; it is meant for
//! short-lived binaries only, which opt in with
//! `#[global_allocator] static ALLOC: cni_common::arena::Arena = cni_common::arena::Arena::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Size of the region (virtual: pages are only backed when touched). An ADD or DEL uses a few
/// hundred kilobytes; a process that allocates more (retried reads of a large ruleset under
/// contention, GC of many attachments) goes on with the system allocator, which reuses freed
/// memory, so the bytes never returned stay under this bound.
pub const ARENA_BYTES: usize = 4 << 20;

/// The largest block served from a size class (and reused through its free list).
pub const MAX_CLASS_BYTES: usize = 4096;

/// The smallest class, and the alignment of every class block.
const MIN_CLASS_BYTES: usize = 16;

/// Classes 16, 32, ..., [`MAX_CLASS_BYTES`] bytes.
const CLASSES: usize = (MAX_CLASS_BYTES / MIN_CLASS_BYTES).trailing_zeros() as usize + 1;

/// See the module documentation.
pub struct Arena {
    /// Start of the region; 0 until the first allocation, 1 while it is being mapped, and
    /// [`usize::MAX`] if mapping failed (then everything goes to the system allocator).
    base: AtomicUsize,
    /// Bytes of the region handed out (the next free offset).
    used: AtomicUsize,
    /// One free list per size class: a stack of freed blocks, linked through their first four
    /// bytes by region offset + 1. Each head packs a change counter (high 32 bits) with the top
    /// block's offset + 1 (low 32 bits; 0 is an empty list), so that a pop that raced with other
    /// pops and pushes fails its compare-and-swap instead of installing a stale link.
    free: [AtomicU64; CLASSES],
}

/// Which way a block of `layout` is handed out and taken back. It depends on the layout alone, as
/// `dealloc` gets the layout `alloc` (or `realloc`) was given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Size class `c`: blocks of `MIN_CLASS_BYTES << c` bytes, 16-aligned, reused via `free[c]`.
    Class(usize),
    /// Anything larger or more aligned: bumped, and returned only when it is the last block.
    Bump,
}

fn kind(layout: Layout) -> Kind {
    if layout.align() > MIN_CLASS_BYTES || layout.size() > MAX_CLASS_BYTES {
        return Kind::Bump;
    }
    let size = layout.size().max(MIN_CLASS_BYTES);
    Kind::Class((size.next_power_of_two() / MIN_CLASS_BYTES).trailing_zeros() as usize)
}

fn class_bytes(c: usize) -> usize {
    MIN_CLASS_BYTES << c
}

const UNMAPPED: usize = 0;
const MAPPING: usize = 1;
const FAILED: usize = usize::MAX;

impl Arena {
    pub const fn new() -> Arena {
        #[allow(clippy::declare_interior_mutable_const)]
        const EMPTY: AtomicU64 = AtomicU64::new(0);
        Arena { base: AtomicUsize::new(UNMAPPED), used: AtomicUsize::new(0), free: [EMPTY; CLASSES] }
    }

    /// The region's start, mapping it on first use; `None` if it cannot be had.
    fn base(&self) -> Option<usize> {
        loop {
            match self.base.load(Ordering::Acquire) {
                FAILED => return None,
                MAPPING => std::hint::spin_loop(),
                UNMAPPED => {
                    if self.base.compare_exchange(UNMAPPED, MAPPING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        // Mapped directly rather than through the system allocator, whose
                        // bookkeeping for it would cost pages of its own. Never unmapped: the
                        // process exits instead.
                        // SAFETY: an anonymous private mapping at an address of the kernel's choice.
                        let p = unsafe {
                            libc::mmap(
                                std::ptr::null_mut(),
                                ARENA_BYTES,
                                libc::PROT_READ | libc::PROT_WRITE,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                                -1,
                                0,
                            )
                        };
                        let b = if p == libc::MAP_FAILED || p.is_null() { FAILED } else { p as usize };
                        if b != FAILED {
                            // The region is 2 MiB-aligned by size, so where transparent huge pages
                            // are "always" (the kernel's default in several distributions) its
                            // first touch would get a huge page: 2 MiB zeroed and resident instead
                            // of the ~25 pages an ADD uses (a bridge ADD's own peak RSS 1.9 ->
                            // 4.0 MiB, measured by asking for huge pages with MADV_HUGEPAGE).
                            // The flag also keeps the region a mapping of its own: bridge's IPAM
                            // thread gets its stack right below it, and with equal flags the two
                            // merged, so that the thread's start (mprotect) and exit (munmap)
                            // split and re-merged the mapping the main thread allocates from (no
                            // difference in time that paired runs can see, 0.996x).
                            // Failing (a kernel without THP) changes nothing.
                            // SAFETY: `b` is the start of the ARENA_BYTES just mapped.
                            unsafe { libc::madvise(b as *mut libc::c_void, ARENA_BYTES, libc::MADV_NOHUGEPAGE) };
                        }
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

    /// A fresh block of `size` bytes aligned to `align` from the region, or `None` when the
    /// region is full.
    fn bump(&self, base: usize, size: usize, align: usize) -> Option<*mut u8> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let start = (base + used).next_multiple_of(align) - base;
            let end = start.checked_add(size).filter(|e| *e <= ARENA_BYTES)?;
            match self.used.compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some((base + start) as *mut u8),
                Err(now) => used = now,
            }
        }
    }

    /// The link word of the block at region offset `off` (its first four bytes).
    ///
    /// # Safety
    /// `off` must be a class block's offset inside the mapped region.
    unsafe fn link(base: usize, off: u32) -> &'static AtomicU32 {
        // SAFETY: class blocks are 16-aligned and at least 16 bytes, inside the region, which stays
        // mapped until the process exits.
        unsafe { &*((base + off as usize) as *const AtomicU32) }
    }

    /// Take a block off class `c`'s free list.
    fn pop(&self, base: usize, c: usize) -> Option<*mut u8> {
        let head = &self.free[c];
        let mut h = head.load(Ordering::Acquire);
        loop {
            let top = h as u32;
            if top == 0 {
                return None;
            }
            // The link may be stale if another thread pops this block meanwhile; then the counter
            // has moved and the exchange below fails.
            // SAFETY: `top - 1` is the offset of a block pushed onto this list.
            let next = unsafe { Self::link(base, top - 1) }.load(Ordering::Relaxed);
            let new = (((h >> 32) + 1) << 32) | next as u64;
            match head.compare_exchange_weak(h, new, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => return Some((base + (top - 1) as usize) as *mut u8),
                Err(now) => h = now,
            }
        }
    }

    /// Put the class-`c` block at `ptr` on its free list.
    fn push(&self, base: usize, c: usize, ptr: *mut u8) {
        let off = (ptr as usize - base) as u32;
        let head = &self.free[c];
        let mut h = head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `ptr` is a class block of this region that its owner has just given up.
            unsafe { Self::link(base, off) }.store(h as u32, Ordering::Relaxed);
            let new = (((h >> 32) + 1) << 32) | (off as u64 + 1);
            match head.compare_exchange_weak(h, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

// SAFETY: every block handed out is inside the region, aligned as asked, not overlapping any other
// live block (offsets only grow, except when the last block itself is freed or resized, and a class
// block is handed out again only after it was freed, to a request of its class), or comes from the
// system allocator, which then also frees it.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(base) = self.base() else { return System.alloc(layout) };
        let block = match kind(layout) {
            Kind::Class(c) => {
                self.pop(base, c).or_else(|| self.bump(base, class_bytes(c), MIN_CLASS_BYTES))
            }
            Kind::Bump => self.bump(base, layout.size(), layout.align()),
        };
        block.unwrap_or_else(|| System.alloc(layout))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(base) = self.contains(ptr) else { return System.dealloc(ptr, layout) };
        match kind(layout) {
            Kind::Class(c) => self.push(base, c, ptr),
            // The last block handed out goes back; any other stays until exit.
            Kind::Bump => {
                let start = ptr as usize - base;
                let _ = self.used.compare_exchange(start + layout.size(), start, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(base) = self.contains(ptr) else { return System.realloc(ptr, layout, new_size) };
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (kind(layout), kind(new_layout)) {
            // Still the same class: the block already has room.
            (Kind::Class(c), Kind::Class(n)) if c == n => return ptr,
            (Kind::Bump, Kind::Bump) => {
                // The last block grows or shrinks in place when the region has room; any other
                // keeps its place when it shrinks.
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
            }
            _ => {}
        }
        // Move: a new block (class, region or system), then free the old one where it came from.
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

    /// Whether the `n` bytes at `p` all hold `v`.
    fn holds(p: *mut u8, n: usize, v: u8) -> bool {
        unsafe { std::slice::from_raw_parts(p, n) }.iter().all(|b| *b == v)
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
    fn the_region_never_gets_transparent_huge_pages() {
        let a = Arena::new();
        let p = unsafe { a.alloc(layout(64, 8)) };
        let base = a.base.load(Ordering::Acquire);
        assert!(p as usize >= base && (p as usize) < base + ARENA_BYTES, "block not from the region");
        // The mapping that holds the region in smaps (the kernel merges it with a neighbour of
        // the same flags, another test's arena, say): its header line is "<start>-<end> ...", and
        // its VmFlags line lists "nh" (MADV_NOHUGEPAGE).
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let holds_region = |line: &str| {
            let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
            let bounds = range.and_then(|(s, e)| Some((usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?)));
            bounds.is_some_and(|(s, e)| s <= base && base + ARENA_BYTES <= e)
        };
        let flags = smaps.lines().skip_while(|l| !holds_region(l)).find(|l| l.starts_with("VmFlags"));
        let flags = flags.unwrap_or_else(|| panic!("no smaps entry holds the region at {base:#x}"));
        assert!(flags.split_whitespace().any(|f| f == "nh"), "arena region at {base:#x} may get huge pages: {flags}");
        unsafe { a.dealloc(p, layout(64, 8)) };
    }

    #[test]
    fn layouts_map_to_classes() {
        assert_eq!(kind(layout(1, 1)), Kind::Class(0));
        assert_eq!(kind(layout(16, 16)), Kind::Class(0));
        assert_eq!(kind(layout(17, 8)), Kind::Class(1));
        assert_eq!(kind(layout(100, 8)), Kind::Class(3));
        assert_eq!(kind(layout(4096, 8)), Kind::Class(CLASSES - 1));
        assert_eq!(class_bytes(CLASSES - 1), MAX_CLASS_BYTES);
        assert_eq!(kind(layout(4097, 8)), Kind::Bump);
        assert_eq!(kind(layout(64, 32)), Kind::Bump, "more aligned than a class block");
    }

    #[test]
    fn freed_small_blocks_are_reused_by_their_class() {
        let a = Arena::new();
        let (l, other) = (layout(100, 8), layout(40, 8));
        let p = unsafe { a.alloc(l) };
        let q = unsafe { a.alloc(other) };
        unsafe { a.dealloc(p, l) };
        let used = a.used.load(Ordering::Relaxed);
        assert_eq!(unsafe { a.alloc(layout(120, 16)) }, p, "a freed 128-byte block serves the next request of its class");
        assert_eq!(a.used.load(Ordering::Relaxed), used, "without growing the region");
        let r = unsafe { a.alloc(l) };
        assert_ne!(r, p, "the block is taken");
        assert_ne!(r, q);
        unsafe {
            a.dealloc(q, other);
            a.dealloc(r, l);
            a.dealloc(p, layout(120, 16));
        }
    }

    #[test]
    fn class_blocks_resize_in_place_within_their_class_and_move_across() {
        let a = Arena::new();
        let l = layout(70, 8);
        let p = unsafe { a.alloc(l) };
        unsafe { std::ptr::write_bytes(p, 9, 70) };
        assert_eq!(unsafe { a.realloc(p, l, 128) }, p, "70 -> 128 bytes stays in the 128-byte block");
        let q = unsafe { a.realloc(p, layout(128, 8), 3000) };
        assert_ne!(q, p, "a larger class moves");
        assert!(holds(q, 70, 9), "content kept");
        assert_eq!(unsafe { a.alloc(layout(128, 8)) }, p, "the old block went back to its class");
        let r = unsafe { a.realloc(q, layout(3000, 8), 9000) };
        assert!(holds(r, 70, 9), "content kept into the region");
        let s = unsafe { a.realloc(r, layout(9000, 8), 50) };
        assert!(holds(s, 50, 9), "and back into a class");
        unsafe {
            a.dealloc(s, layout(50, 8));
            a.dealloc(p, layout(128, 8));
        }
    }

    #[test]
    fn last_block_is_reused_and_resized_in_place() {
        let a = Arena::new();
        let l = layout(5000, 8);
        let p = unsafe { a.alloc(l) };
        unsafe { a.dealloc(p, l) };
        assert_eq!(unsafe { a.alloc(l) }, p, "the freed last block comes back");
        unsafe { std::ptr::write_bytes(p, 7, 100) };
        let q = unsafe { a.realloc(p, l, 10_000) };
        assert_eq!(q, p, "the last block grows in place");
        assert!(holds(q, 100, 7));
        let other = unsafe { a.alloc(layout(10_000, 1)) };
        let r = unsafe { a.realloc(q, layout(10_000, 8), 20_000) };
        assert_ne!(r, q, "a block that is not the last moves");
        assert!(holds(r, 100, 7), "content kept");
        unsafe {
            a.dealloc(other, layout(10_000, 1));
            a.dealloc(r, layout(20_000, 8));
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

    #[test]
    fn threads_freeing_and_reusing_never_share_a_block() {
        let a = Arena::new();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let a = &a;
                s.spawn(move || {
                    let mut live: Vec<(usize, Layout)> = Vec::new();
                    for i in 0..20_000usize {
                        let l = layout(1 + (i * 37 + t as usize * 11) % 600, 8);
                        let p = unsafe { a.alloc(l) };
                        assert!(!p.is_null());
                        unsafe { std::ptr::write_bytes(p, t, l.size()) };
                        live.push((p as usize, l));
                        if live.len() > 16 {
                            let (q, lq) = live.swap_remove(i % live.len());
                            let block = unsafe { std::slice::from_raw_parts(q as *const u8, lq.size()) };
                            assert!(block.iter().all(|b| *b == t), "a block was handed to two owners");
                            unsafe { a.dealloc(q as *mut u8, lq) };
                        }
                    }
                    for (q, lq) in live {
                        unsafe { a.dealloc(q as *mut u8, lq) };
                    }
                });
            }
        });
        assert!(a.used.load(Ordering::Relaxed) < 1 << 20, "freed blocks were reused");
    }
}
