//! Reports for people: SVG plots (objective curves, histograms, bar charts of sweep results, all written
//! through one atomic SVG writer) and the rollout's Markdown / HTML document.

pub mod bars;
pub mod document;
pub mod plot;
