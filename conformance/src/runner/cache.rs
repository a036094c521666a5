//! libcni's result cache: `<cache_dir>/results/<network>-<containerID>-<ifname>`, written after a
//! successful ADD list, read for CHECK/DEL (prevResult) and GC (stale attachments), deleted after DEL.
//!
//! Format (`cniCacheV1`, libcni/api.go): `{"kind","containerId","config","ifName","networkName",
//! "netns","cniArgs":[[k,v]],"capabilityArgs","result"}`. Like Go's `[]byte`, `config` is the base64 of
//! the conflist bytes, so libcni and this runner can read each other's caches; a plain JSON string is
//! accepted when reading.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{RunError, RuntimeConf};
use crate::base64;

pub const CACHE_KIND: &str = "cniCacheV1";

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    kind: String,
    #[serde(rename = "containerId")]
    container_id: String,
    #[serde(default)]
    config: Option<String>,
    #[serde(rename = "ifName")]
    if_name: String,
    #[serde(rename = "networkName")]
    network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    cni_args: Vec<(String, String)>,
    #[serde(rename = "capabilityArgs", default, skip_serializing_if = "Map::is_empty")]
    capability_args: Map<String, Value>,
    #[serde(default)]
    result: Value,
}

/// One cached attachment (a successful ADD not yet deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    pub path: PathBuf,
    pub network_name: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The conflist bytes the attachment was made with.
    pub config: Vec<u8>,
    /// The final ADD result (`None` if the file holds none).
    pub result: Option<Value>,
}

impl CachedAttachment {
    /// The runtime conf to DEL this attachment with.
    pub fn runtime_conf(&self) -> RuntimeConf {
        RuntimeConf {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            args: self.cni_args.clone(),
            capability_args: self.capability_args.clone(),
        }
    }
}

pub fn results_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

/// `<cache_dir>/results/<net>-<cid>-<ifname>`.
pub fn path(cache_dir: &Path, network: &str, rc: &RuntimeConf) -> PathBuf {
    results_dir(cache_dir).join(format!("{network}-{}-{}", rc.container_id, rc.ifname))
}

fn cache_err(path: &Path, reason: impl std::fmt::Display) -> RunError {
    RunError::Cache { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Write the cache entry (atomically: temp file + rename; dir 0700, file 0600 like libcni).
pub fn write(cache_dir: &Path, network: &str, config: &[u8], rc: &RuntimeConf, result: &Value) -> Result<PathBuf, RunError> {
    let path = path(cache_dir, network, rc);
    let dir = results_dir(cache_dir);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| cache_err(&dir, e))?;
    let entry = CacheFile {
        kind: CACHE_KIND.into(),
        container_id: rc.container_id.clone(),
        config: Some(base64::encode(config)),
        if_name: rc.ifname.clone(),
        network_name: network.into(),
        netns: rc.netns.clone(),
        cni_args: rc.args.clone(),
        capability_args: rc.capability_args.clone(),
        result: result.clone(),
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| cache_err(&path, e))?;
    // Unique per attachment and process: concurrent ADDs of one network must not share a temp file.
    let tmp = dir.join(format!(".{}-{}-{}.tmp-{}", network, rc.container_id, rc.ifname, std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| cache_err(&tmp, e))?;
    f.write_all(&bytes).map_err(|e| cache_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| cache_err(&path, e))?;
    Ok(path)
}

/// Read the entry for `(network, rc)`; `Ok(None)` when there is none.
pub fn read(cache_dir: &Path, network: &str, rc: &RuntimeConf) -> Result<Option<CachedAttachment>, RunError> {
    let path = path(cache_dir, network, rc);
    match std::fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(cache_err(&path, e)),
    }
}

/// Remove the entry; a missing one is fine.
pub fn remove(cache_dir: &Path, network: &str, rc: &RuntimeConf) -> Result<(), RunError> {
    let path = path(cache_dir, network, rc);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(cache_err(&path, e)),
        _ => Ok(()),
    }
}

/// Every readable `cniCacheV1` entry of `network` (libcni's `getCachedAttachments`); others are skipped.
pub fn list(cache_dir: &Path, network: &str) -> Result<Vec<CachedAttachment>, RunError> {
    let dir = results_dir(cache_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(cache_err(&dir, e)),
    };
    let prefix = format!("{network}-");
    let mut out: Vec<CachedAttachment> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.len() > prefix.len() && n.starts_with(&prefix)))
        .filter_map(|e| {
            let path = e.path();
            let bytes = std::fs::read(&path).ok()?;
            parse(&path, &bytes).ok()
        })
        .filter(|a| a.network_name == network)
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<CachedAttachment, RunError> {
    let f: CacheFile = serde_json::from_slice(bytes).map_err(|e| cache_err(path, format!("invalid JSON: {e}")))?;
    if f.kind != CACHE_KIND {
        return Err(cache_err(path, format!("unknown kind {:?}", f.kind)));
    }
    let config = match f.config {
        Some(s) => base64::decode(&s).unwrap_or_else(|| s.into_bytes()),
        None => Vec::new(),
    };
    Ok(CachedAttachment {
        path: path.to_path_buf(),
        network_name: f.network_name,
        container_id: f.container_id,
        ifname: f.if_name,
        netns: f.netns,
        cni_args: f.cni_args,
        capability_args: f.capability_args,
        config,
        result: if f.result.is_null() { None } else { Some(f.result) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_read_list_remove() {
        let dir = std::env::temp_dir().join(format!("cnit-cache-unit-{}", std::process::id()));
        let mut rc = RuntimeConf::new("cid1", "/run/netns/x", "eth0");
        rc.args.push(("K".into(), "V".into()));
        let result = json!({"cniVersion": "1.0.0"});
        let p = write(&dir, "net", br#"{"name":"net"}"#, &rc, &result).unwrap();
        assert_eq!(p, dir.join("results/net-cid1-eth0"));
        let raw: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["config"], base64::encode(br#"{"name":"net"}"#));
        assert_eq!(raw["cniArgs"], json!([["K", "V"]]));
        let a = read(&dir, "net", &rc).unwrap().unwrap();
        assert_eq!(a.result, Some(result));
        assert_eq!(a.config, br#"{"name":"net"}"#);
        assert_eq!(a.runtime_conf(), rc);
        // A network whose name is a prefix of another must not see the other's entries.
        write(&dir, "net-b", b"{}", &rc, &json!({})).unwrap();
        assert_eq!(list(&dir, "net").unwrap().len(), 1);
        remove(&dir, "net", &rc).unwrap();
        remove(&dir, "net", &rc).unwrap();
        assert!(read(&dir, "net", &rc).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
