//! `host bench --hidden H --layers L --heads N --kv-heads K --vocab V --intermediate I --batch B
//! (--seq T | --lengths MIN:MAX) --steps S [--objective NAME] [--warmup W] [--threads N] [--device cpu|cuda:N]
//! [--dtype f32|bf16] [--autograd | --padded] [--lora-r R [--lora-targets q_proj,v_proj|all-linear]]`:
//! training throughput on a random model (with `--lora-r`, of a LoRA adapter on it, the model frozen).
//!
//! Prints the memory estimate, one line per step, then the medians after warm-up, the peak memory (RSS;
//! on a CUDA device also `peak device memory: X MiB in use, Y MiB allocated`), the objective plugin's
//! share of the step time, the padding share and `useful tokens/s: X` (tokens that carry loss), and as its
//! last line `tokens/s: X` (real tokens).

use anyhow::{bail, Result};

use engine::device::PeakMemory;

use crate::bench::{self, BenchOptions, StepTiming};

pub fn run(options: &BenchOptions<'_>, threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // candle's thread pools (and gemm's, on rayon's global pool) size themselves from these on first
        // use; nothing has touched a tensor yet and no other thread is running.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    let s = options.shape;
    println!(
        "bench: hidden {} intermediate {} layers {} heads {} kv-heads {} vocab {}; batch {} x {} tokens; {} steps ({} warm-up); objective {}; {} {}{}{}",
        s.hidden,
        s.intermediate,
        s.layers,
        s.heads,
        s.kv_heads,
        s.vocab,
        options.batch,
        match options.lengths {
            Some(l) => format!("{}:{}", l.min, l.max),
            None => options.seq.to_string(),
        },
        options.steps,
        options.warmup,
        options.objective,
        options.device,
        options.dtype,
        match options.pass {
            bench::BenchPass::Packed => "",
            bench::BenchPass::Padded => "; padded batch",
            bench::BenchPass::Autograd => "; candle autograd pass",
        },
        match &options.lora {
            Some(l) => format!("; LoRA r {} on {}", l.r, l.target_modules.join(",")),
            None => String::new(),
        }
    );
    let tokens = options.batch * options.seq;
    let on_start = |device: &engine::Device, dtype, estimate: &engine::MemoryEstimate| {
        println!("{}", estimate.report(device, dtype));
    };
    let report = bench::run(options, on_start, |index, t| {
        let phases: Vec<String> =
            StepTiming::PHASES.iter().enumerate().map(|(i, name)| format!("{name} {:.3}s", t.phase(i))).collect();
        println!(
            "step {}/{}: {:.3}s  {}  {:.0} {}tokens/s",
            index + 1,
            options.steps,
            t.total,
            phases.join("  "),
            tokens as f64 / t.total.max(1e-12),
            if options.lengths.is_some() { "padded " } else { "" }
        );
    })?;

    println!("parameters: {}  trainable: {}  threads: {}", report.params, report.trainable_params, report.threads);
    println!("loss (objective mean): first {:.6}, last {:.6}", report.first_loss, report.last_loss);
    let step_median: f64 = bench::median(report.steps[report.warmup..].iter().map(|t| t.total));
    let breakdown: Vec<String> = StepTiming::PHASES
        .iter()
        .zip(report.median_phase)
        .map(|(name, sec)| format!("{name} {sec:.3}s ({:.1}%)", 100.0 * sec / step_median.max(1e-12)))
        .collect();
    println!("median step: {step_median:.3}s  {}", breakdown.join("  "));
    match report.peak_rss_kib {
        Some(kib) => println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unknown"),
    }
    if let PeakMemory::Device { used, allocated } = report.peak {
        let allocated = allocated.map_or("unknown".to_string(), engine::device::mib);
        println!("peak device memory: {} in use, {allocated} allocated", engine::device::mib(used));
    }
    println!("objective plugin share of step time: {:.3}%", 100.0 * report.objective_share);
    println!("padding share: {:.3}", report.padding_share);
    println!("useful tokens/s: {:.1}", report.median_useful_tokens_per_second);
    println!("median tokens/s after {} warm-up steps: {:.1}", report.warmup, report.median_tokens_per_second);
    println!("tokens/s: {:.1}", report.median_tokens_per_second);
    Ok(())
}
