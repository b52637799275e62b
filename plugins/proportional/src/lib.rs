//! Proportional mixing: every example is equally likely, as if the sets were concatenated.

use plugin_api::prelude::*;

pub struct Proportional;

impl Mixer for Proportional {
    const NAME: &'static str = "proportional";
    const DESCRIPTION: &'static str = "weights proportional to set sizes (concatenation)";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(Proportional)
    }
    fn weights(&self, request: &MixerRequest<'_>) -> Result<Vec<f64>, String> {
        Ok(request.sets.iter().map(|set| set.size as f64).collect())
    }
}

export_mixer!(Proportional);
