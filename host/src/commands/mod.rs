//! One thin file per CLI verb: turn parsed arguments into library calls and print the results.

pub mod bench;
pub mod convert;
pub mod diagnose;
pub mod eval;
pub mod grade;
pub mod init_model;
pub mod merge;
pub mod plot;
pub mod plugins;
pub mod preview;
pub mod rollout;
pub mod score;
pub mod sweep;
pub mod train;
