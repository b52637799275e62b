//! An objective that misbehaves on request (`fault` parameter), for the host's error-handling tests:
//! `none` behaves as NLL; `wrong_weight` declares a weight that is not the loss's derivative;
//! `nan` returns NaN for tokens with p < 0.5; `panic_compute` and `panic_create` panic.

use plugin_api::abi_stable::std_types::RStr;
use plugin_api::prelude::*;

pub struct Faulty {
    fault: String,
}

const FAULTS: &[RStr<'static>] = &[
    RStr::from_str("none"),
    RStr::from_str("wrong_weight"),
    RStr::from_str("nan"),
    RStr::from_str("panic_compute"),
    RStr::from_str("panic_create"),
];

impl PointwiseObjective for Faulty {
    const NAME: &'static str = "test_faulty_objective";
    const DESCRIPTION: &'static str = "test plugin that misbehaves on request";
    const FORMULA: &'static str = "f(p) = -log p";
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::choice(
        "fault",
        "none",
        FAULTS,
        "which fault to inject",
    )];

    fn from_params(params: &Params) -> Result<Self, String> {
        let fault = params.str("fault")?.unwrap_or("none").to_string();
        if fault == "panic_create" {
            panic!("injected panic in create");
        }
        Ok(Faulty { fault })
    }
    fn loss(&self, p: f64, log_p: f64) -> f64 {
        match self.fault.as_str() {
            "nan" if p < 0.5 => f64::NAN,
            "panic_compute" => panic!("injected panic in compute"),
            _ => -log_p,
        }
    }
    fn weight(&self, p: f64, _log_p: f64) -> f64 {
        match self.fault.as_str() {
            "wrong_weight" if p > 0.2 => p,
            _ => 1.0,
        }
    }
}

export_pointwise_objective!(Faulty);
