//! A training run's folder (`[train] out_dir`): where its files are, and the guards around it. One run at
//! a time holds a folder (an exclusive lock on `.lock`, which names the holder), a fresh run refuses a
//! folder that already holds a run unless told to overwrite it, and the temporary checkpoint folders a
//! killed run leaves behind are removed by the next holder.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The trainer state file inside each checkpoint; a checkpoint folder without it is incomplete.
pub const STATE_FILE: &str = "trainer_state.json";

const LOCK_FILE: &str = ".lock";
const METRICS_FILE: &str = "metrics.jsonl";
const FINAL_DIR: &str = "final";
const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// A run folder's layout.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

/// The exclusive hold on a run folder; released when dropped (or when the process ends, however it ends).
pub struct RunLock {
    _file: File,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }

    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.root.join(format!("{CHECKPOINT_PREFIX}{step}"))
    }

    pub fn final_dir(&self) -> PathBuf {
        self.root.join(FINAL_DIR)
    }

    /// Takes the folder (creating it) for this process, or says who holds it.
    pub fn lock(&self) -> Result<RunLock> {
        std::fs::create_dir_all(&self.root).with_context(|| format!("cannot create {}", self.root.display()))?;
        let path = self.root.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process".to_string() } else { holder.to_string() };
                bail!(
                    "{} is in use by another run ({holder}); wait for it or choose another out_dir",
                    self.root.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(anyhow!("cannot lock {}: {e}", path.display()));
            }
        }
        // Who holds it, for the next one's message (the lock itself is what counts).
        file.set_len(0)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        write!(file, "pid {} on {}", std::process::id(), host.trim())?;
        Ok(RunLock { _file: file })
    }

    /// What of a run the folder holds (`final/`, checkpoints, metrics.jsonl), for messages; empty when
    /// there is nothing.
    pub fn contents(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.final_dir().exists() {
            found.push(format!("{FINAL_DIR}/"));
        }
        let checkpoints = self.entries().filter(|name| checkpoint_step(name).is_some()).count();
        if checkpoints > 0 {
            found.push(format!("{checkpoints} checkpoint{}", if checkpoints == 1 { "" } else { "s" }));
        }
        if self.metrics().exists() {
            found.push(METRICS_FILE.to_string());
        }
        found
    }

    /// Removes a previous run's files (only those a run writes: anything else in the folder stays).
    pub fn clear(&self, _held: &RunLock) -> Result<()> {
        for name in self.entries().collect::<Vec<_>>() {
            let path = self.root.join(&name);
            let result = if name == FINAL_DIR || checkpoint_step(&name).is_some() || is_temporary(&name) {
                std::fs::remove_dir_all(&path)
            } else if name == METRICS_FILE {
                std::fs::remove_file(&path)
            } else {
                continue;
            };
            result.with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Removes the half-written checkpoint folders (`checkpoint-N.tmp-PID`, `final.tmp-PID`) a killed run
    /// left: while the lock is held no other run writes here, so every one of them is stale. Returns how
    /// many went.
    pub fn remove_stale_temporaries(&self, _held: &RunLock) -> Result<usize> {
        let mut removed = 0;
        for name in self.entries().filter(|name| is_temporary(name)).collect::<Vec<_>>() {
            let path = self.root.join(&name);
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The complete checkpoint with the most steps (`final` counts as done), if any.
    pub fn latest_checkpoint(&self, step_of_final: impl Fn(&Path) -> Result<u64>) -> Result<Option<PathBuf>> {
        let mut best: Option<(u64, PathBuf)> = None;
        for name in self.entries() {
            let path = self.root.join(&name);
            if !path.join(STATE_FILE).is_file() {
                continue; // not a complete checkpoint
            }
            let step = match checkpoint_step(&name) {
                Some(step) => step,
                None if name == FINAL_DIR => step_of_final(&path)?,
                None => continue,
            };
            if best.as_ref().is_none_or(|(s, _)| step > *s) {
                best = Some((step, path));
            }
        }
        Ok(best.map(|(_, p)| p))
    }

    fn entries(&self) -> impl Iterator<Item = String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
    }
}

fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix(CHECKPOINT_PREFIX)?.parse().ok()
}

/// `checkpoint-N.tmp-PID` or `final.tmp-PID`: engine::checkpoint's folder under construction.
fn is_temporary(name: &str) -> bool {
    match name.split_once(".tmp-") {
        Some((stem, pid)) => {
            (stem == FINAL_DIR || checkpoint_step(stem).is_some()) && pid.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path().join("run"));
        let held = run.lock().unwrap();
        let error = run.lock().err().unwrap().to_string();
        assert!(error.contains("in use by another run (pid "), "{error}");
        assert!(error.contains(&std::process::id().to_string()), "{error}");
        drop(held);
        run.lock().unwrap();
    }

    #[test]
    fn clearing_and_stale_temporaries_touch_only_what_a_run_writes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        for sub in ["checkpoint-10", "checkpoint-20.tmp-123", "final.tmp-9", "final", "notes", "checkpoint-x.tmp-1"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(run.metrics(), "{}\n").unwrap();
        let held = run.lock().unwrap();
        assert_eq!(run.contents(), ["final/", "1 checkpoint", "metrics.jsonl"]);
        assert_eq!(run.remove_stale_temporaries(&held).unwrap(), 2);
        assert!(dir.path().join("checkpoint-10").exists() && dir.path().join("checkpoint-x.tmp-1").exists());
        run.clear(&held).unwrap();
        assert!(run.contents().is_empty());
        assert!(dir.path().join("notes").exists() && dir.path().join("checkpoint-x.tmp-1").exists());
    }
}
