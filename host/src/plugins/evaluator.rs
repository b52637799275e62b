//! The host's handle on an evaluator plugin: scores examples and aggregates, refusing non-finite scores.

use abi_stable::std_types::{RSlice, RString};
use anyhow::{anyhow, bail, Result};
use plugin_api::{EvaluatorBox, EvaluatorExample, ExampleScores, PluginInstance};

use super::{params::ParamSet, LoadedPlugin};

pub struct EvaluatorPlugin {
    pub plugin: LoadedPlugin,
    instance: EvaluatorBox,
}

impl EvaluatorPlugin {
    pub fn create(plugin: LoadedPlugin, params: &ParamSet) -> Result<Self> {
        match plugin.create(params)? {
            PluginInstance::Evaluator(instance) => Ok(Self { plugin, instance }),
            _ => bail!("{}: constructor returned a plugin of another kind", plugin.path.display()),
        }
    }

    /// Scores one example's generations: per generation, named scores.
    pub fn score(
        &self,
        prompt: &str,
        generations: &[String],
        reference: &str,
        metadata_json: &str,
    ) -> Result<ExampleScores> {
        let name = self.plugin.name();
        let generations: Vec<RString> = generations.iter().map(|g| RString::from(g.as_str())).collect();
        let scores = self
            .instance
            .score(EvaluatorExample {
                prompt: prompt.into(),
                generations: RSlice::from_slice(&generations),
                reference: reference.into(),
                metadata_json: metadata_json.into(),
            })
            .into_result()
            .map_err(|e| anyhow!("evaluator `{name}` failed: {e}"))?;
        if scores.per_generation.len() != generations.len() {
            bail!("evaluator `{name}` scored {} generations of {}", scores.per_generation.len(), generations.len());
        }
        for score in scores.per_generation.iter().flat_map(|g| g.iter()) {
            if !score.value.is_finite() {
                bail!("evaluator `{name}` returned a non-finite score `{}`", score.name);
            }
        }
        Ok(scores)
    }

    /// Aggregate scores as (name, value).
    pub fn aggregate(&self, scores: &[ExampleScores]) -> Result<Vec<(String, f64)>> {
        let name = self.plugin.name();
        let aggregate = self
            .instance
            .aggregate(RSlice::from_slice(scores))
            .into_result()
            .map_err(|e| anyhow!("evaluator `{name}` failed to aggregate: {e}"))?;
        Ok(aggregate.into_iter().map(|s| (s.name.into_string(), s.value)).collect())
    }
}
