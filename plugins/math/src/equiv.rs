//! Normalising an answer and deciding whether two answers are equivalent.
//!
//! An answer is first cleaned of presentation: surrounding `$`, `\$`, LaTeX spacing (`\!`, `\,`, `\;`,
//! `\:`, `\quad`), `\left` / `\right`, `\displaystyle`, degree marks, percent signs, a trailing period
//! and a leading `x =`. It is then read as a number when it can be (integers, decimals, thousands
//! separators, `a/b`, `\frac{a}{b}`, `\frac12`, with a trailing unit word or `\text{...}` ignored);
//! otherwise it is compared as text with all whitespace removed.

use crate::extract::{brace_group, FRAC_COMMANDS};

/// Relative tolerance of numeric equality.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

/// How deeply signs, braces, fractions and tuples may nest before an answer stops being read as a
/// number or compared element-wise (a guard against stack exhaustion on adversarial text).
const MAX_DEPTH: usize = 32;

/// Unit words dropped after a number (`12 cm`, `5 dollars`); matched case-insensitively.
#[rustfmt::skip]
const UNITS: &[&str] = &[
    "dollar", "dollars", "cent", "cents", "usd", "euro", "euros", "mm", "cm", "m", "km", "meter",
    "meters", "metre", "metres", "in", "inch", "inches", "ft", "foot", "feet", "yard", "yards",
    "mile", "miles", "square", "sq", "cubic", "unit", "units", "g", "kg", "mg", "gram", "grams",
    "kilogram", "kilograms", "lb", "lbs", "pound", "pounds", "oz", "ounce", "ounces", "l", "ml",
    "liter", "liters", "litre", "litres", "gallon", "gallons", "s", "sec", "secs", "second",
    "seconds", "min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour", "hours", "day", "days",
    "week", "weeks", "month", "months", "year", "years", "degree", "degrees", "percent", "mph",
    "kph",
];

/// Commands removed outright (spacing and sizing).
const DROPPED: &[&str] = &[
    "\\displaystyle",
    "\\qquad",
    "\\quad",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "\\$",
    "\\%",
    "^\\circ",
    "^{\\circ}",
    "°",
    "$",
    "%",
];

/// Commands whose brace argument is kept and the command dropped.
const UNWRAPPED: &[&str] = &["\\text", "\\textbf", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox", "\\operatorname"];

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Number(f64),
    Text(String),
}

