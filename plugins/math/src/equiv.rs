//! Deciding whether two extracted answers are equivalent.
//!
//! An answer is cleaned of presentation (surrounding `$`, `\$`, LaTeX spacing, `\left`/`\right`,
//! `\displaystyle`, degree marks, percent signs, a trailing period, a trailing unit after a number:
//! `12 cm`, `5\text{ dollars}`, `4\text{ cm}^2`; unit words after an expression); `\mathbb{R}` becomes
//! `(-\infty,\infty)`, `{a \choose b}` becomes `\binom{a}{b}` and `1 \text{ and } 2` the list `1, 2`;
//! then the answer is read by [`crate::parse`] into its structure.
//! `x = 5` is read as `5` (a lone variable on the left), a one-variable inequality as its interval
//! (`x > 3` is `(3, \infty)`, `1 < x \le 2` is `(1, 2]`), and `a ± b` as the pair `a + b, a - b`.
//!
//! Two answers are then equivalent when
//! - two expressions have the same value: exactly when both are rational, within a relative
//!   1e-9 otherwise, and at fixed random points when they have variables ([`crate::expr`]);
//! - tuples and intervals have the same brackets and equivalent items in order; matrices the same
//!   shape and equivalent entries;
//! - sets, comma-separated lists, unions and `±` pairs have equivalent items in any order;
//! - relations have the same relations between equivalent sides (read either way round);
//! - text answers are equal once `\text`-like wrappers, whitespace and case are dropped.

use crate::expr::{same_value, Expr};
use crate::extract::brace_group;
use crate::parse::{self, Answer, Rel};

/// Longest answer read as mathematics; a longer one is compared as text (bounded work whatever the
/// generation).
const MAX_ANSWER_BYTES: usize = 4096;

/// Deepest nesting of answer structures compared.
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
    "kph", "people", "students", "apples", "marbles", "ways", "times",
];

/// Removed outright (spacing, sizing, and marks that do not change the value).
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
    "\\circ",
    "\\degree",
    "°",
    "$",
    "%",
];

/// Commands whose brace argument is kept and the command dropped.
const WRAPPERS: &[&str] = &[
    "\\text",
    "\\textbf",
    "\\textrm",
    "\\textit",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\boldsymbol",
    "\\mbox",
    "\\operatorname",
];

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

/// The start of the first wrapper command (`\text{`, `\mathrm {`, ...) at or after `from`, with the
/// byte index of its opening brace.
fn find_wrapper(s: &str, from: usize) -> Option<(usize, usize)> {
    WRAPPERS
        .iter()
        .filter_map(|cmd| {
            s[from..].match_indices(cmd).map(|(i, _)| from + i).find_map(|i| {
                let after = &s[i + cmd.len()..];
                let brace = after.len() - after.trim_start().len();
                after.trim_start().starts_with('{').then_some((i, i + cmd.len() + brace))
            })
        })
        .min()
}

/// The start of the last wrapper command in `s`, with the byte index of its opening brace.
fn last_wrapper(s: &str) -> Option<(usize, usize)> {
    WRAPPERS
        .iter()
        .filter_map(|cmd| {
            s.rmatch_indices(cmd).find_map(|(i, _)| {
                let after = &s[i + cmd.len()..];
                let brace = after.len() - after.trim_start().len();
                after.trim_start().starts_with('{').then_some((i, i + cmd.len() + brace))
            })
        })
        .max()
}

/// Replaces `\text{x}` (and the other [`WRAPPERS`]) by `x`.
fn unwrap_text(s: &str) -> String {
    let mut s = s.to_string();
    let mut from = 0;
    while let Some((i, open)) = find_wrapper(&s, from) {
        let Some((inner, end)) = brace_group(&s, open) else { break };
        let inner = inner.to_string();
        s = format!("{}{}{}", &s[..i], inner, &s[end..]);
        from = i;
    }
    s
}

