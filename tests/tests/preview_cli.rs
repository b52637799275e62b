//! `host preview`: what the trainer sees, through the same encoder as `host score` and `host train`.

use integration_tests::{assert_error, fixture, host, read_jsonl, stderr, stdout, write_jsonl};
use serde_json::{json, Value};

fn rows() -> Vec<Value> {
    vec![
        json!({"prompt": "1+1=", "response": "2"}),
        json!({"messages": [
            {"role": "system", "content": "You add."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "6"}
        ]}),
    ]
}

fn preview_lines(args: &[&str]) -> Vec<Value> {
    let run = host(args);
    assert!(run.status.success(), "{}", stderr(&run));
    stdout(&run).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn preview_shows_what_score_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    write_jsonl(&data, &rows());
    let model = fixture("qwen2-tiny");
    let (model, data_arg) = (model.to_str().unwrap(), data.to_str().unwrap());
    let lines = preview_lines(&["preview", "--model", model, "--data", data_arg, "--jsonl"]);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let ids = line["ids"].as_array().unwrap();
        assert_eq!(ids.len(), line["loss_mask"].as_array().unwrap().len());
        assert_eq!(ids.len(), line["tokens"].as_array().unwrap().len());
        let text = format!("{}{}", line["prompt_text"].as_str().unwrap(), line["response_text"].as_str().unwrap());
        assert_eq!(line["text"].as_str().unwrap(), text);
    }
    // The plain row: no template, the response and the EOS are the loss.
    assert_eq!(lines[0]["prompt_text"], "1+1=");
    assert_eq!(lines[0]["response_text"], "2<|endoftext|>");
    // The chat row: the whole conversation through the template, loss on the last turn only.
    let chat = &lines[1];
    assert!(chat["prompt_text"].as_str().unwrap().ends_with("3+3?<|im_end|>\n<|im_start|>assistant\n"), "{chat}");
    assert_eq!(chat["response_text"], "6<|im_end|>\n<|endoftext|>");

    // score scores exactly the loss positions preview shows, example by example.
    let out = dir.path().join("logp.jsonl");
    let run = host(&["score", "--model", model, "--data", data_arg, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let scored = read_jsonl(&out);
    for (line, score) in lines.iter().zip(&scored) {
        let targets = line["loss_mask"].as_array().unwrap().iter().filter(|v| v.as_u64() == Some(1)).count();
        assert_eq!(score["logp"].as_array().unwrap().len(), targets);
    }

    // Every assistant turn: both replies are loss targets.
    let all =
        preview_lines(&["preview", "--model", model, "--data", data_arg, "--jsonl", "--loss-on", "assistant_turns"]);
    let loss_ids =
        |line: &Value| line["loss_mask"].as_array().unwrap().iter().filter(|v| v.as_u64() == Some(1)).count();
    assert_eq!(loss_ids(&all[1]), loss_ids(chat) + 3, "the first reply '4<|im_end|>\\n' adds 3 targets");
    assert_eq!(all[0], lines[0], "plain rows do not change");

    // The people's view marks the loss when stdout is not a terminal.
    let run = host(&["preview", "--model", model, "--data", data_arg, "--limit", "1"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stdout(&run);
    assert!(
        text.contains("1+1=⟦2⟧⟦<|endoftext|>⟧") && text.contains("example 0") && !text.contains("example 1"),
        "{text}"
    );
}

#[test]
fn preview_refuses_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    write_jsonl(&data, &rows());
    let model = fixture("qwen2-tiny");
    let (model, data_arg) = (model.to_str().unwrap(), data.to_str().unwrap());
    let run = host(&["preview", "--model", "/nonexistent", "--data", data_arg]);
    assert_error(&run, 2, &["--model /nonexistent", "no such model directory"]);
    let run = host(&["preview", "--model", model, "--data", data_arg, "--max-length", "0"]);
    assert_error(&run, 2, &["--max-length"]);
    write_jsonl(
        &data,
        &[json!({"prompt": "a", "response": "b"}), json!({"messages": [{"role": "user", "content": "x"}]})],
    );
    let run = host(&["preview", "--model", model, "--data", data_arg]);
    assert_error(&run, 2, &["d.jsonl:2", "assistant"]);
}
