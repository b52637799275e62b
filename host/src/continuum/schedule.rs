//! Where and how many of a sweep's runs go at once on this machine (`--jobs N`, `--devices a,b`): a pool
//! of N workers taking the runs in grid order, worker k on device k mod len. Each run is seeded and
//! trained on its own, so its result does not depend on the placement; a stop (SIGTERM) lets the runs
//! under way save their checkpoints and starts no new one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Result};
use engine::device::DeviceSpec;

/// How a sweep's runs are placed.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Runs at once (1: one after another).
    pub jobs: usize,
    /// Devices dealt to the workers in turn; empty: every run on its config's `[model] device`.
    pub devices: Vec<DeviceSpec>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self { jobs: 1, devices: Vec::new() }
    }
}

impl Schedule {
    pub fn new(jobs: usize, devices: Vec<DeviceSpec>) -> Result<Self> {
        if jobs == 0 {
            bail!("--jobs 0: give at least 1");
        }
        Ok(Self { jobs, devices })
    }

    /// The device worker `worker` places its runs on, if the schedule names devices.
    fn device(&self, worker: usize) -> Option<DeviceSpec> {
        (!self.devices.is_empty()).then(|| self.devices[worker % self.devices.len()])
    }

    /// Calls `work(index, device)` for every index below `count`, `jobs` at a time, and returns the
    /// outcomes by index. After an outcome for which `stops` holds, or once a signal has asked the process
    /// to stop ([`crate::stop::pending`]), no further index is started.
    pub fn run_all<T: Send>(
        &self,
        count: usize,
        stops: impl Fn(&T) -> bool + Sync,
        work: impl Fn(usize, Option<DeviceSpec>) -> T + Sync,
    ) -> Vec<(usize, T)> {
        let next = AtomicUsize::new(0);
        let stopping = AtomicBool::new(false);
        let done = Mutex::new(Vec::with_capacity(count));
        let halted = || stopping.load(Ordering::SeqCst) || crate::stop::pending().is_some();
        let worker = |w: usize| loop {
            if halted() {
                break;
            }
            let index = next.fetch_add(1, Ordering::SeqCst);
            if index >= count || halted() {
                break;
            }
            // A run that panics stops the others from starting new ones (the panic then ends the sweep).
            let _guard = HaltOnPanic(&stopping);
            let outcome = work(index, self.device(w));
            if stops(&outcome) {
                stopping.store(true, Ordering::SeqCst);
            }
            done.lock().unwrap_or_else(|e| e.into_inner()).push((index, outcome));
        };
        let workers = self.jobs.clamp(1, count.max(1));
        if workers == 1 {
            worker(0);
        } else {
            std::thread::scope(|scope| {
                for w in 0..workers {
                    let worker = &worker;
                    scope.spawn(move || worker(w));
                }
            });
        }
        let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
        done.sort_by_key(|(index, _)| *index);
        done
    }
}

/// Sets the flag if dropped while its thread panics.
struct HaltOnPanic<'a>(&'a AtomicBool);

impl Drop for HaltOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_in_order_and_devices_dealt_in_turn() {
        let schedule = Schedule::new(3, vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]).unwrap();
        let done = schedule.run_all(7, |_| false, |i, device| (i * 10, device));
        let indices: Vec<usize> = done.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, (0..7).collect::<Vec<_>>());
        assert!(done.iter().all(|(i, (v, _))| *v == i * 10));
        assert!(done.iter().all(|(_, (_, d))| matches!(d, Some(DeviceSpec::Cuda(0 | 1)))));

        let plain = Schedule::default().run_all(2, |_| false, |_, device| device.is_none());
        assert!(plain.iter().all(|(_, none)| *none), "no --devices: each run keeps its config's device");
    }

    #[test]
    fn a_stop_starts_no_further_run() {
        let one = Schedule::default().run_all(5, |&i| i == 1, |i, _| i);
        assert_eq!(one.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
        // Two workers: the runs under way finish; nothing after the stop plus one in flight starts.
        let two = Schedule::new(2, vec![]).unwrap().run_all(50, |&i| i == 0, |i, _| i);
        assert!(two.len() <= 3, "{two:?}");
    }

    #[test]
    fn zero_jobs_are_refused() {
        assert!(Schedule::new(0, vec![]).unwrap_err().to_string().contains("--jobs 0"));
    }
}