/// Presentation removed: spacing, dollars, percent and degree signs, `\left`/`\right` and a trailing
/// period.
pub fn clean(answer: &str) -> String {
    // A matrix row break `\\` must survive dropping the spacing `\ ` that its second half starts.
    const ROW_BREAK: &str = "\u{0}";
    let mut s = answer.replace('\u{2212}', "-").replace("{,}", ",").replace("\\\\", ROW_BREAK);
    for cmd in DROPPED {
        s = s.replace(cmd, "");
    }
    let mut s = s.replace(ROW_BREAK, "\\\\");
    for cmd in ["\\left", "\\right", "\\big", "\\Big", "\\bigg", "\\Bigg"] {
        s = drop_command(&s, cmd);
    }
    #[rustfmt::skip]
    let symbols = [
        ("\\lvert", "|"), ("\\rvert", "|"), ("\\vert", "|"), ("\\lbrace", "\\{"), ("\\rbrace", "\\}"),
        ("\\mathbb{R}", "(-\\infty,\\infty)"), ("\\mathbb R", "(-\\infty,\\infty)"),
        // A list written out in words: `1 \text{ and } 2`.
        ("\\text{ and }", ","), ("\\text{and}", ","), ("\\mbox{ and }", ","),
    ];
    for (from, to) in symbols {
        s = s.replace(from, to);
    }
    if s.contains("\\choose") {
        s = rewrite_choose(&s);
    }
    let s = s.trim().trim_end_matches(['.', ' ']).trim();
    s.to_string()
}

/// Whether `s` ends in a number (after optional whitespace).
fn ends_in_number(s: &str) -> bool {
    s.trim_end().ends_with(|c: char| c.is_ascii_digit())
}

/// Whether `word` (perhaps squared or cubed) is in [`UNITS`].
fn is_unit(word: &str) -> bool {
    let word = word.trim_end_matches(['^', '{', '}', '2', '3', '²', '³']);
    !word.is_empty() && UNITS.contains(&word.to_ascii_lowercase().as_str())
}

/// `{a \choose b}` as `\binom{a}{b}` (the brace group around `\choose`, else the whole answer).
fn rewrite_choose(s: &str) -> String {
    let mut s = s.to_string();
    while let Some(at) = s.find("\\choose") {
        let mut depth = 0;
        let open = s[..at].char_indices().rev().find_map(|(i, c)| {
            match c {
                '}' => depth += 1,
                '{' if depth == 0 => return Some(i),
                '{' => depth -= 1,
                _ => {}
            }
            None
        });
        let (start, end) = match open.and_then(|i| brace_group(&s, i).map(|(_, end)| (i, end))) {
            Some((i, end)) => (i, end),
            None => (0, s.len()),
        };
        let inner_start = if open.is_some() { start + 1 } else { start };
        let inner_end = if open.is_some() { end - 1 } else { end };
        let (top, bottom) = (&s[inner_start..at], &s[at + "\\choose".len()..inner_end]);
        s = format!("{}\\binom{{{}}}{{{}}}{}", &s[..start], top.trim(), bottom.trim(), &s[end..]);
    }
    s
}

/// `s` without a trailing unit after a number: `\text{...}` or `\mbox{...}` (optionally squared or
/// cubed), or unit words (`12 cm`, `12cm`, `3 square units`).
fn strip_units(s: &str) -> String {
    let s = s.trim();
    // A trailing wrapper after a number, perhaps squared or cubed: `5\text{ dollars}`, `4\text{ cm}^2`.
    if let Some((i, open)) = last_wrapper(s) {
        let after = brace_group(s, open).map(|(_, end)| s[end..].trim());
        let power = after.is_some_and(|a| ["", "^2", "^{2}", "^3", "^{3}"].contains(&a));
        let before = s[..i].trim();
        // After a number any words are a unit; after an expression only unit words (`36\pi\text{ cubic units}`).
        let units_only = || brace_group(s, open).is_some_and(|(inner, _)| inner.split_whitespace().all(is_unit));
        if power && !before.is_empty() && (ends_in_number(before) || units_only()) {
            return before.to_string();
        }
    }
    let mut words: Vec<&str> = s.split_whitespace().collect();
    while words.len() > 1 && is_unit(words[words.len() - 1]) && ends_in_number(&words[..words.len() - 1].join(" ")) {
        words.pop();
    }
    if let Some(last) = words.last_mut() {
        let number = last.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if ends_in_number(number) && number.len() < last.len() && is_unit(&last[number.len()..]) {
            *last = number;
        }
    }
    words.join(" ")
}

