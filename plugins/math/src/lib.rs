//! Math answer checking: the model's answer is the content of its last `\boxed{...}` (or `\fbox{...}`),
//! else what follows its last "answer is" on that line (when that is words, the last number in them),
//! else the final number in its text; it is compared with the reference's answer (the reference's own
//! last box when it has one, else what follows a GSM8K-style `####`, else the whole reference).
//!
//! Score per generation: `accuracy`, 1 when the two answers are equivalent, else 0.
//!
//! Equivalence is symbolic, without Python (see [`equiv`] for the rules, [`parse`] for the LaTeX read and
//! [`expr`] for the identity test): `\boxed{1+x^2}` matches `x^{2}+1`, `3\sqrt{2}` matches `\sqrt{18}`,
//! `\pi/2` matches `\frac{\pi}{2}`, `\text{(B)}` matches `B`, `x > 3` matches `(3, \infty)`. Numbers
//! compare exactly while rational (`0.1 + 0.2 = 3/10`) and within a relative 1e-9 otherwise (so a
//! written-out approximation such as `3.14159` is not `\pi`); a percent sign is dropped, not divided
//! out (`50\%` = `50`, not `0.5`); a trailing unit after a number, or unit words after an expression,
//! are ignored.
//!
//! A box that is never closed (a truncated generation) is skipped for the complete one before it.
//!
//! # Agreement with math-verify
//!
//! `tests/math_verify_table.jsonl` holds 582 (generation, reference) pairs in MATH's answer forms
//! (integers with separators, decimals, fractions nested and mixed, percentages, units, degrees,
//! roots, π, e, choices, polynomials in any order, trigonometry, logarithms, scientific notation, ±,
//! inequalities, intervals and unions, ∞, tuples, sets, lists, equations, matrices, powers,
//! factorials, binomials, complex numbers, bases, approximations, text; 36 answers in the style of
//! MATH500's references with a restyling and a near miss each; and extraction: the last box, no box,
//! a stated answer), labelled by Hugging Face's `math-verify` 0.9
//! (`scripts/make_math_grading_table.py`, the gold answer wrapped in `\boxed{}`). This plugin agrees
//! on 571 (98.1 %); the test `agrees_with_math_verify_on_the_committed_table` fails when a row not
//! listed here disagrees, or a listed one no longer does. The eleven disagreements, with the reason for
//! each (a convention of ours, or a gap in math-verify):
//!
//! | id | generation's answer | reference | math-verify | here | why |
//! |---|---|---|---|---|---|
//! | 94 | `12.5\%` | `12.5` | wrong | right | convention: a percent sign is dropped on both sides (the Qwen2.5-Math harness strips `\%`); math-verify divides the prediction's by 100 but accepts `25` for a reference `25\%` |
//! | 249 | `\log(2)` | `\ln 2` | wrong | right | convention: `\log` is the natural logarithm, as in sympy's `parse_latex`; math-verify reads it as base 10 |
//! | 268 | `602\times10^{21}` | `6.02\times10^{23}` | wrong | right | math-verify gap: the two are the same number, and exact arithmetic says so |
//! | 281 | `\frac{-1\pm\sqrt5}{2}` | `\frac{-1 \pm \sqrt{5}}{2}` | wrong | right | math-verify gap: it does not expand `±` inside a fraction, and compares the strings |
//! | 282 | `\frac{-1+\sqrt{5}}{2}, \frac{-1-\sqrt{5}}{2}` | `\frac{-1 \pm \sqrt{5}}{2}` | wrong | right | math-verify gap, as 281: here `a ± b` is the pair `a + b, a - b` wherever it stands |
//! | 423 | `\sqrt{-1}` | `i` | wrong | right | math-verify gap: the principal square root of -1 is `i` |
//! | 560 | `\boxed{\frac{1}{3}}` … `\boxed{\frac{1}{2}}` | `\frac{1}{2}` | wrong | right | convention: the last box wins, as in the Qwen2.5-Math harness; math-verify gathers both boxes into a set |
//! | 567 | `\fbox{9}` | `9` | wrong | right | convention: `\fbox` counts as a box, as in the Qwen2.5-Math harness; math-verify ignores it |
//! | 571 | "the final answer is x^2 + 2x + 1." | `(x+1)^2` | wrong | right | convention: an unboxed answer is what follows the last "answer is" (the Qwen2.5-Math harness's rule); math-verify reads only `$…$` LaTeX and bare numbers in prose, and takes `2` |
//! | 576 | "The final answer is S = 180 - n" | `180` | right | wrong | convention, as 571: the stated answer is `180 - n`; math-verify takes the last number, `180` |
//! | 579 | "The answer is Tuesday." | `\text{Tuesday}` | wrong | right | convention, as 571: a stated answer in words compares as text; math-verify finds no answer |

pub mod equiv;
pub mod expr;
pub mod extract;
pub mod parse;
pub mod value;

use plugin_api::prelude::*;

pub use equiv::equivalent;
pub use extract::{generation_answer, last_boxed, last_number, reference_answer, stated_answer};

pub struct Math;

/// The `accuracy` of one generation against a reference: 1.0 or 0.0.
pub fn accuracy(generation: &str, reference: &str) -> f64 {
    let generation = generation.replace('\u{2212}', "-");
    let reference = reference_answer(reference);
    let hit = match generation_answer(&generation) {
        Some(answer) if equivalent(answer, reference) => true,
        // A stated answer in words ("the answer is that x equals 6"): its last number.
        Some(answer) if last_boxed(&generation).is_none() && equiv::is_prose(answer) => {
            last_number(answer).is_some_and(|number| equivalent(number, reference))
        }
        _ => false,
    };
    if hit {
        1.0
    } else {
        0.0
    }
}

impl Evaluator for Math {
    const NAME: &'static str = "math";
    const DESCRIPTION: &'static str =
        "1 when the last \\boxed{} (else a stated \"answer is\", else the final number) equals the reference's answer";

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
