//! Reading a LaTeX answer: tokens, then the answer's structure (a list, set, tuple or interval,
//! matrix, union, relation, or one expression), then expressions by recursive descent.
//!
//! The grammar is the one MATH-style answers use: `+ - ± ∓`, `\cdot \times * / \div`, implicit
//! multiplication (`2x`, `3\sqrt{2}`, `2\pi r`), powers with or without braces (`x^2`, `x^{10}`,
//! `e^{-x}`), `\frac{a}{b}` and `\frac12`, `\sqrt{x}` and `\sqrt[n]{x}`, `|x|`, `n!`, `\binom`,
//! trigonometric, hyperbolic and logarithmic functions (`\sin^2 x`, `\sin^{-1}`, `\log_2 8`), `π`, `e`,
//! `i` and `\infty`, Greek letters and subscripted names as variables. Anything else makes the answer
//! text, compared as a string.

use crate::expr::{Expr, Func};
use crate::value::decimal;

/// Deepest nesting the parser follows (a guard against stack exhaustion on adversarial text).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Num(String),
    Letter(char),
    /// `\name`, or `\` and one non-letter (`\{`, `\\`).
    Cmd(String),
    Sym(char),
    Begin(String),
    End(String),
}

/// A comparison between the sides of a relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Rel {
    fn from_tok(tok: &Tok) -> Option<Rel> {
        Some(match tok {
            Tok::Sym('=') => Rel::Eq,
            Tok::Sym('<') => Rel::Lt,
            Tok::Sym('>') => Rel::Gt,
            Tok::Cmd(c) => match c.as_str() {
                "lt" => Rel::Lt,
                "gt" => Rel::Gt,
                "le" | "leq" | "leqslant" => Rel::Le,
                "ge" | "geq" | "geqslant" => Rel::Ge,
                "ne" | "neq" => Rel::Ne,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The relation read from right to left (`a < b` is `b > a`).
    pub fn flipped(self) -> Rel {
        match self {
            Rel::Lt => Rel::Gt,
            Rel::Le => Rel::Ge,
            Rel::Gt => Rel::Lt,
            Rel::Ge => Rel::Le,
            other => other,
        }
    }
}

/// The structure of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Expr(Expr),
    /// A tuple or interval: its brackets and items (`(0, 1]`).
    Tuple {
        open: char,
        close: char,
        items: Vec<Answer>,
    },
    /// `\{a, b\}`.
    Set(Vec<Answer>),
    /// Top-level comma-separated answers.
    List(Vec<Answer>),
    Matrix(Vec<Vec<Answer>>),
    /// `A \cup B`.
    Union(Vec<Answer>),
    /// `a < x \le b`: the sides and the relations between neighbours.
    Relation {
        sides: Vec<Expr>,
        rels: Vec<Rel>,
    },
    /// An answer compared as normalised text.
    Text(String),
}

/// Tokens of a cleaned answer; `None` for characters no answer form uses. Thousands separators
/// (`1,000`) are read as part of a number outside brackets only, where a comma cannot separate items.
pub fn lex(text: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if depth == 0 && i - start <= 3 {
                while chars.get(i) == Some(&',')
                    && chars.len() >= i + 4
                    && chars[i + 1..i + 4].iter().all(char::is_ascii_digit)
                    && !chars.get(i + 4).is_some_and(char::is_ascii_digit)
                {
                    i += 4;
                }
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            toks.push(Tok::Num(chars[start..i].iter().filter(|&&c| c != ',').collect()));
            continue;
        }
        if c == '\\' {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && chars[end].is_ascii_alphabetic() {
                end += 1;
            }
            if end == start {
                let next = *chars.get(start)?;
                toks.push(Tok::Cmd(next.to_string()));
                match next {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                i = start + 1;
                continue;
            }
            let name: String = chars[start..end].iter().collect();
            i = end;
            if name == "begin" || name == "end" {
                // `\begin{pmatrix}`: the environment's name.
                let rest: String = chars[i..].iter().collect();
                let trimmed = rest.trim_start();
                let skipped = rest.len() - trimmed.len();
                let close = trimmed.strip_prefix('{')?.find('}')?;
                let env = trimmed[1..1 + close].trim().to_string();
                i += rest[..skipped].chars().count() + trimmed[..close + 2].chars().count();
                if name == "begin" {
                    depth += 1;
                    toks.push(Tok::Begin(env));
                } else {
                    depth -= 1;
                    toks.push(Tok::End(env));
                }
                continue;
            }
            toks.push(Tok::Cmd(name));
            continue;
        }
        i += 1;
        let tok = match c {
            'a'..='z' | 'A'..='Z' => Tok::Letter(c),
            '(' | '[' | '{' => {
                depth += 1;
                Tok::Sym(c)
            }
            ')' | ']' | '}' => {
                depth -= 1;
                Tok::Sym(c)
            }
            '+' | '-' | '*' | '/' | '^' | '_' | '|' | '!' | ',' | '=' | '<' | '>' | '&' | ';' | ':' => Tok::Sym(c),
            'π' => Tok::Cmd("pi".into()),
            '∞' => Tok::Cmd("infty".into()),
            '≤' => Tok::Cmd("le".into()),
            '≥' => Tok::Cmd("ge".into()),
            '≠' => Tok::Cmd("ne".into()),
            '×' => Tok::Cmd("times".into()),
            '·' | '⋅' => Tok::Cmd("cdot".into()),
            '÷' => Tok::Cmd("div".into()),
            '√' => Tok::Cmd("sqrt".into()),
            '±' => Tok::Cmd("pm".into()),
            '∓' => Tok::Cmd("mp".into()),
            '∪' => Tok::Cmd("cup".into()),
            _ => return None,
        };
        toks.push(tok);
    }
    Some(toks)
}

fn opens(tok: &Tok) -> bool {
    matches!(tok, Tok::Sym('(' | '[' | '{') | Tok::Begin(_)) || *tok == Tok::Cmd("{".into())
}

fn closes(tok: &Tok) -> bool {
    matches!(tok, Tok::Sym(')' | ']' | '}') | Tok::End(_)) || *tok == Tok::Cmd("}".into())
}

/// `toks` split at the tokens `is_separator` accepts outside any bracket.
fn split_top(toks: &[Tok], is_separator: impl Fn(&Tok) -> bool) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, tok) in toks.iter().enumerate() {
        if opens(tok) {
            depth += 1;
        } else if closes(tok) {
            depth -= 1;
        } else if depth == 0 && is_separator(tok) {
            parts.push(&toks[start..i]);
            start = i + 1;
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// Whether the bracket opening at `toks[0]` closes at the last token.
fn encloses(toks: &[Tok]) -> bool {
    if toks.len() < 2 || !opens(&toks[0]) || !closes(&toks[toks.len() - 1]) {
        return false;
    }
    let mut depth = 0i32;
    for (i, tok) in toks.iter().enumerate() {
        if opens(tok) {
            depth += 1;
        } else if closes(tok) {
            depth -= 1;
            if depth == 0 {
                return i == toks.len() - 1;
            }
        }
    }
    false
}

/// The structure of an answer's tokens; `None` when some part is not an expression.
pub fn answer(toks: &[Tok]) -> Option<Answer> {
    answer_at(toks, 0)
}

fn answer_at(toks: &[Tok], depth: usize) -> Option<Answer> {
    if toks.is_empty() || depth > MAX_DEPTH {
        return None;
    }
    let items = |parts: Vec<&[Tok]>| parts.into_iter().map(|p| answer_at(p, depth + 1)).collect::<Option<Vec<_>>>();
    let union = split_top(toks, |t| matches!(t, Tok::Cmd(c) if c == "cup"));
    if union.len() > 1 {
        return items(union).map(Answer::Union);
    }
    let list = split_top(toks, |t| *t == Tok::Sym(','));
    if list.len() > 1 {
        return items(list).map(Answer::List);
    }
    if encloses(toks) {
        let inner = &toks[1..toks.len() - 1];
        match (&toks[0], &toks[toks.len() - 1]) {
            (Tok::Begin(env), Tok::End(_)) if env.ends_with("matrix") => {
                let rows = split_top(inner, |t| *t == Tok::Cmd("\\".into()));
                let rows: Vec<&[Tok]> = rows.into_iter().filter(|r| !r.is_empty()).collect();
                return rows
                    .into_iter()
                    .map(|row| items(split_top(row, |t| *t == Tok::Sym('&'))))
                    .collect::<Option<Vec<_>>>()
                    .map(Answer::Matrix);
            }
            (Tok::Cmd(o), Tok::Cmd(c)) if o == "{" && c == "}" => {
                return items(split_top(inner, |t| *t == Tok::Sym(','))).map(Answer::Set);
            }
            (Tok::Sym(open @ ('(' | '[')), Tok::Sym(close @ (')' | ']'))) => {
                let parts = split_top(inner, |t| *t == Tok::Sym(','));
                if parts.len() > 1 {
                    return items(parts).map(|items| Answer::Tuple { open: *open, close: *close, items });
                }
            }
            _ => {}
        }
    }
    let mut sides = Vec::new();
    let mut rels = Vec::new();
    let (mut depth_now, mut start) = (0i32, 0);
    for (i, tok) in toks.iter().enumerate() {
        if opens(tok) {
            depth_now += 1;
        } else if closes(tok) {
            depth_now -= 1;
        } else if let Some(rel) = Rel::from_tok(tok).filter(|_| depth_now == 0) {
            sides.push(&toks[start..i]);
            rels.push(rel);
            start = i + 1;
        }
    }
    sides.push(&toks[start..]);
    if !rels.is_empty() {
        let sides = sides.into_iter().map(expression).collect::<Option<Vec<_>>>()?;
        return Some(Answer::Relation { sides, rels });
    }
    expression(toks).map(Answer::Expr)
}

/// One expression spanning all of `toks`.
pub fn expression(toks: &[Tok]) -> Option<Expr> {
    let mut parser = Parser { toks: toks.to_vec(), pos: 0, depth: 0, in_abs: 0 };
    let expr = parser.expr()?;
    (parser.pos == parser.toks.len()).then_some(expr)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    /// Open `|...|` groups: inside one, `|` closes instead of starting a factor.
    in_abs: usize,
}

fn is_cmd(tok: Option<&Tok>, names: &[&str]) -> bool {
    matches!(tok, Some(Tok::Cmd(c)) if names.contains(&c.as_str()))
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let tok = self.toks.get(self.pos).cloned();
        self.pos += 1;
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn expr(&mut self) -> Option<Expr> {
        self.enter()?;
        let mut left = if is_cmd(self.peek(), &["pm", "mp"]) {
            self.pos += 1;
            Expr::PlusMinus(Expr::integer(0).boxed(), self.term()?.boxed())
        } else {
            self.term()?
        };
        loop {
            let make: fn(Box<Expr>, Box<Expr>) -> Expr = match self.peek() {
                Some(Tok::Sym('+')) => Expr::Add,
                Some(Tok::Sym('-')) => Expr::Sub,
                tok if is_cmd(tok, &["pm", "mp"]) => Expr::PlusMinus,
                _ => break,
            };
            self.pos += 1;
            left = make(left.boxed(), self.term()?.boxed());
        }
        self.depth -= 1;
        Some(left)
    }

    fn term(&mut self) -> Option<Expr> {
        let mut left = self.unary()?;
        loop {
            let tok = self.peek();
            if matches!(tok, Some(Tok::Sym('*'))) || is_cmd(tok, &["cdot", "times", "ast"]) {
                self.pos += 1;
                left = Expr::Mul(left.boxed(), self.unary()?.boxed());
            } else if matches!(tok, Some(Tok::Sym('/'))) || is_cmd(tok, &["div"]) {
                self.pos += 1;
                left = Expr::Div(left.boxed(), self.unary()?.boxed());
            } else if self.starts_factor() {
                let fraction_follows = is_cmd(self.peek(), &["frac", "dfrac", "tfrac"]);
                let right = self.power()?;
                left = match mixed_number(&left, &right).filter(|_| fraction_follows) {
                    Some(mixed) => mixed,
                    None => Expr::Mul(left.boxed(), right.boxed()),
                };
            } else {
                break;
            }
        }
        Some(left)
    }

    /// Whether the next token begins a factor of an implicit product.
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Letter(_) | Tok::Sym('(' | '{')) => true,
            Some(Tok::Sym('|')) => self.in_abs == 0,
            Some(Tok::Cmd(c)) => {
                ["frac", "dfrac", "tfrac", "cfrac", "sqrt", "pi", "infty", "binom", "dbinom", "tbinom", "imath"]
                    .contains(&c.as_str())
                    || GREEK.contains(&c.as_str())
                    || Func::from_command(c).is_some()
            }
            _ => false,
        }
    }

    fn unary(&mut self) -> Option<Expr> {
        self.enter()?;
        let expr = match self.peek() {
            Some(Tok::Sym('-')) => {
                self.pos += 1;
                Expr::Neg(self.unary()?.boxed())
            }
            Some(Tok::Sym('+')) => {
                self.pos += 1;
                self.unary()?
            }
            _ => self.power()?,
        };
        self.depth -= 1;
        Some(expr)
    }

    fn power(&mut self) -> Option<Expr> {
        let mut base = self.atom()?;
        while self.eat(&Tok::Sym('!')) {
            base = Expr::Factorial(base.boxed());
        }
        if self.eat(&Tok::Sym('^')) {
            // A bare number after `^` is the whole exponent (`2^10` is 1024, as models mean it and
            // math-verify reads it), unlike `\frac12`'s one-digit arguments.
            let exponent = match self.peek() {
                Some(Tok::Num(digits)) => {
                    let value = decimal(&digits.clone())?;
                    self.pos += 1;
                    Expr::Num(value)
                }
                _ => self.script()?,
            };
            base = Expr::Pow(base.boxed(), exponent.boxed());
        }
        Some(base)
    }

    /// The argument of `^`, `_`, `\frac` or `\sqrt`: a brace group, or one character (`\frac12` is
    /// `\frac{1}{2}`), or one command (`e^\pi`), with an optional sign.
    fn script(&mut self) -> Option<Expr> {
        self.enter()?;
        let expr = match self.peek()? {
            Tok::Sym('{') => {
                self.pos += 1;
                let inner = self.expr()?;
                self.eat(&Tok::Sym('}')).then_some(inner)?
            }
            Tok::Sym('-') => {
                self.pos += 1;
                Expr::Neg(self.script()?.boxed())
            }
            Tok::Num(digits) => {
                let digits = digits.clone();
                let first = digits.chars().next()?;
                if digits.len() > 1 {
                    self.toks[self.pos] = Tok::Num(digits[first.len_utf8()..].to_string());
                } else {
                    self.pos += 1;
                }
                Expr::Num(decimal(&first.to_string())?)
            }
            Tok::Letter(_) | Tok::Cmd(_) => self.atom()?,
            _ => return None,
        };
        self.depth -= 1;
        Some(expr)
    }

    fn group(&mut self, open: char, close: char) -> Option<Expr> {
        if !self.eat(&Tok::Sym(open)) {
            return None;
        }
        let inner = self.expr()?;
        self.eat(&Tok::Sym(close)).then_some(inner)
    }

    fn atom(&mut self) -> Option<Expr> {
        self.enter()?;
        let expr = match self.next()? {
            Tok::Num(digits) if self.eat(&Tok::Sym('_')) => {
                // `1011_2`: a numeral in base 2 to 36.
                let base: u32 = self.subscript()?.parse().ok().filter(|b| (2..=36).contains(b))?;
                let value = num_bigint::BigInt::parse_bytes(digits.as_bytes(), base)?;
                Expr::Num(num_rational::BigRational::from_integer(value))
            }
            Tok::Num(digits) => Expr::Num(decimal(&digits)?),
            Tok::Letter(c) => {
                if self.eat(&Tok::Sym('_')) {
                    Expr::Var(format!("{c}_{}", self.subscript()?))
                } else {
                    match c {
                        'e' => Expr::E,
                        'i' => Expr::I,
                        _ => Expr::Var(c.to_string()),
                    }
                }
            }
            Tok::Sym(open @ ('(' | '[' | '{')) => {
                self.pos -= 1;
                let close = match open {
                    '(' => ')',
                    '[' => ']',
                    _ => '}',
                };
                self.group(open, close)?
            }
            Tok::Sym('|') => {
                self.in_abs += 1;
                let inner = self.expr()?;
                self.in_abs -= 1;
                self.eat(&Tok::Sym('|')).then_some(Expr::Func(Func::Abs, inner.boxed()))?
            }
            Tok::Cmd(name) => self.command(&name)?,
            _ => return None,
        };
        self.depth -= 1;
        Some(expr)
    }

    /// A subscript as part of a name: `x_1`, `a_{n}`, `\log_2`.
    fn subscript(&mut self) -> Option<String> {
        let text = |tok: &Tok| match tok {
            Tok::Num(s) => Some(s.clone()),
            Tok::Letter(c) => Some(c.to_string()),
            _ => None,
        };
        if self.eat(&Tok::Sym('{')) {
            let mut name = String::new();
            while !self.eat(&Tok::Sym('}')) {
                name.push_str(&text(&self.next()?)?);
            }
            return Some(name);
        }
        text(&self.next()?)
    }

    fn command(&mut self, name: &str) -> Option<Expr> {
        Some(match name {
            "frac" | "dfrac" | "tfrac" | "cfrac" => {
                let numerator = self.script()?;
                Expr::Div(numerator.boxed(), self.script()?.boxed())
            }
            "sqrt" => {
                let index = if self.peek() == Some(&Tok::Sym('[')) { self.group('[', ']')? } else { Expr::integer(2) };
                Expr::Root(index.boxed(), self.script()?.boxed())
            }
            "binom" | "dbinom" | "tbinom" => {
                let n = self.script()?;
                Expr::Binomial(n.boxed(), self.script()?.boxed())
            }
            "pi" => Expr::Pi,
            "infty" | "infinity" => Expr::Infinity,
            "imath" => Expr::I,
            greek if GREEK.contains(&greek) => Expr::Var(format!("\\{greek}")),
            function => {
                let mut func = Func::from_command(function)?;
                if function == "log" && self.eat(&Tok::Sym('_')) {
                    let base = self.script()?;
                    return Some(Expr::Log(base.boxed(), self.function_argument()?.boxed()));
                }
                let mut power = None;
                if self.eat(&Tok::Sym('^')) {
                    let exponent = self.script()?;
                    let minus_one = Expr::Neg(Expr::integer(1).boxed());
                    match func.inverse() {
                        Some(inverse) if exponent == minus_one => func = inverse,
                        _ => power = Some(exponent),
                    }
                }
                let applied = Expr::Func(func, self.function_argument()?.boxed());
                match power {
                    Some(exponent) => Expr::Pow(applied.boxed(), exponent.boxed()),
                    None => applied,
                }
            }
        })
    }

    /// `\sin(x)`, `\sin x`, `\sin\frac{\pi}{6}`, `\sin 2x` (as `\sin(2x)`, the reader's meaning).
    fn function_argument(&mut self) -> Option<Expr> {
        if self.peek() == Some(&Tok::Sym('(')) {
            return self.power();
        }
        let mut argument = self.unary()?;
        while matches!(self.peek(), Some(Tok::Letter(_))) || is_cmd(self.peek(), &["pi"]) {
            argument = Expr::Mul(argument.boxed(), self.power()?.boxed());
        }
        Some(argument)
    }
}

/// `2\frac{1}{2}` read as the mixed number `2 + 1/2` (MATH's convention), when an integer meets a
/// fraction of two integers.
fn mixed_number(left: &Expr, right: &Expr) -> Option<Expr> {
    let integer = |e: &Expr| matches!(e, Expr::Num(r) if r.is_integer());
    let (whole, negative) = match left {
        Expr::Neg(inner) if integer(inner) => (inner.as_ref(), true),
        e if integer(e) => (e, false),
        _ => return None,
    };
    match right {
        Expr::Div(n, d) if integer(n) && integer(d) => {
            let sum = Expr::Add(whole.clone().boxed(), right.clone().boxed());
            Some(if negative { Expr::Neg(sum.boxed()) } else { sum })
        }
        _ => None,
    }
}
