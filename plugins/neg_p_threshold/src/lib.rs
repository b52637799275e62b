//! Thresholded `-p` ("OnlyTopP-q" / "OnlyBottomP-q"): `-p` on the tokens whose probability is on the chosen
//! side of `q`; the other tokens leave the loss and the normaliser. The probability is the current model's,
//! or the base model's with `against = "base"` (a mask fixed before the first step).

use plugin_api::prelude::*;

pub struct NegPThreshold(Threshold);

impl PointwiseObjective for NegPThreshold {
    const NAME: &'static str = "neg_p_threshold";
    const DESCRIPTION: &'static str = "-p on tokens with p >= q (side=top) or p <= q (side=bottom) only";
    const FORMULA: &'static str = "f(p) = (1 - p) * 1[p >= q | p <= q]";
    const PARAMS: &'static [ParamSpec] = Threshold::PARAMS;

    fn from_params(params: &Params) -> Result<Self, String> {
        Threshold::from_params(params).map(NegPThreshold)
    }
    fn loss(&self, p: f64, _log_p: f64) -> f64 {
        1.0 - p
    }
    fn weight(&self, p: f64, _log_p: f64) -> f64 {
        p
    }
    fn include(&self, p: f64, base_p: Option<f64>) -> bool {
        self.0.keeps(p, base_p)
    }
    fn needs(&self) -> ObjectiveNeeds {
        self.0.needs()
    }
}

export_pointwise_objective!(NegPThreshold);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;
    use plugin_api::{ParamEntry, ParamValue, Params};

    #[test]
    fn matches_closed_form_on_41_points() {
        for side in ["top", "bottom"] {
            let params = vec![
                ParamEntry { name: "q".into(), value: ParamValue::Float(0.3) },
                ParamEntry { name: "side".into(), value: ParamValue::Str(side.into()) },
            ];
            for point in tabulate::<Pointwise<super::NegPThreshold>>(&params, &grid(41)).unwrap() {
                let p = point.p;
                let kept = if side == "top" { p >= 0.3 } else { p <= 0.3 };
                let indicator = if kept { 1.0 } else { 0.0 };
                assert_eq!(point.included, kept, "{side}: {point:?}");
                assert!(close(point.loss as f64, (1.0 - p) * indicator, 1e-5), "{side}: {point:?}");
                assert!(close(point.weight as f64, p * indicator, 1e-5), "{side}: {point:?}");
            }
        }
    }

    #[test]
    fn against_base_masks_by_the_base_probability_and_weights_by_the_current_one() {
        use plugin_api::abi_stable::std_types::{ROption, RSlice};
        use plugin_api::objective::{Objective, ObjectiveBatch};
        let params = vec![
            ParamEntry { name: "q".into(), value: ParamValue::Float(0.5) },
            ParamEntry { name: "against".into(), value: ParamValue::Str("base".into()) },
        ];
        let objective = <Pointwise<super::NegPThreshold> as Objective>::from_params(&Params::new(&params)).unwrap();
        assert!(objective.needs().base_logp);
        let logp: Vec<f32> = [0.9f64, 0.2, 0.8, 0.3].iter().map(|p| p.ln() as f32).collect();
        let base: Vec<f32> = [0.9f64, 0.9, 0.1, 0.1].iter().map(|p| p.ln() as f32).collect();
        let mask = [1u8, 1, 1, 0];
        let mut batch = ObjectiveBatch {
            logp: RSlice::from_slice(&logp),
            mask: RSlice::from_slice(&mask),
            sequence_starts: RSlice::from_slice(&[0]),
            entropy: ROption::RNone,
            top1_prob: ROption::RNone,
            base_logp: ROption::RSome(RSlice::from_slice(&base)),
            step: 1,
            total_steps: 1,
        };
        let out = objective.compute(&batch).unwrap();
        assert_eq!(out.include.as_slice(), &[1, 1, 0, 0]);
        assert!(close(out.weight[1] as f64, 0.2, 1e-5), "the weight is the current p: {:?}", out.weight);
        assert!(close(out.loss[1] as f64, 0.8, 1e-5), "{:?}", out.loss);
        batch.base_logp = ROption::RNone;
        assert!(objective.compute(&batch).unwrap_err().contains("base_logp"));
    }
}
