//! Stopping training gracefully. SIGTERM (what Slurm sends before preempting or at the time limit with
//! `--signal`, and what `scancel` and `kill` send) and SIGINT (Ctrl-C) ask the training loop to finish the
//! optimizer step under way, write a checkpoint and exit with [`EXIT_CODE`]; `--resume` then continues
//! exactly where it stopped. A second signal while that is pending ends the process at once, and outside
//! a training loop (loading, evaluating) the signals keep their default action.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The exit code of a run stopped by a signal after saving its checkpoint (EX_TEMPFAIL: run it again,
/// with `--resume`).
pub const EXIT_CODE: u8 = 75;

/// The exit status when a second signal arrives before the checkpoint is written (128 + SIGTERM).
const FORCED_EXIT: i32 = 143;

/// The process's handlers, installed once: signal-hook cannot give a signal its default action back, so
/// they stay, and `idle` says whether a training loop is listening (`listeners` counts them: a sweep
/// with `--jobs N` trains several at once, and one finishing must not leave the others unprotected).
struct Handlers {
    idle: Arc<AtomicBool>,
    listeners: Mutex<usize>,
    pending: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static HANDLERS: OnceLock<std::result::Result<Handlers, String>> = OnceLock::new();

fn handlers() -> Result<&'static Handlers> {
    let installed = HANDLERS.get_or_init(|| {
        let install = || -> std::io::Result<Handlers> {
            let h = Handlers {
                idle: Arc::new(AtomicBool::new(true)),
                listeners: Mutex::new(0),
                pending: Arc::new(AtomicBool::new(false)),
                which: Arc::new(AtomicUsize::new(0)),
            };
            for signal in [SIGTERM, SIGINT] {
                // In this order: the default action when no loop listens; exit if a stop is already
                // pending; else mark it pending.
                signal_hook::flag::register_conditional_default(signal, Arc::clone(&h.idle))?;
                signal_hook::flag::register_conditional_shutdown(signal, FORCED_EXIT, Arc::clone(&h.pending))?;
                signal_hook::flag::register(signal, Arc::clone(&h.pending))?;
                signal_hook::flag::register_usize(signal, Arc::clone(&h.which), signal as usize)?;
            }
            Ok(h)
        };
        install().map_err(|e| e.to_string())
    });
    installed.as_ref().map_err(|e| anyhow!("cannot install the SIGTERM/SIGINT handlers: {e}"))
}

/// While this lives, SIGTERM and SIGINT ask the training loop to stop instead of ending the process.
pub struct StopSignals {
    handlers: &'static Handlers,
}

impl StopSignals {
    pub fn listen() -> Result<Self> {
        let handlers = handlers()?;
        let mut listeners = handlers.listeners.lock().unwrap_or_else(|e| e.into_inner());
        // A stop is for the whole process: one asked while an earlier loop (or a concurrent one) listened
        // stands for this loop too, so it is never cleared.
        *listeners += 1;
        handlers.idle.store(false, Ordering::SeqCst);
        Ok(Self { handlers })
    }

    /// The name of the signal that asked to stop, if one did.
    pub fn requested(&self) -> Option<&'static str> {
        if !self.handlers.pending.load(Ordering::SeqCst) {
            return None;
        }
        Some(signal_name(self.handlers.which.load(Ordering::SeqCst)))
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        let mut listeners = self.handlers.listeners.lock().unwrap_or_else(|e| e.into_inner());
        *listeners = listeners.saturating_sub(1);
        if *listeners == 0 {
            self.handlers.idle.store(true, Ordering::SeqCst);
        }
    }
}

/// The signal that asked this process to stop, if one did while a training loop listened: a sweep
/// starts no further run after it.
pub fn pending() -> Option<&'static str> {
    let handlers = HANDLERS.get()?.as_ref().ok()?;
    handlers.pending.load(Ordering::SeqCst).then(|| signal_name(handlers.which.load(Ordering::SeqCst)))
}

fn signal_name(which: usize) -> &'static str {
    match which as i32 {
        SIGINT => "SIGINT",
        _ => "SIGTERM",
    }
}

/// The error a stopped run returns: exit code [`EXIT_CODE`], its message the one line to print.
pub fn stopped(message: String) -> anyhow::Error {
    anyhow::Error::new(crate::Failure { code: EXIT_CODE, message })
}

/// Whether `error` is a run stopped by a signal (a sweep stops too instead of going on to the next run).
pub fn is_stop(error: &anyhow::Error) -> bool {
    crate::exit_code(error) == EXIT_CODE
}
