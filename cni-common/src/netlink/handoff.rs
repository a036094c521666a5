//! Deleting a link without waiting for the kernel to free it.
//!
//! An `RTM_DELLINK` is answered only after the kernel's whole unregistration: the device is taken
//! out of its namespace (its name and index free, its addresses, routes and bridge port gone, a
//! veth peer with it) and announced with an `RTM_DELLINK` notification, all under RTNL; then,
//! after RTNL is released, `netdev_run_todo` waits in `rcu_barrier()` and for the last references
//! before it frees the memory. That wait is most of the call (~18 of 20 ms on a small VM with
//! lazy RCU) and nothing anyone can observe depends on it; every way of taking a device out of a
//! namespace pays it, except the destruction of the namespace itself.
//!
//! [`Netlink::delete_link_detached`] therefore hands the request to a helper process (a `clone3`
//! of this one, no exec) and returns as soon as the kernel announces the removal on a socket
//! subscribed to link notifications, or the helper ends. The helper holds no descriptor but its
//! netlink socket (a runtime waiting for EOF on the plugin's stdout is not held), sends the
//! request, reads the acknowledgement and exits; it outlives the plugin by the kernel's wait at
//! most, and is reaped by init (or the runtime's subreaper) like any orphan. Whatever goes wrong
//! with the helper (cannot be made, ends without the notification, fails) falls back to the
//! synchronous request, so errors carry the kernel's own text and nothing is left behind.
//!
//! The helper can also keep descriptors open for the plugin ([`DetachedDelete::hand_over`]):
//! closing some waits for the kernel too. An nf_tables socket whose transaction deleted objects
//! waits at its release for their destruction (a grace period, 10-15 ms here), which a plugin
//! would otherwise pay on its way out; handed over, it is released when the helper ends. They
//! travel as `SCM_RIGHTS` on a socket pair whose other end only the helper holds: the helper
//! never reads it, the kernel keeps the descriptors in flight until the helper's end closes.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::link::{link_msg, RTM_DELLINK};
use super::socket::{encode, i32_at, u16_at, u32_at, Socket, HEADER_LEN};
use super::{Netlink, NlError};
use netlink_packet_core::{NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;

/// `RTNLGRP_LINK`: the multicast group of link notifications.
const RTNLGRP_LINK: u32 = 1;
/// Exit status of a helper that could not set itself up (no `close_range`): the parent then
/// deletes the link itself.
const HELPER_NOT_STARTED: i32 = 255;

/// `struct clone_args` as of Linux 5.3 (`CLONE_ARGS_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// The helper process of a detached deletion, still running (the kernel's wait for freeing the
/// device) or done. Dropping it reaps the helper if it has ended and otherwise leaves it to
/// whoever inherits it: a plugin exits right after, and init reaps the orphan.
#[derive(Debug)]
pub struct DetachedDelete {
    /// `None` when the link was deleted synchronously.
    helper: Option<Helper>,
}

#[derive(Debug)]
struct Helper {
    pidfd: OwnedFd,
    /// This process's end of the socket pair whose other end the helper holds.
    keeper: OwnedFd,
}

impl DetachedDelete {
    /// Let the helper keep what `fd` refers to open until it ends (see the module docs), so
    /// that closing `fd` here no longer releases it. `false` when there is no helper (the link
    /// was deleted synchronously, or the helper has already ended).
    pub fn hand_over(&self, fd: BorrowedFd<'_>) -> bool {
        self.helper.as_ref().is_some_and(|h| send_fd(h.keeper.as_raw_fd(), fd.as_raw_fd()))
    }

    /// Wait for the helper to end (the kernel's unregistration complete). For callers that live
    /// on after the deletion (tests, long-running tools): they reap their own children.
    pub fn wait(mut self) {
        if let Some(h) = self.helper.take() {
            let _ = wait_helper(&h.pidfd, libc::WEXITED);
        }
    }
}

impl Drop for DetachedDelete {
    fn drop(&mut self) {
        if let Some(h) = self.helper.take() {
            let _ = wait_helper(&h.pidfd, libc::WEXITED | libc::WNOHANG);
        }
    }
}

impl Netlink {
    /// Delete link `index` (with a veth, the pair) and return once the kernel has removed it
    /// from its namespace, without waiting for the kernel to free it (see the module docs). On
    /// any trouble with the helper, the link is deleted synchronously instead; the errors are
    /// those of [`Netlink::delete_link`].
    pub fn delete_link_detached(&mut self, index: u32) -> Result<DetachedDelete, NlError> {
        match self.hand_off_delete(index) {
            Some(helper) => Ok(DetachedDelete { helper: Some(helper) }),
            None => self.delete_link(index).map(|()| DetachedDelete { helper: None }),
        }
    }

    /// Start the helper and wait for the removal to be announced (or the helper to succeed).
    /// `None` when the caller must delete the link itself: no helper, or it did not succeed.
    fn hand_off_delete(&mut self, index: u32) -> Option<Helper> {
        let mut listener = Socket::open().ok()?;
        listener.subscribe(RTNLGRP_LINK).ok()?;
        // The helper's own socket: it reads its acknowledgement there, nobody else does.
        let worker = Socket::open().ok()?;
        let (keeper, helper_end) = socket_pair()?;
        let msg = encode(RouteNetlinkMessage::DelLink(link_msg(index)), NLM_F_REQUEST | NLM_F_ACK, 1);
        let pidfd = spawn_helper([worker.raw_fd(), helper_end.as_raw_fd()], &msg)?;
        drop((worker, helper_end));
        removal_announced(&mut listener, &pidfd, index).then_some(Helper { pidfd, keeper })
    }
}

/// Wait until either the kernel announces that link `index` left the namespace (`true`) or the
/// helper behind `pidfd` ends (`true` if it succeeded). Never `true` without the link gone.
fn removal_announced(listener: &mut Socket, pidfd: &OwnedFd, index: u32) -> bool {
    let mut fds = [
        libc::pollfd { fd: listener.raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Cannot wait on both: wait for the helper alone.
            return wait_helper(pidfd, libc::WEXITED) == Some(0);
        }
        if fds[0].revents != 0 {
            loop {
                match listener.try_recv_notification(|raw| is_dellink_of(raw, index)) {
                    Ok(Some(true)) => return true,
                    Ok(Some(false)) => continue,
                    Ok(None) => break,
                    // Notifications lost (ENOBUFS) or the socket failed: the helper's end decides.
                    Err(_) => {
                        fds[0].fd = -1;
                        break;
                    }
                }
            }
        }
        if fds[1].revents != 0 {
            return wait_helper(pidfd, libc::WEXITED) == Some(0);
        }
    }
}

/// Whether `raw` (one whole netlink message) announces the removal of link `index` from the
/// namespace: an `RTM_DELLINK` of family `AF_UNSPEC` (the bridge's `AF_BRIDGE` ones only say that
/// a port left its bridge).
fn is_dellink_of(raw: &[u8], index: u32) -> bool {
    raw.len() >= HEADER_LEN + 8
        && u16_at(raw, 4) == RTM_DELLINK
        && raw[HEADER_LEN] == libc::AF_UNSPEC as u8
        && u32_at(raw, HEADER_LEN + 4) == index
}

/// Reap the helper behind `pidfd` (`options`: `WEXITED`, maybe `WNOHANG`); its exit status if it
/// exited, `None` if it was killed, has not ended (with `WNOHANG`) or cannot be waited for.
fn wait_helper(pidfd: &OwnedFd, options: libc::c_int) -> Option<i32> {
    loop {
        // SAFETY: zeroed siginfo is a valid out-parameter; the pidfd is ours.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, options) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        // SAFETY: waitid filled `info` (si_pid 0 when WNOHANG found nothing ended).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 || info.si_code != libc::CLD_EXITED {
            return None;
        }
        return Some(status);
    }
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair: (this process's end, the helper's end).
fn socket_pair() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: a valid array of two ints.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: the kernel gave us both descriptors; nothing else owns them.
    Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `fd` as `SCM_RIGHTS` (with one byte of data) on `sock`; whether it was queued.
fn send_fd(sock: RawFd, fd: RawFd) -> bool {
    const SPACE: usize = 64;
    // SAFETY: CMSG_SPACE of one int is a constant well under SPACE.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    if space > SPACE {
        return false;
    }
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    let mut control = Control([0; SPACE]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsg of CMSG_LEN(sizeof int) bytes, suitably aligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        loop {
            let n = libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
            if n == 1 {
                return true;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            return false;
        }
    }
}

/// Start the helper process: a copy of this one that keeps only `keep` (its netlink socket
/// first, then its end of the keeper pair), sends `msg` on the socket and exits with the kernel's
/// answer (0 or the errno). `None` if it cannot be made (no `clone3`, seccomp, limits).
fn spawn_helper(keep: [RawFd; 2], msg: &[u8]) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this address space and
    // continues here on its copy of this thread's stack; it runs `helper`, which never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: in the child; `keep` and `msg` are valid in its copy of the memory.
        unsafe { helper(keep, msg) }
    }
    if pid < 0 || pidfd < 0 {
        return None;
    }
    // SAFETY: the kernel gave us this pidfd; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

