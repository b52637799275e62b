//! Reports for people: plots (SVG) of objectives and, later, of runs.

pub mod bars;
pub mod document;
pub mod plot;
