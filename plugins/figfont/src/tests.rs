use super::*;
use plugin_api::abi_stable::std_types::{RSlice, RStr, RString};
use plugin_api::evaluator::{EvaluatorAdapter, EvaluatorState};
use std::collections::HashSet;

/// (case, generation, reference, exact, exact_ci, jaro_winkler); the Jaro–Winkler values were
/// computed with an independent reference implementation (textbook pairs: MARTHA/MARHTA 0.961111,
/// DWAYNE/DUANE 0.84, DIXON/DICKSONX 0.813333).
const CASES: &[(&str, &str, &str, f64, f64, f64)] = &[
    ("exact", "HOUSE", "HOUSE", 1.0, 1.0, 1.0),
    ("lower case", "house", "HOUSE", 0.0, 1.0, 1.0),
    ("mixed case", "HoUsE", "HOUSE", 0.0, 1.0, 1.0),
    ("surrounding whitespace", "  HOUSE  \n", "HOUSE", 1.0, 1.0, 1.0),
    ("reference whitespace", "house", " house \n", 1.0, 1.0, 1.0),
    ("leading blank lines", "\n\n  HOUSE\nbecause the art shows it", "HOUSE", 1.0, 1.0, 1.0),
    ("only the first line counts", "WRONG\nHOUSE", "HOUSE", 0.0, 0.0, 0.466667),
    ("repeated answer", "HOUSE\nHOUSE", "HOUSE", 1.0, 1.0, 1.0),
    ("trailing period", "HOUSE.", "HOUSE", 0.0, 0.0, 0.966667),
    ("transposition", "HOSUE", "HOUSE", 0.0, 0.0, 0.946667),
    ("one wrong letter", "HOYSE", "HOUSE", 0.0, 0.0, 0.893333),
    ("missing letter", "HOUS", "HOUSE", 0.0, 0.0, 0.96),
    ("extra letter", "HOUSES", "HOUSE", 0.0, 0.0, 0.966667),
    ("single letter", "H", "HOUSE", 0.0, 0.0, 0.76),
    ("spelled out with spaces", "H O U S E", "HOUSE", 0.0, 0.0, 0.773333),
    ("sentence answer", "The word is HOUSE", "HOUSE", 0.0, 0.0, 0.595098),
    ("echoed cue", "Answer: HOUSE", "HOUSE", 0.0, 0.0, 0.517949),
    ("textbook MARTHA", "MARHTA", "MARTHA", 0.0, 0.0, 0.961111),
    ("textbook DWAYNE", "DUANE", "DWAYNE", 0.0, 0.0, 0.84),
    ("textbook DIXON", "DICKSONX", "DIXON", 0.0, 0.0, 0.813333),
    ("nothing in common", "XYZ", "HOUSE", 0.0, 0.0, 0.0),
    ("empty generation", "", "HOUSE", 0.0, 0.0, 0.0),
    ("blank generation", "   \n \t\n", "HOUSE", 0.0, 0.0, 0.0),
    ("unicode case folding", "ÉCOLE", "école", 0.0, 1.0, 1.0),
    ("full-width letters", "ＨＯＵＳＥ", "HOUSE", 0.0, 0.0, 0.0),
    ("art echoed instead of a word", "#   # ###\n#   #  #", "HI", 0.0, 0.0, 0.0),
    // Seen grading SmolLM2-135M-Instruct on datasets/real/figfont (a model-weak task: no right answers).
    ("real: art redrawn with spaces", "# # # # # #\n## # # # # #\n# # # # # #", "MFC", 0.0, 0.0, 0.0),
    ("real: blank first lines, then art", "\n\n# #   #\n#   #", "UTK", 0.0, 0.0, 0.0),
];

