//! Objective plugins: per-token numbers in, per-token numbers out.
//!
//! For any objective `f(p)`, the gradient of `f` is `s(p) · ∇(-log p)` with `s(p) = -p f'(p)`, so the
//! host only back-propagates a weighted NLL. An objective therefore returns, per token, the value `f`
//! (for logging), the weight `s` and whether the token counts in the normaliser. Most objectives are a
//! function of `p` alone: implement [`PointwiseObjective`]. Objectives that look at whole sequences or at
//! training progress implement [`Objective`].

use abi_stable::{
    sabi_trait,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::params::{ParamSpec, Params};

/// The per-token inputs of one micro-batch, flattened over its sequences.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ObjectiveBatch<'a> {
    /// `log p_θ(y_t | x, y_<t)` of every target position.
    pub logp: RSlice<'a, f32>,
    /// 1 where the position is a loss position (response token or EOS), 0 for prompt and padding.
    pub mask: RSlice<'a, u8>,
    /// Offset of each sequence's first position in the flat arrays (ascending; first is 0).
    pub sequence_starts: RSlice<'a, u32>,
    /// Entropy of the predicted distribution per position, when the objective asked for it.
    pub entropy: ROption<RSlice<'a, f32>>,
    /// Probability of the most likely token per position, when the objective asked for it.
    pub top1_prob: ROption<RSlice<'a, f32>>,
    /// `log p_base(y_t | x, y_<t)` under the model training started from (computed once, before the first
    /// step), when the objective asked for it: a mask fixed from the base model does not move with training.
    pub base_logp: ROption<RSlice<'a, f32>>,
    /// The optimizer step this batch belongs to, from 1.
    pub step: u64,
    /// The run's total number of optimizer steps.
    pub total_steps: u64,
}

/// The per-token outputs, one entry per input position.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq)]
pub struct ObjectiveOutput {
    /// The objective's value `f(p)`, for logging.
    pub loss: RVec<f32>,
    /// The gradient weight `s(p)` on `-log p` (the host stops its gradient).
    pub weight: RVec<f32>,
    /// 1 where the position counts in the normaliser `Σ m`; a position outside the loss mask is ignored.
    pub include: RVec<u8>,
}

/// Optional per-token inputs an objective asks the host to compute.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectiveNeeds {
    pub entropy: bool,
    pub top1_prob: bool,
    pub base_logp: bool,
}

/// How an objective's `loss` relates to its `weight`, so `host plugins check` can verify it.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossForm {
    /// `loss` is a function of `log p` whose derivative gives the weight: `weight = -d loss / d log p`.
    Potential,
    /// `loss = sg(weight) · (-log p)` (DFT): the weight is a stopped-gradient factor, not a derivative.
    DetachedWeightedNll,
    /// Not an objective.
    NotApplicable,
}

/// The ABI-stable face of a running objective.
#[sabi_trait]
pub trait ObjectiveState: Send + Sync {
    /// Per-token loss, weight and inclusion for one micro-batch.
    fn compute(&self, batch: ObjectiveBatch<'_>) -> RResult<ObjectiveOutput, RString>;

    /// Which optional inputs the host must provide.
    #[sabi(last_prefix_field)]
    fn needs(&self) -> ObjectiveNeeds;
}

/// A boxed objective instance as it crosses the ABI.
pub type ObjectiveBox = ObjectiveState_TO<'static, abi_stable::std_types::RBox<()>>;

/// A general objective: sees the whole micro-batch.
pub trait Objective: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const FORMULA: &'static str;
    const PARAMS: &'static [ParamSpec] = &[];
    const LOSS_FORM: LossForm = LossForm::Potential;

    fn from_params(params: &Params) -> Result<Self, String>;

    fn needs(&self) -> ObjectiveNeeds {
        ObjectiveNeeds::default()
    }

    fn compute(&self, batch: &ObjectiveBatch<'_>) -> Result<ObjectiveOutput, String>;
}

/// An objective that is a function of each token's probability alone: write `f` and `s`, nothing else.
pub trait PointwiseObjective: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    const FORMULA: &'static str;
    const PARAMS: &'static [ParamSpec] = &[];
    const LOSS_FORM: LossForm = LossForm::Potential;

