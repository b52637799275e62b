use super::*;
use plugin_api::abi_stable::std_types::{RSlice, RStr, RString};
use plugin_api::evaluator::{EvaluatorAdapter, EvaluatorState};

/// (case, generation, reference, expected accuracy)
const CASES: &[(&str, &str, &str, f64)] = &[
    ("answer is (B)", "Comparing the options, the answer is (B).", "B", 1.0),
    ("answer is (B), wrong reference", "Comparing the options, the answer is (B).", "C", 0.0),
    ("self-correction: last explicit wins", "The answer is (B). Actually, the answer is (C).", "C", 1.0),
    ("self-correction: earlier one is not taken", "The answer is (B). Actually, the answer is (C).", "B", 0.0),
    ("answer colon", "Reasoning...\nanswer: C", "C", 1.0),
    ("lower-case in parentheses", "Answer: (d)", "D", 1.0),
    ("lower-case after cue at end", "so the answer: d", "(D)", 1.0),
    ("lower-case article after cue", "The answer is a bit unclear, but (E) fits.", "E", 1.0),
    ("bold letter", "After checking each choice:\n\n**B**", "B", 1.0),
    ("bold after cue", "**Answer:** **C**", "C", 1.0),
    ("response starts with B.", "B. Paris is the capital of France.", "B", 1.0),
    ("parenthesised letter", "I would go with (B)", "B", 1.0),
    ("option B", "Option B is the only consistent one.", "B", 1.0),
    ("boxed letter", "Therefore $\\boxed{B}$", "B", 1.0),
    ("boxed text letter", "\\boxed{\\text{(C)}}", "(C)", 1.0),
    ("just a letter", "B", "B", 1.0),
    ("just a lower-case letter", "  b\n", "B", 1.0),
    ("reference in parentheses", "The answer is J", "(J)", 1.0),
    ("letter beyond J is not an answer", "The answer is (K)", "K", 0.0),
    ("article A is not an answer", "A cat is a small mammal.", "A", 0.0),
    ("article A before the real answer", "A careful reading shows the answer is (D).", "D", 1.0),
    ("article A after the real answer", "The answer is (C). A quick check confirms it.", "C", 1.0),
    ("explicit beats a later shaped letter", "The answer is (B) because (C) is too small.", "B", 1.0),
    ("echoed options, then the answer", "A. 12\nB. 15\nC. 18\nD. 20\nThe correct option is D.", "D", 1.0),
    ("word starting with a letter after cue", "The answer is: Because of friction, (A).", "A", 1.0),
    ("negated cue is not an answer", "The answer is not obvious.", "A", 0.0),
    ("empty generation", "", "A", 0.0),
    ("whitespace generation", "  \n ", "A", 0.0),
    ("no letter at all", "I don't know.", "A", 0.0),
    ("unicode around", "Résumé: la réponse — answer: (C) ✅", "C", 1.0),
    ("empty reference", "The answer is (A)", "", 0.0),
    // Seen grading SmolLM2-135M-Instruct's answers to four-option questions (README, `host grade`).
    ("real: a letter with another option's text is that letter", "A. 100", "A", 1.0),
    ("real: ... and not the option whose text it copied", "A. 100", "B", 0.0),
    ("real: a shaped first line, then the stated answer", "A. Oxygen\n\nThe correct answer is B. Nitrogen", "B", 1.0),
    ("real: arithmetic instead of a letter", "7 * 8 = 54", "B", 0.0),
    // The shapes larger chat models give.
    ("letter with a closing parenthesis", "The answer is B) Paris", "B", 1.0),
    ("bold answer with a closing parenthesis", "**Answer: B) Paris**", "B", 1.0),
    ("response starts with B)", "B) Paris", "B", 1.0),
    ("letter in brackets", "Answer: [D]", "D", 1.0),
    ("final answer heading", "### Final Answer\nThe final answer is $\\boxed{C}$", "C", 1.0),
];

#[test]
fn table_of_generations_and_references() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for &(case, generation, reference, expected) in CASES {
        let got = accuracy(generation, reference);
        if got != expected {
            failures.push(format!("{case}: got {got}, expected {expected} (letter {:?})", extract_letter(generation)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn very_long_text_keeps_the_last_answer() {
    let mut text = "A thought: option (A) seems plausible, but let us check. ".repeat(5_000);
    text.push_str("The answer is (G).");
    text.push_str(&" A cat sat.".repeat(1_000));
    assert_eq!(extract_letter(&text), Some('G'));
    assert_eq!(accuracy(&text, "G"), 1.0);
}

#[test]
fn extraction() {
    assert_eq!(extract_letter("answer: C"), Some('C'));
    assert_eq!(extract_letter("Answer: (d)"), Some('D'));
    assert_eq!(extract_letter("the answer is a bit long"), None);
    assert_eq!(extract_letter("A cat is here."), None);
    assert_eq!(extract_letter("(b) is an enumeration"), None);
    assert_eq!(extract_letter("**(F)**"), Some('F'));
}

fn example<'a>(generations: &'a [RString], reference: &'a str) -> EvaluatorExample<'a> {
    EvaluatorExample {
        prompt: RStr::from("Which is a prime? (A) 4 (B) 5 (C) 6"),
        generations: RSlice::from_slice(generations),
        reference: RStr::from(reference),
        metadata_json: RStr::from("{}"),
    }
}

#[test]
fn scores_through_the_evaluator_trait_and_the_abi_adapter() {
    let mc = MultipleChoice::from_params(&Params::new(&[])).unwrap();
    let generations = [RString::from("5 is prime, so the answer is (B)."), RString::from("A prime? I think (C).")];
    let ex = example(&generations, "B");
    for (generation, expected) in generations.iter().zip([1.0, 0.0]) {
        let scores = mc.score_one(generation.as_str(), "B", &ex);
        assert_eq!(scores, vec![("accuracy".to_string(), expected)]);
    }

    let adapter = EvaluatorAdapter(MultipleChoice);
    let scored = adapter.score(ex).unwrap();
    let values: Vec<Vec<f64>> = scored.per_generation.iter().map(|g| g.iter().map(|s| s.value).collect()).collect();
    assert_eq!(values, vec![vec![1.0], vec![0.0]]);
}

#[test]
fn declares_its_name() {
    let module = crate::sft_plugin_root_module();
    assert_eq!(module.name().as_str(), "multiple_choice");
    assert_eq!(module.kind(), plugin_api::PluginKind::Evaluator);
}
