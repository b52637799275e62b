//! Finding the chosen letter (A–J) in a text.
//!
//! Candidates come in two strengths. *Explicit* ones: a letter after an answer cue ("The answer is
//! (B)", "answer: C", "Answer: (d)", "the correct option is B"), a letter in `\boxed{}`, or a response
//! that is nothing but a letter ("B", "(B)", "**B.**"). *Shaped* ones: `(B)` or `[B]`, `**B**`,
//! "option B" / "choice B", and a response that starts with "B." / "B)" / "B:". The answer is the last
//! explicit candidate, else the last shaped one. A capital letter standing in running text ("A cat is
//! ...") is never a candidate; a lower-case letter counts only in parentheses, in a box, alone, or
//! right after an answer cue when followed by punctuation or the end ("answer: d", not "answer is a
//! bit").

/// Words that introduce an answer, matched case-insensitively at a word start.
const CUES: &[&str] = &[
    "answer",
    "correct option",
    "correct choice",
    "best option",
    "best choice",
    "right option",
    "right choice",
    "correct letter",
];

/// Words skipped between a cue and its letter ("the answer would therefore be B").
const FILLERS: &[&str] = &[
    "is",
    "was",
    "would",
    "should",
    "will",
    "must",
    "be",
    "therefore",
    "thus",
    "hence",
    "clearly",
    "probably",
    "likely",
    "then",
    "option",
    "choice",
    "letter",
    "the",
    "final",
    "correct",
];

/// Characters skipped between a cue and its letter.
const SKIPPED: &[char] = &[':', '-', '=', '\u{2014}', '\u{2013}', '*', '$', '\'', '"', '`'];

/// Whether `c` is an answer letter A–J, either case.
fn is_letter(c: char) -> bool {
    matches!(c.to_ascii_uppercase(), 'A'..='J')
}

struct Text {
    chars: Vec<char>,
    lower: Vec<char>,
}

impl Text {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let lower = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
        Text { chars, lower }
    }

    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    /// Whether the character at `i` is absent or not alphanumeric (a word boundary).
    fn boundary(&self, i: usize) -> bool {
        !self.at(i).is_some_and(char::is_alphanumeric)
    }

    fn starts_with(&self, i: usize, word: &str) -> bool {
        word.chars().enumerate().all(|(k, w)| self.lower.get(i + k) == Some(&w))
    }

    /// Start positions of `word` (lower-case).
    fn find<'a>(&'a self, word: &'a str) -> impl Iterator<Item = usize> + 'a {
        (0..self.chars.len()).filter(move |&i| self.starts_with(i, word))
    }

    /// Start positions of `word` (lower-case) standing as a whole word.
    fn find_words<'a>(&'a self, word: &'a str) -> impl Iterator<Item = usize> + 'a {
        let len = word.chars().count();
        self.find(word).filter(move |&i| (i == 0 || self.boundary(i - 1)) && self.boundary(i + len))
    }

    /// A bracketed letter `(X)` or `[X]` at `i`, any case.
    fn bracketed(&self, i: usize) -> Option<char> {
        let (open, c, close) = (self.at(i)?, self.at(i + 1)?, self.at(i + 2)?);
        ((open == '(' && close == ')') || (open == '[' && close == ']')).then_some(c).filter(|&c| is_letter(c))
    }

    /// The letter right after an answer cue ending at `i`, and its position.
    fn after_cue(&self, mut i: usize) -> Option<(usize, char)> {
        for _ in 0..12 {
            while self.at(i).is_some_and(|c| c.is_whitespace() || SKIPPED.contains(&c)) {
                i += 1;
            }
            let filler = FILLERS.iter().find(|w| self.starts_with(i, w) && self.boundary(i + w.len()));
            match filler {
                Some(w) => i += w.len(),
                None => break,
            }
        }
        if let Some(c) = self.bracketed(i) {
            return Some((i, c));
        }
        let c = self.at(i).filter(|&c| is_letter(c))?;
        let next = self.at(i + 1);
        let ok =
            if c.is_ascii_uppercase() { self.boundary(i + 1) } else { next.is_none_or(|n| ".,;:)!*\n".contains(n)) };
        ok.then_some((i, c))
    }

    /// A `\boxed{...}` / `\fbox{...}` argument starting at `open` (a `{`), reduced to one letter.
    fn boxed_letter(&self, open: usize) -> Option<char> {
        let mut depth = 0;
        let mut inner = String::new();
        for (j, &c) in self.chars.iter().enumerate().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let inner = ["\\textbf", "\\mathrm", "\\mathbf", "\\text"]
                            .iter()
                            .fold(inner.clone(), |s, cmd| s.replace(cmd, ""));
                        let core: Vec<char> =
                            inner.chars().filter(|c| !"{}()[]. *$".contains(*c) && !c.is_whitespace()).collect();
                        return (core.len() == 1 && is_letter(core[0])).then_some(core[0]);
                    }
                }
                _ => {}
            }
            if j > open {
                inner.push(c);
            }
        }
        None
    }
}

