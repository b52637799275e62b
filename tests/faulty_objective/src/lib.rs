//! An objective that misbehaves on request, for the host's error-handling tests. It is NLL until the
//! optimizer step `from_step` (default 1), then injects `fault`: `none`; `wrong_weight` (a weight that is
//! not the loss's derivative, for p > 0.2); `nan` (NaN loss for p < 0.5); `panic_compute`; `error`
//! (returns an error); and `panic_create` (panics in the constructor).

use plugin_api::abi_stable::std_types::RStr;
use plugin_api::prelude::*;

pub struct Faulty {
    fault: String,
    from_step: u64,
}

const FAULTS: &[RStr<'static>] = &[
    RStr::from_str("none"),
    RStr::from_str("wrong_weight"),
    RStr::from_str("nan"),
    RStr::from_str("panic_compute"),
    RStr::from_str("error"),
    RStr::from_str("panic_create"),
];

impl Objective for Faulty {
    const NAME: &'static str = "test_faulty_objective";
    const DESCRIPTION: &'static str = "test plugin that misbehaves on request";
    const FORMULA: &'static str = "f(p) = -log p";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::choice("fault", "none", FAULTS, "which fault to inject"),
        ParamSpec::int("from_step", 1, "first optimizer step with the fault"),
    ];

    fn from_params(params: &Params) -> Result<Self, String> {
        let fault = params.str("fault")?.unwrap_or("none").to_string();
        if fault == "panic_create" {
            panic!("injected panic in create");
        }
        let from_step = params.i64("from_step")?.unwrap_or(1).max(0) as u64;
        Ok(Faulty { fault, from_step })
    }

    fn compute(&self, batch: &ObjectiveBatch<'_>) -> Result<ObjectiveOutput, String> {
        let fault = if batch.step >= self.from_step { self.fault.as_str() } else { "none" };
        match fault {
            "panic_compute" => panic!("injected panic in compute at step {}", batch.step),
            "error" => return Err(format!("injected error at step {}", batch.step)),
            _ => {}
        }
        let mut out = ObjectiveOutput::default();
        for (&log_p, &mask) in batch.logp.iter().zip(batch.mask.iter()) {
            let p = (log_p as f64).exp();
            let loss = if fault == "nan" && p < 0.5 { f32::NAN } else { -log_p };
            let weight = if fault == "wrong_weight" && p > 0.2 { p as f32 } else { 1.0 };
            out.loss.push(loss);
            out.weight.push(weight);
            out.include.push(mask);
        }
        Ok(out)
    }
}

export_objective!(Faulty);
