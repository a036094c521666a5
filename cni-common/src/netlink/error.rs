//! The error of every netlink operation, and its mapping to [`CniError`].

use crate::error::CniError;

/// A failed netlink operation: what was attempted, on which object, and why.
///
/// `op` names the operation and the object at fault, e.g.
/// `add veth "veth1a2b3c4d" (peer "eth0")`; the `Display` form is `"<op>: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct NlError {
    /// The operation and the object it applied to.
    pub op: String,
    /// The errno reported by the kernel (or by a socket call); `None` when the failure has
    /// none (for example a reply that could not be decoded).
    pub errno: Option<i32>,
    /// Why it failed: the errno's text, followed by the kernel's own explanation (netlink
    /// extended ack) when the kernel gave one.
    pub reason: String,
    /// The optional kernel feature the request depends on (e.g. `"bridge VLAN filtering"`).
    /// When set and the kernel answered `EOPNOTSUPP` or `EINVAL`, the conversion into
    /// [`CniError`] yields [`CniError::UnsupportedKernel`].
    pub feature: Option<&'static str>,
}

impl NlError {
    /// An error carrying `errno`, with the kernel's extended-ack message if any. `op` is filled in
    /// by the caller through [`NlError::with_op`].
    pub(crate) fn os(errno: i32, kernel_msg: Option<String>) -> NlError {
        let text = std::io::Error::from_raw_os_error(errno).to_string();
        let reason = match kernel_msg {
            Some(msg) if !msg.is_empty() => format!("{text}; kernel: {msg}"),
            _ => text,
        };
        NlError { op: String::new(), errno: Some(errno), reason, feature: None }
    }

    /// An error from a failed system call on the socket.
    pub(crate) fn io(err: std::io::Error) -> NlError {
        match err.raw_os_error() {
            Some(errno) => NlError::os(errno, None),
            None => NlError { op: String::new(), errno: None, reason: err.to_string(), feature: None },
        }
    }

    /// A request refused before reaching the kernel because an argument is invalid (`EINVAL`).
    pub(crate) fn invalid(op: impl Into<String>, reason: impl Into<String>) -> NlError {
        NlError { op: op.into(), errno: Some(libc::EINVAL), reason: reason.into(), feature: None }
    }

    /// A reply that could not be understood.
    pub fn decode(reason: impl Into<String>) -> NlError {
        NlError { op: String::new(), errno: None, reason: reason.into(), feature: None }
    }

    /// Name the operation (and its object) this error belongs to.
    pub(crate) fn with_op(mut self, op: impl Into<String>) -> NlError {
        self.op = op.into();
        self
    }

    /// Mark the error as coming from a request that needs an optional kernel feature.
    pub(crate) fn with_feature(mut self, feature: &'static str) -> NlError {
        self.feature = Some(feature);
        self
    }

    /// The errno, if the failure carried one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// The object does not exist: `ENOENT`, `ENODEV` (link), `ESRCH` (route, process) or
    /// `EADDRNOTAVAIL` (what deleting a missing address returns).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL))
    }

    /// The request needs a kernel feature (see [`NlError::feature`]) that the kernel lacks.
    pub fn is_unsupported(&self) -> bool {
        self.feature.is_some() && matches!(self.errno, Some(libc::EOPNOTSUPP | libc::EINVAL))
    }
}

impl From<NlError> for CniError {
    /// [`CniError::UnsupportedKernel`] when [`NlError::is_unsupported`], otherwise
    /// [`CniError::Netlink`] with the operation and reason.
    fn from(e: NlError) -> CniError {
        if e.is_unsupported() {
            let feature = e.feature.unwrap_or("optional feature");
            return CniError::UnsupportedKernel(format!("{feature} is not available: {e}"));
        }
        CniError::Netlink { op: e.op, reason: e.reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_op_and_errno() {
        let e = NlError::os(libc::EEXIST, None).with_op("add veth \"veth1a2b3c4d\" (peer \"eth0\")");
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.errno(), Some(17));
        assert_eq!(e.to_string(), "add veth \"veth1a2b3c4d\" (peer \"eth0\"): File exists (os error 17)");
        let c: CniError = e.into();
        assert_eq!(c.code(), crate::error::code::NETLINK);
        assert_eq!(c.to_string(), "netlink: add veth \"veth1a2b3c4d\" (peer \"eth0\"): File exists (os error 17)");
    }

    #[test]
    fn kernel_message_is_appended() {
        let e = NlError::os(libc::EINVAL, Some("Nexthop has invalid gateway".into())).with_op("add route");
        assert_eq!(e.reason, "Invalid argument (os error 22); kernel: Nexthop has invalid gateway");
    }

    #[test]
    fn not_found_errnos() {
        for errno in [libc::ENOENT, libc::ENODEV, libc::ESRCH, libc::EADDRNOTAVAIL] {
            assert!(NlError::os(errno, None).is_not_found());
        }
    }

    #[test]
    fn unsupported_feature_maps_to_unsupported_kernel() {
        let e = NlError::os(libc::EOPNOTSUPP, None)
            .with_op("add vlan 10 on \"veth0\"")
            .with_feature("bridge VLAN filtering");
        let c: CniError = e.into();
        assert_eq!(c.code(), crate::error::code::UNSUPPORTED_KERNEL);
        assert!(c.to_string().contains("bridge VLAN filtering"), "{c}");
        // The same errno without a feature marker stays a netlink error.
        let c: CniError = NlError::os(libc::EOPNOTSUPP, None).with_op("set link").into();
        assert_eq!(c.code(), crate::error::code::NETLINK);
    }
}
