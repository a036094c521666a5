//! Running a child process inside a network namespace without `ip netns exec`: the namespace file is
//! opened before the fork and the child calls `setns` between fork and exec.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use cni_common::netns::NetNs;

/// A network namespace file opened for a child to enter. It must stay alive until the child has been
/// spawned (the child uses its fd number).
pub(crate) struct NsTarget {
    file: File,
}

impl NsTarget {
    pub(crate) fn open(path: &Path) -> io::Result<NsTarget> {
        Ok(NsTarget { file: File::open(path)? })
    }

    /// Make `cmd`'s child enter this namespace before exec.
    ///
    /// Like `ip netns exec`, the child also gets a private mount namespace (slave of ours, so nothing
    /// propagates back) with a fresh sysfs on `/sys`, so `/sys/class/net` shows the namespace's own
    /// devices. That part is best effort: when mounting is not permitted the child still runs in the
    /// network namespace with the inherited `/sys`.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes raw syscalls
        // (setns, unshare, mount), which are async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let _ = private_sysfs();
                Ok(())
            });
        }
    }
}

/// A private mount namespace (slave of the caller's, so nothing propagates back) with the sysfs of
/// the current network namespace mounted over `/sys`. In a thread of a multi-threaded process it
/// also unshares the thread's filesystem attributes (the kernel requires that for a mount
/// namespace of its own). If mounting fails, the inherited `/sys` stays usable.
///
/// # Safety
/// Only raw syscalls on static C strings; safe to call between fork and exec.
unsafe fn private_sysfs() -> io::Result<()> {
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        return Err(io::Error::last_os_error());
    }
    // Without MS_SLAVE our new mount would propagate to the parent's mount namespace: stop here if
    // that cannot be ensured.
    let flags = libc::MS_SLAVE | libc::MS_REC;
    if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
        return Err(io::Error::last_os_error());
    }
    // Mount over the inherited /sys rather than unmounting it first: if this fails, /sys stays usable.
    if libc::mount(c"sysfs".as_ptr(), c"/sys".as_ptr(), c"sysfs".as_ptr(), 0, std::ptr::null()) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

thread_local! {
    /// The network namespace file (device, inode) the calling thread entered with
    /// [`ThreadInNs::enter`], with its own mount namespace and sysfs.
    static ENTERED: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// The suite's network namespace handle's identity of `path`, as an I/O result.
fn netns_id(path: &Path) -> io::Result<(u64, u64)> {
    NetNs::open(path).and_then(|n| n.id()).map_err(|e| io::Error::other(e.to_string()))
}

/// Inode of the mount namespace file `file` (mount namespaces all live on one nsfs device).
fn mnt_ino(file: &File) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| m.ino())
}

/// Whether the calling thread has entered `path` with [`ThreadInNs::enter`]; its children then start
/// in that namespace (and with its sysfs) without any work between fork and exec.
pub(crate) fn thread_is_in(path: &Path) -> bool {
    ENTERED.with(|e| e.get()).is_some_and(|entered| netns_id(path).is_ok_and(|id| id == entered))
}

/// The calling thread, moved into a network namespace with a private mount namespace of its own
/// (slave of the process's, so nothing propagates back) that shows the namespace's sysfs on
/// `/sys`: what [`NsTarget::apply`] does in every child, done once for a worker thread. Processes
/// the thread spawns inherit both, so the runner can spawn them with `posix_spawn` (vfork) as a
/// runtime does, instead of a fork plus namespace work per plugin. Dropping it moves the thread back,
/// also into a namespace it had entered this way (entries nest).
pub struct ThreadInNs {
    old_net: NetNs,
    old_mnt: File,
    old_entered: Option<(u64, u64)>,
}

impl ThreadInNs {
    pub fn enter(path: &Path) -> io::Result<ThreadInNs> {
        let as_io = |e: cni_common::error::CniError| io::Error::other(e.to_string());
        let target = NetNs::open(path).map_err(as_io)?;
        let id = target.id().map_err(as_io)?;
        let back = ThreadInNs {
            old_net: NetNs::current().map_err(as_io)?,
            old_mnt: File::open("/proc/thread-self/ns/mnt")?,
            old_entered: ENTERED.with(|e| e.get()),
        };
        // On an error `back` moves the thread back.
        target.enter().map_err(as_io)?;
        // SAFETY: raw syscalls on static C strings that change only this thread.
        unsafe { private_sysfs()? };
        ENTERED.with(|e| e.set(Some(id)));
        Ok(back)
    }
}

impl Drop for ThreadInNs {
    fn drop(&mut self) {
        ENTERED.with(|e| e.set(self.old_entered));
        if let Err(e) = self.old_net.enter() {
            eprintln!("conformance: could not move a worker thread back to its network namespace: {e}");
        }
        // The mount namespace is only changed back if the thread got one of its own.
        let now = File::open("/proc/thread-self/ns/mnt").ok().and_then(|f| mnt_ino(&f));
        if now != mnt_ino(&self.old_mnt) {
            // SAFETY: setns on a namespace fd we own; a failure leaves the thread where it is.
            if unsafe { libc::setns(self.old_mnt.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
                eprintln!("conformance: could not move a worker thread back to its mount namespace: {}", io::Error::last_os_error());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{thread_is_in, ThreadInNs};
    use crate::sandbox::Sandbox;

    /// The control ADDs of cnibench enter a second sandbox from a worker already in the first:
    /// leaving the second must put the thread back in the first, where the runner spawns plugins
    /// without namespace work.
    #[test]
    fn entries_nest_and_leaving_the_inner_one_returns_to_the_outer() {
        crate::require_root();
        let (outer, inner) = (Sandbox::new().expect("sandbox"), Sandbox::new().expect("sandbox"));
        outer.host().run_ok("ip", ["link", "add", "nest0a", "type", "veth", "peer", "name", "nest0b"]).expect("veth");
        let sysfs_links = || -> Vec<String> {
            std::fs::read_dir("/sys/class/net")
                .expect("/sys/class/net")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let _outer = ThreadInNs::enter(outer.host_path()).expect("enter the outer sandbox");
                {
                    let _inner = ThreadInNs::enter(inner.host_path()).expect("enter the inner sandbox");
                    assert!(thread_is_in(inner.host_path()) && !thread_is_in(outer.host_path()));
                    assert!(!sysfs_links().iter().any(|n| n == "nest0a"), "the inner sandbox shows the outer's sysfs");
                }
                assert!(thread_is_in(outer.host_path()), "leaving the inner sandbox did not restore the outer entry");
                assert!(sysfs_links().iter().any(|n| n == "nest0a"), "not back in the outer sandbox's sysfs: {:?}", sysfs_links());
            });
        });
        assert!(!thread_is_in(outer.host_path()), "this thread never entered");
    }
}
