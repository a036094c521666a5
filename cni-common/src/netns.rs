//! Network namespaces: open one by path and run code inside it, always returning to the
//! namespace the thread started in (also on error and on panic).

use crate::error::CniError;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

thread_local! {
    /// The calling thread's namespace (device, inode), as last entered or read; see
    /// [`NetNs::current_id`].
    static CURRENT_ID: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace at `path` (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`) and check that it is
    /// a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, CniError> {
        let path = path.as_ref();
        let bad = |reason: String| CniError::InvalidNetns { path: path.display().to_string(), reason };
        let file = File::open(path).map_err(|e| bad(e.to_string()))?;
        // A netns file is an nsfs inode; check the namespace type through the NS_GET_NSTYPE ioctl.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)
        // SAFETY: ioctl on an fd we own, with no argument.
        let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if t < 0 {
            return Err(bad(format!("not a namespace file: {}", std::io::Error::last_os_error())));
        }
        if t != libc::CLONE_NEWNET {
            return Err(bad("not a network namespace".into()));
        }
        Ok(NetNs { file, path: path.to_path_buf() })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, CniError> {
        let path = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        let file = File::open(&path).map_err(|e| CniError::InvalidNetns { path: path.clone(), reason: e.to_string() })?;
        Ok(NetNs { file, path: PathBuf::from(path) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Device and inode of the calling thread's namespace, without opening it when the thread
    /// got there through [`NetNs::enter`] or asked before (a thread-local record). Code that moves
    /// a thread by other means (`unshare`, a raw `setns`) calls [`NetNs::forget_current`] after.
    pub fn current_id() -> Result<(u64, u64), CniError> {
        if let Some(id) = CURRENT_ID.get() {
            return Ok(id);
        }
        let id = NetNs::current()?.id()?;
        CURRENT_ID.set(Some(id));
        Ok(id)
    }

    /// Drop the calling thread's record of its namespace (see [`NetNs::current_id`]).
    pub fn forget_current() {
        CURRENT_ID.set(None);
    }

    /// Device and inode that identify the namespace.
    pub fn id(&self) -> Result<(u64, u64), CniError> {
        let st = nix::sys::stat::fstat(self.file.as_fd())
            .map_err(|e| CniError::InvalidNetns { path: self.path.display().to_string(), reason: e.to_string() })?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Whether `self` is the namespace the calling thread is in.
    pub fn is_current(&self) -> Result<bool, CniError> {
        Ok(self.id()? == NetNs::current_id()?)
    }

    /// Move the calling thread into this namespace.
    pub fn enter(&self) -> Result<(), CniError> {
        let moved = setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| CniError::InvalidNetns {
            path: self.path.display().to_string(),
            reason: format!("setns: {e}"),
        });
        // The record follows the thread; unknown (read again when asked) if the inode cannot be read.
        CURRENT_ID.set(if moved.is_ok() { self.id().ok() } else { None });
        moved
    }

    /// Run `f` inside this namespace, then return to the thread's original namespace, even when `f`
    /// fails or panics. A thread that cannot go back (`setns` to the namespace it came from fails,
    /// which the kernel does only when out of memory) must not go on in the wrong namespace, where
    /// the host's changes, the rollback's among them, would land: the process aborts, saying so.
    pub fn run<T>(&self, f: impl FnOnce() -> Result<T, CniError>) -> Result<T, CniError> {
        let guard = Return { origin: NetNs::current()? };
        self.enter()?;
        let out = f();
        guard.restore();
        out
    }
}

/// Restores the original namespace when dropped (on panic) or explicitly.
struct Return {
    origin: NetNs,
}

impl Return {
    fn restore(mut self) {
        self.go_back();
        std::mem::forget(self);
    }

    /// Back to the original namespace, or abort: a thread left in the wrong namespace must not go on.
    fn go_back(&mut self) {
        if let Err(e) = self.origin.enter() {
            eprintln!("cannot return to the original network namespace ({e}): aborting");
            std::process::abort();
        }
    }
}

impl Drop for Return {
    fn drop(&mut self) {
        // Only reached while unwinding.
        self.go_back();
    }
}
