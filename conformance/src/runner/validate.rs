//! Identifier checks libcni makes before running a plugin (pkg/utils/utils.go).

use super::RunError;

/// Network names and container ids: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub use cni_common::config::valid_name as valid_identifier;

pub fn network_name(name: &str) -> Result<(), RunError> {
    if name.is_empty() {
        return Err(RunError::config("missing network name"));
    }
    if !valid_identifier(name) {
        return Err(RunError::config(format!("invalid characters found in network name {name:?}")));
    }
    Ok(())
}

pub fn container_id(id: &str) -> Result<(), RunError> {
    if id.is_empty() {
        return Err(RunError::RuntimeConf("missing containerID".into()));
    }
    if !valid_identifier(id) {
        return Err(RunError::RuntimeConf(format!("invalid characters in containerID {id:?}")));
    }
    Ok(())
}

/// Interface names: non-empty, at most 15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn interface_name(name: &str) -> Result<(), RunError> {
    cni_common::config::check_ifname(name).map_err(|why| RunError::RuntimeConf(format!("interface name {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(valid_identifier("net-1_a.b"));
        assert!(!valid_identifier("-net"));
        assert!(!valid_identifier(""));
        assert!(!valid_identifier("a/b"));
        assert!(interface_name("eth0").is_ok());
        assert!(interface_name("a/b").is_err());
        assert!(interface_name("0123456789abcdef").is_err());
        assert!(interface_name("..").is_err());
        assert!(interface_name("a b").is_err());
    }
}
