//! The token threshold shared by thresholded objectives (`neg_p_threshold`, `nll_threshold`).
//!
//! A threshold keeps the tokens whose *current* probability is at least `q` (`side = "top"`) or at most
//! `q` (`side = "bottom"`); the others leave the loss and the normaliser. The paper's percentile sweeps
//! give `percentile = K` instead: the host turns it into `q` from the base model's token-probability
//! quantiles before it creates the plugin, so a plugin that receives only `percentile` refuses it.

use abi_stable::std_types::RStr;

use crate::params::{ParamSpec, Params};

/// Which tokens a threshold keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Top,
    Bottom,
}

/// A probability threshold with a side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub q: f64,
    pub side: Side,
}

const SIDES: &[RStr<'static>] = &[RStr::from_str("top"), RStr::from_str("bottom")];

impl Threshold {
    /// The parameters every thresholded objective declares.
    pub const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::optional_float("q", "probability threshold in [0, 1], checked against the current model"),
        ParamSpec::optional_float(
            "percentile",
            "percentile K in [0, 100] of the base model's token probabilities; the host converts it to q",
        ),
        ParamSpec::choice("side", "top", SIDES, "top: keep tokens with p >= q; bottom: keep p <= q"),
    ];

    pub fn from_params(params: &Params) -> Result<Self, String> {
        let side = match params.str("side")?.unwrap_or("top") {
            "top" => Side::Top,
            "bottom" => Side::Bottom,
            other => return Err(format!("parameter `side` must be \"top\" or \"bottom\", got {other:?}")),
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
        Ok(Self { q, side })
    }

    /// Whether a token of probability `p` is kept.
    pub fn keeps(&self, p: f64) -> bool {
        match self.side {
            Side::Top => p >= self.q,
            Side::Bottom => p <= self.q,
        }
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
        assert!(t.keeps(0.5) && t.keeps(0.1) && !t.keeps(0.6));
        let e = params(&[("q", ParamValue::Float(0.5)), ("side", ParamValue::Str("top".into()))]);
        let t = Threshold::from_params(&Params::new(&e)).unwrap();
        assert!(t.keeps(0.5) && t.keeps(0.9) && !t.keeps(0.4));
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
