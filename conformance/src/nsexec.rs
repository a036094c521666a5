//! Running a child process inside a network namespace without `ip netns exec`: the namespace file is
//! opened before the fork and the child calls `setns` between fork and exec.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

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
                remount_sys();
                Ok(())
            });
        }
    }
}

/// Best effort: private mount namespace + sysfs of the current network namespace on /sys.
///
/// # Safety
/// Only raw syscalls on static C strings; safe to call between fork and exec.
unsafe fn remount_sys() {
    if libc::unshare(libc::CLONE_NEWNS) != 0 {
        return;
    }
    // Without MS_SLAVE our new mount would propagate to the parent's mount namespace: stop here if
    // that cannot be ensured.
    let flags = libc::MS_SLAVE | libc::MS_REC;
    if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
        return;
    }
    // Mount over the inherited /sys rather than unmounting it first: if this fails, /sys stays usable.
    let _ = libc::mount(c"sysfs".as_ptr(), c"/sys".as_ptr(), c"sysfs".as_ptr(), 0, std::ptr::null());
}