/// The whole response as one letter: "B", "(b)", "**C.**", "$D$".
fn lone_letter(text: &str) -> Option<char> {
    let core = text.trim_matches(|c: char| c.is_whitespace() || "*()[].:$\"'`".contains(c));
    let mut chars = core.chars();
    let c = chars.next().filter(|&c| is_letter(c))?;
    chars.next().is_none().then_some(c)
}

/// The chosen letter of `text`, upper-case, if any.
pub fn extract_letter(text: &str) -> Option<char> {
    if let Some(c) = lone_letter(text) {
        return Some(c.to_ascii_uppercase());
    }
    let t = Text::new(text);
    let mut explicit: Vec<(usize, char)> = Vec::new();
    let mut shaped: Vec<(usize, char)> = Vec::new();

    for cue in CUES {
        explicit.extend(t.find_words(cue).filter_map(|i| t.after_cue(i + cue.len())));
    }
    for cmd in ["\\boxed", "\\fbox"] {
        for i in t.find(cmd) {
            let mut open = i + cmd.len();
            while t.at(open).is_some_and(char::is_whitespace) {
                open += 1;
            }
            if t.at(open) == Some('{') {
                explicit.extend(t.boxed_letter(open).map(|c| (i, c)));
            }
        }
    }

    for i in 0..t.chars.len() {
        // `(B)` / `[B]`, upper-case only: lower-case `(b)` is usually an enumeration.
        if let Some(c) = t.bracketed(i).filter(char::is_ascii_uppercase) {
            shaped.push((i, c));
        }
        // `**B**`, `**B.**`, `**B)**`, `**B:**`.
        if t.starts_with(i, "**") {
            if let Some(c) = t.at(i + 2).filter(|&c| is_letter(c) && c.is_ascii_uppercase()) {
                let close = if t.at(i + 3).is_some_and(|n| ".):".contains(n)) { i + 4 } else { i + 3 };
                if t.starts_with(close, "**") {
                    shaped.push((i, c));
                }
            }
        }
    }
    for cue in ["option", "choice"] {
        for i in t.find_words(cue) {
            let mut j = i + cue.len();
            while t.at(j).is_some_and(|c| c == ' ' || c == ':') {
                j += 1;
            }
            if let Some(c) = t.at(j).filter(|&c| c.is_ascii_uppercase() && is_letter(c)) {
                if t.boundary(j + 1) {
                    shaped.push((j, c));
                }
            }
        }
    }
    // A response starting with its choice: "B. 42", "C) because".
    let start = t.chars.iter().position(|&c| !c.is_whitespace() && c != '*');
    if let Some(i) = start {
        let c = t.chars[i];
        if c.is_ascii_uppercase() && is_letter(c) && t.at(i + 1).is_some_and(|n| ".):".contains(n)) {
            shaped.push((i, c));
        }
    }

    let pick = |v: &[(usize, char)]| v.iter().max_by_key(|(i, _)| *i).map(|&(_, c)| c);
    pick(&explicit).or_else(|| pick(&shaped)).map(|c| c.to_ascii_uppercase())
}
