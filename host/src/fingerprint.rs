//! Settings compared key by key: a run's resolved config as a JSON value, content digests of its data
//! files, and the first key at which two such values differ (what a refusal names). Used by `host train
//! --resume` (the checkpoint's fingerprint against this run's) and by sweeps (a run folder's record).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The dotted path of the first leaf where `a` and `b` differ, with the two values there.
pub fn first_difference(a: &Value, b: &Value) -> Option<(String, Value, Value)> {
    let key = first_differing_key(a, b, "")?;
    Some((key.clone(), lookup(a, &key), lookup(b, &key)))
}

fn first_differing_key(a: &Value, b: &Value, prefix: &str) -> Option<String> {
    let join = |key: &str| if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                first_differing_key(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &join(k))
            })
        }
        _ if a == b => None,
        _ => Some(if prefix.is_empty() { "(the whole record)".to_string() } else { prefix.to_string() }),
    }
}

fn lookup(value: &Value, dotted: &str) -> Value {
    dotted.split('.').fold(value, |v, k| v.get(k).unwrap_or(&Value::Null)).clone()
}

/// The SHA-256 of a file's bytes, in hex, read in blocks (memory stays bounded whatever the file).
pub fn file_digest(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_differing_key_and_both_values() {
        let a = json!({"optim": {"lr": 0.001, "betas": [0.9, 0.95]}, "train": {"seed": 0}});
        let b = json!({"optim": {"lr": 0.0001, "betas": [0.9, 0.95]}, "train": {"seed": 0}});
        assert_eq!(first_difference(&a, &b), Some(("optim.lr".to_string(), json!(0.001), json!(0.0001))));
        assert_eq!(first_difference(&a, &a), None);
        let c = json!({"optim": {"lr": 0.001, "betas": [0.9, 0.95]}, "train": {"seed": 0, "epochs": 2}});
        assert_eq!(first_difference(&a, &c).map(|d| d.0), Some("train.epochs".to_string()));
    }

    #[test]
    fn the_digest_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, "abc").unwrap();
        // FIPS 180-2's test vector for "abc".
        assert_eq!(file_digest(&path).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
