//! Thresholded NLL ("OnlyTopLogP-q" / "OnlyBottomLogP-q"): NLL on the tokens whose probability is on the
//! chosen side of `q`; the other tokens leave the loss and the normaliser. The probability is the current
//! model's, or the base model's with `against = "base"` (a mask fixed before the first step).

use plugin_api::prelude::*;

pub struct NllThreshold(Threshold);

impl PointwiseObjective for NllThreshold {
    const NAME: &'static str = "nll_threshold";
    const DESCRIPTION: &'static str = "NLL on tokens with p >= q (side=top) or p <= q (side=bottom) only";
    const FORMULA: &'static str = "f(p) = -log p * 1[p >= q | p <= q]";
    const PARAMS: &'static [ParamSpec] = Threshold::PARAMS;

    fn from_params(params: &Params) -> Result<Self, String> {
        Threshold::from_params(params).map(NllThreshold)
    }
    fn loss(&self, _p: f64, log_p: f64) -> f64 {
        -log_p
    }
    fn weight(&self, _p: f64, _log_p: f64) -> f64 {
        1.0
    }
    fn include(&self, p: f64, base_p: Option<f64>) -> bool {
        self.0.keeps(p, base_p)
    }
    fn needs(&self) -> ObjectiveNeeds {
        self.0.needs()
    }
}

export_pointwise_objective!(NllThreshold);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;
    use plugin_api::{ParamEntry, ParamValue};

    #[test]
    fn matches_closed_form_on_41_points() {
        for side in ["top", "bottom"] {
            let params = vec![
                ParamEntry { name: "q".into(), value: ParamValue::Float(0.6) },
                ParamEntry { name: "side".into(), value: ParamValue::Str(side.into()) },
            ];
            for point in tabulate::<Pointwise<super::NllThreshold>>(&params, &grid(41)).unwrap() {
                let p = point.p;
                let kept = if side == "top" { p >= 0.6 } else { p <= 0.6 };
                let indicator = if kept { 1.0 } else { 0.0 };
                assert_eq!(point.included, kept, "{side}: {point:?}");
                assert!(close(point.loss as f64, -p.ln() * indicator, 1e-5), "{side}: {point:?}");
                assert!(close(point.weight as f64, indicator, 1e-5), "{side}: {point:?}");
            }
        }
    }
}
