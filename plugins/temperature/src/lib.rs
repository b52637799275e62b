//! Temperature mixing: weight `size^(1/T)`; T = 1 is proportional, large T tends to uniform.

use plugin_api::prelude::*;

pub struct Temperature {
    temperature: f64,
}

impl Mixer for Temperature {
    const NAME: &'static str = "temperature";
    const DESCRIPTION: &'static str = "weights size^(1/T): T = 1 proportional, T -> infinity uniform";
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::float("temperature", 2.0, "temperature T > 0")];

    fn from_params(params: &Params) -> Result<Self, String> {
        let temperature = params.require_f64("temperature")?;
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(format!("parameter `temperature` must be a positive number, got {temperature}"));
        }
        Ok(Temperature { temperature })
    }
    fn weights(&self, request: &MixerRequest<'_>) -> Result<Vec<f64>, String> {
        Ok(request.sets.iter().map(|set| (set.size as f64).powf(1.0 / self.temperature)).collect())
    }
}

export_mixer!(Temperature);