/// Removes the command `cmd` wherever it is not the prefix of a longer command (`\left` but not
/// `\leftarrow`).
fn drop_command(s: &str, cmd: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(cmd) {
        let after = &rest[i + cmd.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(cmd);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Replaces `\text{x}` (and the other [`UNWRAPPED`] commands) by `x`.
fn unwrap_text(s: &str) -> String {
    let mut s = s.to_string();
    for cmd in UNWRAPPED {
        loop {
            let found = s.match_indices(cmd).map(|(i, _)| i).find(|&i| s[i + cmd.len()..].starts_with('{'));
            let Some((inner, end)) = found.and_then(|i| brace_group(&s, i + cmd.len())) else {
                break;
            };
            let i = found.unwrap_or_default();
            s = format!("{}{}{}", &s[..i], inner, &s[end..]);
        }
    }
    s
}

/// Presentation removed: spacing, dollars, percent and degree signs, `\left`/`\right`, fraction
/// variants, trailing periods and a leading `x =`.
pub fn clean(answer: &str) -> String {
    let mut s = answer.replace('\u{2212}', "-").replace("{,}", ",");
    for cmd in FRAC_COMMANDS {
        s = s.replace(cmd, "\\frac");
    }
    for cmd in DROPPED {
        s = s.replace(cmd, "");
    }
    for cmd in ["\\left", "\\right"] {
        s = drop_command(&s, cmd);
    }
    let mut s = s.trim().trim_end_matches(['.', ' ']).trim().to_string();
    // A leading `x =` (one `=`, a short identifier on its left).
    if s.matches('=').count() == 1 {
        let (lhs, rhs) = s.split_once('=').unwrap_or_default();
        let lhs = lhs.trim();
        let identifier = lhs.len() <= 12
            && lhs.starts_with(|c: char| c.is_ascii_alphabetic() || c == '\\')
            && lhs.chars().all(|c| c.is_ascii_alphanumeric() || "_{}\\".contains(c));
        if identifier && !rhs.trim().is_empty() {
            s = rhs.trim().to_string();
        }
    }
    s
}

/// `s` with one trailing `\text{...}` / `\mbox{...}` removed, when something precedes it.
fn strip_trailing_text(s: &str) -> Option<String> {
    let i = ["\\text{", "\\mbox{"].iter().filter_map(|cmd| s.rfind(cmd)).max()?;
    let open = i + s[i..].find('{')?;
    let (_, end) = brace_group(s, open)?;
    (end == s.len() && !s[..i].trim().is_empty()).then(|| s[..i].trim().to_string())
}

/// `s` with trailing unit words removed (`12 cm`, `12cm`, `3 square units`, `4 m^2`).
fn strip_unit_words(s: &str) -> String {
    let is_unit = |w: &str| {
        let w = w.trim_end_matches(['^', '{', '}', '2', '3', '²', '³']);
        !w.is_empty() && UNITS.contains(&w.to_ascii_lowercase().as_str())
    };
    let mut words: Vec<&str> = s.split_whitespace().collect();
    while words.len() > 1 && is_unit(words[words.len() - 1]) {
        words.pop();
    }
    // A unit glued to the number: `12cm`.
    if let Some(last) = words.last_mut() {
        let number = last.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if !number.is_empty() && number.len() < last.len() && is_unit(&last[number.len()..]) {
            *last = number;
        }
    }
    words.join(" ")
}

/// A plain decimal number: digits with an optional fraction, optionally in thousands groups.
fn plain_value(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let groups: Vec<&str> = int.split(',').collect();
    let grouped = groups.len() == 1 || ((1..=3).contains(&groups[0].len()) && groups[1..].iter().all(|g| g.len() == 3));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let ok = grouped
        && groups.iter().all(|g| digits(g))
        && digits(frac)
        && (!int.is_empty() || !frac.is_empty())
        && (groups.len() == 1 || !groups[0].is_empty());
    if !ok {
        return None;
    }
    let plain = format!("0{}.{}0", groups.concat(), frac);
    plain.parse().ok()
}

/// The value of a numeric answer with whitespace removed: a signed plain number, `a/b`,
/// `\frac{a}{b}` or `\frac12`, possibly inside one pair of braces.
fn value(s: &str, depth: usize) -> Option<f64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let value = |t: &str| value(t, depth + 1);
    if let Some(rest) = s.strip_prefix('-') {
        return value(rest).map(|v| -v);
    }
    if let Some(rest) = s.strip_prefix('+') {
        return value(rest);
    }
    if let Some((inner, end)) = brace_group(s, 0) {
        return (end == s.len()).then(|| value(inner)).flatten();
    }
    if let Some(rest) = s.strip_prefix("\\frac") {
        let (num, den) = if let Some((num, end)) = brace_group(rest, 0) {
            let (den, end) = brace_group(rest, end)?;
            (end == rest.len()).then_some((value(num)?, value(den)?))?
        } else {
            let b = rest.as_bytes();
            (b.len() == 2 && b.iter().all(u8::is_ascii_digit))
                .then(|| (f64::from(b[0] - b'0'), f64::from(b[1] - b'0')))?
        };
        return (den != 0.0).then_some(num / den);
    }
    if let Some((num, den)) = s.split_once('/') {
        let (num, den) = (value(num)?, value(den)?);
        return (den != 0.0).then_some(num / den);
    }
    plain_value(s).filter(|v| v.is_finite())
}

/// The numeric value of a cleaned answer, trying it as is, without a trailing `\text{...}`, and
/// without trailing unit words.
fn numeric(cleaned: &str) -> Option<f64> {
    let mut candidates = vec![cleaned.to_string()];
    candidates.extend(strip_trailing_text(cleaned));
    candidates.into_iter().find_map(|c| {
        let c = unwrap_text(&c);
        let compact = |t: &str| t.split_whitespace().collect::<String>();
        value(&compact(&c), 0).or_else(|| value(&compact(&strip_unit_words(&c)), 0))
    })
}

/// Parses an answer (already extracted from its text) into a number or canonical text.
pub fn parse(answer: &str) -> Answer {
    let cleaned = clean(answer);
    match numeric(&cleaned) {
        Some(v) => Answer::Number(v),
        None => Answer::Text(unwrap_text(&cleaned).split_whitespace().collect()),
    }
}

/// Whether `a` and `b` are within [`RELATIVE_TOLERANCE`] of each other.
pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

/// The parts of a bracketed tuple or interval `(a, b)`: its brackets and its top-level
/// comma-separated parts, when there are at least two.
fn tuple_parts(s: &str) -> Option<(char, char, Vec<&str>)> {
    let open = s.chars().next().filter(|c| "([{".contains(*c))?;
    let close = s.chars().last().filter(|c| ")]}".contains(*c))?;
    let inner = &s[1..s.len() - 1];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    (parts.len() >= 2).then_some((open, close, parts))
}

/// Whether two extracted answers are equivalent: numerically within tolerance, as text after
/// normalisation, or element-wise for tuples and intervals.
pub fn equivalent(a: &str, b: &str) -> bool {
    equivalent_at(a, b, 0)
}

fn equivalent_at(a: &str, b: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match (parse(a), parse(b)) {
        (Answer::Number(x), Answer::Number(y)) => close(x, y),
        (Answer::Text(x), Answer::Text(y)) => {
            if x.is_empty() || y.is_empty() {
                return false;
            }
            if x == y {
                return true;
            }
            match (tuple_parts(&x), tuple_parts(&y)) {
                (Some((o1, c1, p1)), Some((o2, c2, p2))) => {
                    o1 == o2
                        && c1 == c2
                        && p1.len() == p2.len()
                        && p1.iter().zip(&p2).all(|(p, q)| equivalent_at(p, q, depth + 1))
                }
                _ => false,
            }
        }
        _ => false,
    }
}
