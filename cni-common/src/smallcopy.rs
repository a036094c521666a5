//! Small copies without musl's `memcpy`.
//!
//! musl's x86_64 `memcpy` and `memmove` start every copy with `rep movsq`, whose fixed cost
//! dominates the short copies that building and reading netlink messages consist of: encoding
//! a portmap ADD's nf_tables batch took 115 µs with it and 42 µs with [`copy_small`] in front of it
//! (the same code against glibc: 33 µs). The release build for musl (`scripts/build-release.sh`)
//! links with `--wrap=memcpy --wrap=memmove` and sets `cfg(cni_wrap_memcpy)`, which routes every
//! call through the wrappers here: copies of up to 32 bytes are done with a few loads and stores,
//! longer ones go to the C library. Other builds do not use this module's wrappers.

/// Copy `n` bytes from `src` to `dst` if `n` is at most 32 and return true; return false (and
/// copy nothing) otherwise. Every load happens before any store, so the regions may overlap
/// (`memmove` semantics).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `n` bytes.
#[inline(always)]
pub unsafe fn copy_small(dst: *mut u8, src: *const u8, n: usize) -> bool {
    use core::ptr::{read_unaligned as rd, write_unaligned as wr};
    // SAFETY (all branches): the caller guarantees `n` readable/writable bytes; each access stays
    // within [0, n) by the branch's bounds on `n`.
    unsafe {
        if n >= 16 {
            if n > 32 {
                return false;
            }
            let a: u128 = rd(src as *const u128);
            let b: u128 = rd(src.add(n - 16) as *const u128);
            wr(dst as *mut u128, a);
            wr(dst.add(n - 16) as *mut u128, b);
        } else if n >= 8 {
            let a: u64 = rd(src as *const u64);
            let b: u64 = rd(src.add(n - 8) as *const u64);
            wr(dst as *mut u64, a);
            wr(dst.add(n - 8) as *mut u64, b);
        } else if n >= 4 {
            let a: u32 = rd(src as *const u32);
            let b: u32 = rd(src.add(n - 4) as *const u32);
            wr(dst as *mut u32, a);
            wr(dst.add(n - 4) as *mut u32, b);
        } else if n > 0 {
            let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
            *dst = a;
            *dst.add(n / 2) = b;
            *dst.add(n - 1) = c;
        }
    }
    true
}

#[cfg(cni_wrap_memcpy)]
mod wrap {
    /// The C library's `memcpy` / `memmove` signature.
    type CopyFn = unsafe extern "C" fn(*mut u8, *const u8, usize) -> *mut u8;

    extern "C" {
        fn __real_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
        fn __real_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    }

    /// A short copy inline, a longer one by `libc`.
    ///
    /// # Safety
    /// As `libc` (`copy_small` is overlap-safe, so both memcpy and memmove contracts hold).
    #[inline(always)]
    unsafe fn small_or(dst: *mut u8, src: *const u8, n: usize, libc: CopyFn) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe {
            if super::copy_small(dst, src, n) {
                return dst;
            }
            libc(dst, src, n)
        }
    }

    /// `memcpy` for the whole program (the linker's `--wrap=memcpy`).
    ///
    /// # Safety
    /// As `memcpy`.
    #[no_mangle]
    pub unsafe extern "C" fn __wrap_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's memcpy contract.
        unsafe { small_or(dst, src, n, __real_memcpy) }
    }

    /// `memmove` for the whole program (the linker's `--wrap=memmove`).
    ///
    /// # Safety
    /// As `memmove`.
    #[no_mangle]
    pub unsafe extern "C" fn __wrap_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's memmove contract.
        unsafe { small_or(dst, src, n, __real_memmove) }
    }

    // Kept through LTO: nothing in Rust calls them by name, only the linker's renaming does.
    #[used]
    static KEEP: [CopyFn; 2] = [__wrap_memcpy, __wrap_memmove];
}

#[cfg(test)]
mod tests {
    use super::copy_small;

    #[test]
    fn copies_every_small_size_and_refuses_larger() {
        let src: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        for n in 0..=40usize {
            for off in 0..4usize {
                let mut dst = vec![0xAAu8; 64];
                // SAFETY: both buffers hold 64 bytes; off + n <= 44.
                let done = unsafe { copy_small(dst.as_mut_ptr().add(off), src.as_ptr().add(off), n) };
                assert_eq!(done, n <= 32, "n={n}");
                if done {
                    assert_eq!(&dst[off..off + n], &src[off..off + n], "n={n} off={off}");
                    assert!(dst[..off].iter().all(|&b| b == 0xAA), "n={n}: wrote before the start");
                    assert!(dst[off + n..].iter().all(|&b| b == 0xAA), "n={n}: wrote past the end");
                } else {
                    assert!(dst.iter().all(|&b| b == 0xAA), "n={n}: refused but wrote");
                }
            }
        }
    }

    #[test]
    fn overlapping_regions_copy_as_memmove() {
        for n in 1..=32usize {
            for shift in [1usize, 3, 7, 9] {
                let orig: Vec<u8> = (0..80u8).collect();
                let mut fwd = orig.clone();
                let mut want = orig.clone();
                want.copy_within(10..10 + n, 10 + shift);
                // SAFETY: within the 80-byte buffer (10 + shift + n <= 51).
                assert!(unsafe { copy_small(fwd.as_mut_ptr().add(10 + shift), fwd.as_ptr().add(10), n) });
                assert_eq!(fwd, want, "forward overlap n={n} shift={shift}");
                let mut back = orig.clone();
                let mut want = orig.clone();
                want.copy_within(10 + shift..10 + shift + n, 10);
                // SAFETY: as above.
                assert!(unsafe { copy_small(back.as_mut_ptr().add(10), back.as_ptr().add(10 + shift), n) });
                assert_eq!(back, want, "backward overlap n={n} shift={shift}");
            }
        }
    }
}
