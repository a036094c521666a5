//! The one error type of the suite, mapped to the CNI spec's error codes.
//!
//! Every failure a plugin can report is a [`CniError`]; [`CniError::code`] gives the spec code and
//! [`CniError::to_json`] the error object printed on stdout.

use serde::Serialize;

/// Well-known CNI error codes (spec §"Error") and the suite's own (≥ 100).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const INVALID_NETNS: u32 = 8;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// Netlink (link, address, route) operation failed.
    pub const NETLINK: u32 = 100;
    /// A delegated plugin (IPAM) failed without a CNI error object of its own.
    pub const DELEGATE: u32 = 101;
    /// An address range has no free address left.
    pub const RANGE_EXHAUSTED: u32 = 102;
    /// An address or reservation conflicts with an existing one.
    pub const CONFLICT: u32 = 103;
    /// A firewall (nftables / iptables) operation failed.
    pub const FIREWALL: u32 = 104;
    /// CHECK found state that does not match the expected one.
    pub const CHECK_FAILED: u32 = 105;
    /// A kernel feature the configuration needs is missing.
    pub const UNSUPPORTED_KERNEL: u32 = 106;
    /// Anything else.
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: what went wrong, with the spec code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version: {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field: {0}")]
    UnsupportedField(String),
    #[error("unknown container: {0}")]
    UnknownContainer(String),
    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: String, reason: String },
    #[error("I/O failure: {0}")]
    Io(String),
    #[error("failed to decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid network namespace {path}: {reason}")]
    InvalidNetns { path: String, reason: String },
    #[error("try again later: {0}")]
    TryAgainLater(String),
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    #[error("plugin not available, existing containers may have limited connectivity: {0}")]
    NotAvailableLimited(String),
    #[error("netlink: {op}: {reason}")]
    Netlink { op: String, reason: String },
    #[error("delegated plugin {plugin}: {reason}")]
    Delegate { plugin: String, reason: String },
    #[error("{0}")]
    RangeExhausted(String),
    #[error("{0}")]
    Conflict(String),
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("check failed: {0}")]
    CheckFailed(String),
    #[error("kernel lacks support: {0}")]
    UnsupportedKernel(String),
    /// An error object received from a delegated plugin, passed through unchanged.
    #[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Passthrough { code: u32, msg: String, details: String },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

/// The JSON error object of the spec.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, Clone)]
pub struct ErrorObject {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ErrorObject {
    /// Parse an error object as a plugin prints it; `None` unless `stdout` is a JSON object with a
    /// numeric `code`.
    pub fn parse(stdout: &[u8]) -> Option<ErrorObject> {
        let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
        v.get("code")?.as_u64()?;
        serde_json::from_value(v).ok()
    }
}

impl std::fmt::Display for ErrorObject {
    /// Like libcni: `msg`, or `msg; details`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl CniError {
    pub fn code(&self) -> u32 {
        use CniError::*;
        match self {
            IncompatibleVersion(_) => code::INCOMPATIBLE_VERSION,
            UnsupportedField(_) => code::UNSUPPORTED_FIELD,
            UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            InvalidEnv { .. } => code::INVALID_ENV,
            Io(_) => code::IO_FAILURE,
            Decode { .. } => code::DECODE_FAILURE,
            InvalidConfig(_) => code::INVALID_CONFIG,
            InvalidNetns { .. } => code::INVALID_NETNS,
            TryAgainLater(_) => code::TRY_AGAIN_LATER,
            NotAvailable(_) => code::NOT_AVAILABLE,
            NotAvailableLimited(_) => code::NOT_AVAILABLE_LIMITED,
            Netlink { .. } => code::NETLINK,
            Delegate { .. } => code::DELEGATE,
            RangeExhausted(_) => code::RANGE_EXHAUSTED,
            Conflict(_) => code::CONFLICT,
            Firewall(_) => code::FIREWALL,
            CheckFailed(_) => code::CHECK_FAILED,
            UnsupportedKernel(_) => code::UNSUPPORTED_KERNEL,
            Passthrough { code, .. } => *code,
            Internal(_) => code::INTERNAL,
        }
    }

