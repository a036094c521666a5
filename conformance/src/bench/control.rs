//! Control ADDs: the same chain, into a bridge with no container on it, run right before the first
//! and right after the last ADD of each by-order bucket (at P=1), so that a round shows how fast
//! the machine itself ran the chain around the bucket at its start and around the one at its end.
//!
//! The by-order buckets (ADDs 1–10 against 491–500) are seconds apart. On a small VM the machine's
//! speed for this work (exec, netlink, nf_tables: kernel code, memory-bound) moves by a quarter or
//! more within a second, and the single-threaded CPU probe does not see it (`BENCH.md`, session
//! 15). A control ADD is the measured work itself, minus the containers already attached: the
//! ratio of the control ADDs around the last bucket to those around the first is the machine's
//! drift over the round, and the buckets' ratio over it the growth with containers attached.
//!
//! Each bucket has a sandbox of its own, made with the round's before anything is timed, with as
//! many container namespaces as the bucket has ADDs: half of them are ADDed just before the
//! bucket, the rest just after it, so its control ADDs see 0, 1, 2, ... containers attached, as
//! ADDs 1–10 do. None runs between two ADDs of a bucket, whose leftover kernel work (link-state
//! events, timers) would then fall on a control ADD instead of on the bucket's next ADD. Their
//! time (and CPU) is left out of the ADD phase's. Their containers are deleted after the round's
//! timed phases, and then checked like the round's (every address unique, every lease released,
//! no veth or rule left).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::{self, Handed};
use super::probe;
use super::round::Rig;
use super::scenario::BRIDGE;
use super::{growth_buckets, BenchError, Options, Side};
use crate::nsexec::ThreadInNs;

/// The control sandboxes of one round, one per by-order bucket.
pub struct Controls {
    slots: Vec<Slot>,
}

struct Slot {
    /// The bucket's first and last ADD order.
    from: usize,
    to: usize,
    rig: Rig,
    /// The results of its control ADDs, by container index.
    added: Mutex<Vec<(usize, Value)>>,
}

/// Of the `k` control containers of the bucket of ADDs #`from`-`to`, those ADDed just before
/// (`before`) or just after ADD #`order`: the first half before the bucket's first ADD, the rest
/// after its last.
fn due(from: usize, to: usize, k: usize, order: usize, before: bool) -> std::ops::Range<usize> {
    let half = k.div_ceil(2);
    match before {
        true if order == from => 0..half,
        false if order == to => half..k,
        _ => 0..0,
    }
}

impl Controls {
    /// A sandbox per by-order bucket of `opts.n` ADDs, each with as many containers as its bucket.
    pub fn new(side: &Side, round: usize, opts: &Options) -> Result<Controls, BenchError> {
        let slots = growth_buckets(opts.n)
            .into_iter()
            .map(|(from, to)| {
                let rig = Rig::new(side, round, to + 1 - from, &opts.cni_version, opts.cache_dir.as_deref())?;
                Ok(Slot { from, to, rig, added: Mutex::new(Vec::new()) })
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        Ok(Controls { slots })
    }

    /// Whether control ADDs are due just before (`before`) or just after ADD #`order`.
    pub fn due(&self, order: usize, before: bool) -> bool {
        self.slots.iter().any(|s| !due(s.from, s.to, s.rig.rcs.len(), order, before).is_empty())
    }

    /// Just before (`before`) or just after ADD #`order`: the control ADDs due there, one after
    /// the other, from their sandbox's host namespace (the calling thread enters it and comes
    /// back); each one's wall time, or nothing when none is due.
    pub fn around(&self, order: usize, before: bool) -> Result<Vec<Duration>, String> {
        let mut walls = Vec::new();
        for slot in &self.slots {
            let due = due(slot.from, slot.to, slot.rig.rcs.len(), order, before);
            if due.is_empty() {
                continue;
            }
            let rig = &slot.rig;
            let host = rig.sb.host_path();
            let _in_host = ThreadInNs::enter(host).map_err(|e| format!("enter {}: {e}", host.display()))?;
            let mut added = slot.added.lock().map_err(|_| "control results poisoned".to_string())?;
            for i in due {
                let rc = &rig.rcs[i];
                let t = Instant::now();
                let v = rig.rt.add_list(&rig.list, rc).map_err(|e| format!("container {}: {e}", rc.container_id))?;
                walls.push(t.elapsed());
                added.push((i, v));
            }
        }
        Ok(walls)
    }

    /// DEL the containers the control ADDs attached, then check each sandbox as a round's is
    /// checked; the problems found, each naming its sandbox. With `reap`, the processes the
    /// plugins left running are reaped before returning, so that their CPU cannot count in the
    /// next round's phases. The DELs run on a thread of their own: coming back from a sandbox's
    /// namespaces sets the thread's working directory to `/`.
    pub fn finish(self, reap: bool) -> Vec<String> {
        let deleted = std::thread::scope(|s| s.spawn(|| self.delete_and_check()).join());
        let mut bad = deleted.unwrap_or_else(|_| vec!["control ADDs: the thread deleting their containers panicked".into()]);
        if reap && !probe::reap_orphans(probe::ORPHAN_LIMIT) {
            bad.push(format!(
                "processes left by the plugins of the control ADDs still running {} s after their DELs",
                probe::ORPHAN_LIMIT.as_secs()
            ));
        }
        bad
    }

    fn delete_and_check(self) -> Vec<String> {
        let mut bad = Vec::new();
        for slot in self.slots {
            let rig = &slot.rig;
            let what = format!("control ADDs around ADDs #{}-{}", slot.from, slot.to);
            let added = slot.added.into_inner().unwrap_or_default();
            let mut handed = Handed::default();
            match ThreadInNs::enter(rig.sb.host_path()) {
                Ok(_in_host) => {
                    for (i, v) in &added {
                        let rc = &rig.rcs[*i];
                        handed.add_result(&rc.container_id, v, BRIDGE);
                        if let Err(e) = rig.rt.del_list(&rig.list, rc) {
                            bad.push(format!("{what}: DEL {}: {e}", rc.container_id));
                        }
                    }
                }
                Err(e) => bad.push(format!("{what}: enter {}: {e}", rig.sb.host_path().display())),
            }
            bad.extend(checks::after_del(&rig.sb, &rig.rt, &rig.data_dir, &handed).into_iter().map(|v| format!("{what}: {v}")));
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn half_the_control_adds_come_before_the_bucket_and_the_rest_after_it() {
        // Bucket #491-500, 10 control containers.
        assert_eq!(due(491, 500, 10, 491, true), 0..5);
        assert_eq!(due(491, 500, 10, 500, false), 5..10);
        // Never inside the bucket, nor around another ADD.
        for order in [490, 491, 495, 499, 501] {
            assert!(due(491, 500, 10, order, false).is_empty(), "after #{order}");
        }
        for order in [490, 492, 500, 501] {
            assert!(due(491, 500, 10, order, true).is_empty(), "before #{order}");
        }
        // An odd count: the extra one before. One ADD: it comes before.
        assert_eq!((due(1, 3, 3, 1, true), due(1, 3, 3, 3, false)), (0..2, 2..3));
        assert_eq!((due(1, 1, 1, 1, true), due(1, 1, 1, 1, false)), (0..1, 1..1));
    }
}
