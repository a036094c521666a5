//! GC input: the attachments a runtime says are still valid (`cni.dev/valid-attachments`, also
//! accepted as `cni.dev/attachments`).

use crate::error::CniError;
use serde::Deserialize;
use serde_json::Value;

pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
pub const ATTACHMENTS: &str = "cni.dev/attachments";

/// One attachment: a (container ID, interface name) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The valid attachments of a GC request's config. Both keys are read and merged; a GC without
/// either is refused, since it would remove every attachment.
pub fn valid_attachments(raw: &Value) -> Result<Vec<Attachment>, CniError> {
    let mut out = Vec::new();
    let mut found = false;
    for key in [VALID_ATTACHMENTS, ATTACHMENTS] {
        if let Some(v) = raw.get(key) {
            found = true;
            let list: Vec<Attachment> = Vec::<Attachment>::deserialize(v)
                .map_err(|e| CniError::config(format!("field {key:?}: {e}")))?;
            out.extend(list);
        }
    }
    if !found {
        return Err(CniError::config(format!("GC needs the field {VALID_ATTACHMENTS:?} (may be an empty list)")));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_both_keys() {
        let v = json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                       "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth1"}]});
        let a = valid_attachments(&v).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].container_id, "b");
        assert!(valid_attachments(&json!({"cni.dev/valid-attachments": []})).unwrap().is_empty());
        assert_eq!(valid_attachments(&json!({})).unwrap_err().code(), 7);
        assert_eq!(valid_attachments(&json!({"cni.dev/valid-attachments": [{"x": 1}]})).unwrap_err().code(), 7);
    }
}
