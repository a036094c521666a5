//! Where the plugin binaries under test are.

use std::path::{Path, PathBuf};

/// The reference plugins (Debian package containernetworking-plugins v1.1.1: cniVersion ≤ 1.0.0).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Env var naming the directory of our plugin binaries (overrides the derivation from the test exe).
pub const PLUGIN_DIR_ENV: &str = "CNI_TEST_PLUGIN_DIR";

/// The directory holding our built plugin binaries: `$CNI_TEST_PLUGIN_DIR`, else the cargo profile
/// directory of the running executable (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`
/// → `target/<profile>`).
pub fn our_plugin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot locate the running executable: {e}"));
    profile_dir_of(&exe).unwrap_or_else(|| {
        panic!("cannot derive the plugin directory from {}: set {PLUGIN_DIR_ENV}", exe.display())
    })
}

fn profile_dir_of(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// Panic with a clear message unless every named plugin binary exists in `dir`.
pub fn require_plugins(dir: &Path, names: &[&str]) {
    for name in names {
        let p = dir.join(name);
        if !p.is_file() {
            panic!(
                "plugin binary `{name}` not found at {}: run `cargo build --workspace` first \
                 (or point {PLUGIN_DIR_ENV} at the directory holding it)",
                p.display()
            );
        }
    }
}

/// `our_plugin_dir()` after checking that `names` are built there.
pub fn our_plugins(names: &[&str]) -> PathBuf {
    let dir = our_plugin_dir();
    require_plugins(&dir, names);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_from_test_and_bin() {
        assert_eq!(
            profile_dir_of(Path::new("/w/target/debug/deps/loopback-abc")).unwrap(),
            Path::new("/w/target/debug")
        );
        assert_eq!(profile_dir_of(Path::new("/w/target/release/cnitool")).unwrap(), Path::new("/w/target/release"));
    }
}
