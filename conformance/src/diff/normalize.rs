//! Masking values that legitimately differ between two runs (namespace paths, MACs, ...), so results
//! and state snapshots of the two sides can be compared with `==`.

use serde_json::{Map, Value};

/// What to mask. Side-specific strings (netns paths, sandbox names, temp dirs) are added by the
/// harness itself; these options are the case's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Normalize {
    /// Substring replacements applied to every string, in order (`(from, to)`).
    pub replacements: Vec<(String, String)>,
    /// Replace every MAC-address-looking string except all-zero and broadcast with `"<mac>"`
    /// (veths get random MACs).
    pub mask_macs: bool,
    /// Object keys whose values become `"<masked>"` wherever they occur (e.g. `ifindex`).
    pub mask_keys: Vec<String>,
    /// Object keys removed wherever they occur (fields only one side prints).
    pub drop_keys: Vec<String>,
    /// Also require equal error codes when both sides fail (default: failing is enough, as our
    /// codes are often more specific than the reference's 999).
    pub error_codes: bool,
}

impl Normalize {
    pub fn new() -> Normalize {
        Normalize::default()
    }

    pub fn replace(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.replacements.push((from.into(), to.into()));
        self
    }

    pub fn mask_macs(mut self) -> Self {
        self.mask_macs = true;
        self
    }

    pub fn mask_key(mut self, key: impl Into<String>) -> Self {
        self.mask_keys.push(key.into());
        self
    }

    pub fn drop_key(mut self, key: impl Into<String>) -> Self {
        self.drop_keys.push(key.into());
        self
    }

    pub fn error_codes(mut self) -> Self {
        self.error_codes = true;
        self
    }
}

/// `value` with the masks of `opts` applied.
pub fn normalize(value: &Value, opts: &Normalize) -> Value {
    match value {
        Value::String(s) => Value::String(normalize_str(s, opts)),
        Value::Array(a) => Value::Array(a.iter().map(|v| normalize(v, opts)).collect()),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                if opts.drop_keys.iter().any(|d| d == k) {
                    continue;
                }
                let v = if opts.mask_keys.iter().any(|m| m == k) {
                    Value::String("<masked>".into())
                } else {
                    normalize(v, opts)
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn normalize_str(s: &str, opts: &Normalize) -> String {
    let mut s = s.to_string();
    for (from, to) in &opts.replacements {
        if !from.is_empty() && s.contains(from.as_str()) {
            s = s.replace(from.as_str(), to);
        }
    }
    if opts.mask_macs && is_mac(&s) && s != "00:00:00:00:00:00" && !s.eq_ignore_ascii_case("ff:ff:ff:ff:ff:ff") {
        return "<mac>".into();
    }
    s
}

/// `xx:xx:xx:xx:xx:xx` in hex.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks() {
        let opts = Normalize::new().replace("/run/netns/a", "<netns>").mask_macs().mask_key("ifindex").drop_key("altnames");
        let v = json!({"interfaces": [{"name": "veth1", "mac": "AA:bb:cc:dd:ee:ff", "sandbox": "/run/netns/a"},
                                      {"name": "lo", "mac": "00:00:00:00:00:00"}],
                       "ifindex": 7, "altnames": ["x"], "broadcast": "ff:ff:ff:ff:ff:ff"});
        assert_eq!(
            normalize(&v, &opts),
            json!({"interfaces": [{"name": "veth1", "mac": "<mac>", "sandbox": "<netns>"},
                                  {"name": "lo", "mac": "00:00:00:00:00:00"}],
                   "ifindex": "<masked>", "broadcast": "ff:ff:ff:ff:ff:ff"})
        );
        assert!(!is_mac("10.0.0.1/24"));
        assert!(!is_mac("fe80::1:2:3:4:5"));
    }
}
