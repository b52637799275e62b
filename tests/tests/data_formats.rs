//! Training data beyond plain JSONL: Parquet in verl's layout (a struct column holding the prompt and
//! response), chat-format rows with `messages`, and several named sets mixed by a mixer plugin.

use std::path::Path;
use std::sync::Arc;

use integration_tests::{assert_error, fixture, host, read_metrics, stderr, write_jsonl, write_run_config};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::json;

/// Writes rows `(data_source, question, answer)` as verl's SFT parquet does: `extra_info` is a struct.
fn write_verl_parquet(path: &Path, rows: &[(&str, &str, &str)]) {
    let schema = "message schema {
        required binary data_source (UTF8);
        required group extra_info {
            required binary question (UTF8);
            required binary answer (UTF8);
        }
    }";
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let columns: [Vec<ByteArray>; 3] = [
        rows.iter().map(|r| ByteArray::from(r.0)).collect(),
        rows.iter().map(|r| ByteArray::from(r.1)).collect(),
        rows.iter().map(|r| ByteArray::from(r.2)).collect(),
    ];
    for values in &columns {
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<ByteArrayType>().write_batch(values, None, None).unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

fn train(dir: &Path, data: &str, extra: &str) -> std::process::Output {
    let out = dir.join("out").display().to_string();
    let config = write_run_config(
        dir,
        &fixture("qwen2-tiny"),
        Path::new(data),
        &format!("{extra}\n[train]\nbatch_size = 2\nmax_steps = 3\nout_dir = {out:?}\n"),
    );
    host(&["train", "--config", config.to_str().unwrap()])
}

#[test]
fn verl_parquet_trains_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("math.parquet");
    write_verl_parquet(
        &data,
        &[
            ("gsm8k", "Q: 12+30\nA: ", "2+0=2, 1+3=4 => 42"),
            ("gsm8k", "Q: 5+6\nA: ", "5+6=11 => 11"),
            ("gsm8k", "Q: 7+1\nA: ", "7+1=8 => 8"),
        ],
    );
    // The keys are dotted paths into the struct column.
    let out_dir = dir.path().join("out");
    let config = write_run_config(
        dir.path(),
        &fixture("qwen2-tiny"),
        &data,
        &format!("[train]\nbatch_size = 2\nmax_steps = 3\nout_dir = {:?}\n", out_dir.display().to_string()),
    );
    let run = host(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "data.prompt_key=extra_info.question",
        "--set",
        "data.response_key=extra_info.answer",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let metrics = read_metrics(&out_dir);
    assert_eq!(metrics.len(), 3);
    assert_eq!(metrics[0]["examples_by_set"]["math"], 2);
    assert!(metrics.iter().all(|m| m["loss"].as_f64().unwrap().is_finite()));
    assert!(out_dir.join("final/model.safetensors").is_file());

    // A missing column names the key and what the rows have.
    let run = host(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--overwrite",
        "--set",
        "data.prompt_key=extra_info.prompt",
    ]);
    assert_error(&run, 2, &["math.parquet:1", "missing key `extra_info.prompt`", "data_source, extra_info"]);
}

#[test]
fn malformed_parquet_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("broken.parquet");
    std::fs::write(&data, "PAR1 this is not parquet").unwrap();
    let run = train(dir.path(), data.to_str().unwrap(), "");
    assert_error(&run, 2, &["broken.parquet", "not a readable Parquet file"]);
}

#[test]
fn chat_rows_with_messages_train_through_the_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("chat.jsonl");
    let rows: Vec<_> = (0..4)
        .map(|i| {
            json!({"messages": [
                {"role": "system", "content": "You add numbers."},
                {"role": "user", "content": format!("What is {i}+1?")},
                {"role": "assistant", "content": format!("{}", i + 1)}
            ]})
        })
        .collect();
    write_jsonl(&data, &rows);
    let run = train(dir.path(), data.to_str().unwrap(), "");
    assert!(run.status.success(), "{}", stderr(&run));
    // TRL's rule: the loss is the full rendering minus the prompt rendered with the generation prompt,
    // i.e. the last turn "N<|im_end|>\n" (3 tokens), then the EOS (<|endoftext|>, which the turn does not
    // hold): 4 loss tokens per example, 2 examples per batch.
    let metrics = read_metrics(&dir.path().join("out"));
    assert!(metrics.iter().all(|m| m["loss_tokens"].as_u64() == Some(8)), "{metrics:?}");

    write_jsonl(&data, &[json!({"messages": [{"role": "user", "content": "hi"}]})]);
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let run = train(dir.path(), data.to_str().unwrap(), "");
    assert_error(&run, 2, &["chat.jsonl:1", "role \"assistant\""]);
}

#[test]
fn two_sets_with_fixed_weights_are_drawn_in_proportion() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alpha.jsonl"), dir.path().join("beta.jsonl"));
    let rows = |tag: &str| -> Vec<serde_json::Value> {
        (0..10).map(|i| json!({"prompt": format!("{tag} {i}: "), "response": format!("{i}")})).collect()
    };
    write_jsonl(&a, &rows("a"));
    write_jsonl(&b, &rows("b"));
    let out_dir = dir.path().join("out");
    let config = dir.path().join("mix.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = {:?}\n[data]\ntrain = [{:?}, {:?}]\n[mixer]\nplugin = \"fixed\"\n[mixer.params]\nweights = \"alpha=0.8,beta=0.2\"\n[optim]\nlr = 1e-4\n[train]\nbatch_size = 8\nmax_steps = 125\nout_dir = {:?}\n",
            fixture("qwen2-tiny").display().to_string(),
            a.display().to_string(),
            b.display().to_string(),
            out_dir.display().to_string()
        ),
    )
    .unwrap();
    let run = host(&["train", "--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let metrics = read_metrics(&out_dir);
    let count = |set: &str| metrics.iter().map(|m| m["examples_by_set"][set].as_u64().unwrap()).sum::<u64>();
    let (alpha, beta) = (count("alpha"), count("beta"));
    assert_eq!(alpha + beta, 1000);
    let share = alpha as f64 / 1000.0;
    assert!((share - 0.8).abs() < 0.03, "alpha drew {share} of 1000 examples");
    let tokens = |set: &str| metrics.iter().map(|m| m["tokens_by_set"][set].as_u64().unwrap()).sum::<u64>();
    assert!(tokens("alpha") > 3 * tokens("beta"));
}
