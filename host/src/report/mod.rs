//! Reports for people: plots (SVG) of objectives and, later, of runs.

pub mod plot;
