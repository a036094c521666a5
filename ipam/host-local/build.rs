//! Writes `identity.rs`: host-local's build identity, the text of the ELF note its executable
//! carries and that a plugin linking this library compares before running it in-process (see
//! `cni_common::invoke::Builtin`). It is the package version and a hash of the sources that decide
//! host-local's behaviour: this crate's and cni-common's (skel, results, errors). Two builds of the
//! same sources agree; any change to them gives another identity, and then the file is executed.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// FNV-1a, 64 bits: a fingerprint, not a defence (whoever can write CNI_PATH can run code anyway).
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let roots = [manifest.clone(), manifest.join("../../cni-common")];
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for root in &roots {
        for input in ["src", "Cargo.toml"] {
            println!("cargo:rerun-if-changed={}", root.join(input).display());
        }
        let mut files = vec![root.join("Cargo.toml")];
        walk(&root.join("src"), &mut files);
        files.sort();
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(&f);
            fnv(&mut hash, rel.to_string_lossy().as_bytes());
            fnv(&mut hash, &std::fs::read(&f).unwrap_or_default());
        }
    }
    let identity = format!("host-local {} {hash:016x}", std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("identity.rs");
    let code = format!("/// host-local's build identity (see build.rs).\npub const IDENTITY: &str = {identity:?};\n");
    std::fs::write(&out, code).expect("write identity.rs");
}
