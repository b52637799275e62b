//! Uniform mixing: every set is equally likely, whatever its size.

use plugin_api::prelude::*;

pub struct Uniform;

impl Mixer for Uniform {
    const NAME: &'static str = "uniform";
    const DESCRIPTION: &'static str = "equal weight for every set";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(Uniform)
    }
    fn weights(&self, request: &MixerRequest<'_>) -> Result<Vec<f64>, String> {
        Ok(vec![1.0; request.sets.len()])
    }
}

export_mixer!(Uniform);
