//! `-p`: `f(p) = 1 - p`, weight `s(p) = p`. Prior-leaning: tokens the model finds unlikely barely move it.

use plugin_api::prelude::*;

pub struct NegP;

impl PointwiseObjective for NegP {
    const NAME: &'static str = "neg_p";
    const DESCRIPTION: &'static str = "-p: down-weights low-probability tokens (wins when the base model is strong)";
    const FORMULA: &'static str = "f(p) = 1 - p";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(NegP)
    }
    fn loss(&self, p: f64, _log_p: f64) -> f64 {
        1.0 - p
    }
    fn weight(&self, p: f64, _log_p: f64) -> f64 {
        p
    }
}

export_pointwise_objective!(NegP);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;

    #[test]
    fn matches_closed_form_on_41_points() {
        for point in tabulate::<Pointwise<super::NegP>>(&[], &grid(41)).unwrap() {
            assert!(close(point.loss as f64, 1.0 - point.p, 1e-5), "{point:?}");
            assert!(close(point.weight as f64, point.p, 1e-5), "{point:?}");
        }
    }
}
