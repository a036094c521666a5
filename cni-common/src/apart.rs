//! Helper threads that start on another CPU than the thread that starts them.
//!
//! The kernel queues a new thread on its parent's CPU more often than not: bridge's IPAM thread
//! did so in 5 ADDs of 6 on a 2-core VM. There it waits for the parent's time slice to end
//! (~0.7 ms) and then takes turns with it on one CPU while the other CPU idles, so the work meant
//! to overlap runs one after the other: the veth pair the parent creates meanwhile took 2.1 ms
//! instead of 1.0, and a bridge ADD 2.9 ms instead of 2.1 (phase marks, 60 ADDs).
//!
//! [`spawn_apart`] moves the new thread, before it first runs, to the other CPUs the caller may
//! use (its affinity mask, which a runtime's cpuset may narrow), where it starts at once when one
//! of them is idle, and then gives it the caller's whole mask back, so that the scheduler may
//! still move it, back to the caller's CPU too when the other is busy. (Left narrowed until it
//! ran, it waited for a busy CPU: the slowest tenth of bridge ADDs got slower.) Bridge ADD with
//! it: 1.9–2.0 ms, the slowest tenth from 2.2 ms. With a single allowed CPU it is a plain spawn.

use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

const SET_SIZE: usize = std::mem::size_of::<libc::cpu_set_t>();

/// The calling thread's allowed CPUs, and the same without the CPU it runs on now; `None` when
/// that leaves none (or the kernel does not say).
fn placement() -> Option<(libc::cpu_set_t, libc::cpu_set_t)> {
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `allowed` is a cpu_set_t of SET_SIZE bytes, written by the kernel.
    if unsafe { libc::sched_getaffinity(0, SET_SIZE, &mut allowed) } != 0 {
        return None;
    }
    let mut others = allowed;
    if cpu < 8 * SET_SIZE {
        // SAFETY: `cpu` is within the set (checked above).
        unsafe { libc::CPU_CLR(cpu, &mut others) };
    }
    // SAFETY: `others` is a valid cpu_set_t.
    (unsafe { libc::CPU_COUNT(&others) } > 0).then_some((allowed, others))
}

/// Start `f` on a new thread named `name`, placed on another CPU than the caller's when the
/// caller may use another (see the module documentation).
pub fn spawn_apart<T, F>(name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let place = placement();
    let gated = place.is_some();
    // The thread waits at this gate until it is placed: placing a thread that has already ended
    // would name a thread id of 0, that is the caller itself.
    let (placed, gate) = std::sync::mpsc::sync_channel::<()>(1);
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        if gated {
            let _ = gate.recv();
        }
        f()
    })?;
    if let Some((allowed, others)) = place {
        let thread = handle.as_pthread_t() as usize as libc::pthread_t;
        // Failing leaves the thread where the kernel put it, or narrowed to `others`: slower, not
        // wrong. SAFETY: the thread exists (it waits at the gate); both are valid cpu_set_t.
        unsafe {
            libc::pthread_setaffinity_np(thread, SET_SIZE, &others);
            libc::pthread_setaffinity_np(thread, SET_SIZE, &allowed);
        }
    }
    let _ = placed.send(());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity() -> libc::cpu_set_t {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::sched_getaffinity(0, SET_SIZE, &mut set) }, 0, "sched_getaffinity");
        set
    }

    fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
        (0..8 * SET_SIZE).filter(|&c| unsafe { libc::CPU_ISSET(c, set) }).collect()
    }

    #[test]
    fn placement_leaves_out_the_current_cpu_and_nothing_else() {
        let before = cpus(&affinity());
        match placement() {
            Some((allowed, others)) => {
                assert_eq!(cpus(&allowed), before);
                let others = cpus(&others);
                assert_eq!(others.len(), before.len() - 1, "{others:?} of {before:?}");
                assert!(others.iter().all(|c| before.contains(c)));
            }
            None => assert_eq!(before.len(), 1, "no placement although {before:?} are allowed"),
        }
    }

    #[test]
    fn the_thread_returns_its_value_and_runs_with_the_callers_whole_mask() {
        let before = cpus(&affinity());
        let got = spawn_apart("apart-test", || (cpus(&affinity()), 7)).unwrap().join().unwrap();
        assert_eq!(got, (before, 7));
    }

    #[test]
    fn a_caller_on_one_cpu_starts_a_plain_thread_on_it() {
        // On a thread of its own, whose mask it narrows to the CPU it runs on.
        std::thread::spawn(|| {
            let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).expect("sched_getcpu");
            let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET(cpu, &mut one) };
            assert_eq!(unsafe { libc::sched_setaffinity(0, SET_SIZE, &one) }, 0, "sched_setaffinity");
            assert!(placement().is_none());
            let got = spawn_apart("apart-one", || cpus(&affinity())).unwrap().join().unwrap();
            assert_eq!(got, vec![cpu]);
        })
        .join()
        .unwrap();
    }
}
