//! The `host` library: everything behind the `host` binary.
//!
//! `commands` (one file per CLI verb) sits on top; `train` (the loop) and `score` below it; then `data`
//! (JSONL, tokenisation, batches) and the `engine` crate (model, optimizer, checkpoints: the only code
//! that knows candle) and `plugins` (loading and calling plugins: the only module that knows abi_stable);
//! `config` and `report` at the bottom. The binary's `main` only parses the command line.

pub mod bench;
pub mod chat;
pub mod commands;
pub mod config;
pub mod continuum;
pub mod convert;
pub mod data;
pub mod encode;
pub mod eval;
pub mod fingerprint;
pub mod grade;
pub mod model_source;
pub mod plugins;
pub mod report;
pub mod run_dir;
pub mod sampler;
pub mod score;
pub mod stop;
pub mod train;

/// An error that carries its process exit code: 2 for bad input (the default for any error), 1 for a
/// check that ran and failed.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// A check ran and found a problem: exit code 1.
    pub fn check(message: String) -> anyhow::Error {
        anyhow::Error::new(Failure { code: 1, message })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error: a [`Failure`]'s own, else 2.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<Failure>().map_or(2, |f| f.code)
}

/// The error as one line: its causes joined with `: `, newlines flattened.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}
