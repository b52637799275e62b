//! Math answer checking: the model's answer is the content of its last `\boxed{...}` (or `\fbox{...}`),
//! else the final number in its text; it is compared with the reference's answer (the reference's own
//! last box when it has one, else what follows a GSM8K-style `####`, else the whole reference).
//!
//! Score per generation: `accuracy`, 1 when the two answers are equivalent, else 0.
//!
//! Equivalence (see [`equiv`]):
//! - numbers are equal within a relative tolerance of 1e-6, read from integers, decimals, negatives,
//!   thousands separators (`1,000` = `1000`), `a/b`, `\frac{a}{b}`, `\dfrac`, `\tfrac` and `\frac12`,
//!   so `0.50` = `1/2` = `\frac{1}{2}`;
//! - presentation is ignored: surrounding `$`, `\$`, LaTeX spacing (`\!`, `\,`, `\;`), `\left` and
//!   `\right`, degree marks, a trailing period, a leading `x =`, a trailing unit word (`dollars`, `cm`,
//!   ...) or `\text{...}` after a number;
//! - a percent sign is dropped, not divided out: `50\%` = `50`, and `50\%` is *not* `0.5`;
//! - anything else is compared as text with whitespace removed (case kept) and `\text{x}` read as `x`;
//!   bracketed tuples and intervals are compared element by element.
//!
//! A box that is never closed (a truncated generation) is skipped for the complete one before it.

pub mod equiv;
pub mod extract;

use plugin_api::prelude::*;

pub use equiv::equivalent;
pub use extract::{generation_answer, last_boxed, last_number, reference_answer};

pub struct Math;

/// The `accuracy` of one generation against a reference: 1.0 or 0.0.
pub fn accuracy(generation: &str, reference: &str) -> f64 {
    let generation = generation.replace('\u{2212}', "-");
    let hit = match generation_answer(&generation) {
        Some(answer) => equivalent(answer, reference_answer(reference)),
        None => false,
    };
    if hit {
        1.0
    } else {
        0.0
    }
}

impl Evaluator for Math {
    const NAME: &'static str = "math";
    const DESCRIPTION: &'static str = "1 when the last \\boxed{} (else the final number) equals the reference's answer";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(Math)
    }

    fn score_one(&self, generation: &str, reference: &str, _: &EvaluatorExample<'_>) -> Vec<(String, f64)> {
        vec![("accuracy".to_string(), accuracy(generation, reference))]
    }
}

export_evaluator!(Math);

#[cfg(test)]
mod tests;
