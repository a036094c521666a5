//! `CNI_ARGS`: `K=V;K=V` pairs. Unknown keys are rejected unless `IgnoreUnknown` is true, as the
//! reference library does.

use crate::error::CniError;

const VAR: &str = "CNI_ARGS";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parse the text of `CNI_ARGS`; `known` lists the keys the plugin understands.
    pub fn parse(s: &str, known: &[&str]) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| CniError::invalid_env(VAR, format!("{item:?} is not of the form KEY=VALUE")))?;
            if k.is_empty() {
                return Err(CniError::invalid_env(VAR, format!("{item:?} has an empty key")));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        let args = CniArgs { pairs };
        if !args.ignore_unknown() {
            if let Some((k, v)) = args.pairs.iter().find(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str())) {
                return Err(CniError::invalid_env(
                    VAR,
                    format!("unknown key {k:?} (value {v:?}); set IgnoreUnknown=1 to allow unknown keys"),
                ));
            }
        }
        Ok(args)
    }

    fn ignore_unknown(&self) -> bool {
        matches!(self.get("IgnoreUnknown").map(str::to_ascii_lowercase).as_deref(), Some("1" | "true"))
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_known_and_unknown() {
        let a = CniArgs::parse("IP=10.0.0.5;MAC=aa:bb:cc:dd:ee:ff", &["IP", "MAC"]).unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5"));
        assert_eq!(a.get("MAC"), Some("aa:bb:cc:dd:ee:ff"));
        let e = CniArgs::parse("K8S_POD_NAME=x", &["IP"]).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("K8S_POD_NAME"));
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=x;IP=1.2.3.4", &["IP"]).unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("x"));
        assert_eq!(CniArgs::parse("IgnoreUnknown=true;Z=1", &[]).unwrap().pairs().len(), 2);
        assert_eq!(CniArgs::parse("novalue", &[]).unwrap_err().code(), 4);
        assert_eq!(CniArgs::parse("=v", &[]).unwrap_err().code(), 4);
        assert!(CniArgs::parse("", &[]).unwrap().pairs().is_empty());
        assert_eq!(CniArgs::parse("IgnoreUnknown=0;Z=1", &[]).unwrap_err().code(), 4);
    }
}
