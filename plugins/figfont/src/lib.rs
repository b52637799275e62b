//! FIGfont reading: the model reads a word drawn as FIGlet-style ASCII art (the paper's model-weak
//! task) and answers with the word.
//!
//! Only the first non-empty line of a generation counts, trimmed; the reference is trimmed too.
//! Scores per generation:
//! - `exact`: 1 when that line equals the reference;
//! - `exact_ci`: 1 when they are equal ignoring case;
//! - `jaro_winkler`: the Jaro–Winkler similarity, in [0, 1], of the lower-cased strings (prefix scale
//!   0.1 over at most 4 characters, applied at any Jaro score, as the `strsim` crate does).
//!
//! The [`render`] module draws words in a built-in five-row block font and makes seeded train/test
//! puzzles whose references are the capitalised words.

pub mod render;

use plugin_api::prelude::*;

pub use render::{puzzles, render};

pub struct FigFont;

/// The Jaro similarity of two character sequences.
fn jaro(a: &[char], b: &[char]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut b_used = vec![false; b.len()];
    let mut a_matched = Vec::new();
    for (i, &c) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        if let Some(j) = (lo..hi).find(|&j| !b_used[j] && b[j] == c) {
            b_used[j] = true;
            a_matched.push(c);
        }
    }
    let m = a_matched.len();
    if m == 0 {
        return 0.0;
    }
    let b_matched = b.iter().zip(&b_used).filter(|(_, &u)| u).map(|(&c, _)| c);
    let half_transpositions = a_matched.iter().zip(b_matched).filter(|(x, y)| *x != y).count();
    let m = m as f64;
    let t = (half_transpositions / 2) as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - t) / m) / 3.0
}

/// The Jaro–Winkler similarity of `a` and `b` (case-sensitive; in [0, 1]).
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let j = jaro(&a, &b);
    let prefix = a.iter().zip(&b).take(4).take_while(|(x, y)| x == y).count();
    (j + 0.1 * prefix as f64 * (1.0 - j)).clamp(0.0, 1.0)
}

/// The first non-empty line of a generation, trimmed ("" when there is none).
pub fn first_line(generation: &str) -> &str {
    generation.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

/// The scores of one generation: `exact`, `exact_ci` and `jaro_winkler`.
pub fn scores(generation: &str, reference: &str) -> Vec<(String, f64)> {
    let answer = first_line(generation);
    let reference = reference.trim();
    let (answer_ci, reference_ci) = (answer.to_lowercase(), reference.to_lowercase());
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    vec![
        ("exact".to_string(), flag(answer == reference)),
        ("exact_ci".to_string(), flag(answer_ci == reference_ci)),
        ("jaro_winkler".to_string(), jaro_winkler(&answer_ci, &reference_ci)),
    ]
}

impl Evaluator for FigFont {
    const NAME: &'static str = "figfont";
    const DESCRIPTION: &'static str =
        "Reading ASCII-art words: exact, case-insensitive exact and Jaro-Winkler of the first line";

    const HAS_BENCHMARK: bool = true;

    /// The puzzles themselves: sharing this one file shares the whole benchmark.
    fn benchmark(split: &str, size: usize, seed: u64) -> Result<Vec<(String, String)>, String> {
        if !matches!(split, "train" | "test" | "eval" | "validation" | "val" | "dev") {
            return Err(format!("unknown figfont split {split:?}: expected train or test"));
        }
        Ok(puzzles(split, size, seed))
    }

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(FigFont)
    }

    fn score_one(&self, generation: &str, reference: &str, _: &EvaluatorExample<'_>) -> Vec<(String, f64)> {
        scores(generation, reference)
    }
}

export_evaluator!(FigFont);

#[cfg(test)]
mod tests;
