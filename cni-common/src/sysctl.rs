//! sysctl reads and writes under /proc/sys, in the calling thread's network namespace.
//!
//! Keys are dotted (`net.ipv4.ip_forward`) or slash-separated (`net/ipv6/conf/eth0/accept_dad`).
//! Use the slash form when a component contains dots, such as the interface name `eth0.100`:
//! `net/ipv4/conf/eth0.100/forwarding`.
//!
//! The `/proc/sys/net` entries of a file belong to the network namespace of the task that opens
//! it, so call these functions from the thread that is inside the namespace to configure.
//!
//! The free functions resolve keys in the shared `/proc/sys`. [`Sysctls::private`] resolves them
//! in a procfs instance of the process's own, for the sysctls of a namespace that is new: in the
//! shared `/proc/sys`, every namespace that has looked up `net/ipv6` (or `net/ipv4`) has its own
//! directory entry of that name under the one shared `net` entry, all in one hash chain, and the
//! first lookup in a new namespace walks the whole chain (0.3 to 0.9 ms with 500 namespaces
//! here, against 0.06 ms with one) and then adds to it.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::CniError;

/// The key as a path relative to `/proc/sys`, refusing keys that could leave `/proc/sys` or name
/// nothing.
fn relative(key: &str) -> Result<PathBuf, CniError> {
    let bad = |why: &str| bad_key(key, why);
    let rel = key.strip_prefix("/proc/sys/").unwrap_or(key).trim_start_matches('/');
    let sep = if rel.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = rel.split(sep).collect();
    if rel.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key component"));
    }
    if parts.iter().any(|p| *p == "." || *p == ".." || p.contains('\0')) {
        return Err(bad("invalid key component"));
    }
    Ok(parts.into_iter().collect())
}

fn bad_key(key: &str, why: &str) -> CniError {
    CniError::Io(format!("sysctl {key:?}: {why}"))
}

/// `/proc/sys/<key>` for a dotted or slash-separated key (see [`relative`]).
fn path(key: &str) -> Result<PathBuf, CniError> {
    Ok(PathBuf::from("/proc/sys").join(relative(key)?))
}

/// Where keys are resolved: the shared `/proc/sys`, or a private procfs instance.
pub struct Sysctls {
    /// A detached mount of a procfs instance of our own (its own superblock, so its own directory
    /// entries); `None`: the shared `/proc`.
    private_proc: Option<OwnedFd>,
}

impl Sysctls {
    /// Keys resolved in the shared `/proc/sys`.
    pub fn shared() -> Sysctls {
        Sysctls { private_proc: None }
    }

    /// Keys resolved in a procfs instance of this handle's own (`fsopen("proc")`, `fsmount`, not
    /// attached anywhere, gone when the handle is dropped): for the sysctls of a new namespace
    /// (see the module documentation). Costs ~0.05 ms to make and 0.05–0.1 ms to drop (dissolving
    /// its private mount namespace waits for an expedited RCU grace period). Where the
    /// kernel or the process's privileges do not allow it (kernels before 5.8 share one instance
    /// per PID namespace anyway), keys are resolved in the shared `/proc/sys`.
    pub fn private() -> Sysctls {
        Sysctls { private_proc: mount_private_proc().ok() }
    }

    /// Whether keys are resolved in a private procfs instance.
    pub fn is_private(&self) -> bool {
        self.private_proc.is_some()
    }

