//! The three SFT domains and the pretraining mixture, as text generators.

use figfont::render::SplitMix64;
use serde_json::{json, Value};

/// One problem with its worked solution.
pub struct Example {
    pub prompt: String,
    pub response: String,
    /// The solution carries a slip (it is wrong on purpose).
    pub noisy: bool,
}

impl Example {
    pub fn text(&self) -> String {
        format!("{}{}", self.prompt, self.response)
    }

    pub fn to_json(&self) -> Value {
        json!({"prompt": self.prompt, "response": self.response})
    }
}

/// The figfont plugin's SplitMix64 (small, seeded, the same on every platform), with the draws the
/// generators need.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64(seed ^ 0x5EED_C0DE_0000_0001))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A number of `digits` digits (no leading zero).
    pub fn number(&mut self, digits: u32) -> u64 {
        self.range(10u64.pow(digits - 1), 10u64.pow(digits) - 1)
    }
}

/// A domain: its folder name, a clean problem (for evaluation) and a demonstration (maybe noisy).
pub struct Domain {
    pub name: &'static str,
    pub clean: fn(&mut Rng) -> Example,
    pub demonstration: fn(&mut Rng) -> Example,
}

/// Share of demonstrations with a slip.
const ARITHMETIC_SLIPS: f64 = 0.3;
const MULTIPLICATION_SLIPS: f64 = 0.2;
const FIGFONT_SLIPS: f64 = 0.1;

pub fn all() -> Vec<Domain> {
    vec![
        Domain {
            name: "arithmetic",
            clean: |rng| addition(rng, Style::Terse, 0.0),
            demonstration: |rng| addition(rng, Style::Terse, ARITHMETIC_SLIPS),
        },
        Domain {
            name: "multiplication",
            clean: |rng| multiplication(rng, Style::Verbose, 3, 0.0),
            demonstration: |rng| multiplication(rng, Style::Verbose, 3, MULTIPLICATION_SLIPS),
        },
        Domain { name: "figfont", clean: |rng| figfont(rng, 0.0), demonstration: |rng| figfont(rng, FIGFONT_SLIPS) },
    ]
}

