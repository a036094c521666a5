//! Names, hashes and comments, and the validation that keeps untrusted strings out of rule text.
//!
//! Network names and container IDs reach rules only after [`validate_key`] (the CNI spec charset
//! `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`) or hashed; interface names are checked against the kernel's
//! rules and never contain quotes, backslashes, whitespace or control characters.

use crate::{AttachmentKey, CniError};
use sha2::{Digest, Sha512};

/// Lower-case hex of sha512(`data`).
pub fn sha512_hex(data: &[u8]) -> String {
    hex(&Sha512::digest(data))
}

/// Lower-case hex of `bytes` (a table lookup per nibble: this runs for every object name a plan
/// makes, and `format!` per byte cost more than the hash).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The reference `FormatChainName`: `("CNI-" + hex(sha512(network + containerID)))[:28]`.
pub fn format_chain_name(network: &str, container_id: &str) -> String {
    format_chain_name_with_prefix(network, container_id, "")
}

/// The reference `MustFormatChainNameWithPrefix`: `("CNI-" + prefix + hex(sha512(network + id)))[:28]`.
pub fn format_chain_name_with_prefix(network: &str, container_id: &str, prefix: &str) -> String {
    let mut data = Vec::with_capacity(network.len() + container_id.len());
    data.extend_from_slice(network.as_bytes());
    data.extend_from_slice(container_id.as_bytes());
    let mut s = format!("CNI-{prefix}{}", sha512_hex(&data));
    s.truncate(28);
    s
}

/// Longest comment xt_comment accepts (XT_MAX_COMMENT_LEN 256 including the NUL).
pub const XT_COMMENT_MAX: usize = 255;

fn trim(mut s: String, max: usize) -> String {
    // Comments are built from validated ASCII only, so byte truncation is safe.
    s.truncate(max);
    s
}

/// The reference ipMasq comment `name: "<net>" id: "<cid>"` (Go `%q` of validated names = plain quotes).
pub fn masq_comment(network: &str, container_id: &str) -> String {
    trim(format!("name: \"{network}\" id: \"{container_id}\""), XT_COMMENT_MAX)
}

/// The reference portmap entry comment `dnat name: "<net>" id: "<cid>"`.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    trim(format!("dnat name: \"{network}\" id: \"{container_id}\""), XT_COMMENT_MAX)
}

/// Parse `[prefix]name: "<net>" id: "<cid>"` back into (net, cid).
pub fn parse_comment<'a>(comment: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = comment.strip_prefix(prefix)?.strip_prefix("name: \"")?;
    let (net, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(" id: \"")?;
    let cid = rest.strip_suffix('"')?;
    if cid.contains('"') {
        return None;
    }
    Some((net, cid))
}

/// First `n` hex digits of sha512 over the NUL-separated parts.
pub fn hash_parts(parts: &[&str], n: usize) -> String {
    let mut h = Sha512::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut s = hex(&digest[..n.div_ceil(2).min(digest.len())]);
    s.truncate(n);
    s
}

/// 12-hex hash of a network name: the prefix shared by every nftables object of that network.
pub fn nft_network_hash(network: &str) -> String {
    hash_parts(&[network], 12)
}

/// 16-hex hash of a whole attachment key.
pub fn nft_key_hash(key: &AttachmentKey) -> String {
    hash_parts(&[&key.network, &key.container_id, &key.ifname], 16)
}

/// Per-attachment nftables object name: `<p>-<12 hex net>-<16 hex key>` (31 chars with a 1-char
/// prefix, within the 32-byte name limit of old kernels).
pub fn nft_key_name(prefix: char, key: &AttachmentKey) -> String {
    format!("{prefix}-{}-{}", nft_network_hash(&key.network), nft_key_hash(key))
}

/// The owner marks of an attachment in the nftables layouts without per-attachment chains: the
/// first 4 bytes of sha512(network), then the first 8 bytes of sha512(network NUL containerID NUL
/// ifname) as two marks (the hashes [`nft_network_hash`] and [`nft_key_hash`] print in hex).
pub fn nft_owner_marks(key: &AttachmentKey) -> [u32; 3] {
    let net = Sha512::digest(key.network.as_bytes());
    let mut h = Sha512::new();
    h.update(key.network.as_bytes());
    h.update([0u8]);
    h.update(key.container_id.as_bytes());
    h.update([0u8]);
    h.update(key.ifname.as_bytes());
    let k = h.finalize();
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    [be(&net[0..4]), be(&k[0..4]), be(&k[4..8])]
}

/// Human-readable key for nftables comments (validated characters only, ≤ 127 bytes).
pub fn nft_key_comment(key: &AttachmentKey) -> String {
    let s = format!("net: {} id: {} if: {}", key.network, key.container_id, sanitize(&key.ifname));
    trim(s, 127)
}

