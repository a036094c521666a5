//! The on-disk store: the reference's layout plus an index that keeps ADD and DEL from reading every
//! lease file.
//!
//! Layout of `<dataDir>/<network>/` (the reference's, unchanged):
//! - `<ip>`: one file per lease, named by the address, mode 0600, content `<container ID>\r\n<ifname>`
//!   (legacy files hold only the container ID);
//! - `last_reserved_ip.<N>`: the last address handed out from range set N (round-robin start);
//! - `lock`: `flock(LOCK_EX)` on it around every access that may change anything.
//!
//! Our addition, `.host-local-index/` (a name no address can have):
//! - `a/<container ID>:<ifname>`: per attachment, the addresses it holds (legacy leases under
//!   `<container ID>:`; names too long for a file name are hashed). Written as a hard link to the
//!   attachment's first lease with the addresses in the extended attribute `user.cnihl` (one per
//!   line), so an ADD creates one inode, the lease's, not two; where the filesystem has no user
//!   extended attributes or hard links, as a file of its own holding a header, the container ID,
//!   the ifname and the addresses. Both forms are read. (ext4 without a journal skips every inode
//!   freed in the last 5 to 300 seconds when it allocates one, by a scan that grows with them, so
//!   each inode an ADD creates costs more the more containers came and went lately.)
//! - `stamp`: the inode and modification time of the network directory and of `a/` as we left them.
//!
//! Every lease the index lists is verified against its lease file before use, so a stale entry can
//! never cause a wrong release or a false duplicate. What the index could miss is a lease written by
//! someone else (the reference plugin, an admin): any such write creates or removes a directory entry
//! and so moves the directory's mtime. After each change we *pin* the mtime to a value just below
//! the one the kernel set (`futimens`), and record it in `stamp`; any later entry change by anyone
//! sets the mtime to the current time, which cannot equal the pinned value, whatever the timestamp
//! granularity. So "stamp matches" proves nobody else changed the directory since our last change,
//! and a mismatch (or a missing index, or an entry contradicting its lease) triggers a rebuild from a
//! full scan. A crash between a change and the stamp update leaves a mismatch, hence a rebuild.
//!
//! Writes are crash-safe: a lease is written to a temporary file in the network directory
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) and moved to its name with
//! `renameat2(RENAME_NOREPLACE)` (`link` + `unlink` where unsupported), which fails if the name
//! exists and never follows a symlink there; so a lease is complete or absent.
//! `last_reserved_ip.N` is replaced atomically by exchange with a swap file kept in the index
//! directory (write-then-rename where that is impossible). Index entries are written in place (a
//! torn one fails to parse and triggers a rebuild) and the stamp last, in place, fixed width. Every
//! path is opened relative to the network directory's descriptor with `O_NOFOLLOW`.

use crate::allocator::{Owner, Store};
use crate::config::Storage;
use crate::range::{canonical, RangeSet};
use cni_common::error::CniError;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub const LOCK: &str = "lock";
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
pub const INDEX_DIR: &str = ".host-local-index";
const BY_ATTACHMENT: &str = "a";
const STAMP: &str = "stamp";
const HEADER: &str = "# cni host-local index v1";
/// Prefix of our temporary files in the network directory (garbage only after a crash).
pub const TMP_PREFIX: &str = ".host-local-tmp.";
/// Swap files of [`replace_at`], in the index directory: `swap.last_reserved_ip.N`.
pub const SWAP_PREFIX: &str = "swap.";
/// Largest lease or index file we read.
const MAX_FILE: u64 = 64 * 1024;

/// One lease file found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedLease {
    pub ip: IpAddr,
    pub name: String,
    /// `None` when the name is not a regular file (symlink, directory): it blocks the address but is
    /// not a lease we read, release or follow.
    pub owner: Option<Owner>,
}

enum FileRead {
    Missing,
    NotRegular,
    Data(Vec<u8>),
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The errno of an I/O error (EIO when it has none).
fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Open `dir/name` for reading if it is a regular file, without following symlinks; otherwise
/// what is there instead (`Missing`, `NotRegular`).
fn open_regular(dir: impl AsFd, name: &str) -> Result<Result<OwnedFd, FileRead>, Errno> {
    let fd = match openat(dir, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Err(FileRead::Missing)),
        Err(Errno::ELOOP) | Err(Errno::ENXIO) | Err(Errno::EISDIR) => return Ok(Err(FileRead::NotRegular)),
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(Err(FileRead::NotRegular));
    }
    Ok(Ok(fd))
}

/// The content of an open file, at most [`MAX_FILE`] bytes.
fn read_fd(fd: OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut buf = Vec::new();
    File::from(fd).take(MAX_FILE).read_to_end(&mut buf).map_err(errno)?;
    Ok(buf)
}

/// Read a small regular file at `dir/name` without following symlinks.
fn read_at(dir: impl AsFd, name: &str) -> Result<FileRead, Errno> {
    match open_regular(dir, name)? {
        Ok(fd) => read_fd(fd).map(FileRead::Data),
        Err(not_data) => Ok(not_data),
    }
}

