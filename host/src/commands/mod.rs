//! One thin file per CLI verb: parse nothing, print results, call the libraries.

pub mod plot;
pub mod plugins;
