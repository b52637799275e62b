//! `word_recall`: the share of the reference's words that the generation contains, and whether it
//! contains all of them (`min_recall` sets the bar for `hit`).

use plugin_api::prelude::*;

struct WordRecall {
    min_recall: f64,
}

impl Evaluator for WordRecall {
    const NAME: &'static str = "word_recall";
    const DESCRIPTION: &'static str = "share of the reference's words found in the generation";
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::float("min_recall", 1.0, "recall at or above which `hit` is 1")];

    fn from_params(params: &Params) -> Result<Self, String> {
        let min_recall = params.require_f64("min_recall")?;
        if !(0.0..=1.0).contains(&min_recall) {
            return Err(format!("min_recall must be in [0, 1], got {min_recall}"));
        }
        Ok(WordRecall { min_recall })
    }

    fn score_one(&self, generation: &str, reference: &str, _: &EvaluatorExample<'_>) -> Vec<(String, f64)> {
        let words = |text: &str| text.to_lowercase().split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let (said, wanted) = (words(generation), words(reference));
        let found = wanted.iter().filter(|w| said.contains(w)).count();
        let recall = if wanted.is_empty() { 1.0 } else { found as f64 / wanted.len() as f64 };
        vec![("recall".to_string(), recall), ("hit".to_string(), (recall >= self.min_recall) as u8 as f64)]
    }
}

export_evaluator!(WordRecall);
