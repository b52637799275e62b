//! Chat templates and the one encoder against transformers: `tests/fixtures/chat/renderings.json` holds
//! what `apply_chat_template` rendered for four template styles (scripts/make_chat_fixtures.py), and the
//! prompt and completion ids the Hugging Face tokenizer gives under TRL's and verl's rules.

use std::path::{Path, PathBuf};

use host::chat::ChatTemplate;
use host::data::{self, TextTokenizer};
use host::encode::{EncodeOptions, Encoder, LossOn};
use serde_json::{json, Map, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("chat/renderings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn template_source(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("chat").join(name)).unwrap()
}

#[test]
fn renderings_are_byte_identical_to_transformers() {
    let reference = reference();
    let special = reference["special_tokens"].as_object().unwrap().clone();
    let renderings = reference["renderings"].as_array().unwrap();
    assert!(renderings.len() >= 30);
    let mut mismatches = Vec::new();
    for case in renderings {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::new(template_source(name), name.to_string(), special.clone()).unwrap();
        let mut extra: Map<String, Value> = case["extra"].as_object().unwrap().clone();
        extra.insert("tools".into(), case["tools"].clone());
        let messages = case["messages"].as_array().unwrap();
        let generation = case["add_generation_prompt"].as_bool().unwrap();
        let text = template.render_with(messages, generation, &extra).unwrap();
        if text != case["text"].as_str().unwrap() {
            mismatches.push(format!("{name} {} gen={generation}:\n{text:?}\n!=\n{:?}", case["case"], case["text"]));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// A model directory with the shared test tokenizer, `template` as chat_template.jinja and `eos` as its EOS.
fn model_dir(template: &str, eos: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    std::fs::copy(fixtures.join("qwen2-tiny/config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixtures.join("tokenizer/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let config = json!({"bos_token": "<|begin|>", "eos_token": eos, "chat_template": "ignored: the .jinja file wins"});
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), template_source(template)).unwrap();
    dir
}

fn tokenizer(dir: &Path) -> TextTokenizer {
    let config = engine::ModelConfig::from_hf_dir(dir).unwrap();
    TextTokenizer::from_model_dir(dir, &config).unwrap()
}

/// The rows of `case` written to a JSONL file and read back as records.
fn read_rows(dir: &Path, rows: &[Value]) -> Vec<data::Record> {
    let path = dir.join("rows.jsonl");
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    data::read_records(&path, "prompt", "response").unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

#[test]
fn encodings_follow_trl_and_verl_with_the_hugging_face_tokenizer() {
    let reference = reference();
    let encodings = reference["encodings"].as_array().unwrap();
    assert!(encodings.len() >= 16);
    // The header template writes today's date (strftime_now) unless given date_string, which the
    // fixture passes and training does not: its renderings are checked above, not its encodings.
    for eos in ["<|endoftext|>", "<|im_end|>"] {
        // A template that writes `eos_token` itself renders differently under another EOS than the
        // fixture's: it is checked with the fixture's EOS only.
        let uses_eos = |c: &&Value| c["template"] == "block_trimming.jinja" && eos != "<|endoftext|>";
        for case in encodings.iter().filter(|c| c["template"] != "header_bos_trim.jinja").filter(|c| !uses_eos(c)) {
            let template = case["template"].as_str().unwrap();
            let dir = model_dir(template, eos);
            let tokenizer = tokenizer(dir.path());
            let row = match case.get("messages") {
                Some(messages) => json!({"messages": messages}),
                None => json!({"prompt": case["prompt"], "response": case["response"]}),
            };
            let records = read_rows(dir.path(), &[row]);
            let options = EncodeOptions { chat_template: true, loss_on: LossOn::LastTurn };
            let encoded = Encoder::new(&tokenizer, options).encode(&records[0]).unwrap();
            let (prompt, completion) = (ids(&case["prompt_ids"]), ids(&case["completion_ids"]));
            let mut expected = prompt.clone();
            expected.extend(&completion);
            // Chat turns already ending with the EOS text get no second one; plain rows always get it.
            let eos_id = tokenizer.eos_id;
            let appended = case.get("messages").is_none() || !completion.contains(&eos_id);
            if appended {
                expected.push(eos_id);
            }
            let at = format!("{template} {} eos {eos}", case["case"]);
            assert_eq!(encoded.ids, expected, "{at}");
            let targets: Vec<bool> = (0..expected.len()).map(|i| i >= prompt.len()).collect();
            assert_eq!(encoded.targets, targets, "{at}");
            assert_eq!(encoded.eos_appended, appended, "{at}");
            // The generation prompt eval uses is exactly the context training conditions on.
            assert_eq!(Encoder::new(&tokenizer, options).prompt_ids(&records[0]).unwrap(), prompt, "{at}");
        }
    }
}

#[test]
fn every_assistant_turn_can_carry_the_loss() {
    let dir = model_dir("chatml_default_system.jinja", "<|im_end|>");
    let tokenizer = tokenizer(dir.path());
    let messages = json!([
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "3"},
        {"role": "assistant", "content": "4"},
    ]);
    let records = read_rows(dir.path(), &[json!({"messages": messages})]);
    let options = EncodeOptions { chat_template: true, loss_on: LossOn::AssistantTurns };
    let encoded = Encoder::new(&tokenizer, options).encode(&records[0]).unwrap();
    let loss_text: Vec<&str> = encoded.segments.iter().filter(|s| s.loss).map(|s| s.text.as_str()).collect();
    assert_eq!(loss_text, ["2<|im_end|>\n", "4<|im_end|>\n"]);
    let all: String = encoded.segments.iter().map(|s| s.text.as_str()).collect();
    let template = tokenizer.chat_template().unwrap();
    assert_eq!(all, template.render(messages.as_array().unwrap(), false).unwrap());
    // The targets are exactly the tokens of the two loss segments, and no EOS is appended.
    let im_end = tokenizer.encode("<|im_end|>").unwrap()[0];
    assert!(!encoded.eos_appended);
    let target_ids: Vec<u32> =
        encoded.ids.iter().zip(&encoded.targets).filter(|(_, &t)| t).map(|(&id, _)| id).collect();
    let mut expected = tokenizer.encode("2<|im_end|>\n").unwrap();
    expected.extend(tokenizer.encode("4<|im_end|>\n").unwrap());
    assert_eq!(target_ids, expected);
    assert!(target_ids.contains(&im_end));
}

#[test]
fn a_template_that_rewrites_history_is_refused_naming_the_row() {
    // Earlier assistant turns are rendered differently once a later turn exists: not a prefix.
    let dir = tempfile::tempdir().unwrap();
    let source = "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}[old]{% else %}<{{ m.role }}>{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let fixtures = fixtures();
    std::fs::copy(fixtures.join("qwen2-tiny/config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixtures.join("tokenizer/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let config = json!({"eos_token": "<|endoftext|>", "chat_template": source});
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenizer = tokenizer(dir.path());
    let messages = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]);
    let records = read_rows(dir.path(), &[json!({"messages": messages})]);
    // The last turn alone is fine; every assistant turn needs turn 1 to be a prefix of the full rendering.
    let last = Encoder::new(&tokenizer, EncodeOptions { chat_template: false, loss_on: LossOn::LastTurn });
    let encoded = last.encode(&records[0]).unwrap();
    assert_eq!(encoded.segments[1].text, "b");
    let error = data::tokenize(
        "rows",
        &records,
        &tokenizer,
        None,
        EncodeOptions { chat_template: false, loss_on: LossOn::LastTurn },
    );
    assert!(error.is_ok());

    let messages = json!([
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
    ]);
    let records = read_rows(dir.path(), &[json!({"messages": messages})]);
    let options = EncodeOptions { chat_template: false, loss_on: LossOn::AssistantTurns };
    let error = data::tokenize("rows.jsonl", &records, &tokenizer, None, options).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.starts_with("rows.jsonl:1:") && message.contains("not a prefix"), "{message}");
}

#[test]
fn messages_rows_without_a_template_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    std::fs::copy(fixtures.join("qwen2-tiny/config.json"), dir.path().join("config.json")).unwrap();
    std::fs::copy(fixtures.join("tokenizer/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"eos_token": "<|endoftext|>"}"#).unwrap();
    let tokenizer = tokenizer(dir.path());
    let messages = json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]);
    let records = read_rows(dir.path(), &[json!({"prompt": "x", "response": "y"}), json!({"messages": messages})]);
    let error = data::tokenize("d.jsonl", &records, &tokenizer, None, EncodeOptions::default()).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.starts_with("d.jsonl:2:") && message.contains("needs a chat template"), "{message}");
}
