//! 8 processes doing 200 ADDs and DELs each on one network: no address is ever held by two live
//! attachments, nothing is lost, and everything is released at the end.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const WORKERS: usize = 8;
const ROUNDS: usize = 200;

#[test]
fn eight_processes_two_hundred_add_del_each() {
    let sb = Sandbox::new("concurrency");
    // A small dual-stack range (29 v4 addresses) so workers contend and wrap around constantly.
    let c = Arc::new(conf(
        "1.0.0",
        "busy",
        &sb.data_dir(),
        json!({"ranges": [[{"subnet": "10.200.0.0/27"}], [{"subnet": "fd20::/120"}]]}),
    ));
    // Address -> holder, for every attachment that is live (ADD returned, DEL not yet started).
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let c = Arc::clone(&c);
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                let mut mine: Vec<(String, Vec<String>)> = Vec::new();
                for i in 0..ROUNDS {
                    let cid = format!("w{w}-{i}");
                    let out = add(OURS, &cid, &c);
                    let ips = out.ips();
                    assert_eq!(ips.len(), 2, "{}", out.stdout);
                    {
                        let mut l = live.lock().unwrap();
                        for ip in &ips {
                            if let Some(other) = l.insert(ip.clone(), cid.clone()) {
                                panic!("{ip} handed to {cid} while {other} still holds it");
                            }
                        }
                    }
                    mine.push((cid, ips));
                    // Keep up to two attachments per worker alive; release the oldest.
                    if mine.len() > 2 {
                        let (old, old_ips) = mine.remove(0);
                        {
                            let mut l = live.lock().unwrap();
                            for ip in &old_ips {
                                assert_eq!(l.remove(ip).as_deref(), Some(old.as_str()));
                            }
                        }
                        del(OURS, &old, &c).assert_ok();
                    }
                }
                for (old, old_ips) in mine {
                    {
                        let mut l = live.lock().unwrap();
                        for ip in &old_ips {
                            l.remove(ip);
                        }
                    }
                    del(OURS, &old, &c).assert_ok();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker failed");
    }
    let dir = sb.net_dir("busy");
    assert!(leases(&dir).is_empty(), "leases left: {:?}", leases(&dir));
    let entries: Vec<_> = std::fs::read_dir(dir.join(".host-local-index/a")).unwrap().collect();
    assert!(entries.is_empty(), "index entries left: {entries:?}");
    // The index is trusted after all that (every change was ours and recorded).
    assert_eq!(check(OURS, "nobody", &c).scans(), 0);
}