/// Whether the answer is a word (or words) rather than mathematics: a `\text`-like wrapper holding a
/// word of two or more letters, or a bare run of three letters that is not a command.
fn is_text(s: &str) -> bool {
    let has_word = |t: &str| {
        let mut run = 0;
        t.chars().any(|c| {
            run = if c.is_alphabetic() { run + 1 } else { 0 };
            run >= 2
        })
    };
    let mut from = 0;
    while let Some((_, open)) = find_wrapper(s, from) {
        match brace_group(s, open) {
            Some((inner, end)) => {
                if has_word(inner) {
                    return true;
                }
                from = end;
            }
            None => break,
        }
    }
    // Bare words: letter runs not preceded by a backslash (nor environment names: `\begin{pmatrix}`).
    let mut s = s.to_string();
    for command in ["\\begin{", "\\end{"] {
        while let Some(i) = s.find(command) {
            let close = s[i..].find('}').map_or(s.len(), |j| i + j + 1);
            s.replace_range(i..close, " ");
        }
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i - start >= 3 {
            return true;
        }
        i = i.max(start + 1);
    }
    false
}

/// The normalised text of a text answer: wrappers dropped, whitespace removed, lower case.
fn text_form(s: &str) -> String {
    unwrap_text(s).chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// Whether an extracted answer reads as words rather than mathematics.
pub fn is_prose(answer: &str) -> bool {
    matches!(parse_answer(answer), Answer::Text(_))
}

/// Reads an extracted answer into its structure ([`Answer::Text`] when it is not mathematics).
pub fn parse_answer(answer: &str) -> Answer {
    let cleaned = clean(answer);
    if cleaned.len() > MAX_ANSWER_BYTES {
        return Answer::Text(text_form(&cleaned));
    }
    let stripped = strip_units(&cleaned);
    if is_text(&stripped) {
        return Answer::Text(text_form(&stripped));
    }
    let unwrapped = unwrap_text(&stripped);
    match parse::lex(&unwrapped).and_then(|toks| parse::answer(&toks)) {
        Some(answer) => normalise(answer),
        None => Answer::Text(text_form(&stripped)),
    }
}

/// `x = 5` as `5`, one-variable inequalities as intervals, `±` as the pair it stands for; applied
/// through lists, sets and tuples.
fn normalise(answer: Answer) -> Answer {
    match answer {
        Answer::Relation { mut sides, rels } => {
            if rels == [Rel::Eq] && matches!(sides[0], Expr::Var(_)) && !matches!(sides[1], Expr::Var(_)) {
                return normalise(Answer::Expr(sides.remove(1)));
            }
            interval(&sides, &rels).unwrap_or(Answer::Relation { sides, rels })
        }
        Answer::Expr(expr) => match expr.branches() {
            Some(branches) if branches.len() > 1 => Answer::List(branches.into_iter().map(Answer::Expr).collect()),
            _ => Answer::Expr(expr),
        },
        Answer::List(items) => Answer::List(items.into_iter().map(normalise).collect()),
        Answer::Set(items) => Answer::Set(items.into_iter().map(normalise).collect()),
        Answer::Union(items) => Answer::Union(items.into_iter().map(normalise).collect()),
        Answer::Tuple { open, close, items } => {
            Answer::Tuple { open, close, items: items.into_iter().map(normalise).collect() }
        }
        other => other,
    }
}

/// The interval a one-variable inequality describes: `x > a`, `a \le x`, `a < x < b`.
fn interval(sides: &[Expr], rels: &[Rel]) -> Option<Answer> {
    let is_var = |e: &Expr| matches!(e, Expr::Var(_));
    let strict = |rel: Rel| matches!(rel, Rel::Lt | Rel::Gt);
    let bound = |e: &Expr| {
        let mut names = Default::default();
        e.variables(&mut names);
        names.is_empty().then(|| Answer::Expr(e.clone()))
    };
    let infinity =
        |positive: bool| Answer::Expr(if positive { Expr::Infinity } else { Expr::Neg(Expr::Infinity.boxed()) });
    let (low, high, open, close) = match (sides, rels) {
        // `x < a`, `x > a` and their mirror images.
        ([x, a], [rel]) | ([a, x], [rel]) if is_var(x) && !is_var(a) => {
            let rel = if is_var(&sides[0]) { *rel } else { rel.flipped() };
            let bound_value = bound(a)?;
            match rel {
                Rel::Lt | Rel::Le => (infinity(false), bound_value, '(', if strict(rel) { ')' } else { ']' }),
                Rel::Gt | Rel::Ge => (bound_value, infinity(true), if strict(rel) { '(' } else { '[' }, ')'),
                _ => return None,
            }
        }
        ([a, x, b], [r1, r2]) if is_var(x) => {
            let lower = |rel: Rel| matches!(rel, Rel::Lt | Rel::Le);
            if lower(*r1) && lower(*r2) {
                (bound(a)?, bound(b)?, if strict(*r1) { '(' } else { '[' }, if strict(*r2) { ')' } else { ']' })
            } else if !lower(*r1) && !lower(*r2) && !matches!(r1, Rel::Eq | Rel::Ne) && !matches!(r2, Rel::Eq | Rel::Ne)
            {
                (bound(b)?, bound(a)?, if strict(*r2) { '(' } else { '[' }, if strict(*r1) { ')' } else { ']' })
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Answer::Tuple { open, close, items: vec![low, high] })
}

/// Whether two extracted answers are equivalent (see the module documentation).
pub fn equivalent(a: &str, b: &str) -> bool {
    let (a, b) = (parse_answer(a), parse_answer(b));
    if matches!(&a, Answer::Text(t) if t.is_empty()) || matches!(&b, Answer::Text(t) if t.is_empty()) {
        return false;
    }
    same_answer(&a, &b, 0)
}

/// The items of an answer compared without order, when it is one: a list, set or union.
fn unordered(answer: &Answer) -> Option<&[Answer]> {
    match answer {
        Answer::List(items) | Answer::Set(items) | Answer::Union(items) => Some(items),
        _ => None,
    }
}

fn same_answer(a: &Answer, b: &Answer, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let same = |x: &Answer, y: &Answer| same_answer(x, y, depth + 1);
    match (a, b) {
        (Answer::Expr(x), Answer::Expr(y)) => same_value(x, y),
        (Answer::Text(x), Answer::Text(y)) => x == y,
        (Answer::Tuple { open: o1, close: c1, items: p }, Answer::Tuple { open: o2, close: c2, items: q }) => {
            o1 == o2 && c1 == c2 && p.len() == q.len() && p.iter().zip(q).all(|(x, y)| same(x, y))
        }
        (Answer::Matrix(p), Answer::Matrix(q)) => {
            p.len() == q.len()
                && p.iter().zip(q).all(|(r, s)| r.len() == s.len() && r.iter().zip(s).all(|(x, y)| same(x, y)))
        }
        (Answer::Relation { sides: s1, rels: r1 }, Answer::Relation { sides: s2, rels: r2 }) => {
            let forward = r1 == r2 && s1.iter().zip(s2).all(|(x, y)| same_value(x, y));
            let flipped: Vec<Rel> = r2.iter().rev().map(|r| r.flipped()).collect();
            let backward = *r1 == flipped && s1.iter().zip(s2.iter().rev()).all(|(x, y)| same_value(x, y));
            s1.len() == s2.len() && (forward || backward)
        }
        _ => match (unordered(a), unordered(b)) {
            (Some(p), Some(q)) => same_items(p, q, depth),
            _ => false,
        },
    }
}

/// Whether every item of `p` matches a distinct item of `q` and none is left over.
fn same_items(p: &[Answer], q: &[Answer], depth: usize) -> bool {
    if p.len() != q.len() {
        return false;
    }
    let mut used = vec![false; q.len()];
    p.iter().all(|x| {
        let found = (0..q.len()).find(|&j| !used[j] && same_answer(x, &q[j], depth + 1));
        found.map(|j| used[j] = true).is_some()
    })
}
