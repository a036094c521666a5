//! What every plugin process does before and after its verb, now that the plugins start without
//! Rust's own runtime start-up (`cni_common::plugin_main!`, `skel::process_main`): a closed stdin
//! reads as empty, and a closed stdout pipe is an error, not a signal. These run the built binaries
//! (no root needed); that descriptors 0–2 found closed are opened on /dev/null is a unit test of
//! `skel`.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use conformance::plugins::our_plugins;

const ALL: [&str; 5] = ["bridge", "portmap", "isolation", "loopback", "host-local"];

/// Run `plugin` with CNI_COMMAND=VERSION and the given descriptors closed in the child.
fn version_with_closed(plugin: &str, closed: &'static [i32], stdin: Stdio) -> (std::process::ExitStatus, String) {
    let bin = our_plugins(&ALL).join(plugin);
    let mut cmd = Command::new(&bin);
    cmd.env_clear().env("CNI_COMMAND", "VERSION").stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in closed {
                libc::close(*fd);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    (child.wait().unwrap(), out)
}

#[test]
fn a_closed_stdin_reads_as_empty() {
    for p in ALL {
        let (status, out) = version_with_closed(p, &[0], Stdio::null());
        assert!(status.success(), "{p}: {status}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{p}: not JSON ({e}): {out:?}"));
        assert_eq!(v["cniVersion"], "1.1.0", "{p}: {v}");
        assert!(v["supportedVersions"].as_array().is_some_and(|a| a.len() >= 7), "{p}: {v}");
    }
}

#[test]
fn a_closed_stdout_pipe_is_an_error_not_a_signal() {
    for p in ALL {
        let bin = our_plugins(&ALL).join(p);
        // the reader is gone before the plugin starts
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), None, "{p}: killed by a signal: {status}");
    }
}
