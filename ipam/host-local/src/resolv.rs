//! `resolvConf`: a resolv.conf(5) file turned into the result's `dns`.
//!
//! `nameserver` lines accumulate; `domain` and `search` follow resolv.conf(5): the last of them
//! wins, and `search` takes the list of domains on its line; `options` accumulate. Comments start
//! with `#` or `;` at the beginning of a line; unknown keywords are ignored.

use cni_common::error::CniError;
use cni_common::result::Dns;
use std::io::Read;
use std::path::Path;

/// Larger files are refused: resolv.conf is small, and the result must stay small.
pub const MAX_SIZE: u64 = 64 * 1024;

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(key) = fields.next() else { continue };
        let rest: Vec<String> = fields.map(str::to_string).collect();
        if rest.is_empty() {
            continue;
        }
        match key {
            "nameserver" => dns.nameservers.push(rest[0].clone()),
            "domain" => dns.domain = rest[0].clone(),
            "search" => dns.search = rest,
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

/// Read and parse the file at `path` (symlinks followed: /etc/resolv.conf usually is one).
pub fn load(path: &Path) -> Result<Dns, CniError> {
    let what = |e: std::io::Error| CniError::Io(format!("ipam.resolvConf {}: {e}", path.display()));
    let f = std::fs::File::open(path).map_err(what)?;
    let meta = f.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(CniError::config(format!("ipam.resolvConf {:?}: not a regular file", path.display().to_string())));
    }
    let mut buf = Vec::new();
    f.take(MAX_SIZE + 1).read_to_end(&mut buf).map_err(what)?;
    if buf.len() as u64 > MAX_SIZE {
        return Err(CniError::config(format!(
            "ipam.resolvConf {:?}: larger than {MAX_SIZE} bytes",
            path.display().to_string()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_keywords() {
        let d = parse(
            "# comment\n; other comment\nnameserver 10.0.0.53\nnameserver  fd00::53 \n\
             domain example.com\nsearch a.example b.example\noptions ndots:5 rotate\noptions edns0\nbogus x\nnameserver\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.53", "fd00::53"]);
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:5", "rotate", "edns0"]);
    }

    #[test]
    fn last_search_wins() {
        let d = parse("search one.example\nsearch two.example three.example\n");
        assert_eq!(d.search, ["two.example", "three.example"]);
    }

    #[test]
    fn empty_file() {
        assert!(parse("").is_empty());
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = load(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(e.code(), 5);
        assert!(e.to_string().contains("/nonexistent/resolv.conf"));
    }
}