#[test]
fn table_of_generations_and_references() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for &(case, generation, reference, exact, exact_ci, jw) in CASES {
        let got = scores(generation, reference);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["exact", "exact_ci", "jaro_winkler"]);
        let ok = got[0].1 == exact && got[1].1 == exact_ci && (got[2].1 - jw).abs() < 1e-6;
        if !ok {
            failures.push(format!("{case}: got {got:?}, expected {exact} {exact_ci} {jw}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn very_long_generation_uses_its_first_line() {
    let mut text = String::from("\n  APPLE \n");
    text.push_str(&"and some rambling about the drawing ".repeat(5_000));
    assert_eq!(
        scores(&text, "APPLE"),
        vec![("exact".to_string(), 1.0), ("exact_ci".to_string(), 1.0), ("jaro_winkler".to_string(), 1.0)]
    );
}

#[test]
fn jaro_winkler_is_symmetric_and_bounded() {
    for (a, b) in [("martha", "marhta"), ("dixon", "dicksonx"), ("", "a"), ("abc", "cba")] {
        let (x, y) = (jaro_winkler(a, b), jaro_winkler(b, a));
        assert!((x - y).abs() < 1e-12 && (0.0..=1.0).contains(&x), "{a} {b}");
    }
    assert_eq!(jaro_winkler("", ""), 1.0);
}

#[test]
fn render_hi() {
    let expected = "\
#   # ###
#   #  #
#####  #
#   #  #
#   # ###";
    assert_eq!(render("HI"), expected);
    assert_eq!(render("hi"), expected, "lower case is drawn in capitals");
}

#[test]
fn render_shapes() {
    assert_eq!(render(""), "\n\n\n\n");
    assert_eq!(render("A B").lines().next(), Some(" ###      ####"));
    assert_eq!(render("1").lines().collect::<Vec<_>>(), [" #", "##", " #", " #", "###"]);
    assert_eq!(render("A!"), render("A"), "characters without a glyph are skipped");
}

#[test]
fn font_is_complete_and_distinct() {
    let chars: Vec<char> = ('A'..='Z').chain('0'..='9').collect();
    let mut seen = HashSet::new();
    for c in chars {
        let g = render::glyph(c).unwrap_or_else(|| panic!("no glyph for {c}"));
        let width = g[0].chars().count();
        assert!(
            g.iter().all(|r| r.chars().count() == width && r.chars().all(|ch| ch == '#' || ch == ' ')),
            "glyph {c} is ragged or uses other characters"
        );
        assert!(seen.insert(*g), "glyph {c} duplicates another");
    }
    assert_eq!(render::FONT.len(), 36);
}

#[test]
fn word_list_and_splits() {
    let all: HashSet<&str> = render::WORDS.iter().copied().collect();
    assert_eq!(all.len(), 200, "words are distinct");
    assert!(render::WORDS.iter().all(|w| w.chars().all(|c| c.is_ascii_uppercase())));
    let train: HashSet<&str> = render::train_words().collect();
    let test: HashSet<&str> = render::test_words().collect();
    assert_eq!((train.len(), test.len()), (100, 100));
    assert!(train.is_disjoint(&test));
    assert_eq!(render::split_words("validation"), render::split_words("test"));
    assert_eq!(render::split_words("bogus"), None);
}

#[test]
fn puzzles_are_deterministic_and_splits_disjoint() {
    let a = puzzles("train", 50, 7);
    assert_eq!(a, puzzles("train", 50, 7));
    assert_ne!(a, puzzles("train", 50, 8));
    assert_eq!(a.len(), 50);
    let train: HashSet<String> = puzzles("train", 300, 1).into_iter().map(|p| p.1).collect();
    let test: HashSet<String> = puzzles("test", 300, 1).into_iter().map(|p| p.1).collect();
    assert_eq!((train.len(), test.len()), (100, 100), "300 draws cover each half");
    assert!(train.is_disjoint(&test));
    // No repeats within one pass over the split.
    let first: HashSet<&String> = a.iter().map(|p| &p.1).collect();
    assert_eq!(first.len(), 50);
    assert!(puzzles("test", 0, 3).is_empty());
}

#[test]
fn puzzle_prompt_shape() {
    let (prompt, word) = &puzzles("test", 1, 42)[0];
    assert_eq!(prompt, &format!("Read the word drawn below in ASCII art.\n{}\nAnswer: ", render(word)));
    assert!(prompt.ends_with("\nAnswer: "));
    assert_eq!(prompt.lines().count(), 7);
}

#[test]
#[should_panic(expected = "unknown figfont split")]
fn unknown_split_panics() {
    puzzles("holdout", 1, 0);
}

fn example<'a>(generations: &'a [RString], reference: &'a str) -> EvaluatorExample<'a> {
    EvaluatorExample {
        prompt: RStr::from(""),
        generations: RSlice::from_slice(generations),
        reference: RStr::from(reference),
        metadata_json: RStr::from("{}"),
    }
}

#[test]
fn scores_through_the_evaluator_trait_and_the_abi_adapter() {
    let ff = FigFont::from_params(&Params::new(&[])).unwrap();
    let generations = [RString::from("Hi\nthere"), RString::from("HO")];
    let ex = example(&generations, "HI");
    assert_eq!(
        ff.score_one("Hi\nthere", "HI", &ex),
        vec![("exact".to_string(), 0.0), ("exact_ci".to_string(), 1.0), ("jaro_winkler".to_string(), 1.0)]
    );
    let adapter = EvaluatorAdapter(FigFont);
    let scored = adapter.score(ex).unwrap();
    assert_eq!(scored.per_generation.len(), 2);
    let aggregate = adapter.aggregate(RSlice::from_slice(&[scored])).unwrap();
    let names: Vec<&str> = aggregate.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["exact", "exact@mean", "exact_ci", "exact_ci@mean", "jaro_winkler", "jaro_winkler@mean"]);
    assert_eq!(aggregate[3].value, 0.5);
}

#[test]
fn declares_its_name() {
    let module = crate::sft_plugin_root_module();
    assert_eq!(module.name().as_str(), "figfont");
    assert_eq!(module.kind(), plugin_api::PluginKind::Evaluator);
}
