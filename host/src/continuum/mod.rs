//! The paper's contribution as a tool: where a task sits on the model-capability continuum, judged by
//! the base model's confidence on the training targets, and which objectives to try there.

pub mod diagnose;
pub mod rollout;
pub mod run_record;
pub mod schedule;
pub mod shares;
pub mod slurm;
pub mod sweep;