/// Replace anything but `[A-Za-z0-9_.@+=-]` by `_` (for informational text only).
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.@+=-".contains(c) { c } else { '_' })
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, as the spec requires of network names and container IDs.
pub fn validate_name(what: &str, s: &str) -> Result<(), CniError> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err(CniError::InvalidConfig(format!("{what} is empty"))),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(CniError::InvalidConfig(format!("{what} {s:?} must start with a letter or digit")))
        }
        _ => {}
    }
    if !chars.all(is_name_char) {
        return Err(CniError::InvalidConfig(format!(
            "{what} {s:?} may contain only letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// Interface names: 1..=15 bytes, not `.`/`..`, no `/`, `:`, whitespace, quotes, backslash or control.
pub fn validate_ifname(what: &str, s: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::InvalidConfig(format!("{what} {s:?}: {why}")));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if s == "." || s == ".." {
        return bad("not a valid interface name");
    }
    if s.chars().any(|c| c == '/' || c == ':' || c == '"' || c == '\'' || c == '\\' || c.is_whitespace() || c.is_control()) {
        return bad("contains a forbidden character");
    }
    Ok(())
}

pub fn validate_key(key: &AttachmentKey) -> Result<(), CniError> {
    validate_name("network name", &key.network)?;
    validate_name("container ID", &key.container_id)?;
    validate_ifname("interface name", &key.ifname)
}

/// iptables chain names given by configuration (e.g. `externalSetMarkChain`): 1..=28 chars of
/// `[A-Za-z0-9_.-]` (no option-like leading '-').
pub fn validate_chain(s: &str) -> Result<(), CniError> {
    validate_name("chain name", s)?;
    if s.len() > 28 {
        return Err(CniError::InvalidConfig(format!("chain name {s:?} is longer than 28 characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_chain_names() {
        // Computed from the reference bridge (ipMasq) and portmap in a sandbox: network "probenet",
        // container "ctr1".
        assert_eq!(format_chain_name("probenet", "ctr1"), "CNI-96499d5ef693007d260ed91e");
        assert_eq!(format_chain_name_with_prefix("probenet", "ctr1", "DN-"), "CNI-DN-96499d5ef693007d260ed");
        // sha512("") vector: cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce...
        assert_eq!(format_chain_name("", ""), "CNI-cf83e1357eefb8bdf1542850");
        // sha512("abc") = ddaf35a193617aba cc417349ae204131 ...: name+id is concatenated without separator.
        assert_eq!(format_chain_name("ab", "c"), "CNI-ddaf35a193617abacc417349");
        assert_eq!(format_chain_name("a", "bc"), format_chain_name("ab", "c"));
        assert_eq!(format_chain_name("probenet", "ctr1").len(), 28);
        assert_eq!(format_chain_name_with_prefix("n", "c", "SN-").len(), 28);
    }

    #[test]
    fn comments_round_trip() {
        let c = masq_comment("probenet", "ctr1");
        assert_eq!(c, r#"name: "probenet" id: "ctr1""#);
        assert_eq!(parse_comment(&c, ""), Some(("probenet", "ctr1")));
        let d = dnat_comment("n", "c");
        assert_eq!(d, r#"dnat name: "n" id: "c""#);
        assert_eq!(parse_comment(&d, "dnat "), Some(("n", "c")));
        assert_eq!(parse_comment(&d, ""), None);
        assert_eq!(parse_comment(r#"name: "a" id: "b" x"#, ""), None);
        let long = "x".repeat(300);
        assert_eq!(masq_comment(&long, "c").len(), XT_COMMENT_MAX);
    }

    #[test]
    fn validation() {
        assert!(validate_name("n", "abc-1_2.3").is_ok());
        assert!(validate_name("n", "").is_err());
        assert!(validate_name("n", "-abc").is_err());
        assert!(validate_name("n", "a\"b").is_err());
        assert!(validate_name("n", "a b").is_err());
        assert!(validate_name("n", "a;rm").is_err());
        assert!(validate_ifname("i", "eth0").is_ok());
        assert!(validate_ifname("i", "eth0\"").is_err());
        assert!(validate_ifname("i", "0123456789abcdef").is_err());
        assert!(validate_ifname("i", "a/b").is_err());
        assert!(validate_chain("KUBE-MARK-MASQ").is_ok());
        assert!(validate_chain("-j").is_err());
    }

    #[test]
    fn hex_digests() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        // sha512("abc") starts ddaf35a193617aba
        assert_eq!(hash_parts(&["abc"], 16), "ddaf35a193617aba");
        assert_eq!(hash_parts(&["abc"], 3), "dda");
        assert_eq!(hash_parts(&["ab", "c"], 200).len(), 128);
        assert_eq!(&sha512_hex(b"abc")[..16], "ddaf35a193617aba");
    }

    #[test]
    fn nft_names() {
        let k = AttachmentKey::new("net1", "ctr", "eth0");
        let n = nft_key_name('m', &k);
        assert_eq!(n.len(), 31);
        assert!(n.starts_with(&format!("m-{}-", nft_network_hash("net1"))));
        // ifname is part of the key (unlike the reference iptables layout)
        assert_ne!(n, nft_key_name('m', &AttachmentKey::new("net1", "ctr", "eth1")));
        // separators prevent ambiguity
        assert_ne!(
            nft_key_hash(&AttachmentKey::new("a", "bc", "e")),
            nft_key_hash(&AttachmentKey::new("ab", "c", "e"))
        );
        assert_eq!(nft_key_comment(&k), "net: net1 id: ctr if: eth0");
    }
}
