//! Operator log: one line per plugin invocation (time, plugin, verb, network, container, interface,
//! outcome, duration), appended to a file named by the config field `logFile` or the environment
//! variable `CNI_LOG_FILE`. Never on stdout (that is the runtime's channel); failures to log are
//! ignored so logging can never break an operation.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ENV: &str = "CNI_LOG_FILE";
pub const FIELD: &str = "logFile";

/// What one invocation did.
pub struct Entry<'a> {
    pub plugin: &'a str,
    pub command: &'a str,
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// `None` on success, else (code, message).
    pub error: Option<(u32, String)>,
    pub duration: Duration,
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time since the epoch (UTC, proleptic Gregorian).
pub fn timestamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The log line of an entry (without the trailing newline).
pub fn line(e: &Entry, now: Duration) -> String {
    let outcome = match &e.error {
        None => "ok".to_string(),
        Some((code, msg)) => format!("error code={code} msg={}", quote(msg)),
    };
    format!(
        "{} {} {} net={} cid={} if={} {} {:.3}ms",
        timestamp(now),
        e.plugin,
        e.command,
        quote(e.network),
        quote(e.container_id),
        quote(e.ifname),
        outcome,
        e.duration.as_secs_f64() * 1000.0
    )
}

/// The log file for this invocation: config field first, then the environment.
pub fn target(config: Option<&serde_json::Value>, env: Option<String>) -> Option<String> {
    config
        .and_then(|c| c.get(FIELD))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or(env)
        .filter(|p| !p.is_empty())
}

/// Append the entry to `path` (one `write` of a whole line, O_APPEND, so lines of concurrent
/// plugins do not interleave).
pub fn append(path: &str, e: &Entry) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut text = line(e, now);
    text.push('\n');
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(Duration::from_secs(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(timestamp(Duration::from_secs(1_795_690_000)), "2026-11-26T10:46:40.000Z");
    }

    #[test]
    fn lines() {
        let e = Entry {
            plugin: "bridge",
            command: "ADD",
            network: "net",
            container_id: "c1",
            ifname: "eth0",
            error: Some((7, "bad \"mtu\"\nvalue".into())),
            duration: Duration::from_micros(2500),
        };
        let l = line(&e, Duration::from_secs(0));
        assert_eq!(
            l,
            r#"1970-01-01T00:00:00.000Z bridge ADD net="net" cid="c1" if="eth0" error code=7 msg="bad \"mtu\"\nvalue" 2.500ms"#
        );
        assert!(line(&Entry { error: None, ..e }, Duration::from_secs(0)).contains(" ok "));
    }

    #[test]
    fn target_prefers_config() {
        let c = serde_json::json!({"logFile": "/a"});
        assert_eq!(target(Some(&c), Some("/b".into())).as_deref(), Some("/a"));
        assert_eq!(target(None, Some("/b".into())).as_deref(), Some("/b"));
        assert_eq!(target(Some(&serde_json::json!({})), None), None);
        assert_eq!(target(None, Some(String::new())), None);
    }
}
