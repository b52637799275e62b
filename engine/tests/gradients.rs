//! Every parameter of the decoder receives a non-zero gradient (the fused candle kernels would
//! silently stop it), including Qwen2's q/k/v biases and both uses of a tied embedding.
//! Runs on `ENGINE_TEST_DEVICE` in `ENGINE_TEST_DTYPE` (default: the CPU in float32).

mod common;

use anyhow::Result;
use common::{load_for_test, parity_examples};
use engine::{pad_batch, token_logprobs};

fn check_all_params_get_gradient(name: &str) -> Result<()> {
    let model = load_for_test(name)?;
    let rows: Vec<Vec<u32>> = parity_examples(name)?.into_iter().map(|e| e.ids).collect();
    let ids = pad_batch(&rows, 0, model.device())?;
    let logp = token_logprobs(&model.forward(&ids)?, &ids)?;
    let grads = model.backward(&logp.sum_all()?)?;

    assert_eq!(grads.len(), model.params().len(), "{name}: some parameters got no gradient");
    for (pname, var) in model.params() {
        let g = grads.get(pname).expect("checked above");
        assert_eq!(g.dims(), var.dims(), "{name}: {pname}");
        let abs_sum: f32 = g.abs()?.sum_all()?.to_scalar()?;
        assert!(abs_sum.is_finite() && abs_sum > 0.0, "{name}: {pname} has gradient sum |g| = {abs_sum}");
    }
    Ok(())
}

#[test]
fn every_param_gets_gradient_qwen2_tiny() -> Result<()> {
    let model = load_for_test("qwen2-tiny")?;
    let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"model.layers.0.self_attn.q_proj.bias"));
    assert!(!names.contains(&"lm_head.weight"), "tied: the head is the embedding");
    check_all_params_get_gradient("qwen2-tiny")
}

#[test]
fn every_param_gets_gradient_llama_tiny() -> Result<()> {
    let model = load_for_test("llama-tiny")?;
    let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"lm_head.weight"));
    assert!(!names.iter().any(|n| n.ends_with(".bias")));
    check_all_params_get_gradient("llama-tiny")
}