/// The helper. It is a copy of a multi-threaded process whose other threads are not there: it
/// must not allocate, lock or unwind, so it makes raw system calls on memory it only reads.
unsafe fn helper(keep: [RawFd; 2], msg: &[u8]) -> ! {
    // Keep no other descriptor: the runtime reads the plugin's stdout until EOF.
    let socket = keep[0];
    let (low, high) = if keep[0] < keep[1] { (keep[0], keep[1]) } else { (keep[1], keep[0]) };
    if !(close_between(0, low) && close_between(low + 1, high) && close_between(high + 1, RawFd::MAX)) {
        libc::_exit(HELPER_NOT_STARTED);
    }
    let status = loop {
        let n = libc::send(socket, msg.as_ptr().cast(), msg.len(), 0);
        if n >= 0 {
            break ack_status(socket);
        }
        let errno = *libc::__errno_location();
        if errno != libc::EINTR {
            break errno;
        }
    };
    libc::_exit(status.clamp(0, 254))
}

/// Close every descriptor in `from..to` (`close_range`, Linux 5.9); whether that worked.
unsafe fn close_between(from: RawFd, to: RawFd) -> bool {
    from >= to || libc::syscall(libc::SYS_close_range, from as u32, (to - 1) as u32, 0u32) == 0
}

