//! Exact match after normalisation: case, surrounding whitespace and punctuation, and runs of inner
//! whitespace are ignored.

use plugin_api::prelude::*;

pub struct ExactMatch;

/// Lower-cases, collapses whitespace and trims punctuation at both ends.
pub fn normalise(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    collapsed.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace()).to_string()
}

impl Evaluator for ExactMatch {
    const NAME: &'static str = "exact_match";
    const DESCRIPTION: &'static str = "1 when the normalised generation equals the normalised reference";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(ExactMatch)
    }
    fn score_one(&self, generation: &str, reference: &str, _: &EvaluatorExample<'_>) -> Vec<(String, f64)> {
        let hit = normalise(generation) == normalise(reference);
        vec![("exact_match".to_string(), hit as u8 as f64)]
    }
}

export_evaluator!(ExactMatch);

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalisation_ignores_case_space_and_edge_punctuation() {
        assert_eq!(normalise("  The  Answer.\n"), "the answer");
        assert_eq!(normalise("\"42\""), "42");
        assert_ne!(normalise("4 2"), normalise("42"));
    }
}
