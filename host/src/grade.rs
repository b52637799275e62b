//! Grading generations made anywhere (vLLM, llama.cpp, an API, an earlier `host eval`) with an
//! evaluator plugin, without loading a model.
//!
//! A row holds the generations under one key (a list of strings, or one string; by default
//! `generations`, else `generation`), the reference under another (a string, or a JSON number read as
//! its text), and optionally the prompt and `finish_reasons`. Rows are read, scored and written one
//! at a time, so memory stays one row plus the scores whatever the file's size; the output lines and
//! the aggregate are those of `host eval` ([`ExampleResult::to_json`]).

use std::io::Write;

use anyhow::{anyhow, Result};
use plugin_api::ExampleScores;
use serde_json::Value;

use crate::data::{lookup, Rows};
use crate::eval::{ExampleResult, Finish};
use crate::plugins::EvaluatorPlugin;

/// Where a row keeps what is graded; keys may be dotted paths (`output.text`).
#[derive(Clone, Debug)]
pub struct GradeKeys {
    /// The generations: a list of strings or one string.
    pub generations: String,
    pub reference: String,
    /// The prompt, passed to the evaluator when present.
    pub prompt: String,
}

/// The key read when the generations key is the default and a row lacks it.
const SINGLE_GENERATION_KEY: &str = "generation";

impl Default for GradeKeys {
    fn default() -> Self {
        Self { generations: "generations".into(), reference: "reference".into(), prompt: "prompt".into() }
    }
}

/// What a grading run produced, besides its lines.
#[derive(Debug)]
pub struct GradeReport {
    pub examples: usize,
    pub generations: usize,
    /// The evaluator's aggregate, in its order.
    pub aggregate: Vec<(String, f64)>,
}

/// One row's graded fields.
struct Row {
    prompt: String,
    reference: String,
    generations: Vec<String>,
    finishes: Vec<Finish>,
}

fn keys_of(row: &Value) -> String {
    row.as_object().map(|o| o.keys().map(String::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// The graded fields of `row`, or a one-line reason it cannot be graded.
fn read_row(row: &Value, keys: &GradeKeys) -> Result<Row, String> {
    if !row.is_object() {
        return Err(format!("expected a JSON object, got {row}"));
    }
    let (key, value) = match lookup(row, &keys.generations) {
        Some(value) => (keys.generations.as_str(), value),
        None if keys.generations == GradeKeys::default().generations => match lookup(row, SINGLE_GENERATION_KEY) {
            Some(value) => (SINGLE_GENERATION_KEY, value),
            None => {
                return Err(format!(
                    "no `generations` (a list of strings) or `generation` (a string) (the row has: {})",
                    keys_of(row)
                ))
            }
        },
        None => return Err(format!("missing key `{}` (the row has: {})", keys.generations, keys_of(row))),
    };
    let generations = match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(format!("`{key}` is an empty list; nothing to grade"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(format!("`{key}[{i}]` must be a string, got {other}")),
                })
                .collect::<Result<_, _>>()?
        }
        other => return Err(format!("`{key}` must be a list of strings or a string, got {other}")),
    };
    let reference = match lookup(row, &keys.reference) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => return Err(format!("`{}` must be a string, got {other}", keys.reference)),
        None => return Err(format!("missing key `{}` (the row has: {})", keys.reference, keys_of(row))),
    };
    if reference.trim().is_empty() {
        return Err(format!("empty reference under `{}`", keys.reference));
    }
    let prompt = match lookup(row, &keys.prompt) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => return Err(format!("`{}` must be a string, got {other}", keys.prompt)),
        None => String::new(),
    };
    // Finish reasons are carried over only when they name one known reason per generation.
    let finishes = lookup(row, "finish_reasons")
        .and_then(Value::as_array)
        .filter(|list| list.len() == generations.len())
        .and_then(|list| list.iter().map(|f| f.as_str().and_then(Finish::parse)).collect::<Option<Vec<_>>>())
        .unwrap_or_default();
    Ok(Row { prompt, reference, generations, finishes })
}