    fn from_params(params: &Params) -> Result<Self, String>;

    /// `f(p)`; `log_p` is given too so that functions of `log p` stay exact for tiny `p`.
    fn loss(&self, p: f64, log_p: f64) -> f64;

    /// `s(p) = -p f'(p)`, the weight on `-log p`.
    fn weight(&self, p: f64, log_p: f64) -> f64;

    /// Whether the token counts at all (thresholded objectives); excluded tokens get loss and weight 0.
    /// `base_p` is the token's probability under the base model, given when [`Self::needs`] asks for it.
    fn include(&self, _p: f64, _base_p: Option<f64>) -> bool {
        true
    }

    /// Which optional inputs the host must provide (only `base_logp` reaches a pointwise objective).
    fn needs(&self) -> ObjectiveNeeds {
        ObjectiveNeeds::default()
    }
}

/// Adapts a [`PointwiseObjective`] to an [`Objective`].
pub struct Pointwise<T>(pub T);

impl<T: PointwiseObjective> Objective for Pointwise<T> {
    const NAME: &'static str = T::NAME;
    const DESCRIPTION: &'static str = T::DESCRIPTION;
    const FORMULA: &'static str = T::FORMULA;
    const PARAMS: &'static [ParamSpec] = T::PARAMS;
    const LOSS_FORM: LossForm = T::LOSS_FORM;

    fn from_params(params: &Params) -> Result<Self, String> {
        T::from_params(params).map(Pointwise)
    }

    fn needs(&self) -> ObjectiveNeeds {
        self.0.needs()
    }

    fn compute(&self, batch: &ObjectiveBatch<'_>) -> Result<ObjectiveOutput, String> {
        let n = batch.logp.len();
        let base_logp = match (self.0.needs().base_logp, batch.base_logp) {
            (false, _) => None,
            (true, ROption::RSome(base)) if base.len() == n => Some(base),
            (true, ROption::RSome(base)) => {
                return Err(format!("base_logp has {} entries for {n} logp", base.len()));
            }
            (true, ROption::RNone) => return Err("this objective needs base_logp; the host gave none".into()),
        };
        let mut out = ObjectiveOutput {
            loss: RVec::with_capacity(n),
            weight: RVec::with_capacity(n),
            include: RVec::with_capacity(n),
        };
        for (i, (&log_p, &mask)) in batch.logp.iter().zip(batch.mask.iter()).enumerate() {
            let log_p = log_p as f64;
            let p = log_p.exp();
            let base_p = base_logp.map(|base| (base[i] as f64).exp());
            let included = mask != 0 && self.0.include(p, base_p);
            if included {
                out.loss.push(self.0.loss(p, log_p) as f32);
                out.weight.push(self.0.weight(p, log_p) as f32);
            } else {
                out.loss.push(0.0);
                out.weight.push(0.0);
            }
            out.include.push(included as u8);
        }
        Ok(out)
    }
}

/// Wraps an [`Objective`] behind the ABI, catching panics at the boundary.
pub struct ObjectiveAdapter<T>(pub T);

impl<T: Objective> ObjectiveState for ObjectiveAdapter<T> {
    fn compute(&self, batch: ObjectiveBatch<'_>) -> RResult<ObjectiveOutput, RString> {
        crate::catch_panic("compute", || {
            if batch.mask.len() != batch.logp.len() {
                return Err(format!("mask has {} entries for {} logp", batch.mask.len(), batch.logp.len()));
            }
            self.0.compute(&batch)
        })
    }

    fn needs(&self) -> ObjectiveNeeds {
        // A panic here cannot be reported as an error; asking for nothing is the safe answer.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.needs())).unwrap_or_default()
    }
}

/// Static strings of an objective, for the export macros.
#[doc(hidden)]
pub const fn rstr(s: &'static str) -> RStr<'static> {
    RStr::from_str(s)
}