    /// Short message for the `msg` field: the class of error.
    pub fn msg(&self) -> &'static str {
        use CniError::*;
        match self {
            IncompatibleVersion(_) => "Incompatible CNI version",
            UnsupportedField(_) => "Unsupported field",
            UnknownContainer(_) => "Unknown container",
            InvalidEnv { .. } => "Invalid environment variables",
            Io(_) => "I/O failure",
            Decode { .. } => "Failed to decode content",
            InvalidConfig(_) => "Invalid network config",
            InvalidNetns { .. } => "Invalid network namespace",
            TryAgainLater(_) => "Try again later",
            NotAvailable(_) => "Plugin not available",
            NotAvailableLimited(_) => "Plugin not available, limited connectivity",
            Netlink { .. } => "Netlink operation failed",
            Delegate { .. } => "Delegated plugin failed",
            RangeExhausted(_) => "Address range exhausted",
            Conflict(_) => "Address or reservation conflict",
            Firewall(_) => "Firewall operation failed",
            CheckFailed(_) => "Check failed",
            UnsupportedKernel(_) => "Unsupported by the kernel",
            Passthrough { .. } => "",
            Internal(_) => "Internal error",
        }
    }

    /// The error object for `cni_version`.
    pub fn to_object(&self, cni_version: &str) -> ErrorObject {
        match self {
            CniError::Passthrough { code, msg, details } => ErrorObject {
                cni_version: cni_version.to_string(),
                code: *code,
                msg: msg.clone(),
                details: details.clone(),
            },
            other => ErrorObject {
                cni_version: cni_version.to_string(),
                code: other.code(),
                msg: other.msg().to_string(),
                details: other.to_string(),
            },
        }
    }

    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::to_string(&self.to_object(cni_version))
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code()))
    }

    pub fn invalid_env(var: &str, reason: impl Into<String>) -> Self {
        CniError::InvalidEnv { var: var.to_string(), reason: reason.into() }
    }

    pub fn netlink(op: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CniError::Netlink { op: op.into(), reason: reason.to_string() }
    }

    pub fn decode(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CniError::Decode { what: what.into(), reason: reason.to_string() }
    }

    pub fn config(msg: impl Into<String>) -> Self {
        CniError::InvalidConfig(msg.into())
    }

    /// Prefix the message with context, keeping the code.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        use CniError::*;
        match self {
            IncompatibleVersion(m) => IncompatibleVersion(format!("{ctx}: {m}")),
            UnsupportedField(m) => UnsupportedField(format!("{ctx}: {m}")),
            UnknownContainer(m) => UnknownContainer(format!("{ctx}: {m}")),
            InvalidEnv { var, reason } => InvalidEnv { var, reason: format!("{ctx}: {reason}") },
            Io(m) => Io(format!("{ctx}: {m}")),
            Decode { what, reason } => Decode { what: format!("{ctx}: {what}"), reason },
            InvalidConfig(m) => InvalidConfig(format!("{ctx}: {m}")),
            InvalidNetns { path, reason } => InvalidNetns { path, reason: format!("{ctx}: {reason}") },
            TryAgainLater(m) => TryAgainLater(format!("{ctx}: {m}")),
            NotAvailable(m) => NotAvailable(format!("{ctx}: {m}")),
            NotAvailableLimited(m) => NotAvailableLimited(format!("{ctx}: {m}")),
            Netlink { op, reason } => Netlink { op: format!("{ctx}: {op}"), reason },
            Delegate { plugin, reason } => Delegate { plugin, reason: format!("{ctx}: {reason}") },
            RangeExhausted(m) => RangeExhausted(format!("{ctx}: {m}")),
            Conflict(m) => Conflict(format!("{ctx}: {m}")),
            Firewall(m) => Firewall(format!("{ctx}: {m}")),
            CheckFailed(m) => CheckFailed(format!("{ctx}: {m}")),
            UnsupportedKernel(m) => UnsupportedKernel(format!("{ctx}: {m}")),
            Passthrough { code, msg, details } => {
                Passthrough { code, msg, details: format!("{ctx}: {details}") }
            }
            Internal(m) => Internal(format!("{ctx}: {m}")),
        }
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_json() {
        let e = CniError::config("field \"mtu\": value 70000 is above 65535");
        assert_eq!(e.code(), 7);
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(v["code"], 7);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["details"].as_str().unwrap().contains("mtu"));
        let p = CniError::Passthrough { code: 11, msg: "busy".into(), details: "".into() };
        let v: serde_json::Value = serde_json::from_str(&p.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "busy");
        assert!(v.get("details").is_none());
    }

    #[test]
    fn context_keeps_code() {
        let e = CniError::netlink("add veth", "File exists").context("container abc");
        assert_eq!(e.code(), code::NETLINK);
        assert!(e.to_string().contains("container abc"));
    }
}
