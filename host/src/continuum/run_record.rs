//! What a sweep run was made with, kept in its folder (`run-record.json`) so that a later invocation
//! reuses the run only when it would make the same one: the resolved training config for its checkpoints,
//! the evaluation protocols for its scores. A run folder whose training differs is refused, naming the
//! first differing key; one whose evaluation differs is evaluated again.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::config::RunConfig;
use crate::fingerprint::first_difference;
use crate::run_dir::RunDir;

/// The file, inside a run's folder.
pub const FILE: &str = "run-record.json";

/// A run's training config and evaluation protocols, as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub train: Value,
    pub eval: Value,
}

/// What an existing run folder's record says about reusing it.
#[derive(Debug, PartialEq)]
pub enum Reuse {
    /// Nothing there yet: the record is to be written.
    Fresh,
    /// Made with the same config and protocols.
    Everything,
    /// Same training, other protocols: keep the checkpoints, evaluate again.
    TrainingOnly,
}

impl RunRecord {
    pub fn new(config: &RunConfig, eval: Value) -> Result<Self> {
        let mut train = serde_json::to_value(config)?;
        without_device(&mut train);
        Ok(Self { train, eval })
    }

    fn path(run_dir: &Path) -> PathBuf {
        run_dir.join(FILE)
    }

    /// Compares with the record in `run_dir`. A folder that holds training output but no record (made by
    /// an older host, or by hand) is refused too: nothing says what it was trained with.
    pub fn check(&self, run_dir: &Path) -> Result<Reuse> {
        let path = Self::path(run_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let trained = !RunDir::new(run_dir).contents().is_empty() || run_dir.join("result.json").exists();
                if trained {
                    bail!(
                        "{} holds a run but no {FILE} saying what it was made with; remove it or choose another out_dir",
                        run_dir.display()
                    );
                }
                return Ok(Reuse::Fresh);
            }
            Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
        };
        let mut saved: Value =
            serde_json::from_str(&text).map_err(|e| anyhow!("{}: unreadable ({e})", path.display()))?;
        without_device(&mut saved["train"]);
        if let Some((key, there, now)) = first_difference(&saved["train"], &self.train) {
            bail!(
                "{} was trained with another configuration ({key}: {there} there, {now} now); remove it or choose another out_dir",
                run_dir.display()
            );
        }
        Ok(if saved["eval"] == self.eval { Reuse::Everything } else { Reuse::TrainingOnly })
    }

    /// Writes the record into `run_dir` (atomically).
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(run_dir).map_err(|e| anyhow!("cannot create {}: {e}", run_dir.display()))?;
        let value = json!({ "train": self.train, "eval": self.eval });
        crate::eval::write_atomic(&Self::path(run_dir), &format!("{value:#}\n"))
    }
}

/// The device a run trains on does not change what it makes (`--devices` places runs where it likes),
/// so it is left out of the record (records of older hosts have it).
fn without_device(train: &mut Value) {
    if let Some(model) = train["model"].as_object_mut() {
        model.remove("device");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_training_and_reevaluates_other_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let record = RunRecord { train: json!({"optim": {"lr": 0.001}}), eval: json!(["greedy"]) };
        assert_eq!(record.check(dir.path()).unwrap(), Reuse::Fresh, "an empty folder");
        record.save(dir.path()).unwrap();
        assert_eq!(record.check(dir.path()).unwrap(), Reuse::Everything);
        let other_eval = RunRecord { eval: json!(["sampled"]), ..record.clone() };
        assert_eq!(other_eval.check(dir.path()).unwrap(), Reuse::TrainingOnly);
        let other_train = RunRecord { train: json!({"optim": {"lr": 0.0001}}), ..record.clone() };
        let error = other_train.check(dir.path()).unwrap_err().to_string();
        assert!(error.contains("optim.lr: 0.001 there, 0.0001 now"), "{error}");

        // A record an older host wrote, with the device in it, and a run placed on another device.
        let older = tempfile::tempdir().unwrap();
        let saved = json!({"train": {"model": {"path": "m", "device": "cpu"}}, "eval": ["greedy"]});
        std::fs::write(older.path().join(FILE), saved.to_string()).unwrap();
        let mut on_gpu = RunRecord { train: json!({"model": {"path": "m", "device": "cuda:1"}}), ..record.clone() };
        without_device(&mut on_gpu.train);
        assert_eq!(on_gpu.check(older.path()).unwrap(), Reuse::Everything, "another device makes the same run");

        let unrecorded = tempfile::tempdir().unwrap();
        std::fs::write(unrecorded.path().join("metrics.jsonl"), "").unwrap();
        let error = record.check(unrecorded.path()).unwrap_err().to_string();
        assert!(error.contains("no run-record.json"), "{error}");
    }
}
