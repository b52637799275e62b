//! Evaluator plugins: score a model's generations against references, per example and in aggregate.

use abi_stable::{
    sabi_trait,
    std_types::{RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::params::{ParamSpec, Params};

/// One evaluated example.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct EvaluatorExample<'a> {
    pub prompt: RStr<'a>,
    /// One or more generated texts (the first is the greedy one when sampling is off).
    pub generations: RSlice<'a, RString>,
    pub reference: RStr<'a>,
    /// The example's other fields as a JSON object (may be `{}`).
    pub metadata_json: RStr<'a>,
}

/// A named number.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NamedScore {
    pub name: RString,
    pub value: f64,
}

/// The scores of one example: per generation, each a list of named scores.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Default)]
pub struct ExampleScores {
    pub per_generation: RVec<RVec<NamedScore>>,
}

/// The ABI-stable face of a running evaluator.
#[sabi_trait]
pub trait EvaluatorState: Send + Sync {
    fn score(&self, example: EvaluatorExample<'_>) -> RResult<ExampleScores, RString>;

    /// Aggregates the per-example scores (the host passes them back in order).
    #[sabi(last_prefix_field)]
    fn aggregate(&self, scores: RSlice<'_, ExampleScores>) -> RResult<RVec<NamedScore>, RString>;
}

pub type EvaluatorBox = EvaluatorState_TO<'static, abi_stable::std_types::RBox<()>>;

/// What an evaluator author implements.
pub trait Evaluator: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const PARAMS: &'static [ParamSpec] = &[];

    fn from_params(params: &Params) -> Result<Self, String>;

    /// Named scores of one generation against the reference.
    fn score_one(&self, generation: &str, reference: &str, example: &EvaluatorExample<'_>) -> Vec<(String, f64)>;

    /// Whether [`Evaluator::benchmark`] yields examples (the plugin carries its benchmark).
    const HAS_BENCHMARK: bool = false;

    /// The benchmark's `(prompt, reference)` examples for a split, size and seed.
    fn benchmark(_split: &str, _size: usize, _seed: u64) -> Result<Vec<(String, String)>, String> {
        Err(format!("evaluator `{}` carries no benchmark", Self::NAME))
    }

    /// By default: each score's mean over the first generations (`<name>`) and over all
    /// generations (`<name>@mean`) when there are several.
    fn aggregate(&self, scores: &[ExampleScores]) -> Vec<(String, f64)> {
        mean_aggregate(scores)
    }
}

/// Means of every named score: over first generations, and over all generations when several.
pub fn mean_aggregate(scores: &[ExampleScores]) -> Vec<(String, f64)> {
    let mut names: Vec<String> = Vec::new();
    let mut first: Vec<(f64, usize)> = Vec::new();
    let mut all: Vec<(f64, usize)> = Vec::new();
    let mut several = false;
    for example in scores {
        several |= example.per_generation.len() > 1;
        for (g, generation) in example.per_generation.iter().enumerate() {
            for score in generation.iter() {
                let i = match names.iter().position(|n| n == score.name.as_str()) {
                    Some(i) => i,
                    None => {
                        names.push(score.name.to_string());
                        first.push((0.0, 0));
                        all.push((0.0, 0));
                        names.len() - 1
                    }
                };
                if g == 0 {
                    first[i].0 += score.value;
                    first[i].1 += 1;
                }
                all[i].0 += score.value;
                all[i].1 += 1;
            }
        }
    }
    let mean = |(sum, n): (f64, usize)| if n == 0 { 0.0 } else { sum / n as f64 };
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        out.push((name.clone(), mean(first[i])));
        if several {
            out.push((format!("{name}@mean"), mean(all[i])));
        }
    }
    out
}

/// Wraps an [`Evaluator`] behind the ABI, catching panics at the boundary.
pub struct EvaluatorAdapter<T>(pub T);

fn named(scores: Vec<(String, f64)>) -> RVec<NamedScore> {
    scores.into_iter().map(|(name, value)| NamedScore { name: name.into(), value }).collect()
}

impl<T: Evaluator> EvaluatorState for EvaluatorAdapter<T> {
    fn score(&self, example: EvaluatorExample<'_>) -> RResult<ExampleScores, RString> {
        crate::catch_panic("score", || {
            let per_generation = example
                .generations
                .iter()
                .map(|g| named(self.0.score_one(g.as_str(), example.reference.as_str(), &example)))
                .collect();
            Ok(ExampleScores { per_generation })
        })
    }

    fn aggregate(&self, scores: RSlice<'_, ExampleScores>) -> RResult<RVec<NamedScore>, RString> {
        crate::catch_panic("aggregate", || Ok(named(self.0.aggregate(scores.as_slice()))))
    }
}

/// The ABI entry for an evaluator's benchmark, catching panics at the boundary.
pub extern "C" fn benchmark_entry<T: Evaluator>(
    split: RStr<'_>,
    size: u64,
    seed: u64,
) -> RResult<RVec<crate::BenchmarkExample>, RString> {
    crate::catch_panic("benchmark", || {
        let examples = T::benchmark(split.as_str(), size as usize, seed)?;
        Ok(examples
            .into_iter()
            .map(|(prompt, reference)| crate::BenchmarkExample { prompt: prompt.into(), reference: reference.into() })
            .collect())
    })
}
