//! `continuum-datasets`: writes the miniature capability continuum, deterministically from a seed.
//!
//! One character tokenizer, one pretraining corpus and three SFT domains that the pretrained base
//! model knows to three different degrees (see `datasets/continuum/README.md`):
//! - `arithmetic`: worked additions in the pretraining format (the base knows it well);
//! - `multiplication`: worked multiplications in a verbose style the base saw only in pieces;
//! - `figfont`: reading capital letters drawn as FIGlet-style ASCII art, never seen in pretraining.
//!
//! The SFT demonstrations are partly noisy, as real chain-of-thought data is: a share of them carries
//! a slip (a wrong column sum, a misread letter) that propagates to the final answer. The held-out
//! evaluation problems are always correct and never appear in the pretraining corpus or a train split.

mod domains;
mod tokenizer;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use domains::{Example, Rng};

#[derive(Parser)]
#[command(about = "Writes the miniature continuum: tokenizer, pretraining corpus, three SFT domains")]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "datasets/continuum")]
    out: PathBuf,
    /// Seed of everything generated.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Documents in the pretraining corpus.
    #[arg(long, default_value_t = 64_000)]
    pretrain_docs: usize,
    /// SFT demonstrations per domain.
    #[arg(long, default_value_t = 2_000)]
    train_size: usize,
    /// Held-out problems per domain.
    #[arg(long, default_value_t = 150)]
    eval_size: usize,
}

/// Problems per pretraining row.
const PACKED: usize = 4;

fn main() -> Result<()> {
    let args = Args::parse();
    // Each part draws from its own stream, so changing one domain leaves the others (and the
    // pretraining corpus, hence the shipped base model) as they were.
    let stream = |part: u64| Rng::new(args.seed.wrapping_mul(0x1000_0000_01B3) ^ part);

    // Held-out problems first, so that nothing else may use them.
    let mut taken = HashSet::new();
    let domains = domains::all();
    let mut evals = Vec::new();
    for (i, domain) in domains.iter().enumerate() {
        let mut rng = stream(10 + i as u64);
        evals.push(unique(&mut rng, &mut taken, args.eval_size, |rng| (domain.clean)(rng)));
    }

    let pretrain = unique(&mut stream(1), &mut taken, args.pretrain_docs, domains::pretraining_document);
    // Rows pack `PACKED` problems each, joined by the EOS token, so that no step is spent on padding.
    // A row's first token has no context to be predicted from, so its opening `Q: ` is the prompt.
    let documents = pretrain.chunks(PACKED).map(|chunk| {
        let text = chunk.iter().map(Example::text).collect::<Vec<_>>().join(tokenizer::EOS);
        let (opening, rest) = text.split_at(3);
        json!({"prompt": opening, "response": rest})
    });
    write_jsonl(&args.out.join("pretrain.jsonl"), documents)?;

    for (i, (domain, eval)) in domains.iter().zip(&evals).enumerate() {
        let dir = args.out.join(domain.name);
        let mut rng = stream(20 + i as u64);
        let train = unique(&mut rng, &mut taken, args.train_size, |rng| (domain.demonstration)(rng));
        write_jsonl(&dir.join("train.jsonl"), train.iter().map(Example::to_json))?;
        write_jsonl(&dir.join("eval.jsonl"), eval.iter().map(Example::to_json))?;
        let noisy = train.iter().filter(|e| e.noisy).count();
        println!(
            "{}: {} train ({noisy} with a slip), {} eval -> {}",
            domain.name,
            train.len(),
            eval.len(),
            dir.display()
        );
    }
    tokenizer::write(&args.out.join("tokenizer"))?;
    println!(
        "pretraining corpus: {} problems in rows of {PACKED}; tokenizer in {}",
        pretrain.len(),
        args.out.join("tokenizer").display()
    );
    Ok(())
}

/// `n` examples from `make` whose prompts were not produced before (by any domain or split).
fn unique(
    rng: &mut Rng,
    taken: &mut HashSet<String>,
    n: usize,
    mut make: impl FnMut(&mut Rng) -> Example,
) -> Vec<Example> {
    let mut out = Vec::with_capacity(n);
    let mut tries = 0usize;
    while out.len() < n {
        let example = make(rng);
        tries += 1;
        assert!(tries < 100 * n + 1000, "the generator ran out of distinct problems");
        if taken.insert(example.prompt.clone()) {
            out.push(example);
        }
    }
    out
}

fn write_jsonl(path: &Path, rows: impl Iterator<Item = serde_json::Value>) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