/// Read the acknowledgement of the helper's one request: 0, or the errno of its error.
unsafe fn ack_status(socket: RawFd) -> i32 {
    let mut buf = [0u8; 1024];
    loop {
        let n = libc::recv(socket, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            let errno = *libc::__errno_location();
            if errno == libc::EINTR {
                continue;
            }
            return errno;
        }
        let n = n as usize;
        if n >= HEADER_LEN + 4 && u16_at(&buf, 4) == NLMSG_ERROR {
            return i32_at(&buf, HEADER_LEN).saturating_neg();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, index: u32) -> Vec<u8> {
        family_message(kind, libc::AF_UNSPEC as u8, index)
    }

    fn family_message(kind: u16, family: u8, index: u32) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN + 16];
        m[HEADER_LEN] = family;
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&index.to_ne_bytes());
        m
    }

    #[test]
    fn only_the_removal_of_that_link_counts() {
        assert!(is_dellink_of(&message(RTM_DELLINK, 7), 7));
        assert!(!is_dellink_of(&message(RTM_DELLINK, 8), 7));
        assert!(!is_dellink_of(&message(16, 7), 7)); // RTM_NEWLINK
        assert!(!is_dellink_of(&message(RTM_DELLINK, 7)[..HEADER_LEN + 6], 7));
        // A port leaving its bridge (`ip link set dev X nomaster`): X is still there.
        assert!(!is_dellink_of(&family_message(RTM_DELLINK, libc::AF_BRIDGE as u8, 7), 7));
    }
}
