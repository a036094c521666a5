//! sysctl reads and writes under /proc/sys, in the calling thread's network namespace.
//!
//! Keys are dotted (`net.ipv4.ip_forward`) or slash-separated (`net/ipv6/conf/eth0/accept_dad`).
//! Use the slash form when a component contains dots, such as the interface name `eth0.100`:
//! `net/ipv4/conf/eth0.100/forwarding`.
//!
//! The `/proc/sys/net` entries of a file belong to the network namespace of the task that opens
//! it, so call these functions from the thread that is inside the namespace to configure.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use crate::error::CniError;

/// `/proc/sys/<key>` for a dotted or slash-separated key, refusing keys that could leave
/// `/proc/sys` or name nothing.
fn path(key: &str) -> Result<PathBuf, CniError> {
    let bad = |why: &str| CniError::Io(format!("sysctl {key:?}: {why}"));
    let rel = key.strip_prefix("/proc/sys/").unwrap_or(key).trim_start_matches('/');
    let sep = if rel.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = rel.split(sep).collect();
    if rel.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key component"));
    }
    if parts.iter().any(|p| *p == "." || *p == ".." || p.contains('\0')) {
        return Err(bad("invalid key component"));
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Ok(path)
}

/// The value of `key`, without the trailing newline.
pub fn read(key: &str) -> Result<String, CniError> {
    let path = path(key)?;
    let value =
        fs::read_to_string(&path).map_err(|e| CniError::Io(format!("read sysctl {key} ({}): {e}", path.display())))?;
    Ok(value.trim_end_matches('\n').to_string())
}

/// Set `key` to `value`.
pub fn write(key: &str, value: &str) -> Result<(), CniError> {
    write_key(key, value, false).map(drop)
}

/// Set `key` to `value` if the key exists; `Ok(false)` if it does not (for instance
/// `net/ipv6/conf/<link>/*` when the kernel runs without IPv6), other errors as [`write`].
pub fn write_if_present(key: &str, value: &str) -> Result<bool, CniError> {
    write_key(key, value, true)
}

fn write_key(key: &str, value: &str, absent_ok: bool) -> Result<bool, CniError> {
    let path = path(key)?;
    let io_err = |e: std::io::Error| CniError::Io(format!("write sysctl {key}={value:?} ({}): {e}", path.display()));
    let mut file = match fs::OpenOptions::new().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if absent_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(e)),
    };
    // A sysctl takes the whole value in one write(2).
    file.write_all(value.as_bytes()).map_err(io_err)?;
    Ok(true)
}

/// Set `key` to `value` only if it currently differs (whitespace-separated fields compared, so
/// `"32768\t60999"` equals `"32768 60999"`), sparing the kernel a needless write. Returns whether it
/// wrote.
pub fn write_if_different(key: &str, value: &str) -> Result<bool, CniError> {
    if same_value(&read(key)?, value) {
        return Ok(false);
    }
    write(key, value)?;
    Ok(true)
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
    fn values_compare_by_fields() {
        assert!(same_value("32768\t60999", "32768 60999"));
        assert!(same_value("1", "1\n"));
        assert!(!same_value("0", "1"));
    }
}