/// Grades every row of `rows` (from the file shown as `shown`), writing one output line per row to
/// `out`; the aggregate is the evaluator's over all rows.
pub fn grade(
    rows: Rows,
    shown: &str,
    keys: &GradeKeys,
    evaluator: &EvaluatorPlugin,
    out: &mut impl Write,
    mut progress: impl FnMut(usize),
) -> Result<GradeReport> {
    let unit = rows.unit;
    let mut all_scores: Vec<ExampleScores> = Vec::new();
    let mut generations = 0;
    for row in rows {
        let (n, row) = row?;
        let at = |message: String| anyhow!("{shown}:{n}: {message}");
        let graded = read_row(&row, keys).map_err(at)?;
        let scores = evaluator
            .score(&graded.prompt, &graded.generations, &graded.reference, &row.to_string())
            .map_err(|e| anyhow!("{shown}:{n}: {e}"))?;
        let result = ExampleResult {
            index: all_scores.len(),
            prompt: graded.prompt,
            reference: graded.reference,
            scores: scores
                .per_generation
                .iter()
                .map(|generation| generation.iter().map(|s| (s.name.to_string(), s.value)).collect())
                .collect(),
            generations: graded.generations,
            finishes: graded.finishes,
        };
        generations += result.generations.len();
        writeln!(out, "{}", result.to_json())?;
        all_scores.push(scores);
        progress(all_scores.len());
    }
    if all_scores.is_empty() {
        return Err(anyhow!("{shown}: no rows to grade (every {unit} is empty)"));
    }
    let aggregate = evaluator.aggregate(&all_scores)?;
    Ok(GradeReport { examples: all_scores.len(), generations, aggregate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(row: Value) -> String {
        read_row(&row, &GradeKeys::default()).err().unwrap_or_default()
    }

    #[test]
    fn rows_read_lists_single_strings_and_numeric_references() {
        let row = read_row(&json!({"generations": ["a", "b"], "reference": 42}), &GradeKeys::default()).unwrap();
        assert_eq!((row.generations, row.reference.as_str()), (vec!["a".to_string(), "b".to_string()], "42"));
        let row =
            read_row(&json!({"generation": "a", "reference": "7", "prompt": "p"}), &GradeKeys::default()).unwrap();
        assert_eq!((row.generations, row.prompt.as_str()), (vec!["a".to_string()], "p"));
        let keys = GradeKeys { generations: "out.text".into(), reference: "gold".into(), prompt: "q".into() };
        let row = read_row(&json!({"out": {"text": ["x"]}, "gold": "1"}), &keys).unwrap();
        assert_eq!(row.generations, vec!["x".to_string()]);
        let row = read_row(
            &json!({"generations": ["a", "b"], "reference": "1", "finish_reasons": ["stop", "length"]}),
            &GradeKeys::default(),
        )
        .unwrap();
        assert_eq!(row.finishes, vec![Finish::Stop, Finish::Length]);
        let row = read_row(
            &json!({"generations": ["a"], "reference": "1", "finish_reasons": ["abort"]}),
            &GradeKeys::default(),
        )
        .unwrap();
        assert!(row.finishes.is_empty(), "an unknown reason is dropped, not guessed");
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        assert!(
            reason(json!({"reference": "1", "output": "x"})).contains("no `generations`"),
            "the row has: reference, output"
        );
        assert!(reason(json!({"reference": "1", "output": "x"})).contains("output"));
        assert_eq!(reason(json!({"generations": "x", "reference": "  "})), "empty reference under `reference`");
        assert_eq!(
            reason(json!({"generations": [], "reference": "1"})),
            "`generations` is an empty list; nothing to grade"
        );
        assert_eq!(
            reason(json!({"generations": ["a", 3], "reference": "1"})),
            "`generations[1]` must be a string, got 3"
        );
        assert_eq!(
            reason(json!({"generations": {"a": 1}, "reference": "1"})),
            "`generations` must be a list of strings or a string, got {\"a\":1}"
        );
        assert!(reason(json!({"generations": ["a"]})).starts_with("missing key `reference`"));
        assert_eq!(
            reason(json!({"generations": ["a"], "reference": ["1"]})),
            "`reference` must be a string, got [\"1\"]"
        );
        assert_eq!(reason(json!([1, 2])), "expected a JSON object, got [1,2]");
        let custom = GradeKeys { generations: "outputs".into(), ..GradeKeys::default() };
        let message = read_row(&json!({"generation": "a", "reference": "1"}), &custom).err().unwrap();
        assert!(message.starts_with("missing key `outputs`"), "a custom key has no fallback: {message}");
    }
}
