use super::*;
use plugin_api::abi_stable::std_types::{RSlice, RStr, RString};
use plugin_api::evaluator::{EvaluatorAdapter, EvaluatorState};

/// (case, generation, reference, expected accuracy)
const CASES: &[(&str, &str, &str, f64)] = &[
    ("plain boxed integer", "So the total is $\\boxed{42}$.", "42", 1.0),
    ("wrong boxed integer", "The answer is \\boxed{41}.", "42", 0.0),
    ("last of several boxes counts", "First guess \\boxed{3}, but rechecking gives \\boxed{5}.", "5", 1.0),
    ("earlier box does not count", "First guess \\boxed{5}, but rechecking gives \\boxed{3}.", "5", 0.0),
    ("nested braces in box", "Hence $p = \\boxed{\\frac{1}{2}}$", "\\frac{1}{2}", 1.0),
    ("nested box equals decimal", "\\boxed{\\dfrac{3}{4}}", "0.75", 1.0),
    ("number after the box is ignored", "\\boxed{12}. Check: 3 * 4 = 12, and 12 + 1 = 13", "12", 1.0),
    ("fbox", "Final: \\fbox{7}", "7", 1.0),
    ("final number fallback", "She has 3 apples and buys 4 more, so 7 apples.", "7", 1.0),
    ("final number is the last one", "7 apples, not 8", "7", 0.0),
    ("thousands separator vs plain", "The population is 1,000.", "1000", 1.0),
    ("plain vs thousands separator reference", "\\boxed{1234567}", "1,234,567", 1.0),
    ("0.50 vs 1/2", "The probability is 0.50", "1/2", 1.0),
    ("a/b vs \\frac", "The ratio is 3/4", "\\frac{3}{4}", 1.0),
    ("\\dfrac12 shorthand", "\\boxed{\\dfrac12}", "0.5", 1.0),
    ("\\tfrac", "\\boxed{\\tfrac{2}{4}}", "\\frac12", 1.0),
    ("negative number", "So x = -5.", "-5", 1.0),
    ("negative vs positive", "So x = -5.", "5", 0.0),
    ("unicode minus", "The temperature drops to \u{2212}3 degrees", "-3", 1.0),
    ("subtraction is not a sign", "We compute 10-3", "-3", 0.0),
    ("negative fraction", "\\boxed{-\\frac{1}{3}}", "\\frac{-1}{3}", 1.0),
    ("percent equals the bare number", "\\boxed{50\\%}", "50", 1.0),
    ("percent is not divided out", "\\boxed{50\\%}", "0.5", 0.0),
    ("dollar signs and units", "It costs \\$18 dollars in total: \\boxed{\\$18}", "18", 1.0),
    ("unit word", "\\boxed{12 cm}", "12", 1.0),
    ("glued unit", "\\boxed{12cm}", "12", 1.0),
    ("\\text unit", "\\boxed{5\\text{ inches}}", "5", 1.0),
    ("\\text any trailing word", "\\boxed{10 \\text{apples}}", "10", 1.0),
    ("leading x =", "\\boxed{x = 4}", "4", 1.0),
    ("trailing period", "\\boxed{4.}", "4", 1.0),
    ("degree mark", "\\boxed{30^\\circ}", "30", 1.0),
    ("relative tolerance", "\\boxed{0.3333333333}", "\\frac{1}{3}", 1.0),
    ("outside tolerance", "\\boxed{0.333}", "\\frac{1}{3}", 0.0),
    ("decimal equality", "\\boxed{2.50}", "2.5", 1.0),
    ("reference with box", "\\boxed{8}", "The side is $\\boxed{8}$.", 1.0),
    ("gsm8k reference", "Total: 72", "48 + 24 = 72\n#### 72", 1.0),
    ("symbolic answer", "\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1.0),
    ("latex spacing ignored", "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3,\\frac{\\pi}{2})", 1.0),
    ("tuple element-wise", "\\boxed{(0.5, 2)}", "\\left(\\frac{1}{2}, 2\\right)", 1.0),
    ("interval brackets differ", "\\boxed{[0, 1)}", "[0, 1]", 0.0),
    ("symbolic mismatch", "\\boxed{x^2+1}", "x^2-1", 0.0),
    ("\\text word answer", "\\boxed{\\text{Devon}}", "Devon", 1.0),
    ("thin-space thousands", "\\boxed{1\\,000}", "1000", 1.0),
    ("empty generation", "", "5", 0.0),
    ("no number at all", "I am not sure.", "5", 0.0),
    ("empty box", "\\boxed{}", "5", 0.0),
    ("truncated last box", "\\boxed{6} then \\boxed{7", "6", 1.0),
    ("unicode text around", "Die Antwort ist \u{2248} 3.14 \u{1F642}", "3.14", 1.0),
    ("division by zero is no number", "\\boxed{1/0}", "1/0", 1.0),
    ("number inside a word-list", "Steps 1, 2, 3 give 4", "4", 1.0),
    // The cases: expressions, not only numbers.
    ("braced power", "\\boxed{x^{2}+1}", "x^2+1", 1.0),
    ("commuted sum", "\\boxed{1+x^2}", "x^2+1", 1.0),
    ("sqrt with and without braces", "\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("simplified radical", "\\boxed{3\\sqrt{2}}", "\\sqrt{18}", 1.0),
    ("pi over two", "\\boxed{\\pi/2}", "\\frac{\\pi}{2}", 1.0),
    ("choice letter in text", "\\boxed{\\text{(B)}}", "B", 1.0),
    ("other choice letter", "\\boxed{\\text{(C)}}", "B", 0.0),
    ("polynomial identity", "\\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    ("polynomial near miss", "\\boxed{(x+1)^2}", "x^2+x+1", 0.0),
    ("implicit products commute", "\\boxed{2\\pi r}", "2r\\pi", 1.0),
    ("trig value", "\\boxed{\\sin\\frac{\\pi}{6}}", "\\frac12", 1.0),
    ("log base", "\\boxed{\\log_2 8}", "3", 1.0),
    ("mixed number", "\\boxed{2\\frac{1}{2}}", "\\frac{5}{2}", 1.0),
    ("nested fraction", "\\boxed{\\frac{1}{1+\\frac{1}{2}}}", "\\frac23", 1.0),
    ("exact rationals", "\\boxed{0.1+0.2}", "\\frac{3}{10}", 1.0),
    ("inequality as interval", "\\boxed{x > 3}", "(3, \\infty)", 1.0),
    ("inequality end differs", "\\boxed{x \\ge 3}", "(3, \\infty)", 0.0),
    ("double inequality", "\\boxed{1 < x \\le 2}", "(1, 2]", 1.0),
    ("set order", "\\boxed{\\{3, 2, 1\\}}", "\\{1,2,3\\}", 1.0),
    ("set element differs", "\\boxed{\\{3, 2, 0\\}}", "\\{1,2,3\\}", 0.0),
    ("plus-minus pair", "\\boxed{2 \\pm \\sqrt{3}}", "2+\\sqrt3, 2-\\sqrt3", 1.0),
    ("tuple order matters", "\\boxed{(2, 1)}", "(1, 2)", 0.0),
    (
        "matrix",
        "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}",
        "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}",
        1.0,
    ),
    (
        "matrix entry differs",
        "\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}}",
        "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
        0.0,
    ),
    ("union of intervals", "\\boxed{(-\\infty, 0) \\cup (1, \\infty)}", "(1,\\infty)\\cup(-\\infty,0)", 1.0),
    ("equation rhs", "\\boxed{y = 2x+3}", "3+2x", 1.0),
    ("complex number", "\\boxed{4i+3}", "3+4i", 1.0),
    ("i squared", "\\boxed{i^2}", "-1", 1.0),
    ("scientific notation", "\\boxed{1.5 \\times 10^{3}}", "1500", 1.0),
    ("cube root", "\\boxed{\\sqrt[3]{8}}", "2", 1.0),
    ("text answers ignore case", "\\boxed{\\text{Monday}}", "monday", 1.0),
    ("different text", "\\boxed{\\text{Monday}}", "Tuesday", 0.0),
    ("huge power stays bounded", "\\boxed{10^{10^{10}}}", "10^{10^{10}}", 1.0),
    ("a bare number after ^ is the whole exponent", "\\boxed{2^10}", "1024", 1.0),
    ("\\frac keeps one-digit arguments", "\\boxed{\\frac123}", "\\frac{1}{2}\\cdot 3", 1.0),
    ("\\choose", "\\boxed{{5 \\choose 2}}", "10", 1.0),
    ("\\choose without braces", "\\boxed{6 \\choose 3}", "20", 1.0),
    ("\\mathbb{R} is the real line", "\\boxed{\\mathbb{R}}", "(-\\infty, \\infty)", 1.0),
    ("a list in words", "\\boxed{1 \\text{ and } 2}", "2, 1", 1.0),
    ("unit words after an expression", "\\boxed{36\\pi \\text{ cubic units}}", "36\\pi", 1.0),
    ("other words after an expression count", "\\boxed{36\\pi \\text{ or so}}", "36\\pi", 0.0),
    ("a numeral in base 2", "\\boxed{1011_{2}}", "11", 1.0),
    ("a different numeral in base 2", "\\boxed{1101_2}", "1011_2", 0.0),
    ("stated answer", "So, the final answer is x^2 + 2x + 1.", "(x+1)^2", 1.0),
    ("stated answer with a variable and unicode", "So, the final answer is A = 9π.", "9\\pi", 1.0),
    ("stated answer in words", "The answer is that x equals 6", "6", 1.0),
    ("the last stated answer counts", "The answer is 5. Wait, the answer is 6.", "6", 1.0),
    ("a wrong stated answer is not saved by a later number", "The answer is 5.\nCheck: 6", "6", 0.0),
    ("a stated expression is not its last number", "The final answer is S = 180 - n", "180", 0.0),
    ("stated text answer", "The answer is Tuesday.", "\\text{Tuesday}", 1.0),
    ("a box beats a stated answer", "The answer is 3, so \\boxed{4}", "3", 0.0),
    ("a written-out approximation is not exact", "\\boxed{3.14159}", "\\pi", 0.0),
];

#[test]
fn table_of_generations_and_references() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for &(case, generation, reference, expected) in CASES {
        let got = accuracy(generation, reference);
        if got != expected {
            failures
                .push(format!("{case}: got {got}, expected {expected} (answer {:?})", generation_answer(generation)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn very_long_text_keeps_the_last_box() {
    let mut text = "Let us reason step by step. 17 + 25 = 42. ".repeat(5_000);
    text.push_str("\\boxed{99}");
    text.push_str(&" and 1".repeat(1_000));
    assert_eq!(accuracy(&text, "99"), 1.0);
    assert_eq!(accuracy(&text, "1"), 0.0);
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let deep = format!("\\boxed{{{}1{}}}", "{".repeat(50_000), "}".repeat(50_000));
    assert_eq!(accuracy(&deep, "1"), 0.0);
    let shallow = format!("\\boxed{{{}1{}}}", "{".repeat(3), "}".repeat(3));
    assert_eq!(accuracy(&shallow, "1"), 1.0);
    let signs = format!("\\boxed{{{}5}}", "-".repeat(100_000));
    assert_eq!(accuracy(&signs, "5"), 0.0);
    let tuples = format!("\\boxed{{{}1,2{}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(accuracy(&tuples, "(1,2)"), 0.0);
}

#[test]
fn extraction() {
    assert_eq!(last_boxed("\\boxed{a} \\boxed{\\frac{1}{2}}"), Some("\\frac{1}{2}"));
    assert_eq!(last_boxed("$\\boxed 5$"), Some("5"));
    assert_eq!(last_boxed("\\boxed{\\{1, 2\\}}"), Some("\\{1, 2\\}"));
    assert_eq!(last_boxed("no box"), None);
    assert_eq!(last_number("from -2 to 1,234.5 ok"), Some("1,234.5"));
    assert_eq!(last_number("ratio 3/4."), Some("3/4"));
    assert_eq!(last_number("is \\frac{1}{2} here"), Some("\\frac{1}{2}"));
    assert_eq!(last_number("list 1,2345"), Some("2345"));
    assert_eq!(last_number("x=-.5"), Some("-.5"));
    assert_eq!(reference_answer("  7 "), "7");
    assert_eq!(reference_answer("work\n#### 1,000"), "1,000");
}

fn example<'a>(generations: &'a [RString], reference: &'a str) -> EvaluatorExample<'a> {
    EvaluatorExample {
        prompt: RStr::from("What is 1/2 + 1/4?"),
        generations: RSlice::from_slice(generations),
        reference: RStr::from(reference),
        metadata_json: RStr::from("{}"),
    }
}

#[test]
fn scores_through_the_evaluator_trait_and_the_abi_adapter() {
    let math = Math::from_params(&Params::new(&[])).unwrap();
    let generations = [RString::from("1/2 + 1/4 = \\boxed{\\frac{3}{4}}"), RString::from("It is 0.7")];
    let ex = example(&generations, "0.75");
    for (generation, expected) in generations.iter().zip([1.0, 0.0]) {
        let scores = math.score_one(generation.as_str(), "0.75", &ex);
        assert_eq!(scores, vec![("accuracy".to_string(), expected)]);
    }

    let adapter = EvaluatorAdapter(Math);
    let scored = adapter.score(ex).unwrap();
    let values: Vec<Vec<f64>> = scored.per_generation.iter().map(|g| g.iter().map(|s| s.value).collect()).collect();
    assert_eq!(values, vec![vec![1.0], vec![0.0]]);
    let aggregate = adapter.aggregate(RSlice::from_slice(&[scored])).unwrap();
    let names: Vec<&str> = aggregate.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["accuracy", "accuracy@mean"]);
    assert_eq!(aggregate[1].value, 0.5);
}

#[test]
fn declares_its_name() {
    assert_eq!(<Math as Evaluator>::NAME, "math");
    let module = crate::sft_plugin_root_module();
    assert_eq!(module.name().as_str(), "math");
    assert_eq!(module.kind(), plugin_api::PluginKind::Evaluator);
}

/// The ids of the table rows whose disagreement with math-verify the crate documentation explains:
/// the rows `//! | <id> | ...` of its disagreements table.
fn documented_disagreements() -> std::collections::BTreeSet<u64> {
    include_str!("lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | ")?.split(" |").next()?.trim().parse().ok())
        .collect()
}

#[test]
fn agrees_with_math_verify_on_the_committed_table() {
    let table = include_str!("../tests/math_verify_table.jsonl");
    let mut rows = 0;
    let mut disagreements = std::collections::BTreeMap::new();
    for line in table.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let (generation, reference) = (row["generation"].as_str().unwrap(), row["reference"].as_str().unwrap());
        let oracle = row["math_verify"].as_bool().unwrap();
        let ours = accuracy(generation, reference) == 1.0;
        rows += 1;
        if ours != oracle {
            let id = row["id"].as_u64().unwrap();
            disagreements.insert(
                id,
                format!("{id} [{}] {generation:?} vs {reference:?}: math-verify {oracle}, here {ours}", row["form"]),
            );
        }
    }
    assert!(rows >= 300, "the table has {rows} rows");
    let agreement = 1.0 - disagreements.len() as f64 / rows as f64;
    let listed: Vec<&String> = disagreements.values().collect();
    assert!(agreement >= 0.98, "agreement {agreement:.4} over {rows} rows:\n{listed:#?}");
    let documented = documented_disagreements();
    let undocumented: Vec<&String> =
        disagreements.iter().filter(|(id, _)| !documented.contains(id)).map(|(_, d)| d).collect();
    assert!(undocumented.is_empty(), "disagreements missing from the crate docs:\n{undocumented:#?}");
    let stale: Vec<&u64> = documented.iter().filter(|id| !disagreements.contains_key(id)).collect();
    assert!(stale.is_empty(), "documented disagreements that now agree: {stale:?}");
}