fn write_fd(fd: OwnedFd, content: &[u8]) -> Result<OwnedFd, Errno> {
    let mut f = File::from(fd);
    f.write_all(content).map_err(errno)?;
    fchmod(&f, Mode::from_bits_truncate(0o600))?;
    Ok(OwnedFd::from(f))
}

/// Replace `dir/name` with `content` atomically, without freeing an inode when `swap_dir` (the
/// index directory) is given: the content is written into a swap file kept there, which is then
/// exchanged with `name` (`renameat2(RENAME_EXCHANGE)`), so the old content becomes the next swap
/// file. ext4 without a journal skips inodes freed in the last minute when it allocates one, by a
/// scan that grows with them, so a write-then-rename on every ADD would slow every later file
/// creation. Without a swap directory, before `name` exists, or where the filesystem cannot
/// exchange, it is write-then-rename. Never follows a symlink (one planted at either name is
/// replaced, not written through).
fn replace_at(dir: &OwnedFd, swap_dir: Option<&OwnedFd>, name: &str, content: &[u8]) -> Result<(), Errno> {
    if let Some(sd) = swap_dir {
        let swap = format!("{SWAP_PREFIX}{name}");
        // Not O_TRUNC: the old content is overwritten in place and cut to length after, so the
        // file keeps its block (truncating to zero frees it and the write allocates it again).
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = || openat(sd, swap.as_str(), flags, Mode::from_bits_truncate(0o600));
        let fd = match open() {
            Err(Errno::ELOOP) => {
                unlinkat(sd, swap.as_str(), UnlinkatFlags::NoRemoveDir)?;
                open()?
            }
            other => other?,
        };
        let f = File::from(write_fd(fd, content)?);
        f.set_len(content.len() as u64).map_err(errno)?;
        match renameat2(sd, &swap, dir, name, RENAME_EXCHANGE) {
            Ok(()) => return Ok(()),
            Err(Errno::ENOENT) => return renameat(sd, swap.as_str(), dir, name),
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                let _ = unlinkat(sd, swap.as_str(), UnlinkatFlags::NoRemoveDir);
            }
            Err(e) => return Err(e),
        }
    }
    let tmp = format!("{TMP_PREFIX}{}.{name}", std::process::id());
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let res = write_fd(fd, content).and_then(|_| renameat(dir, tmp.as_str(), dir, name));
    if res.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    res
}

