//! Finding the answer in a text: the last `\boxed{...}` / `\fbox{...}`, else what follows the last
//! "answer is" (as the Qwen2.5-Math harness reads an unboxed answer), else the final number.

/// The commands whose argument is taken as the boxed answer.
const BOX_COMMANDS: [&str; 2] = ["\\boxed", "\\fbox"];

/// The commands recognised as fractions (all read as `\frac`).
pub(crate) const FRAC_COMMANDS: [&str; 3] = ["\\frac", "\\dfrac", "\\tfrac"];

/// The content of the brace group opening at byte `open` (which must be `{`) and the byte index just
/// past its closing brace; `None` when the group is never closed. Escaped braces (`\{`, `\}`) do not
/// count towards the nesting.
pub(crate) fn brace_group(text: &str, open: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(open) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1, // skip the escaped character
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[open + 1..i], i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The argument of the box command whose name ends at byte `after`: a brace group, or for the
/// brace-less form `\boxed 5` the run of characters up to the next whitespace or `$`.
fn box_argument(text: &str, after: usize) -> Option<&str> {
    let rest = &text[after..];
    let next = rest.chars().next()?;
    if next.is_ascii_alphabetic() {
        return None; // another command, such as `\boxedfoo`
    }
    let skipped = rest.len() - rest.trim_start().len();
    let start = after + skipped;
    if text[start..].starts_with('{') {
        return brace_group(text, start).map(|(inner, _)| inner);
    }
    if skipped == 0 {
        return None;
    }
    let arg = text[start..].split(|c: char| c.is_whitespace() || c == '$').next().unwrap_or("");
    (!arg.is_empty()).then_some(arg)
}

/// The content of the last complete `\boxed{...}` or `\fbox{...}` in `text`, nested braces kept.
/// A box that is never closed (a truncated generation) is skipped in favour of the one before it.
pub fn last_boxed(text: &str) -> Option<&str> {
    let mut starts: Vec<(usize, usize)> =
        BOX_COMMANDS.iter().flat_map(|cmd| text.match_indices(cmd).map(|(i, m)| (i, i + m.len()))).collect();
    starts.sort_unstable();
    starts.iter().rev().find_map(|&(_, after)| box_argument(text, after))
}

/// A signed plain number (`-12`, `3.5`, `1,234`, `.5`) starting at byte `i`, if any: its end.
fn plain_number_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let digits_from = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - digits_from;
    // Thousands groups, only after a leading group of one to three digits: `1,234,567`.
    if (1..=3).contains(&int_len) {
        while bytes.get(i) == Some(&b',')
            && bytes.len() >= i + 4
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
            && !bytes.get(i + 4).is_some_and(u8::is_ascii_digit)
        {
            i += 4;
        }
    }
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    (i > digits_from).then_some(i)
}

/// A number token starting at byte `i`: a plain number, optionally followed by `/denominator`.
fn number_token_end(bytes: &[u8], i: usize) -> Option<usize> {
    let end = plain_number_end(bytes, i)?;
    if bytes.get(end) == Some(&b'/') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        if let Some(den_end) = plain_number_end(bytes, end + 1) {
            return Some(den_end);
        }
    }
    Some(end)
}

/// A `\frac{a}{b}` (or `\dfrac`, `\tfrac`, `\frac12`) with numeric arguments starting at byte `i`.
fn frac_token_end(text: &str, i: usize) -> Option<usize> {
    let cmd = FRAC_COMMANDS.iter().find(|c| text[i..].starts_with(*c))?;
    let after = i + cmd.len();
    let bytes = text.as_bytes();
    let is_number = |s: &str| {
        let s = s.trim();
        !s.is_empty() && number_token_end(s.as_bytes(), 0) == Some(s.len())
    };
    if let Some((num, end)) = brace_group(text, after) {
        let (den, end) = brace_group(text, end)?;
        return (is_number(num) && is_number(den)).then_some(end);
    }
    // `\frac12`: two single digits.
    (bytes.get(after).is_some_and(u8::is_ascii_digit) && bytes.get(after + 1).is_some_and(u8::is_ascii_digit))
        .then_some(after + 2)
}

/// The final number in `text`: integers, decimals, negatives, `a/b` and `\frac{a}{b}` fractions, and
/// numbers with thousands separators. A `-` is a sign only when it does not follow a letter, digit or
/// closing bracket (so `3-5` ends in `5`, while `x = -5` ends in `-5`).
pub fn last_number(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(end) = frac_token_end(text, i) {
                last = Some(&text[i..end]);
                i = end;
                continue;
            }
        }
        let sign_ok = bytes[i] == b'-'
            && (i == 0 || !matches!(bytes[i - 1], b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b')' | b']' | b'}'));
        let starts =
            bytes[i].is_ascii_digit() || sign_ok || (bytes[i] == b'.' && (i == 0 || !bytes[i - 1].is_ascii_digit()));
        if starts {
            if let Some(end) = number_token_end(bytes, i) {
                last = Some(&text[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    last
}

/// The phrase whose rest of line states an unboxed answer ("The final answer is 9π.").
const ANSWER_PHRASE: &str = "answer is";

/// What follows the last "answer is" (any case) up to the end of its line: a leading colon, `$`
/// and `**` marks and a final period dropped; `None` when there is no such phrase or nothing after it.
pub fn stated_answer(text: &str) -> Option<&str> {
    // ASCII lower-casing keeps byte offsets.
    let at = text.to_ascii_lowercase().rfind(ANSWER_PHRASE)? + ANSWER_PHRASE.len();
    let line = text[at..].lines().next().unwrap_or("");
    let answer = line.trim().trim_start_matches(':').trim().trim_matches(['$', '*', ' ']);
    let answer = answer.strip_suffix('.').unwrap_or(answer).trim_matches(['$', '*', ' ']);
    (!answer.is_empty()).then_some(answer)
}

/// The answer of a generation: the last box, else the stated answer, else the final number.
pub fn generation_answer(text: &str) -> Option<&str> {
    last_boxed(text).or_else(|| stated_answer(text)).or_else(|| last_number(text))
}

/// The answer of a reference: its last box, else what follows a GSM8K-style `####`, else all of it.
pub fn reference_answer(text: &str) -> &str {
    if let Some(boxed) = last_boxed(text) {
        return boxed;
    }
    match text.rfind("####") {
        Some(i) => text[i + 4..].trim(),
        None => text.trim(),
    }
}
