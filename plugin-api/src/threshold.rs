//! The token threshold shared by thresholded objectives (`neg_p_threshold`, `nll_threshold`).
//!
//! A threshold keeps the tokens whose probability is at least `q` (`side = "top"`) or at most `q`
//! (`side = "bottom"`); the others leave the loss and the normaliser. The probability is the current
//! model's (`against = "current"`, the paper's reference code) or the base model's (`against = "base"`):
//! a mask fixed before the first step, which cannot ratchet as training pushes tokens across `q`
//! (docs/continuum.md measures that feedback). The paper's percentile sweeps give `percentile = K`
//! instead of `q`: the host turns it into `q` from the base model's token-probability quantiles before it
//! creates the plugin, so a plugin that receives only `percentile` refuses it.

use abi_stable::std_types::RStr;

use crate::objective::ObjectiveNeeds;
use crate::params::{ParamSpec, Params};

/// Which tokens a threshold keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Top,
    Bottom,
}

/// Whose probability a threshold is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Against {
    /// The model being trained, at every step.
    Current,
    /// The model training started from: the mask is fixed for the whole run.
    Base,
}

/// A probability threshold with a side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub q: f64,
    pub side: Side,
    pub against: Against,
}

const SIDES: &[RStr<'static>] = &[RStr::from_str("top"), RStr::from_str("bottom")];
const AGAINST: &[RStr<'static>] = &[RStr::from_str("current"), RStr::from_str("base")];

impl Threshold {
    /// The parameters every thresholded objective declares.
    pub const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::optional_float("q", "probability threshold in [0, 1], checked against the current model"),
        ParamSpec::optional_float(
            "percentile",
            "percentile K in [0, 100] of the base model's token probabilities; the host converts it to q",
        ),
        ParamSpec::choice("side", "top", SIDES, "top: keep tokens with p >= q; bottom: keep p <= q"),
        ParamSpec::choice(
            "against",
            "current",
            AGAINST,
            "current: p of the model being trained, each step; base: p of the starting model, a fixed mask",
        ),
    ];

    pub fn from_params(params: &Params) -> Result<Self, String> {
        let side = match params.str("side")?.unwrap_or("top") {
            "top" => Side::Top,
            "bottom" => Side::Bottom,
            other => return Err(format!("parameter `side` must be \"top\" or \"bottom\", got {other:?}")),
        };
        let against = match params.str("against")?.unwrap_or("current") {
            "current" => Against::Current,
            "base" => Against::Base,
            other => return Err(format!("parameter `against` must be \"current\" or \"base\", got {other:?}")),
        };
        let q = match (params.f64("q")?, params.f64("percentile")?) {
            (Some(q), _) => q,
            (None, Some(_)) => {
                return Err("parameter `percentile` must be converted to `q` from base-model quantiles \
                            (host train does this); give `q` directly here"
                    .to_string())
            }
            (None, None) => return Err("parameter `q` (or `percentile`) is required".to_string()),
        };
        if !(0.0..=1.0).contains(&q) {
            return Err(format!("parameter `q` must be in [0, 1], got {q}"));
        }
        Ok(Self { q, side, against })
    }

    /// Whether a token is kept, given its current probability `p` and its base-model probability
    /// `base_p` (present when [`Self::needs_base`]).
    pub fn keeps(&self, p: f64, base_p: Option<f64>) -> bool {
        let judged = match self.against {
            Against::Current => p,
            Against::Base => base_p.unwrap_or(f64::NAN), // absent: keep nothing rather than guess
        };
        match self.side {
            Side::Top => judged >= self.q,
            Side::Bottom => judged <= self.q,
        }
    }

    /// Whether the host must give the base model's log-probabilities.
    pub fn needs_base(&self) -> bool {
        self.against == Against::Base
    }

    /// The inputs a thresholded objective asks the host for: the base model's log-probabilities when it
    /// is judged against them.
    pub fn needs(&self) -> ObjectiveNeeds {
        ObjectiveNeeds { base_logp: self.needs_base(), ..ObjectiveNeeds::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{ParamEntry, ParamValue};

    fn params(entries: &[(&str, ParamValue)]) -> Vec<ParamEntry> {
        entries.iter().map(|(n, v)| ParamEntry { name: (*n).into(), value: v.clone() }).collect()
    }

    #[test]
    fn keeps_the_chosen_side_inclusively() {
        let e = params(&[("q", ParamValue::Float(0.5)), ("side", ParamValue::Str("bottom".into()))]);
        let t = Threshold::from_params(&Params::new(&e)).unwrap();
        assert!(t.keeps(0.5, None) && t.keeps(0.1, None) && !t.keeps(0.6, None));
        let e = params(&[("q", ParamValue::Float(0.5)), ("side", ParamValue::Str("top".into()))]);
        let t = Threshold::from_params(&Params::new(&e)).unwrap();
        assert!(t.keeps(0.5, None) && t.keeps(0.9, None) && !t.keeps(0.4, None));
        assert!(!t.needs_base());
    }

    #[test]
    fn against_base_judges_by_the_base_probability_only() {
        let e = params(&[("q", ParamValue::Float(0.5)), ("against", ParamValue::Str("base".into()))]);
        let t = Threshold::from_params(&Params::new(&e)).unwrap();
        assert!(t.needs_base());
        assert!(t.keeps(0.1, Some(0.9)), "current p below q, base above: kept");
        assert!(!t.keeps(0.9, Some(0.1)), "current p above q, base below: dropped");
        assert!(!t.keeps(0.9, None), "no base probability: dropped, not judged by the current one");
        let e = params(&[("q", ParamValue::Float(0.5)), ("against", ParamValue::Str("later".into()))]);
        assert!(Threshold::from_params(&Params::new(&e)).unwrap_err().contains("against"));
    }

    #[test]
    fn refuses_out_of_range_and_unresolved_percentile() {
        let e = params(&[("q", ParamValue::Float(1.5))]);
        assert!(Threshold::from_params(&Params::new(&e)).unwrap_err().contains("[0, 1]"));
        let e = params(&[("percentile", ParamValue::Float(50.0))]);
        assert!(Threshold::from_params(&Params::new(&e)).unwrap_err().contains("percentile"));
        assert!(Threshold::from_params(&Params::new(&[])).unwrap_err().contains("required"));
    }
}
