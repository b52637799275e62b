//! The `host` command line: parses arguments and calls the library. See `host --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use host::commands;
use host::plugins::SearchPath;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "SFT trainer with probability-based objectives as plugins"
)]
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
        /// Continue from the latest checkpoint in the output folder.
        #[arg(long)]
        resume: bool,
    },
    /// Write the log-probability of every response token (EOS included) of a data file.
    Score {
        #[arg(long)]
        model: PathBuf,
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
    },
    /// Plot objectives.
    Plot {
        #[command(subcommand)]
        what: PlotWhat,
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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let search = SearchPath::new(&cli.plugin_dirs);
    let result = match cli.command {
        Command::Plugins { action } => match action {
            PluginsAction::List => commands::plugins::list(&search),
            PluginsAction::Inspect { plugin } => commands::plugins::inspect(&search, &plugin),
            PluginsAction::Check { plugin, params } => {
                commands::plugins::check(&search, &plugin, &params)
            }
            PluginsAction::Curve {
                plugin,
                params,
                points,
            } => commands::plugins::curve_csv(&search, &plugin, &params, points),
        },
        Command::Train {
            config,
            plugin,
            overrides,
            resume,
        } => commands::train::run(&config, plugin.as_deref(), &overrides, resume, &search),
        Command::Score {
            model,
            data,
            out,
            prompt_key,
            response_key,
            batch_size,
        } => commands::score::run(&commands::score::ScoreArgs {
            model: &model,
            data: &data,
            out: &out,
            prompt_key: &prompt_key,
            response_key: &response_key,
            batch_size,
        }),
        Command::Plot { what } => match what {
            PlotWhat::Objectives {
                plugins,
                out,
                points,
            } => commands::plot::objectives(&search, &plugins, &out, points),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", host::one_line(&error));
            ExitCode::from(host::exit_code(&error))
        }
    }
}
