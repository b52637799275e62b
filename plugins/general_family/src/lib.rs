//! The `-p^α` family ("GeneralFamily-α"): `f(p) = (1 - p^α) / α`, weight `s(p) = p^α`.
//!
//! α = 1 is `-p`; α → 0 is NLL (computed as the limit, never dividing by zero); α < 0 is more
//! prior-averse than NLL.

use plugin_api::prelude::*;

pub struct GeneralFamily {
    alpha: f64,
}

/// Below this |α|, `(1 - p^α) / α` is replaced by its limit `-log p` (the relative error of the limit
/// is about |α log p| / 2, under 1e-7 for p ≥ 1e-12).
const ALPHA_NLL_LIMIT: f64 = 1e-8;

impl PointwiseObjective for GeneralFamily {
    const NAME: &'static str = "general_family";
    const DESCRIPTION: &'static str =
        "-p^alpha family: alpha > 0 prior-leaning, alpha -> 0 is NLL, alpha < 0 prior-averse";
    const FORMULA: &'static str = "f(p) = (1 - p^alpha) / alpha";
    const PARAMS: &'static [ParamSpec] =
        &[ParamSpec::float("alpha", 1.0, "exponent alpha; 1 is -p, 0 is NLL, larger is more prior-leaning")];

    fn from_params(params: &Params) -> Result<Self, String> {
        let alpha = params.require_f64("alpha")?;
        if !alpha.is_finite() {
            return Err(format!("parameter `alpha` must be finite, got {alpha}"));
        }
        Ok(GeneralFamily { alpha })
    }
    fn loss(&self, _p: f64, log_p: f64) -> f64 {
        if self.alpha.abs() < ALPHA_NLL_LIMIT {
            -log_p
        } else {
            // 1 - p^α = -expm1(α log p), accurate when p^α is close to 1.
            -(self.alpha * log_p).exp_m1() / self.alpha
        }
    }
    fn weight(&self, _p: f64, log_p: f64) -> f64 {
        (self.alpha * log_p).exp()
    }
}

export_pointwise_objective!(GeneralFamily);

#[cfg(test)]
mod tests {
    use plugin_api::curve::{close, grid, tabulate};
    use plugin_api::objective::Pointwise;
    use plugin_api::{ParamEntry, ParamValue};

    fn alpha(a: f64) -> Vec<ParamEntry> {
        vec![ParamEntry { name: "alpha".into(), value: ParamValue::Float(a) }]
    }

    #[test]
    fn matches_closed_form_on_41_points() {
        for a in [1.0, 0.5, 2.0, 10.0, -0.5] {
            for point in tabulate::<Pointwise<super::GeneralFamily>>(&alpha(a), &grid(41)).unwrap() {
                let p = point.p;
                assert!(close(point.loss as f64, (1.0 - p.powf(a)) / a, 1e-5), "alpha {a}: {point:?}");
                assert!(close(point.weight as f64, p.powf(a), 1e-5), "alpha {a}: {point:?}");
            }
        }
    }

    #[test]
    fn alpha_zero_is_nll_without_dividing_by_zero() {
        for point in tabulate::<Pointwise<super::GeneralFamily>>(&alpha(0.0), &grid(41)).unwrap() {
            assert!(close(point.loss as f64, -point.p.ln(), 1e-5), "{point:?}");
            assert!(close(point.weight as f64, 1.0, 1e-5), "{point:?}");
        }
        // Approaching the limit from either side stays continuous.
        let near = tabulate::<Pointwise<super::GeneralFamily>>(&alpha(1e-6), &[0.3]).unwrap()[0];
        assert!(close(near.loss as f64, -(0.3f64).ln(), 1e-5), "{near:?}");
    }
}
