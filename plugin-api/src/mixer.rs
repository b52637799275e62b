//! Data-mixer plugins: given the training sets and training progress, the sampling weights of the
//! next batch. The host normalises the weights and draws examples by them.

use abi_stable::{
    sabi_trait,
    std_types::{ROption, RResult, RSlice, RString, RVec},
    StableAbi,
};

use crate::params::{ParamSpec, Params};

/// One named training set as the mixer sees it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct TrainingSet {
    pub name: RString,
    /// Number of examples.
    pub size: u64,
    pub domain: ROption<RString>,
    /// The base model's mean probability on the set's targets, when diagnosed.
    pub mean_confidence: ROption<f64>,
}

/// What a mixer is asked, once per batch.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct MixerRequest<'a> {
    pub sets: RSlice<'a, TrainingSet>,
    /// The optimizer step the batch is for, from 1.
    pub step: u64,
    pub total_steps: u64,
    pub seed: u64,
}

/// The ABI-stable face of a running mixer.
#[sabi_trait]
pub trait MixerState: Send + Sync {
    /// One non-negative weight per set, not necessarily normalised.
    #[sabi(last_prefix_field)]
    fn weights(&self, request: MixerRequest<'_>) -> RResult<RVec<f64>, RString>;
}

pub type MixerBox = MixerState_TO<'static, abi_stable::std_types::RBox<()>>;

/// What a mixer author implements.
pub trait Mixer: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const PARAMS: &'static [ParamSpec] = &[];

    fn from_params(params: &Params) -> Result<Self, String>;

    fn weights(&self, request: &MixerRequest<'_>) -> Result<Vec<f64>, String>;
}

/// Wraps a [`Mixer`] behind the ABI, catching panics at the boundary.
pub struct MixerAdapter<T>(pub T);

impl<T: Mixer> MixerState for MixerAdapter<T> {
    fn weights(&self, request: MixerRequest<'_>) -> RResult<RVec<f64>, RString> {
        crate::catch_panic("weights", || self.0.weights(&request).map(RVec::from))
    }
}