/// Remove `parent/name` if it is a file or symlink, or a directory holding only such entries.
fn remove_tree(parent: &OwnedFd, name: &str) -> Result<(), Errno> {
    match openat(parent, name, dir_flags(), Mode::empty()) {
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
        }
        Err(e) => return Err(e),
        Ok(fd) => {
            for n in list_dir(&fd)? {
                match unlinkat(&fd, n.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(Errno::EISDIR) => remove_tree(&fd, &n)?,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
}

/// Names in a directory (without `.` and `..`).
fn list_dir(dir: &OwnedFd) -> Result<Vec<String>, Errno> {
    let mut d = Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let Ok(name) = e.file_name().to_str() else { continue };
        if name != "." && name != ".." {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Open `parent/name` as a directory, creating it (mode `mode`) if missing; a symlink or file in
/// its place is removed first.
fn open_or_create_dir(parent: &OwnedFd, name: &str, mode: u32) -> Result<OwnedFd, Errno> {
    for _ in 0..3 {
        match openat(parent, name, dir_flags(), Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => match mkdirat(parent, name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            },
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// The index file name of an attachment (`ifname` empty for legacy leases).
pub fn entry_name(cid: &str, ifname: &str) -> String {
    let plain = format!("{cid}:{ifname}");
    let safe = plain.len() <= 200 && !plain.starts_with('.') && !plain.contains('/') && !plain.contains('\0');
    if safe {
        plain
    } else {
        let mut h = Sha256::new();
        h.update(cid.as_bytes());
        h.update([0u8]);
        h.update(ifname.as_bytes());
        let d = h.finalize();
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}")
    }
}

fn entry_content(cid: &str, ifname: &str, ips: &[IpAddr]) -> String {
    let mut s = format!("{HEADER}\n{cid}\n{ifname}\n");
    for ip in ips {
        s.push_str(&ip.to_string());
        s.push('\n');
    }
    s
}

/// Parse an index entry; `None` if it is not one for (cid, ifname).
fn parse_entry(data: &[u8], cid: &str, ifname: &str) -> Option<Vec<IpAddr>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut lines = text.lines();
    if lines.next()? != HEADER || lines.next()? != cid || lines.next()? != ifname {
        return None;
    }
    lines.filter(|l| !l.is_empty()).map(|l| l.parse::<IpAddr>().ok()).collect()
}

/// Extended attribute of a lease inode that is also an index entry: the attachment's addresses.
const ENTRY_XATTR: &[u8] = b"user.cnihl\0";

/// `fsetxattr(2)` of [`ENTRY_XATTR`] (created or replaced).
fn set_entry_xattr(fd: &impl AsFd, value: &[u8]) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given length.
    let r = unsafe { libc::fsetxattr(fd.as_fd().as_raw_fd(), ENTRY_XATTR.as_ptr().cast(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `fgetxattr(2)` of [`ENTRY_XATTR`]; `None` when the inode has none.
fn get_entry_xattr(fd: &impl AsFd) -> Result<Option<Vec<u8>>, Errno> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 1024];
    // SAFETY: a valid descriptor, a NUL-terminated name and a writable buffer of the given length.
    let r = unsafe { libc::fgetxattr(fd.as_fd().as_raw_fd(), ENTRY_XATTR.as_ptr().cast(), buf.as_mut_ptr().cast(), buf.len()) };
    if r >= 0 {
        buf.truncate(r as usize);
        return Ok(Some(buf));
    }
    match Errno::last() {
        Errno::ENODATA | Errno::EOPNOTSUPP => Ok(None),
        e => Err(e),
    }
}

/// The addresses as [`ENTRY_XATTR`] holds them: one per line.
fn ips_value(ips: &[IpAddr]) -> String {
    ips.iter().map(|ip| format!("{ip}\n")).collect()
}

/// An index entry as read.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Missing,
    /// Not an entry for the attachment (damaged, foreign, not a regular file).
    Invalid,
    Ips(Vec<IpAddr>),
}

/// Read the index entry `by/name` of (cid, ifname) in either form (module documentation).
fn read_entry(by: &OwnedFd, name: &str, cid: &str, ifname: &str) -> Result<Entry, Errno> {
    let fd = match open_regular(by, name)? {
        Ok(fd) => fd,
        Err(FileRead::Missing) => return Ok(Entry::Missing),
        Err(_) => return Ok(Entry::Invalid),
    };
    if let Some(v) = get_entry_xattr(&fd)? {
        let ips: Option<Vec<IpAddr>> =
            std::str::from_utf8(&v).ok().and_then(|t| t.lines().filter(|l| !l.is_empty()).map(|l| l.parse().ok()).collect());
        return Ok(ips.filter(|i| !i.is_empty()).map_or(Entry::Invalid, Entry::Ips));
    }
    Ok(parse_entry(&read_fd(fd)?, cid, ifname).map_or(Entry::Invalid, Entry::Ips))
}

/// Write the index entry `by/name` of (cid, ifname) holding `ips`, whose leases are in `dir`: a
/// hard link to the first lease with the addresses in [`ENTRY_XATTR`] while `links` holds (it is
/// cleared where the filesystem refuses hard links or user extended attributes), else a file of
/// its own. `EEXIST` when the name is taken.
fn write_entry(dir: &OwnedFd, by: &OwnedFd, name: &str, (cid, ifname): (&str, &str), ips: &[IpAddr], links: &mut bool) -> Result<(), Errno> {
    if let (true, Some(first)) = (*links, ips.first()) {
        match linkat(dir, first.to_string().as_str(), by, name, AtFlags::empty()) {
            Ok(()) => {
                let set = openat(by, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
                    .and_then(|fd| set_entry_xattr(&fd, ips_value(ips).as_bytes()));
                match set {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        let _ = unlinkat(by, name, UnlinkatFlags::NoRemoveDir);
                        if !matches!(e, Errno::EOPNOTSUPP | Errno::EPERM | Errno::EACCES | Errno::ENOSPC | Errno::E2BIG) {
                            return Err(e);
                        }
                        *links = false;
                    }
                }
            }
            Err(Errno::EEXIST) => return Err(Errno::EEXIST),
            Err(Errno::EPERM) | Err(Errno::EMLINK) | Err(Errno::EXDEV) | Err(Errno::EOPNOTSUPP) => *links = false,
            Err(e) => return Err(e),
        }
    }
    create_new(by, name, entry_content(cid, ifname, ips).as_bytes())?.ok_or(Errno::EEXIST).map(drop)
}

/// `renameat2(2)` flags (linux/fs.h).
const RENAME_NOREPLACE: libc::c_uint = 1;
const RENAME_EXCHANGE: libc::c_uint = 2;

/// `renameat2(2)` by its system call: the C libraries differ in whether they wrap it (glibc does
/// since 2.28, musl does not), and so does nix.
fn renameat2(olddir: &OwnedFd, old: &str, newdir: &OwnedFd, new: &str, flags: libc::c_uint) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let old = std::ffi::CString::new(old).map_err(|_| Errno::EINVAL)?;
    let new = std::ffi::CString::new(new).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid directory descriptors and NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_renameat2, olddir.as_raw_fd(), old.as_ptr(), newdir.as_raw_fd(), new.as_ptr(), flags)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// State of temporary-file creation for one process.
#[derive(Debug, Default)]
struct Tmp {
    /// `renameat2(RENAME_NOREPLACE)` is unsupported here: link + unlink instead.
    no_noreplace: bool,
    seq: u32,
}

/// Create `dir/name` holding `content` (mode 0600), complete or not at all: the content goes to a
/// temporary file in the same directory (`O_CREAT|O_EXCL|O_NOFOLLOW`) which is then moved to `name`
/// with `renameat2(RENAME_NOREPLACE)` (or `link` + `unlink` where that flag is unsupported); neither
/// replaces nor follows anything at `name`. `false` if the name exists.
fn create_exclusive(tmp: &mut Tmp, dir: &OwnedFd, name: &str, content: &[u8]) -> Result<bool, Errno> {
    tmp.seq += 1;
    let t = format!("{TMP_PREFIX}{}.{}", std::process::id(), tmp.seq);
    let fd = match create_new(dir, &t, content) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            // A leftover of a crashed process with our pid: garbage, since we hold the lock.
            unlinkat(dir, t.as_str(), UnlinkatFlags::NoRemoveDir)?;
            create_new(dir, &t, content)?.ok_or(Errno::EEXIST)?
        }
        Err(e) => return Err(e),
    };
    fchmod(&fd, Mode::from_bits_truncate(0o600)).inspect_err(|_| {
        let _ = unlinkat(dir, t.as_str(), UnlinkatFlags::NoRemoveDir);
    })?;
    drop(fd);
    let moved = if tmp.no_noreplace {
        Err(Errno::EINVAL)
    } else {
        renameat2(dir, &t, dir, name, RENAME_NOREPLACE)
    };
    let res = match moved {
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            tmp.no_noreplace = true;
            linkat(dir, t.as_str(), dir, name, AtFlags::empty())
        }
        other => other,
    };
    match res {
        Ok(()) => {
            if tmp.no_noreplace {
                let _ = unlinkat(dir, t.as_str(), UnlinkatFlags::NoRemoveDir);
            }
            Ok(true)
        }
        Err(e) => {
            let _ = unlinkat(dir, t.as_str(), UnlinkatFlags::NoRemoveDir);
            if e == Errno::EEXIST {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Create `dir/name` with `content` in place (`O_CREAT|O_EXCL|O_NOFOLLOW`); `None` if it exists.
/// Only for files whose partial content is harmless (index entries: a torn one fails to parse and
/// triggers a rebuild; a crash also invalidates the stamp).
fn create_new(dir: &OwnedFd, name: &str, content: &[u8]) -> Result<Option<OwnedFd>, Errno> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut f = File::from(fd);
    if let Err(e) = f.write_all(content) {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        return Err(errno(e));
    }
    Ok(Some(OwnedFd::from(f)))
}

/// (inode, mtime seconds, mtime nanoseconds)
type DirStamp = (u64, i64, i64);

fn dir_stamp(fd: impl AsFd) -> Result<DirStamp, Errno> {
    let st = fstat(fd)?;
    Ok((st.st_ino, st.st_mtime, st.st_mtime_nsec))
}

/// Set the directory's mtime 1 ns below its current value, and return the stamp as stored.
fn pin_mtime(fd: &OwnedFd) -> Result<DirStamp, Errno> {
    let (_, s, ns) = dir_stamp(fd)?;
    let (s2, ns2) = if ns == 0 { (s - 1, 999_999_999) } else { (s, ns - 1) };
    futimens(fd, &TimeSpec::UTIME_OMIT, &TimeSpec::new(s2, ns2))?;
    dir_stamp(fd)
}

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::Io(format!("{what} {}: {e}", path.display()))
}

/// The open, locked state directory of one network.
pub struct DiskStore {
    path: PathBuf,
    dir: OwnedFd,
    _lock: Flock<File>,
    index: Option<OwnedFd>,
    by_attachment: Option<OwnedFd>,
    /// The index is known to match the leases.
    valid: bool,
    /// We changed something: refresh the stamp at the end.
    dirty: bool,
    /// No failure left the index possibly out of step with the leases.
    consistent: bool,
    tmp: Tmp,
    /// Index entries can be hard links with an extended attribute here (until refused).
    links: bool,
    /// Number of full scans done (for tests and diagnostics).
    pub scans: u32,
}

impl DiskStore {
    /// Open (and with `create`, create) `<dataDir>/<network>` and take its lock. Without `create`, a
    /// missing directory gives `None`: there is nothing to release.
    pub fn open(storage: &Storage, create: bool) -> Result<Option<DiskStore>, CniError> {
        let path = storage.dir();
        if create {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&storage.data_dir)
                .map_err(|e| io(&storage.data_dir, "cannot create dataDir", e))?;
        }
        let data = match nix::fcntl::open(
            &storage.data_dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(e) => return Err(io(&storage.data_dir, "cannot open dataDir", e)),
        };
        if create {
            match mkdirat(&data, storage.network.as_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(&path, "cannot create network directory", e)),
            }
        }
        let dir = match openat(&data, storage.network.as_str(), dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ELOOP) => return Err(io(&path, "network directory", "is a symlink; refusing to follow it")),
            Err(Errno::ENOTDIR) => return Err(io(&path, "network directory", "is not a directory")),
            Err(e) => return Err(io(&path, "cannot open network directory", e)),
        };
        let lock_path = path.join(LOCK);
        let lockfd = openat(
            &dir,
            LOCK,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| match e {
            Errno::ELOOP => io(&lock_path, "lock file", "is a symlink; refusing to follow it"),
            e => io(&lock_path, "cannot open lock file", e),
        })?;
        let mut file = File::from(lockfd);
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(io(&lock_path, "cannot lock", e)),
            }
        };
        let mut s = DiskStore {
            path,
            dir,
            _lock: lock,
            index: None,
            by_attachment: None,
            valid: false,
            dirty: false,
            consistent: true,
            tmp: Tmp::default(),
            links: true,
            scans: 0,
        };
        s.valid = s.stamp_matches();
        Ok(Some(s))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ioe(&self, what: &str, e: impl std::fmt::Display) -> CniError {
        io(&self.path, what, e)
    }

    /// The stamp proves nobody changed the directory or the index since our last change.
    fn stamp_matches(&mut self) -> bool {
        let Ok(index) = openat(&self.dir, INDEX_DIR, dir_flags(), Mode::empty()) else { return false };
        let Ok(by) = openat(&index, BY_ATTACHMENT, dir_flags(), Mode::empty()) else { return false };
        let Ok(FileRead::Data(data)) = read_at(&index, STAMP) else { return false };
        self.index = Some(index);
        self.by_attachment = Some(by);
        let Ok(text) = std::str::from_utf8(&data) else { return false };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return false;
        }
        let nums: Vec<i128> = lines.next().unwrap_or("").split_whitespace().filter_map(|n| n.parse().ok()).collect();
        if nums.len() != 6 {
            return false;
        }
        let (Ok(d), Ok(a)) = (dir_stamp(&self.dir), dir_stamp(self.by_attachment.as_ref().unwrap())) else { return false };
        let want = [d.0 as i128, d.1 as i128, d.2 as i128, a.0 as i128, a.1 as i128, a.2 as i128];
        nums == want
    }

    /// Whether the index was trusted without a scan (for tests).
    pub fn index_was_valid(&self) -> bool {
        self.valid
    }

    /// Write the stamp for the current state. On failure remove it: the next call rebuilds.
    fn write_stamp(&mut self) {
        let (Some(index), Some(by)) = (&self.index, &self.by_attachment) else { return };
        let res = (|| -> Result<(), Errno> {
            let d = pin_mtime(&self.dir)?;
            let a = pin_mtime(by)?;
            // Fixed width, written in place: a torn write can only yield a stamp that does not
            // match (hence a rebuild), or the complete new one, which is correct since the stamp
            // is written last.
            let text = format!("{HEADER}\n{:020} {:020} {:020} {:020} {:020} {:020}\n", d.0, d.1, d.2, a.0, a.1, a.2);
            let fd = match openat(index, STAMP, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600)) {
                Err(Errno::ELOOP) => {
                    unlinkat(index, STAMP, UnlinkatFlags::NoRemoveDir)?;
                    return Err(Errno::ELOOP);
                }
                other => other?,
            };
            let n = nix::sys::uio::pwrite(&fd, text.as_bytes(), 0)?;
            if n != text.len() {
                return Err(Errno::EIO);
            }
            Ok(())
        })();
        if res.is_err() {
            let _ = unlinkat(index, STAMP, UnlinkatFlags::NoRemoveDir);
        }
    }

    /// End of the operation: record the stamp if we changed things and left them consistent, then
    /// unlock (drop).
    pub fn finish(mut self) {
        if self.dirty && self.valid && self.consistent {
            self.write_stamp();
        }
    }

    /// Rebuild the index if it cannot be trusted.
    fn ensure_index(&mut self) -> Result<(), CniError> {
        if !self.valid || self.index.is_none() || self.by_attachment.is_none() {
            self.rebuild()?;
        }
        Ok(())
    }

    /// Read every lease file (and remove our temporary files left by a crash).
    pub fn scan(&mut self) -> Result<Vec<ScannedLease>, CniError> {
        self.scans += 1;
        let names = list_dir(&self.dir).map_err(|e| self.ioe("cannot list", e))?;
        let mut out = Vec::new();
        for name in names {
            if name.starts_with(TMP_PREFIX) {
                // Only the lock holder creates these, and it removes them before unlocking.
                let _ = unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
                self.dirty = true;
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            let owner = match read_at(&self.dir, &name) {
                Ok(FileRead::Missing) => continue,
                Ok(FileRead::NotRegular) => None,
                Ok(FileRead::Data(d)) => Some(Owner::parse(&d)),
                Err(e) => return Err(self.ioe(&format!("cannot read lease {name} in"), e)),
            };
            out.push(ScannedLease { ip: canonical(ip), name, owner });
        }
        out.sort_by_key(|l| l.ip);
        Ok(out)
    }

    /// Rebuild the index from a full scan, incrementally: entries that already match the leases
    /// are kept (read, not rewritten), wrong or missing ones rewritten, orphans removed.
    pub fn rebuild(&mut self) -> Result<(), CniError> {
        let leases = self.scan()?;
        let mut links = self.links;
        let index = open_or_create_dir(&self.dir, INDEX_DIR, 0o700).map_err(|e| self.ioe(&format!("cannot open {INDEX_DIR} in"), e))?;
        let res = (|| -> Result<OwnedFd, Errno> {
            for n in list_dir(&index)? {
                if n.starts_with(TMP_PREFIX) {
                    let _ = unlinkat(&index, n.as_str(), UnlinkatFlags::NoRemoveDir);
                }
            }
            let by = open_or_create_dir(&index, BY_ATTACHMENT, 0o700)?;
            let mut want: BTreeMap<String, (String, String, Vec<IpAddr>)> = BTreeMap::new();
            for l in &leases {
                let (cid, ifname) = match &l.owner {
                    Some(Owner::Attachment { container_id, ifname }) => (container_id.as_str(), ifname.as_str()),
                    Some(Owner::Legacy { container_id }) => (container_id.as_str(), ""),
                    _ => continue,
                };
                want.entry(entry_name(cid, ifname))
                    .or_insert_with(|| (cid.to_string(), ifname.to_string(), Vec::new()))
                    .2
                    .push(l.ip);
            }
            for name in list_dir(&by)? {
                let keep = match want.get(&name) {
                    None => false,
                    Some((cid, ifname, ips)) => match read_entry(&by, &name, cid, ifname)? {
                        Entry::Ips(mut have) => {
                            have.sort();
                            have == *ips
                        }
                        _ => false,
                    },
                };
                if keep {
                    want.remove(&name);
                } else {
                    match unlinkat(&by, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => {}
                        Err(Errno::EISDIR) => remove_tree(&by, &name)?,
                        Err(e) => return Err(e),
                    }
                }
            }
            for (name, (cid, ifname, ips)) in &want {
                write_entry(&self.dir, &by, name, (cid, ifname), ips, &mut links)?;
            }
            Ok(by)
        })();
        self.links = links;
        let by = res.map_err(|e| self.ioe("cannot rebuild the index in", e))?;
        self.index = Some(index);
        self.by_attachment = Some(by);
        self.valid = true;
        self.dirty = true;
        Ok(())
    }

    fn read_owner(&self, ip: IpAddr) -> Result<Option<Owner>, CniError> {
        match read_at(&self.dir, &ip.to_string()) {
            Ok(FileRead::Data(d)) => Ok(Some(Owner::parse(&d))),
            Ok(FileRead::Missing) => Ok(None),
            Ok(FileRead::NotRegular) => Ok(Some(Owner::Unknown)),
            Err(e) => Err(self.ioe(&format!("cannot read lease {ip} in"), e)),
        }
    }

    /// Leases listed for `owner_key` whose files confirm `expect`; `None` if the entry contradicts
    /// the files (the index is stale).
    fn entry_leases(&self, cid: &str, ifname: &str, expect: &Owner) -> Result<Option<Vec<IpAddr>>, CniError> {
        let by = self.by_attachment.as_ref().expect("index open");
        let ips = match read_entry(by, &entry_name(cid, ifname), cid, ifname) {
            Ok(Entry::Missing) => return Ok(Some(vec![])),
            Ok(Entry::Invalid) => return Ok(None),
            Ok(Entry::Ips(ips)) => ips,
            Err(e) => return Err(self.ioe("cannot read the index in", e)),
        };
        for ip in &ips {
            if self.read_owner(*ip)?.as_ref() != Some(expect) {
                return Ok(None);
            }
        }
        Ok(Some(ips))
    }

    /// (exact leases of (cid, ifname), legacy leases of cid), verified; rebuilds the index when it
    /// is missing, stale or contradicted.
    pub fn lookup(&mut self, cid: &str, ifname: &str) -> Result<(Vec<IpAddr>, Vec<IpAddr>), CniError> {
        self.ensure_index()?;
        for attempt in 0..2 {
            let exact = self.entry_leases(cid, ifname, &Owner::attachment(cid, ifname))?;
            let legacy = self.entry_leases(cid, "", &Owner::Legacy { container_id: cid.to_string() })?;
            if let (Some(e), Some(l)) = (exact, legacy) {
                return Ok((e, l));
            }
            if attempt == 0 {
                self.rebuild()?;
            }
        }
        Err(self.ioe("the index stays inconsistent after a rebuild in", "giving up"))
    }

    /// Write the index entry of an attachment that was just given `ips`.
    pub fn record(&mut self, cid: &str, ifname: &str, ips: &[IpAddr]) -> Result<(), CniError> {
        self.ensure_index()?;
        let name = entry_name(cid, ifname);
        let by = self.by_attachment.take().expect("index open");
        let mut links = self.links;
        let res = (|| -> Result<(), Errno> {
            self.dirty = true;
            match write_entry(&self.dir, &by, &name, (cid, ifname), ips, &mut links) {
                Err(Errno::EEXIST) => {
                    unlinkat(&by, name.as_str(), UnlinkatFlags::NoRemoveDir)?;
                    write_entry(&self.dir, &by, &name, (cid, ifname), ips, &mut links)
                }
                other => other,
            }
        })();
        self.links = links;
        self.by_attachment = Some(by);
        res.map_err(|e| {
            self.consistent = false;
            self.ioe("cannot write the index entry in", e)
        })
    }

    /// Release every lease of (cid, ifname) (or, if it has none, the legacy leases of cid).
    pub fn release(&mut self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let (exact, legacy) = self.lookup(cid, ifname)?;
        let (ips, key_if) = if !exact.is_empty() { (exact, ifname) } else { (legacy, "") };
        if ips.is_empty() {
            return Ok(ips);
        }
        self.dirty = true;
        let mut errors = Vec::new();
        for ip in &ips {
            match unlinkat(&self.dir, ip.to_string().as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => errors.push(format!("{ip}: {e}")),
            }
        }
        let by = self.by_attachment.as_ref().expect("index open");
        match unlinkat(by, entry_name(cid, key_if).as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => errors.push(format!("index entry: {e}")),
        }
        if !errors.is_empty() {
            self.consistent = false;
            return Err(self.ioe(&format!("cannot release {}", errors.join(", ")), "in"));
        }
        Ok(ips)
    }

    /// Release every lease whose holder `keep` rejects; leases of unknown holders (empty files)
    /// go too; names that are not regular files stay. Returns the released addresses and the
    /// errors met (GC continues past errors).
    pub fn gc(&mut self, keep: &dyn Fn(&Owner) -> bool) -> Result<(Vec<IpAddr>, Vec<String>), CniError> {
        let leases = self.scan()?;
        let mut released = Vec::new();
        let mut errors = Vec::new();
        for l in leases {
            let Some(owner) = &l.owner else { continue };
            if *owner != Owner::Unknown && keep(owner) {
                continue;
            }
            self.dirty = true;
            match unlinkat(&self.dir, l.name.as_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => released.push(l.ip),
                Err(e) => errors.push(format!("release {}: {e}", l.ip)),
            }
        }
        if let Err(e) = self.rebuild() {
            errors.push(e.to_string());
        }
        Ok((released, errors))
    }
}

