//! DFT (TRL's `loss_type="dft"`): `f = sg(p) · (-log p)`. Its gradient equals `-p`'s; the logged value
//! is the probability-scaled NLL.

use plugin_api::prelude::*;

pub struct Dft;

impl PointwiseObjective for Dft {
    const NAME: &'static str = "dft";
    const DESCRIPTION: &'static str = "dynamic fine-tuning: NLL scaled by the stopped-gradient probability";
    const FORMULA: &'static str = "f(p) = sg(p) * -log p";
    const LOSS_FORM: LossForm = LossForm::DetachedWeightedNll;

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(Dft)
    }
    fn loss(&self, p: f64, log_p: f64) -> f64 {
        -p * log_p
    }
    fn weight(&self, p: f64, _log_p: f64) -> f64 {
        p
    }
}

export_pointwise_objective!(Dft);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;

    #[test]
    fn matches_closed_form_on_41_points() {
        for point in tabulate::<Pointwise<super::Dft>>(&[], &grid(41)).unwrap() {
            let p = point.p;
            assert!(close(point.loss as f64, -p * p.ln(), 1e-5), "{point:?}");
            assert!(close(point.weight as f64, p, 1e-5), "{point:?}");
        }
    }
}
