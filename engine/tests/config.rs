//! `config.json` parsing: both hub layouts, Llama-3 rope scaling, refusals that name the
//! architecture / key and the file.

mod common;

use std::path::Path;

use anyhow::Result;
use common::fixture;
use engine::{Architecture, ModelConfig};
use serde_json::{json, Value};

fn parse(value: Value) -> Result<ModelConfig> {
    ModelConfig::from_json(value, Path::new("tests/x/config.json"))
}

fn err_of(value: Value) -> String {
    match parse(value) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// The qwen2-tiny config with `edit` applied.
fn qwen2_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<Value> {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(fixture("qwen2-tiny/config.json"))?)?;
    edit(v.as_object_mut().expect("object"));
    Ok(v)
}

#[test]
fn classic_layout_qwen2() -> Result<()> {
    let c = ModelConfig::from_hf_dir(fixture("qwen2-tiny"))?;
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!((c.vocab_size, c.hidden_size, c.intermediate_size), (320, 32, 64));
    assert_eq!((c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads), (2, 4, 2));
    assert_eq!(c.head_dim, 8, "hidden / heads when there is no head_dim key");
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rope_scaling, None);
    assert!(c.qkv_bias && !c.o_bias && !c.mlp_bias);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.max_position_embeddings, 256);
    assert_eq!((c.bos_token_id, c.eos_token_ids.clone()), (Some(0), vec![0]));
    assert_eq!(c.stored_dtype.as_deref(), Some("float32"));
    Ok(())
}

#[test]
fn transformers5_layout_llama() -> Result<()> {
    let c = ModelConfig::from_hf_dir(fixture("llama-tiny"))?;
    assert_eq!(c.architecture, Architecture::Llama);
    assert!(c.raw.get("rope_parameters").is_some() && c.raw.get("dtype").is_some());
    assert_eq!(c.head_dim, 8);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rope_scaling, None);
    assert!(!c.qkv_bias && !c.o_bias && !c.tie_word_embeddings);
    assert_eq!(c.stored_dtype.as_deref(), Some("float32"));
    Ok(())
}

#[test]
fn llama3_rope_scaling_both_layouts() -> Result<()> {
    let classic = ModelConfig::from_hf_dir(fixture("llama3-rope-tiny"))?;
    assert_eq!(classic.rope_theta, 500000.0);
    let s = classic.rope_scaling.clone().expect("llama3 scaling");
    assert_eq!(
        (s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings),
        (8.0, 1.0, 4.0, 32)
    );

    // The same model as transformers 5 writes it.
    let mut v = classic.raw.clone();
    let obj = v.as_object_mut().expect("object");
    let mut rp = obj.remove("rope_scaling").expect("rope_scaling");
    rp["rope_theta"] = obj.remove("rope_theta").expect("rope_theta");
    obj.insert("rope_parameters".into(), rp);
    let dtype = obj.remove("torch_dtype").expect("torch_dtype");
    obj.insert("dtype".into(), dtype);
    let newer = parse(v)?;
    assert_eq!(newer.rope_theta, 500000.0);
    assert_eq!(newer.rope_scaling, classic.rope_scaling);
    Ok(())
}

#[test]
fn explicit_head_dim_and_eos_list() -> Result<()> {
    let c = parse(qwen2_with(|o| {
        o.insert("head_dim".into(), json!(16));
        o.insert("eos_token_id".into(), json!([3, 4]));
    })?)?;
    assert_eq!(c.head_dim, 16);
    assert_eq!(c.eos_token_ids, vec![3, 4]);
    Ok(())
}

#[test]
fn llama_attention_bias_honoured() -> Result<()> {
    let mut v = ModelConfig::from_hf_dir(fixture("llama-tiny"))?.raw;
    v["attention_bias"] = json!(true);
    let c = parse(v)?;
    assert!(c.qkv_bias && c.o_bias && !c.mlp_bias);
    Ok(())
}

#[test]
fn unsupported_architecture_is_named() -> Result<()> {
    let e = err_of(qwen2_with(|o| {
        o.insert("architectures".into(), json!(["MistralForCausalLM"]));
    })?);
    assert!(e.contains("MistralForCausalLM") && e.contains("tests/x/config.json"), "{e}");
    Ok(())
}

#[test]
fn missing_key_is_named() -> Result<()> {
    let e = err_of(qwen2_with(|o| {
        o.remove("hidden_size");
    })?);
    assert_eq!(e, "tests/x/config.json: missing key `hidden_size`");
    Ok(())
}

#[test]
fn wrongly_typed_key_is_named() -> Result<()> {
    let e = err_of(qwen2_with(|o| {
        o.insert("num_hidden_layers".into(), json!("two"));
    })?);
    assert!(e.contains("tests/x/config.json") && e.contains("`num_hidden_layers`"), "{e}");
    Ok(())
}

#[test]
fn unsupported_rope_type_is_refused() -> Result<()> {
    let e = err_of(qwen2_with(|o| {
        o.insert("rope_scaling".into(), json!({"rope_type": "yarn", "factor": 4.0}));
    })?);
    assert!(e.contains("yarn") && e.contains("rope_scaling.rope_type"), "{e}");
    let e = err_of(qwen2_with(|o| {
        o.insert("rope_scaling".into(), json!({"type": "linear", "factor": 2.0}));
    })?);
    assert!(e.contains("linear"), "{e}");
    Ok(())
}

#[test]
fn llama3_scaling_missing_field_is_named() -> Result<()> {
    let mut v = ModelConfig::from_hf_dir(fixture("llama3-rope-tiny"))?.raw;
    v["rope_scaling"].as_object_mut().expect("object").remove("low_freq_factor");
    let e = err_of(v);
    assert_eq!(e, "tests/x/config.json: missing key `rope_scaling.low_freq_factor`");
    Ok(())
}

#[test]
fn unreadable_dir_names_the_file() {
    let e = ModelConfig::from_hf_dir("/nonexistent/model").expect_err("no such dir");
    assert!(format!("{e:#}").contains("/nonexistent/model/config.json"));
}