impl Store for DiskStore {
    fn held_by(&mut self, cid: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let (exact, legacy) = self.lookup(cid, ifname)?;
        Ok(if exact.is_empty() { legacy } else { exact })
    }

    fn is_free(&mut self, ip: IpAddr) -> Result<bool, CniError> {
        match fstatat(&self.dir, ip.to_string().as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(false),
            Err(Errno::ENOENT) => Ok(true),
            Err(e) => Err(self.ioe(&format!("cannot check {ip} in"), e)),
        }
    }

    fn reserve(&mut self, ip: IpAddr, cid: &str, ifname: &str) -> Result<bool, CniError> {
        self.dirty = true;
        create_exclusive(&mut self.tmp, &self.dir, &ip.to_string(), Owner::content(cid, ifname).as_bytes())
            .map_err(|e| self.ioe(&format!("cannot write lease {ip} in"), e))
    }

    fn unreserve(&mut self, ip: IpAddr) -> Result<(), CniError> {
        self.dirty = true;
        match unlinkat(&self.dir, ip.to_string().as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => {
                self.consistent = false;
                Err(self.ioe(&format!("cannot remove lease {ip} in"), e))
            }
        }
    }

    fn owner_of(&mut self, ip: IpAddr) -> Result<Option<Owner>, CniError> {
        self.read_owner(ip)
    }

