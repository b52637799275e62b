//! The `host` command line: parses arguments and calls the library. See `host --help`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::commands;
use host::commands::sweep::{Mode, SweepArgs};
use host::plugins::SearchPath;
use host::train::TrainOptions;

#[derive(Parser)]
#[command(name = "host", version, about = "SFT trainer with probability-based objectives as plugins")]
struct Cli {
    /// Folder to search for plugins given by name (repeatable; before HOST_PLUGIN_PATH and the binary's folder).
    #[arg(long = "plugin-dir", global = true)]
    plugin_dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and check plugins.
    Plugins {
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// Fine-tune a model with an objective plugin.
    Train {
        /// The run config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Objective plugin by name or path (overrides [objective] plugin).
        #[arg(long)]
        plugin: Option<String>,
        /// Config override, e.g. optim.lr=1e-4 (repeatable).
        #[arg(long = "set")]
        overrides: Vec<String>,
        /// Continue from the latest checkpoint in the output folder (from step 0 if it has none yet).
        #[arg(long)]
        resume: bool,
        /// Start over in an output folder that holds a run, removing that run's checkpoints and metrics.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Where to train: cpu, cuda or cuda:N (overrides [model] device; cuda needs a --features cuda build).
        #[arg(long)]
        device: Option<String>,
        /// Also write what the run produced (run folder, checkpoint, metrics, losses) as JSON to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
    },
    /// Write the log-probability of every response token (EOS included) of a data file.
    Score {
        #[arg(long)]
        model: PathBuf,
        /// A LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) to attach to --model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "prompt")]
        prompt_key: String,
        #[arg(long, default_value = "response")]
        response_key: String,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[command(flatten)]
        encode: host::encode::EncodeOptions,
        /// cpu, cuda or cuda:N (cuda needs a --features cuda build).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Show exactly what the trainer sees per example: the rendered text, token ids and loss mask.
    Preview(commands::preview::PreviewArgs),
    /// Convert a .gguf file into a Hugging Face model directory.
    Convert(commands::convert::ConvertArgs),
    /// Fold a LoRA adapter into its base model and write a full Hugging Face model directory.
    Merge(commands::merge::MergeArgs),
    /// Generate for every prompt of a data file and score the generations with an evaluator plugin.
    Eval {
        #[arg(long)]
        model: PathBuf,
        /// A LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) to attach to --model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        /// Evaluator plugin by name or path.
        #[arg(long)]
        evaluator: String,
        /// Evaluator parameter, key=value (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Generations per prompt (more than 1 needs --temperature > 0).
        #[arg(long, default_value_t = 1)]
        samples: usize,
        /// Sampling temperature; 0 is greedy.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        temperature: f64,
        /// Nucleus size in (0, 1].
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        top_p: f64,
        #[arg(long, default_value_t = 512)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Stop string, cut from the text with what follows; \n and \t mean newline and tab (repeatable).
        #[arg(long, allow_hyphen_values = true)]
        stop: Vec<String>,
        #[arg(long, default_value = "prompt")]
        prompt_key: String,
        #[arg(long, default_value = "response")]
        response_key: String,
        /// Prompts per generation batch (each with --samples rows).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Render each prompt through the tokenizer's chat template.
        #[arg(long)]
        chat_template: bool,
        /// Per-example JSONL; the aggregate goes beside it as <stem>.summary.json.
        #[arg(long)]
        out: PathBuf,
        /// cpu, cuda or cuda:N (cuda needs a --features cuda build).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Score generations made anywhere (vLLM, llama.cpp, an API) with an evaluator plugin; no model is loaded.
    Grade(commands::grade::GradeArgs),
    /// Where a data set sits on the capability continuum: the base model's confidence on its targets.
    Diagnose {
        #[arg(long)]
        model: PathBuf,
        /// A LoRA adapter (PEFT's adapter_config.json + adapter_model.safetensors) to attach to --model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        /// Output stem: writes STEM.json and STEM.svg (histogram).
        #[arg(long, default_value = "diagnose")]
        out: PathBuf,
        #[arg(long, default_value = "prompt")]
        prompt_key: String,
        #[arg(long, default_value = "response")]
        response_key: String,
        #[command(flatten)]
        encode: host::encode::EncodeOptions,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
    },
    /// Train and evaluate a grid of objectives × parameters × seeds (× models) from a sweep.toml.
    Sweep {
        /// The sweep config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Override, e.g. train.max_steps=50 (every run's config) or seeds=[0,1] (the sweep file); repeatable.
        #[arg(long = "set")]
        overrides: Vec<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Run only the run at this index of the grid (0-based, what a Slurm array task does); no summary.
        #[arg(long, conflicts_with_all = ["collect", "slurm", "jobs", "devices"])]
        run_index: Option<usize>,
        /// Summarise the results the runs have written, training nothing (missing runs are named, exit 1).
        #[arg(long, conflicts_with_all = ["slurm", "jobs", "devices"])]
        collect: bool,
        /// Write a Slurm job array (one task per run, resources from the file's [slurm] table), a job
        /// that collects the results, and submit.sh, into <out_dir>/slurm; run nothing.
        #[arg(long, conflicts_with_all = ["jobs", "devices"])]
        slurm: bool,
        /// Also write the results (every finished run's record, the failed runs, the summary files) as JSON
        /// to this file.
        #[arg(long, conflicts_with_all = ["run_index", "slurm"])]
        summary: Option<PathBuf>,
    },
    /// Diagnose the base model, sweep the objectives of its region, pick the best, write a report.
    Rollout {
        /// The rollout config: a sweep config whose [[objective]] entries are optional.
        #[arg(long)]
        config: PathBuf,
        /// Override, e.g. train.max_steps=50 (every run's config) or seeds=[0,1] (the config); repeatable.
        #[arg(long = "set")]
        overrides: Vec<String>,
        #[command(flatten)]
        schedule: ScheduleArgs,
    },
    /// Plot objectives.
    Plot {
        #[command(subcommand)]
        what: PlotWhat,
    },
    /// Write a randomly initialised Qwen2-shaped model (Hugging Face layout) with a tokenizer, to pretrain.
    InitModel(commands::init_model::InitArgs),
    /// Training throughput on a random Qwen2-shaped model (per-step timings; last line `tokens/s: X`).
    Bench {
        #[arg(long)]
        hidden: usize,
        #[arg(long)]
        intermediate: usize,
        #[arg(long)]
        layers: usize,
        #[arg(long)]
        heads: usize,
        #[arg(long = "kv-heads")]
        kv_heads: usize,
        #[arg(long)]
        vocab: usize,
        #[arg(long)]
        batch: usize,
        /// Tokens per row.
        #[arg(long, required_unless_present = "lengths", conflicts_with = "lengths")]
        seq: Option<usize>,
        /// Row lengths drawn uniformly between MIN and MAX tokens (MIN:MAX), instead of --seq.
        #[arg(long, value_name = "MIN:MAX")]
        lengths: Option<host::bench::RowLengths>,
        /// Steps in all, warm-up included.
        #[arg(long)]
        steps: usize,
        /// Objective plugin by name or path.
        #[arg(long, default_value = "neg_p")]
        objective: String,
        /// Objective parameter, key=value (repeatable; unset ones take their defaults).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Leading steps left out of the median.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// CPU threads for candle (default: the physical cores).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, cuda or cuda:N (cuda needs a --features cuda build).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, or bf16 (bf16 weights and activations, float32 loss, gradients and AdamW with master weights).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Time candle's autograd pass instead of the hand-written float32 CPU pass (for comparison).
        #[arg(long, conflicts_with = "padded")]
        autograd: bool,
        /// Compute the padded batch (every row as long as --seq or MAX) instead of the packed rows (for comparison).
        #[arg(long)]
        padded: bool,
        /// Train a LoRA adapter of this rank (alpha = 2r) on the frozen model instead of every weight.
        #[arg(long)]
        lora_r: Option<usize>,
        /// The projections the adapter targets (with --lora-r): PEFT names, comma-separated, or all-linear.
        #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj", requires = "lora_r")]
        lora_targets: Vec<String>,
        /// The adapter's dropout (with --lora-r), PEFT's `lora_dropout`.
        #[arg(long, default_value_t = 0.0, requires = "lora_r")]
        lora_dropout: f64,
    },
}

#[derive(Subcommand)]
enum PluginsAction {
    /// List the plugins in the search path.
    List,
    /// Show a plugin's kind, formula and parameters.
    Inspect { plugin: String },
    /// Check a plugin: weight against the loss's derivative, finiteness, determinism (exit 1 on failure).
    Check {
        plugin: String,
        /// Parameter value, key=value (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Write the benchmark an evaluator plugin carries as JSONL (prompt, response).
    Benchmark {
        plugin: String,
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print an objective's curve as CSV: p,loss,weight,logit_grad.
    Curve {
        plugin: String,
        #[arg(long = "param")]
        params: Vec<String>,
        /// Number of probabilities, evenly spaced over (0, 1].
        #[arg(long, default_value_t = 41)]
        points: usize,
    },
}

/// How many runs of a sweep at once, and where.
#[derive(clap::Args)]
struct ScheduleArgs {
    /// Runs at once on this machine (each trains and evaluates on its own device, or shares the CPU).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Devices dealt to the runs in turn, e.g. cuda:0,cuda:1 (overrides [model] device; also diagnoses).
    #[arg(long, value_delimiter = ',')]
    devices: Vec<engine::device::DeviceSpec>,
}

impl ScheduleArgs {
    fn schedule(self) -> anyhow::Result<host::continuum::schedule::Schedule> {
        host::continuum::schedule::Schedule::new(self.jobs, self.devices)
    }
}

#[derive(Subcommand)]
enum PlotWhat {
    /// The logit-gradient weight W(p) = s(p)(1-p) of each objective, as SVG.
    Objectives {
        /// Objective as NAME or PATH, optionally with parameters: general_family:alpha=10 (repeatable).
        #[arg(long = "plugin", required = true)]
        plugins: Vec<String>,
        #[arg(long, default_value = "weights.svg")]
        out: PathBuf,
        #[arg(long, default_value_t = 201)]
        points: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HOST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = SearchPath::from_cli(&cli.plugin_dirs).and_then(|search| match cli.command {
        Command::Plugins { action } => match action {
            PluginsAction::List => commands::plugins::list(&search),
            PluginsAction::Inspect { plugin } => commands::plugins::inspect(&search, &plugin),
            PluginsAction::Check { plugin, params } => commands::plugins::check(&search, &plugin, &params),
            PluginsAction::Benchmark { plugin, split, size, seed, out } => {
                commands::plugins::benchmark(&search, &plugin, &split, size, seed, &out)
            }
            PluginsAction::Curve { plugin, params, points } => {
                commands::plugins::curve_csv(&search, &plugin, &params, points)
            }
        },
        Command::InitModel(args) => commands::init_model::run(&args),
        Command::Train { config, plugin, mut overrides, resume, overwrite, device, summary } => {
            overrides.extend(device.map(|d| format!("model.device={d}")));
            let options =
                TrainOptions { objective_override: plugin.as_deref(), search: &search, resume, overwrite, tag: None };
            commands::train::run(&config, &overrides, &options, summary.as_deref())
        }
        Command::Score { model, adapter, data, out, prompt_key, response_key, batch_size, encode, device } => {
            commands::score::run(&commands::score::ScoreArgs {
                model: &model,
                adapter: adapter.as_deref(),
                data: &data,
                out: &out,
                prompt_key: &prompt_key,
                response_key: &response_key,
                batch_size,
                encode,
                device: &device,
            })
        }
        Command::Preview(args) => commands::preview::run(&args),
        Command::Convert(args) => commands::convert::run(&args),
        Command::Merge(args) => commands::merge::run(&args),
        Command::Eval {
            model,
            adapter,
            data,
            evaluator,
            params,
            samples,
            temperature,
            top_p,
            max_new_tokens,
            seed,
            stop,
            prompt_key,
            response_key,
            batch_size,
            chat_template,
            out,
            device,
        } => commands::eval::run(
            &commands::eval::EvalArgs {
                device: &device,
                model: &model,
                adapter: adapter.as_deref(),
                data: &data,
                evaluator: &evaluator,
                params: &params,
                out: &out,
                prompt_key: &prompt_key,
                response_key: &response_key,
                settings: host::eval::EvalSettings {
                    samples,
                    temperature,
                    top_p,
                    max_new_tokens,
                    seed,
                    stop,
                    batch_size,
                    chat_template,
                },
            },
            &search,
        ),
        Command::Grade(args) => commands::grade::run(&args, &search),
        Command::Diagnose { model, adapter, data, out, prompt_key, response_key, encode, batch_size } => {
            commands::diagnose::run(&commands::diagnose::DiagnoseArgs {
                model: &model,
                adapter: adapter.as_deref(),
                data: &data,
                out: &out,
                prompt_key: &prompt_key,
                response_key: &response_key,
                encode,
                batch_size,
            })
        }
        Command::Sweep { config, overrides, schedule, run_index, collect, slurm, summary } => {
            let mode = match (run_index, collect, slurm) {
                (Some(index), _, _) => Mode::RunIndex(index),
                (None, true, _) => Mode::Collect,
                (None, false, true) => Mode::Slurm,
                (None, false, false) => Mode::Run(schedule.schedule()?),
            };
            let args = SweepArgs {
                config: &config,
                overrides: &overrides,
                plugin_dirs: &cli.plugin_dirs,
                mode,
                summary: summary.as_deref(),
            };
            commands::sweep::run(&args, &search)
        }
        Command::Rollout { config, overrides, schedule } => {
            commands::rollout::run(&config, &overrides, &schedule.schedule()?, &search)
        }
        Command::Plot { what } => match what {
            PlotWhat::Objectives { plugins, out, points } => {
                commands::plot::objectives(&search, &plugins, &out, points)
            }
        },
        Command::Bench {
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            vocab,
            batch,
            seq,
            lengths,
            steps,
            objective,
            params,
            warmup,
            threads,
            seed,
            device,
            dtype,
            autograd,
            padded,
            lora_r,
            lora_targets,
            lora_dropout,
        } => commands::bench::run(
            &host::bench::BenchOptions {
                shape: host::bench::ModelShape { hidden, intermediate, layers, heads, kv_heads, vocab },
                batch,
                seq: lengths.map_or(seq.unwrap_or(0), |l| l.max),
                lengths,
                steps,
                warmup,
                objective: &objective,
                objective_params: &params,
                search: &search,
                seed,
                device: &device,
                dtype: &dtype,
                pass: match (autograd, padded) {
                    (true, _) => host::bench::BenchPass::Autograd,
                    (false, true) => host::bench::BenchPass::Padded,
                    (false, false) => host::bench::BenchPass::Packed,
                },
                lora: lora_r
                    .map(|r| engine::LoraConfig::new(r, 2.0 * r as f64, lora_dropout, &lora_targets, false))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--lora-r/--lora-targets/--lora-dropout: {e}"))?,
            },
            threads,
        ),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if host::stop::is_stop(&error) => {
            eprintln!("{}", host::one_line(&error));
            ExitCode::from(host::stop::EXIT_CODE)
        }
        Err(error) => {
            eprintln!("error: {}", host::one_line(&error));
            ExitCode::from(host::exit_code(&error))
        }
    }
}
