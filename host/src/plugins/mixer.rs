//! The host's handle on a data-mixer plugin: asks for weights and refuses malformed ones.

use abi_stable::std_types::RSlice;
use anyhow::{anyhow, bail, Result};
use plugin_api::{MixerBox, MixerRequest, PluginInstance, TrainingSet};

use super::{params::ParamSet, LoadedPlugin};

pub struct MixerPlugin {
    pub plugin: LoadedPlugin,
    instance: MixerBox,
}

impl MixerPlugin {
    pub fn create(plugin: LoadedPlugin, params: &ParamSet) -> Result<Self> {
        match plugin.create(params)? {
            PluginInstance::Mixer(instance) => Ok(Self { plugin, instance }),
            _ => bail!("{}: constructor returned a plugin of another kind", plugin.path.display()),
        }
    }

    /// Normalised sampling weights, one per set.
    pub fn weights(&self, sets: &[TrainingSet], step: u64, total_steps: u64, seed: u64) -> Result<Vec<f64>> {
        let name = self.plugin.name();
        let raw = self
            .instance
            .weights(MixerRequest { sets: RSlice::from_slice(sets), step, total_steps, seed })
            .into_result()
            .map_err(|e| anyhow!("mixer `{name}` failed: {e}"))?;
        if raw.len() != sets.len() {
            bail!("mixer `{name}` returned {} weights for {} sets", raw.len(), sets.len());
        }
        if let Some(i) = raw.iter().position(|w| !w.is_finite() || *w < 0.0) {
            bail!("mixer `{name}` returned weight {} for set `{}` (must be finite and >= 0)", raw[i], sets[i].name);
        }
        let total: f64 = raw.iter().sum();
        if total <= 0.0 {
            bail!("mixer `{name}` gave every set weight 0");
        }
        Ok(raw.iter().map(|w| w / total).collect())
    }
}
