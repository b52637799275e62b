//! Multiple-choice answer checking: the letter (A–J) the model chose, against the reference letter.
//!
//! The chosen letter is the last *explicit* one ("The answer is (B)", "answer: C", "Answer: (d)",
//! `\boxed{B}`, a response that is just "B"), else the last *shaped* one (`(B)`, `**B**`, "option B",
//! a response starting "B."); see [`extract`] for the exact rules. Preferring explicit over shaped
//! candidates means "The answer is (B) because (C) is too small" counts as B, while "The answer is (B).
//! Actually, the answer is (C)." counts as C. A capital letter in running prose ("A cat is ...") is
//! never taken as an answer.
//!
//! The reference goes through the same extraction, so "B", "(B)", "b" and "B. Paris" all mean B; a
//! reference with no letter scores 0 for every generation.
//!
//! Score per generation: `accuracy`, 1 when the letters agree, else 0.

pub mod extract;

use plugin_api::prelude::*;

pub use extract::extract_letter;

pub struct MultipleChoice;

/// The `accuracy` of one generation against a reference letter: 1.0 or 0.0.
pub fn accuracy(generation: &str, reference: &str) -> f64 {
    match (extract_letter(generation), extract_letter(reference)) {
        (Some(chosen), Some(expected)) if chosen == expected => 1.0,
        _ => 0.0,
    }
}

impl Evaluator for MultipleChoice {
    const NAME: &'static str = "multiple_choice";
    const DESCRIPTION: &'static str = "1 when the answer letter (A-J, last explicit match) equals the reference letter";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(MultipleChoice)
    }

    fn score_one(&self, generation: &str, reference: &str, _: &EvaluatorExample<'_>) -> Vec<(String, f64)> {
        vec![("accuracy".to_string(), accuracy(generation, reference))]
    }
}

export_evaluator!(MultipleChoice);

#[cfg(test)]
mod tests;