    /// Open the file of `key`, for writing or reading.
    fn open(&self, key: &str, write: bool) -> Result<std::io::Result<File>, CniError> {
        let rel = relative(key)?;
        let Some(root) = &self.private_proc else {
            let path = Path::new("/proc/sys").join(rel);
            return Ok(if write { fs::OpenOptions::new().write(true).open(path) } else { File::open(path) });
        };
        // `relative` refused NUL bytes.
        let c = CString::new(Path::new("sys").join(rel).into_os_string().into_vec()).map_err(|_| bad_key(key, "invalid key component"))?;
        let flags = libc::O_CLOEXEC | if write { libc::O_WRONLY } else { libc::O_RDONLY };
        // SAFETY: openat on a live directory fd with a NUL-terminated relative path.
        let fd = unsafe { libc::openat(root.as_raw_fd(), c.as_ptr(), flags) };
        if fd < 0 {
            return Ok(Err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        Ok(Ok(unsafe { File::from_raw_fd(fd) }))
    }

    /// The value of `key`, without the trailing newline.
    pub fn read(&self, key: &str) -> Result<String, CniError> {
        let io_err = |e: std::io::Error| CniError::Io(format!("read sysctl {key} ({}): {e}", display(key)));
        let mut value = String::new();
        self.open(key, false)?.and_then(|mut f| f.read_to_string(&mut value)).map_err(io_err)?;
        Ok(value.trim_end_matches('\n').to_string())
    }

    /// Set `key` to `value`.
    pub fn write(&self, key: &str, value: &str) -> Result<(), CniError> {
        self.write_key(key, value, false).map(drop)
    }

    /// Set `key` to `value` if the key exists; `Ok(false)` if it does not (for instance
    /// `net/ipv6/conf/<link>/*` when the kernel runs without IPv6), other errors as [`Sysctls::write`].
    pub fn write_if_present(&self, key: &str, value: &str) -> Result<bool, CniError> {
        self.write_key(key, value, true)
    }

    fn write_key(&self, key: &str, value: &str, absent_ok: bool) -> Result<bool, CniError> {
        let io_err = |e: std::io::Error| CniError::Io(format!("write sysctl {key}={value:?} ({}): {e}", display(key)));
        let mut file = match self.open(key, true)? {
            Ok(f) => f,
            Err(e) if absent_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(e)),
        };
        // A sysctl takes the whole value in one write(2).
        file.write_all(value.as_bytes()).map_err(io_err)?;
        Ok(true)
    }

    /// Set `key` to `value` only if it currently differs (whitespace-separated fields compared,
    /// so `"32768\t60999"` equals `"32768 60999"`), sparing the kernel a needless write. Returns
    /// whether it wrote.
    pub fn write_if_different(&self, key: &str, value: &str) -> Result<bool, CniError> {
        if same_value(&self.read(key)?, value) {
            return Ok(false);
        }
        self.write(key, value)?;
        Ok(true)
    }
}

/// The key's path for messages (the same file in either instance).
fn display(key: &str) -> String {
    path(key).map_or_else(|_| key.to_string(), |p| p.display().to_string())
}

/// A new procfs instance as a detached mount: `fsopen`, `fsconfig(CREATE)`, `fsmount`.
fn mount_private_proc() -> std::io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let owned = |r: libc::c_long| -> std::io::Result<OwnedFd> {
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the system call returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
    };
    // SAFETY: fsopen with a NUL-terminated file system name.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsconfig on the fs context just opened; CREATE takes no key or value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount of the created context, no attribute flags.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// The value of `key` in the shared `/proc/sys`, without the trailing newline.
pub fn read(key: &str) -> Result<String, CniError> {
    Sysctls::shared().read(key)
}

/// Set `key` to `value` in the shared `/proc/sys`.
pub fn write(key: &str, value: &str) -> Result<(), CniError> {
    Sysctls::shared().write(key, value)
}

/// [`Sysctls::write_if_present`] in the shared `/proc/sys`.
pub fn write_if_present(key: &str, value: &str) -> Result<bool, CniError> {
    Sysctls::shared().write_if_present(key, value)
}

/// [`Sysctls::write_if_different`] in the shared `/proc/sys`.
pub fn write_if_different(key: &str, value: &str) -> Result<bool, CniError> {
    Sysctls::shared().write_if_different(key, value)
}

fn same_value(current: &str, wanted: &str) -> bool {
    current.split_whitespace().eq(wanted.split_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_slash_keys() {
        assert_eq!(path("net.ipv4.ip_forward").unwrap(), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(
            path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            path("/proc/sys/net/ipv6/conf/all/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")
        );
        assert_eq!(path("/net/core/somaxconn").unwrap(), PathBuf::from("/proc/sys/net/core/somaxconn"));
    }

    #[test]
    fn bad_keys_name_the_key() {
        for key in ["", "net..ipv4", "net/../../etc/passwd", "net/ipv4/", "a\0b"] {
            let err = path(key).expect_err(key).to_string();
            assert!(err.contains("sysctl"), "{err}");
        }
    }

    #[test]
    fn read_existing_and_missing() {
        let v = read("kernel.ostype").expect("kernel.ostype is readable");
        assert_eq!(v, "Linux");
        let err = read("net.ipv4.conf.no-such-iface.forwarding").unwrap_err().to_string();
        assert!(err.contains("net.ipv4.conf.no-such-iface.forwarding"), "{err}");
    }

    #[test]
    fn write_errors_name_the_key() {
        let err = write("net/ipv4/conf/no-such-iface/forwarding", "1").unwrap_err().to_string();
        assert!(err.contains("net/ipv4/conf/no-such-iface/forwarding"), "{err}");
    }

    #[test]
    fn write_if_present_skips_only_an_absent_key() {
        assert!(!write_if_present("net/ipv6/conf/no-such-iface/disable_ipv6", "1").unwrap());
        // Present but not writable (a directory): still an error that names the key.
        let err = write_if_present("net/ipv6/conf/all", "1").unwrap_err().to_string();
        assert!(err.contains("net/ipv6/conf/all"), "{err}");
    }

    #[test]
    fn private_instance_resolves_keys_in_the_callers_namespace() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it mounts a procfs instance and creates a network namespace); run `cargo test` as root"
        );
        let thread = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            let private = Sysctls::private();
            assert!(private.is_private(), "root could not mount a private procfs instance");
            assert!(!Sysctls::shared().is_private());
            assert_eq!(private.read("kernel.ostype").unwrap(), "Linux");
            // A key of this namespace: written through the private instance, read in /proc/sys.
            let key = "net/ipv4/conf/lo/arp_notify";
            assert_eq!(read(key).unwrap(), "0");
            assert!(private.write_if_different(key, "1").unwrap());
            assert_eq!(read(key).unwrap(), "1", "the write reached this namespace's setting");
            assert!(!private.write_if_different(key, "1").unwrap(), "same value: no write");
            assert_eq!(private.read(key).unwrap(), "1");
            // Errors and absent keys as in /proc/sys, naming the key and its /proc/sys path.
            assert!(!private.write_if_present("net/ipv6/conf/no-such-iface/disable_ipv6", "1").unwrap());
            let err = private.write("net/ipv4/conf/no-such-iface/forwarding", "1").unwrap_err().to_string();
            assert!(err.contains("/proc/sys/net/ipv4/conf/no-such-iface/forwarding"), "{err}");
            let err = private.read("net/../../etc/passwd").unwrap_err().to_string();
            assert!(err.contains("invalid key component"), "{err}");
        });
        thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    }

    #[test]
    fn values_compare_by_fields() {
        assert!(same_value("32768\t60999", "32768 60999"));
        assert!(same_value("1", "1\n"));
        assert!(!same_value("0", "1"));
    }
}
