//! Chat templates as the Hugging Face hub has them, rendered as transformers renders them.
//!
//! A model directory carries its template in `chat_template.jinja` (transformers 5, most hub repositories
//! since 2024), else in tokenizer_config.json's `chat_template`: a string, or a list of `{name, template}`
//! of which the one named `default` is used. Rendering follows transformers' `render_jinja_template`: a
//! Jinja environment with `trim_blocks` and `lstrip_blocks`, loop controls, Python's string and dict
//! methods (`.strip()`, `.items()`, …), `raise_exception(msg)`, `strftime_now(format)`, a `tojson` that
//! writes Python's `json.dumps` (no HTML escaping, `", "` and `": "` separators, keys in their order), and
//! the tokenizer's special tokens (`bos_token`, `eos_token`, …) as variables beside `messages`, `tools`,
//! `documents` and `add_generation_prompt`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};

/// The name the template is registered under (no extension, so nothing is auto-escaped).
const TEMPLATE_NAME: &str = "chat_template";

/// Template instructions one rendering may execute: hub templates take a few thousand per conversation;
/// a runaway loop stops here with an error instead of hanging the run.
const RENDER_FUEL: u64 = 20_000_000;

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from, for error messages (`.../chat_template.jinja`, or
    /// `.../tokenizer_config.json: chat_template`).
    origin: String,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token`, … as their text.
    special_tokens: Map<String, Value>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// Where a model directory's template lives, in transformers' order of precedence.
pub fn find_template(dir: &Path, tokenizer_config: &Value) -> Result<Option<(String, String)>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let source = std::fs::read_to_string(&jinja).with_context(|| format!("{}: cannot read", jinja.display()))?;
        return Ok(Some((source, jinja.display().to_string())));
    }
    let config_path = dir.join("tokenizer_config.json");
    let origin = format!("{}: chat_template", config_path.display());
    match &tokenizer_config["chat_template"] {
        Value::Null => Ok(None),
        Value::String(source) => Ok(Some((source.clone(), origin))),
        Value::Array(named) => {
            let mut names = Vec::new();
            for entry in named {
                let name = entry.get("name").and_then(Value::as_str);
                let template = entry.get("template").and_then(Value::as_str);
                let (Some(name), Some(template)) = (name, template) else {
                    bail!("{origin}: each entry of a list of templates needs a string `name` and `template`");
                };
                if name == "default" {
                    return Ok(Some((template.to_string(), format!("{origin} (the template named default)"))));
                }
                names.push(name.to_string());
            }
            bail!("{origin}: a list of templates without one named `default` (it has: {})", names.join(", "))
        }
        other => bail!("{origin}: expected a string or a list of named templates, got {other}"),
    }
}

impl ChatTemplate {
    /// The template of a model directory, if it has one; `tokenizer_config` is its parsed
    /// tokenizer_config.json (`Value::Null` when absent).
    pub fn from_model_dir(dir: &Path, tokenizer_config: &Value) -> Result<Option<Self>> {
        let Some((source, origin)) = find_template(dir, tokenizer_config)? else { return Ok(None) };
        Self::new(source, origin, special_tokens(tokenizer_config)).map(Some)
    }

    /// Compiles `source`; `origin` names it in errors.
    pub fn new(source: String, origin: String, special_tokens: Map<String, Value>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Jinja2 (and so transformers) drops one trailing newline of the template source.
        env.set_keep_trailing_newline(false);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| anyhow!("{origin}: does not parse: {}", describe(&e)))?;
        Ok(Self { env, origin, special_tokens })
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `messages` (`{role, content, …}` objects) through the template; with `add_generation_prompt` the
    /// assistant's turn is opened at the end.
    pub fn render(&self, messages: &[Value], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &Map::new())
    }

    /// [`render`](Self::render) with more template variables (`tools`, `date_string`, …), as the keyword
    /// arguments of transformers' `apply_chat_template`; they override the special tokens.
    pub fn render_with(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
        extra: &Map<String, Value>,
    ) -> Result<String> {
        let mut context = self.special_tokens.clone();
        context.insert("messages".into(), Value::Array(messages.to_vec()));
        context.insert("tools".into(), Value::Null);
        context.insert("documents".into(), Value::Null);
        context.insert("add_generation_prompt".into(), Value::Bool(add_generation_prompt));
        for (key, value) in extra {
            context.insert(key.clone(), value.clone());
        }
        let template =
            self.env.get_template(TEMPLATE_NAME).map_err(|e| anyhow!("{}: {}", self.origin, describe(&e)))?;
        template
            .render(JinjaValue::from_serialize(&context))
            .map_err(|e| anyhow!("{}: failed to render: {}", self.origin, describe(&e)))
    }
}

/// The special tokens of tokenizer_config.json as text, under the names transformers passes them
/// (`bos_token`, `eos_token`, `unk_token`, `pad_token`, `sep_token`, `cls_token`, `mask_token`, and
/// `additional_special_tokens`).
pub fn special_tokens(tokenizer_config: &Value) -> Map<String, Value> {
    let text = |value: &Value| match value {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(|s| Value::String(s.to_string())),
        _ => None,
    };
    let mut tokens = Map::new();
    for name in ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] {
        if let Some(value) = text(&tokenizer_config[name]) {
            tokens.insert(name.to_string(), value);
        }
    }
    if let Value::Array(list) = &tokenizer_config["additional_special_tokens"] {
        tokens.insert("additional_special_tokens".into(), Value::Array(list.iter().filter_map(text).collect()));
    }
    tokens
}

/// A template error with its cause and, when known, the template line.
fn describe(error: &minijinja::Error) -> String {
    let mut text = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    if let Some(line) = error.line() {
        text.push_str(&format!(" (template line {line})"));
    }
    text
}

/// `raise_exception(message)`: the template refuses its input (as transformers' `TemplateError`).
fn raise_exception(message: String) -> Result<JinjaValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("the template raised: {message}")))
}

/// `strftime_now(format)`: the local time formatted with Python's `strftime` codes.
fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: bad format {format:?}"))
    })?;
    Ok(out)
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, with those keyword arguments.
fn tojson(value: &JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, minijinja::Error> {
    let indent: Option<JinjaValue> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<JinjaValue> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(usize::try_from(v)?)),
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.to_string()).collect();
            let [item, key] = parts.as_slice() else {
                return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair"));
            };
            (item.clone(), key.clone())
        }
        // Python's defaults: ", " without indent, "," with it.
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = PyJson {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(JinjaValue::from_safe_string(out))
}

/// Python's `json.dumps` layout.
struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl PyJson {
    fn write(&self, value: &Value, depth: usize, out: &mut String) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => out.push_str(&i.to_string()),
                (_, Some(u), _) => out.push_str(&u.to_string()),
                (_, _, Some(f)) => out.push_str(&python_float(f)),
                _ => out.push_str(&n.to_string()),
            },
            Value::String(s) => self.write_string(s, out),
            Value::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            Value::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write_string(key, out);
                    out.push_str(&self.key_sep);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }

    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    }

    fn write_string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A float as Python's `repr` writes it: the shortest digits that round-trip, in positional notation
/// for exponents -4 to 15 (with `.0` when integral), else `d.ddde+XX`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let scientific = format!("{f:e}"); // shortest round-trip digits: "-1.25e-7"
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let positional = format!("{f}");
        if positional.contains('.') {
            positional
        } else {
            format!("{positional}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A model directory's tokenizer_config.json, or `Value::Null` when it has none.
pub fn read_tokenizer_config(dir: &Path) -> Result<(PathBuf, Value)> {
    let path = dir.join("tokenizer_config.json");
    let value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?,
        Err(_) => Value::Null,
    };
    Ok((path, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(source: &str) -> ChatTemplate {
        let tokens = special_tokens(&json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}}));
        ChatTemplate::new(source.to_string(), "test".into(), tokens).unwrap()
    }

    #[test]
    fn blocks_are_trimmed_and_stripped_as_transformers_does() {
        let t = template("{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n");
        let out = t.render(&[json!({"role": "user", "content": "a"}), json!({"role": "user", "content": "b"})], false);
        assert_eq!(out.unwrap(), "[a]\n[b]\n");
    }

    #[test]
    fn special_tokens_python_methods_and_exceptions() {
        let t = template("{{ bos_token }}{{ messages[0]['content'].strip().upper() }}{{ eos_token }}");
        assert_eq!(t.render(&[json!({"role": "user", "content": "  hi "})], false).unwrap(), "<s>HI</s>");
        let t = template("{{ raise_exception('only user turns') }}");
        let error = t.render(&[], false).unwrap_err().to_string();
        assert!(error.contains("only user turns"), "{error}");
    }

    #[test]
    fn tojson_writes_python_json_dumps() {
        let t = template("{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}");
        let message = json!({"role": "tool", "content": "é \"q\" <b>", "n": [1, 2.5, 1e-7, 100.0]});
        let out = t.render(&[message], false).unwrap();
        // Keys in their order (as Python's dicts keep them); the layout is what json.dumps writes.
        let compact = r#"{"role": "tool", "content": "é \"q\" <b>", "n": [1, 2.5, 1e-07, 100.0]}"#;
        let indented = "{\n  \"role\": \"tool\",\n  \"content\": \"é \\\"q\\\" <b>\",\n  \"n\": [\n    1,\n    2.5,\n    1e-07,\n    100.0\n  ]\n}";
        assert_eq!(out, format!("{compact}|{indented}"));
    }

    #[test]
    fn a_runaway_template_stops_with_an_error() {
        let t = template("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
        let error = t.render(&[], false).unwrap_err().to_string();
        assert!(error.contains("fuel"), "{error}");
    }

    #[test]
    fn python_floats() {
        for (f, text) in [(0.1, "0.1"), (1e-5, "1e-05"), (1e16, "1e+16"), (123.0, "123.0"), (1.5e-4, "0.00015")] {
            assert_eq!(python_float(f), text);
        }
    }

    #[test]
    fn named_templates_pick_default() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]});
        let (source, origin) = find_template(dir.path(), &config).unwrap().unwrap();
        assert_eq!(source, "D");
        assert!(origin.contains("default"));
        let config = json!({"chat_template": [{"name": "tool_use", "template": "T"}]});
        let error = find_template(dir.path(), &config).unwrap_err().to_string();
        assert!(error.contains("tool_use"), "{error}");
        // chat_template.jinja wins over tokenizer_config.json.
        std::fs::write(dir.path().join("chat_template.jinja"), "J").unwrap();
        assert_eq!(find_template(dir.path(), &config).unwrap().unwrap().0, "J");
    }
}