    fn last_reserved(&mut self, set: usize) -> Result<Option<IpAddr>, CniError> {
        match read_at(&self.dir, &format!("{LAST_RESERVED_PREFIX}{set}")) {
            Ok(FileRead::Data(d)) => Ok(std::str::from_utf8(&d).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()).map(canonical)),
            Ok(_) => Ok(None),
            Err(e) => Err(self.ioe(&format!("cannot read {LAST_RESERVED_PREFIX}{set} in"), e)),
        }
    }

    fn commit(&mut self, cid: &str, ifname: &str, ips: &[IpAddr]) -> Result<(), CniError> {
        self.record(cid, ifname, ips)
    }

    fn set_last_reserved(&mut self, set: usize, ip: IpAddr) -> Result<(), CniError> {
        self.dirty = true;
        let name = format!("{LAST_RESERVED_PREFIX}{set}");
        replace_at(&self.dir, self.index.as_ref(), &name, ip.to_string().as_bytes()).map_err(|e| self.ioe(&format!("cannot write {name} in"), e))
    }
}

/// STATUS: the data directory is usable and every range set has a free address. Takes no lock and
/// changes nothing.
pub fn status(storage: &Storage, sets: &[RangeSet]) -> Result<(), CniError> {
    use nix::unistd::{access, AccessFlags};
    let na = |m: String| CniError::NotAvailable(m);
    let dir = storage.dir();
    // The nearest existing directory on the way to the network directory must be writable.
    let existing: PathBuf = match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => return Err(na(format!("{} is a symlink; refusing to use it", dir.display()))),
        Ok(m) if !m.is_dir() => return Err(na(format!("{} is not a directory", dir.display()))),
        Ok(_) => dir.clone(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut p = storage.data_dir.clone();
            loop {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_dir() => break p,
                    Ok(_) => return Err(na(format!("{} (on the way to dataDir {}) is not a directory", p.display(), storage.data_dir.display()))),
                    Err(_) => match p.parent() {
                        Some(q) => p = q.to_path_buf(),
                        None => return Err(na(format!("no existing directory on the way to {}", dir.display()))),
                    },
                }
            }
        }
        Err(e) => return Err(na(format!("{}: {e}", dir.display()))),
    };
    access(&existing, AccessFlags::W_OK | AccessFlags::X_OK)
        .map_err(|e| na(format!("{} is not writable: {e}", existing.display())))?;
    if let Ok(vfs) = nix::sys::statvfs::statvfs(&existing) {
        if vfs.blocks_available() == 0 {
            return Err(na(format!("no free space on the filesystem of {}", existing.display())));
        }
        if vfs.files() != 0 && vfs.files_available() == 0 {
            return Err(na(format!("no free inodes on the filesystem of {}", existing.display())));
        }
    }
    if existing != dir {
        return Ok(()); // no state yet: every set is empty
    }
    let lock = dir.join(LOCK);
    if let Ok(m) = std::fs::symlink_metadata(&lock) {
        if !m.is_file() {
            return Err(na(format!("{} is not a regular file", lock.display())));
        }
    }
    let mut used = vec![0u128; sets.len()];
    let entries = std::fs::read_dir(&dir).map_err(|e| na(format!("cannot list {}: {e}", dir.display())))?;
    let mut seen = HashSet::new();
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        let Ok(ip) = name.parse::<IpAddr>() else { continue };
        let ip = canonical(ip);
        if !seen.insert(ip) {
            continue;
        }
        if let Some(i) = sets.iter().position(|s| s.usable(ip)) {
            used[i] += 1;
        }
    }
    for (i, set) in sets.iter().enumerate() {
        if used[i] >= set.capacity() {
            return Err(na(format!(
                "range set {i} ({set}) is full: all {} addresses are allocated in {}",
                set.capacity(),
                dir.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("hl-disk-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("a")).unwrap();
            TempDir(p)
        }
        fn fd(&self, sub: &str) -> OwnedFd {
            nix::fcntl::open(&self.0.join(sub), dir_flags(), Mode::empty()).unwrap()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn index_entries_in_both_forms() {
        let t = TempDir::new("entries");
        let (dir, by) = (t.fd("."), t.fd("a"));
        std::fs::write(t.0.join("10.1.0.5"), "c1\r\neth0").unwrap();
        std::fs::write(t.0.join("fd01::5"), "c1\r\neth0").unwrap();
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap(), "fd01::5".parse().unwrap()];
        // link form: the first lease's inode, addresses in the attribute
        let mut links = true;
        write_entry(&dir, &by, "c1:eth0", ("c1", "eth0"), &ips, &mut links).unwrap();
        assert!(links, "this filesystem has hard links and user extended attributes");
        let (e, l) = (std::fs::metadata(t.0.join("a/c1:eth0")).unwrap(), std::fs::metadata(t.0.join("10.1.0.5")).unwrap());
        assert_eq!(e.ino(), l.ino());
        assert_eq!(read_entry(&by, "c1:eth0", "c1", "eth0").unwrap(), Entry::Ips(ips.clone()));
        assert_eq!(write_entry(&dir, &by, "c1:eth0", ("c1", "eth0"), &ips, &mut links), Err(Errno::EEXIST));
        // file form (where links or attributes are refused), read the same way
        let mut no_links = false;
        write_entry(&dir, &by, "c2:eth0", ("c2", "eth0"), &ips, &mut no_links).unwrap();
        assert_ne!(std::fs::metadata(t.0.join("a/c2:eth0")).unwrap().ino(), l.ino());
        assert!(std::fs::read_to_string(t.0.join("a/c2:eth0")).unwrap().starts_with(HEADER));
        assert_eq!(read_entry(&by, "c2:eth0", "c2", "eth0").unwrap(), Entry::Ips(ips.clone()));
        // a file form entry names its attachment: another one's is not valid here
        assert_eq!(read_entry(&by, "c2:eth0", "c3", "eth0").unwrap(), Entry::Invalid);
        // missing, damaged, not a regular file
        assert_eq!(read_entry(&by, "none:eth0", "none", "eth0").unwrap(), Entry::Missing);
        std::fs::write(t.0.join("a/bad:eth0"), "garbage").unwrap();
        assert_eq!(read_entry(&by, "bad:eth0", "bad", "eth0").unwrap(), Entry::Invalid);
        std::os::unix::fs::symlink("c1:eth0", t.0.join("a/sym:eth0")).unwrap();
        assert_eq!(read_entry(&by, "sym:eth0", "sym", "eth0").unwrap(), Entry::Invalid);
        // a link whose attribute is damaged
        set_entry_xattr(&File::open(t.0.join("a/c1:eth0")).unwrap(), b"not an address\n").unwrap();
        assert_eq!(read_entry(&by, "c1:eth0", "c1", "eth0").unwrap(), Entry::Invalid);
        // with no lease to link to (no addresses), the file form
        let mut links = true;
        write_entry(&dir, &by, "c4:eth0", ("c4", "eth0"), &[], &mut links).unwrap();
        assert_eq!(read_entry(&by, "c4:eth0", "c4", "eth0").unwrap(), Entry::Ips(vec![]));
    }
}
