//! The host's handle on an objective plugin: calls it and refuses malformed output.

use abi_stable::std_types::{ROption, RSlice};
use anyhow::{anyhow, bail, Result};
use plugin_api::{ObjectiveBatch, ObjectiveBox, ObjectiveNeeds, PluginInstance, PluginKind};

use super::{c_abi::CObjective, params::ParamSet, LoadedPlugin, SearchPath};

/// Per-token inputs for one call, owned by the caller.
pub struct ObjectiveInputs<'a> {
    pub logp: &'a [f32],
    pub mask: &'a [u8],
    pub sequence_starts: &'a [u32],
    pub entropy: Option<&'a [f32]>,
    pub top1_prob: Option<&'a [f32]>,
    pub base_logp: Option<&'a [f32]>,
    pub step: u64,
    pub total_steps: u64,
}

/// The per-token quantities an objective reads, taken from a training pass: log-probabilities
/// always, entropy and top-1 probability only when the objective asks for them (they cost a pass
/// over the logits).
pub struct TokenStats {
    pub logp: Vec<f32>,
    pub entropy: Option<Vec<f32>>,
    pub top1_prob: Option<Vec<f32>>,
}

impl TokenStats {
    pub fn of(pass: &engine::TrainingPass, needs: ObjectiveNeeds) -> Result<TokenStats> {
        let logp = pass.logp()?;
        let (entropy, top1_prob) = match needs.entropy || needs.top1_prob {
            true => {
                let (e, t) = pass.entropy_and_top1()?;
                (Some(e).filter(|_| needs.entropy), Some(t).filter(|_| needs.top1_prob))
            }
            false => (None, None),
        };
        Ok(TokenStats { logp, entropy, top1_prob })
    }

    /// The plugin's inputs for this micro-batch; `base_logp` is laid out like `logp`.
    pub fn inputs<'a>(
        &'a self,
        mask: &'a [u8],
        sequence_starts: &'a [u32],
        base_logp: Option<&'a [f32]>,
        step: u64,
        total_steps: u64,
    ) -> ObjectiveInputs<'a> {
        ObjectiveInputs {
            logp: &self.logp,
            mask,
            sequence_starts,
            entropy: self.entropy.as_deref(),
            top1_prob: self.top1_prob.as_deref(),
            base_logp,
            step,
            total_steps,
        }
    }
}

/// Per-token outputs, validated: same length as the input, finite, include ⊆ mask.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectiveValues {
    pub loss: Vec<f32>,
    pub weight: Vec<f32>,
    pub include: Vec<u8>,
}

/// A created objective instance.
pub struct ObjectivePlugin {
    pub plugin: LoadedPlugin,
    pub params: ParamSet,
    instance: Instance,
}

/// The running objective, behind abi_stable's trait object or the C ABI of `sft_objective.h`.
enum Instance {
    Stable(ObjectiveBox),
    C(CObjective),
}

impl ObjectivePlugin {
    /// Loads by name or path and creates it with `key=value` parameters.
    pub fn from_assignments(search: &SearchPath, name_or_path: &str, assignments: &[String]) -> Result<Self> {
        let plugin = LoadedPlugin::load(search, name_or_path, PluginKind::Objective)?;
        let params = ParamSet::from_assignments(plugin.params(), assignments, "--param")?;
        Self::create(plugin, params)
    }

    pub fn create(plugin: LoadedPlugin, params: ParamSet) -> Result<Self> {
        if let Some(c) = plugin.c_objective() {
            let instance = Instance::C(c.create(&params).map_err(|e| plugin.refused(e))?);
            return Ok(Self { plugin, params, instance });
        }
        match plugin.create(&params)? {
            PluginInstance::Objective(instance) => Ok(Self { plugin, params, instance: Instance::Stable(instance) }),
            _ => bail!("{}: constructor returned a plugin of another kind", plugin.path.display()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.plugin.name()
    }

    pub fn needs(&self) -> ObjectiveNeeds {
        match &self.instance {
            Instance::Stable(instance) => instance.needs(),
            Instance::C(instance) => instance.needs(),
        }
    }

    /// Calls the plugin and validates its output.
    pub fn compute(&self, inputs: &ObjectiveInputs<'_>) -> Result<ObjectiveValues> {
        let n = inputs.logp.len();
        let values = match &self.instance {
            Instance::Stable(instance) => {
                let batch = ObjectiveBatch {
                    logp: RSlice::from_slice(inputs.logp),
                    mask: RSlice::from_slice(inputs.mask),
                    sequence_starts: RSlice::from_slice(inputs.sequence_starts),
                    entropy: inputs.entropy.map(RSlice::from_slice).into(),
                    top1_prob: inputs.top1_prob.map(RSlice::from_slice).map_or(ROption::RNone, ROption::RSome),
                    base_logp: inputs.base_logp.map(RSlice::from_slice).map_or(ROption::RNone, ROption::RSome),
                    step: inputs.step,
                    total_steps: inputs.total_steps,
                };
                let out = instance
                    .compute(batch)
                    .into_result()
                    .map_err(|e| anyhow!("objective `{}` failed: {e}", self.name()))?;
                ObjectiveValues {
                    loss: out.loss.into_vec(),
                    weight: out.weight.into_vec(),
                    include: out.include.into_vec(),
                }
            }
            Instance::C(instance) => {
                instance.compute(inputs).map_err(|e| anyhow!("objective `{}` failed: {e}", self.name()))?
            }
        };
        for (what, len) in
            [("loss", values.loss.len()), ("weight", values.weight.len()), ("include", values.include.len())]
        {
            if len != n {
                bail!("objective `{}` returned {len} `{what}` values for {n} tokens", self.name());
            }
        }
        for i in 0..n {
            if values.include[i] > 1 {
                bail!(
                    "objective `{}` returned include = {} at token {i} (must be 0 or 1)",
                    self.name(),
                    values.include[i]
                );
            }
            if inputs.mask[i] == 0 || values.include[i] == 0 {
                continue;
            }
            if !values.loss[i].is_finite() || !values.weight[i].is_finite() {
                bail!(
                    "objective `{}` returned a non-finite value at token {i} (logp {}): loss {}, weight {}",
                    self.name(),
                    inputs.logp[i],
                    values.loss[i],
                    values.weight[i]
                );
            }
        }
        Ok(values)
    }
}
