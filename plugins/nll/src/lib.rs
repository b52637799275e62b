//! NLL, the standard SFT objective: `f(p) = -log p`, weight `s(p) = 1`.

use plugin_api::prelude::*;

pub struct Nll;

impl PointwiseObjective for Nll {
    const NAME: &'static str = "nll";
    const DESCRIPTION: &'static str =
        "negative log-likelihood; every token weighted equally (wins when the base model is weak)";
    const FORMULA: &'static str = "f(p) = -log p";

    fn from_params(_: &Params) -> Result<Self, String> {
        Ok(Nll)
    }
    fn loss(&self, _p: f64, log_p: f64) -> f64 {
        -log_p
    }
    fn weight(&self, _p: f64, _log_p: f64) -> f64 {
        1.0
    }
}

export_pointwise_objective!(Nll);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;

    #[test]
    fn matches_closed_form_on_41_points() {
        for point in tabulate::<Pointwise<super::Nll>>(&[], &grid(41)).unwrap() {
            assert!(close(point.loss as f64, -point.p.ln(), 1e-5), "{point:?}");
            assert!(close(point.weight as f64, 1.0, 1e-5), "{point:?}");
            assert!(point.included);
        }
    }
}
