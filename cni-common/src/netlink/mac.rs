//! MAC addresses and random interface names.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `aa:bb:cc:dd:ee:ff` (lower case).
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parse a 48-bit MAC address written as six two-digit hex groups separated by `:` or `-`
/// (one separator throughout), e.g. `0a:58:0a:f4:00:02`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = |why: &str| format!("invalid MAC address {s:?}: {why}");
    let sep = if s.contains(':') { ':' } else { '-' };
    let mut mac = [0u8; 6];
    let mut groups = s.split(sep);
    for byte in mac.iter_mut() {
        let group = groups.next().ok_or_else(|| bad("expected 6 groups of 2 hex digits"))?;
        if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("expected 6 groups of 2 hex digits"));
        }
        *byte = u8::from_str_radix(group, 16).map_err(|e| bad(&e.to_string()))?;
    }
    if groups.next().is_some() {
        return Err(bad("expected 6 groups of 2 hex digits"));
    }
    Ok(mac)
}

/// A random locally administered unicast MAC address.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    random_bytes(&mut mac);
    mac[0] = (mac[0] & 0xfe) | 0x02; // clear multicast bit, set locally administered bit
    mac
}

/// `veth` followed by 8 random lower-case hex digits, the host-side name scheme of the reference
/// plugins (NetworkManager ignores `veth*`). On `EEXIST` callers draw a new one.
pub fn random_veth_name() -> String {
    let mut b = [0u8; 4];
    random_bytes(&mut b);
    format!("veth{:08x}", u32::from_be_bytes(b))
}

/// Random bytes from the kernel; should the kernel's generator be unreachable (no getrandom(2)
/// and no /dev/urandom), from a mix of clock, process id and a counter instead: these bytes only
/// make names and MACs unlikely to clash, and clashes are detected (`EEXIST`) anyway.
fn random_bytes(buf: &mut [u8]) {
    if fill_random(buf).is_ok() {
        return;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    for byte in buf.iter_mut() {
        // splitmix64 step
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *byte = (z ^ (z >> 31)) as u8;
    }
}

/// Fill `buf` from the kernel's CSPRNG: getrandom(2), or /dev/urandom where it does not exist.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a valid writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                use std::io::Read;
                return std::fs::File::open("/dev/urandom")?.read_exact(rest);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xff];
        assert_eq!(format_mac(&mac), "0a:58:0a:f4:00:ff");
        assert_eq!(parse_mac("0a:58:0a:f4:00:ff"), Ok(mac));
        assert_eq!(parse_mac("0A-58-0A-F4-00-FF"), Ok(mac));
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "",
            "0a:58:0a:f4:00",
            "0a:58:0a:f4:00:ff:01",
            "0a:58:0a:f4:0:ff",
            "0a:58:0a:f4:00:fg",
            "0a:58-0a:f4:00:ff",
            "+a:58:0a:f4:00:ff",
            "0a:58:0a:f4:00:ff:",
        ] {
            let err = parse_mac(bad).expect_err(bad);
            assert!(err.contains("invalid MAC address"), "{err}");
        }
    }

    #[test]
    fn random_mac_is_local_unicast() {
        for _ in 0..32 {
            let mac = random_mac();
            assert_eq!(mac[0] & 0x01, 0, "unicast");
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        }
    }

    #[test]
    fn veth_names() {
        let a = random_veth_name();
        let b = random_veth_name();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth"));
        assert!(a[4..].bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        assert_ne!(a, b);
    }
}