/// One pretraining document: mostly terse additions, some terse multiplications of two digits by one,
/// some verbose additions. No multiplication is ever written verbosely and no ASCII art appears.
pub fn pretraining_document(rng: &mut Rng) -> Example {
    let roll = rng.next_u64() % 100;
    if roll < 80 {
        addition(rng, Style::Terse, 0.0)
    } else if roll < 90 {
        multiplication(rng, Style::Terse, 2, 0.0)
    } else {
        addition(rng, Style::Verbose, 0.0)
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Style {
    /// `7+8=15, 4+3+1=8 #### 85`
    Terse,
    /// `Let's add. 7 plus 8 is 15, carry 1. 4 plus 3 plus 1 is 8. So the answer is 85. #### 85`
    Verbose,
}

/// A slip: one column's result off by one (up or down, never below zero).
fn slip(rng: &mut Rng, value: u64) -> u64 {
    if value == 0 || rng.chance(0.5) {
        value + 1
    } else {
        value - 1
    }
}

fn digits_low_first(mut n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        out.push(n % 10);
        n /= 10;
        if n == 0 {
            return out;
        }
    }
}

/// Column addition of two 2–3 digit numbers, lowest column first.
pub fn addition(rng: &mut Rng, style: Style, slip_rate: f64) -> Example {
    let (a_digits, b_digits) = (rng.range(2, 3) as u32, rng.range(2, 3) as u32);
    let (a, b) = (rng.number(a_digits), rng.number(b_digits));
    let (da, db) = (digits_low_first(a), digits_low_first(b));
    let columns = da.len().max(db.len());
    let slipped = rng.chance(slip_rate).then(|| rng.next_u64() as usize % columns);
    let (mut carry, mut answer_digits, mut steps) = (0u64, Vec::new(), Vec::new());
    for i in 0..columns {
        let (x, y) = (da.get(i).copied().unwrap_or(0), db.get(i).copied().unwrap_or(0));
        let mut sum = x + y + carry;
        if slipped == Some(i) {
            sum = slip(rng, sum);
        }
        steps.push(match (style, carry) {
            (Style::Terse, 0) => format!("{x}+{y}={sum}"),
            (Style::Terse, c) => format!("{x}+{y}+{c}={sum}"),
            (Style::Verbose, 0) => format!("{x} plus {y} is {sum}"),
            (Style::Verbose, c) => format!("{x} plus {y} plus {c} is {sum}"),
        });
        answer_digits.push(sum % 10);
        carry = sum / 10;
    }
    let answer = compose(&answer_digits, carry);
    let response = match style {
        Style::Terse => format!("{} #### {answer}", steps.join(", ")),
        Style::Verbose => format!("Let's add. {}. So the answer is {answer}. #### {answer}", steps.join(". ")),
    };
    Example { prompt: format!("Q: {a}+{b}\nA: "), response, noisy: slipped.is_some() }
}

/// The number whose digits (lowest first) are `digits`, with a final carry in front.
fn compose(digits: &[u64], carry: u64) -> u64 {
    digits.iter().rev().fold(carry, |n, d| n * 10 + d)
}

/// Long multiplication of a `digits`-digit number by one digit (2–9), lowest column first.
pub fn multiplication(rng: &mut Rng, style: Style, digits: u32, slip_rate: f64) -> Example {
    let (a, b) = (rng.number(digits), rng.range(2, 9));
    let da = digits_low_first(a);
    let slipped = rng.chance(slip_rate).then(|| rng.next_u64() as usize % da.len());
    let (mut carry, mut answer_digits, mut steps) = (0u64, Vec::new(), Vec::new());
    for (i, &x) in da.iter().enumerate() {
        let mut product = x * b + carry;
        if slipped == Some(i) {
            product = slip(rng, product);
        }
        steps.push(match (style, carry) {
            (Style::Terse, 0) => format!("{x}*{b}={product}"),
            (Style::Terse, c) => format!("{x}*{b}+{c}={product}"),
            (Style::Verbose, 0) => format!("{x} times {b} is {product}"),
            (Style::Verbose, c) => format!("{x} times {b} plus {c} is {product}"),
        });
        answer_digits.push(product % 10);
        carry = product / 10;
    }
    let answer = compose(&answer_digits, carry);
    let response = match style {
        Style::Terse => format!("{} #### {answer}", steps.join(", ")),
        Style::Verbose => format!("Let's multiply. {}. So the answer is {answer}. #### {answer}", steps.join(". ")),
    };
    Example { prompt: format!("Q: {a}*{b}\nA: "), response, noisy: slipped.is_some() }
}

/// The puzzle: the art and the answer cue (a shorter instruction than the figfont benchmark's, since
/// every prompt token costs a forward pass in every training step).
pub fn figfont_prompt(word: &str) -> String {
    format!("Read:\n{}\nAnswer: ", figfont::render(word))
}

/// Reading three capital letters drawn in the figfont evaluator's block font.
pub fn figfont(rng: &mut Rng, slip_rate: f64) -> Example {
    let letter = |rng: &mut Rng| (b'A' + rng.range(0, 25) as u8) as char;
    let word: String = (0..3).map(|_| letter(rng)).collect();
    let mut answer: Vec<char> = word.chars().collect();
    let noisy = rng.chance(slip_rate);
    if noisy {
        let at = rng.range(0, 2) as usize;
        let mut other = letter(rng);
        while other == answer[at] {
            other = letter(rng);
        }
        answer[at] = other;
    }
    Example { prompt: figfont_prompt(&word), response: answer.into_iter().collect(), noisy }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_answer(response: &str) -> u64 {
        response.rsplit("#### ").next().and_then(|s| s.parse().ok()).expect("a final answer")
    }

    fn operands(prompt: &str, op: char) -> (u64, u64) {
        let body = prompt.trim_start_matches("Q: ").trim_end_matches("\nA: ");
        let (a, b) = body.split_once(op).expect("an operator");
        (a.parse().expect("a number"), b.parse().expect("a number"))
    }

    #[test]
    fn clean_solutions_are_right_and_slipped_ones_are_wrong() {
        let mut rng = Rng::new(3);
        for _ in 0..2000 {
            for style in [Style::Terse, Style::Verbose] {
                let e = addition(&mut rng, style, 0.5);
                let (a, b) = operands(&e.prompt, '+');
                assert_eq!(final_answer(&e.response) == a + b, !e.noisy, "{}{}", e.prompt, e.response);
                let e = multiplication(&mut rng, style, 3, 0.5);
                let (a, b) = operands(&e.prompt, '*');
                assert_eq!(final_answer(&e.response) == a * b, !e.noisy, "{}{}", e.prompt, e.response);
            }
        }
    }

    #[test]
    fn formats_read_as_documented() {
        let mut rng = Rng::new(0);
        let e = addition(&mut rng, Style::Terse, 0.0);
        assert!(e.prompt.starts_with("Q: ") && e.prompt.ends_with("\nA: "));
        assert!(e.response.contains(" #### "));
        let e = multiplication(&mut rng, Style::Verbose, 3, 0.0);
        assert!(e.response.starts_with("Let's multiply. ") && e.response.contains(". So the answer is "));
        let e = figfont(&mut rng, 0.0);
        assert_eq!(e.response.len(), 3);
        assert_eq!(e.prompt, figfont_prompt(&e.response));
    }
}
