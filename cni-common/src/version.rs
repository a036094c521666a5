//! CNI spec versions: the list we support, parsing and ordering.

use crate::error::CniError;

/// Every spec version the suite speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest spec version, used when a config names none.
pub const CURRENT: &str = "1.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub const V0_1_0: Version = Version(0, 1, 0);
    pub const V0_2_0: Version = Version(0, 2, 0);
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    pub fn parse(s: &str) -> Result<Version, CniError> {
        let bad = || CniError::IncompatibleVersion(format!("cniVersion {s:?} is not a valid version"));
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, CniError> {
            parts.next().ok_or_else(bad)?.parse::<u32>().map_err(|_| bad())
        };
        let v = Version(next()?, next()?, next()?);
        if s.split('.').count() != 3 {
            return Err(bad());
        }
        Ok(v)
    }

    /// Parse and require the version to be one we support.
    pub fn supported(s: &str) -> Result<Version, CniError> {
        if s.is_empty() {
            return Err(CniError::IncompatibleVersion("cniVersion is empty".into()));
        }
        let v = Version::parse(s)?;
        if !SUPPORTED.contains(&s) {
            return Err(CniError::IncompatibleVersion(format!(
                "cniVersion {s:?} is not supported (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse_and_order() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.1.0").unwrap() > Version::V1_0_0);
        assert!(Version::parse("1.1").is_err());
        assert!(Version::parse("1.1.0.0").is_err());
        assert!(Version::parse("a.b.c").is_err());
        assert_eq!(Version::supported("2.0.0").unwrap_err().code(), 1);
        assert_eq!(Version::supported("").unwrap_err().code(), 1);
        assert_eq!(Version::supported("1.1.0").unwrap(), Version::V1_1_0);
    }
}
