//! `host sweep --slurm`: the sweep as a Slurm job array. Writes into `<out_dir>/slurm/`:
//!
//! * `array.sbatch`: one array task per run; task I runs `host sweep --config … --run-index I`, which
//!   trains (resuming from its latest checkpoint), evaluates and writes that run's `result.json`. On a
//!   preemption or `scancel` Slurm sends SIGTERM to every process of the task, the run among them; before
//!   the time limit it sends SIGUSR1 to the batch shell only (`--signal=B:USR1@S`), which passes it on
//!   as SIGTERM (forwarding SIGTERM itself would hand the run a second one, and a second SIGTERM ends it
//!   without a checkpoint). The run saves a checkpoint and exits 75, and the task is requeued to resume
//!   there (`--requeue`): by Slurm on a preemption, by the script itself after the time-limit warning; a
//!   plain `scancel` stays cancelled.
//! * `collect.sbatch`: `host sweep --config … --collect` once every task has ended: results.csv/md/svg.
//! * `submit.sh`: submits the array, then the collect job depending on it.
//!
//! Resources come from the sweep file's `[slurm]` table. The runs share only the file system; what each
//! writes does not depend on where or when it ran.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// `[slurm]` in a sweep file: what every array task asks for.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Each task's time limit, as sbatch reads it (`2:00:00`).
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// Memory per node, as sbatch reads it (`32G`).
    pub mem: Option<String>,
    pub gpus_per_task: Option<u32>,
    /// Array tasks running at once (`--array=0-N%max_parallel`).
    pub max_parallel: Option<u32>,
    /// How long before the time limit Slurm signals the task, so the run checkpoints (default 120 s).
    pub signal_seconds: Option<u32>,
    /// Further `#SBATCH` options for every job, e.g. `--constraint=h100`.
    #[serde(default)]
    pub extra: Vec<String>,
}

const DEFAULT_SIGNAL_SECONDS: u32 = 120;

/// What `host sweep` needs to run again inside a job, as the user gave it.
pub struct Invocation<'a> {
    pub config: &'a Path,
    pub overrides: &'a [String],
    pub plugin_dirs: &'a [PathBuf],
}

/// The scripts written.
pub struct Scripts {
    pub array: PathBuf,
    pub collect: PathBuf,
    pub submit: PathBuf,
}

/// Writes the scripts for a sweep of `runs` runs into `out_dir/slurm`.
pub fn write_scripts(
    out_dir: &Path,
    runs: usize,
    section: &SlurmSection,
    invocation: &Invocation<'_>,
    origin: &str,
) -> Result<Scripts> {
    if runs == 0 {
        bail!("{origin}: no runs to submit");
    }
    let options = options(section).with_context(|| format!("{origin}: [slurm]"))?;
    let host = std::env::current_exe().context("cannot find the running host binary")?;
    let workdir = std::env::current_dir().context("cannot read the working directory")?;
    let absolute = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { workdir.join(p) };
    let dir = absolute(&out_dir.join("slurm"));
    // Paths go onto #SBATCH lines unquoted (sbatch reads `%` in --output as a pattern).
    for (what, path) in [("out_dir", &dir), ("config", &absolute(invocation.config))] {
        let text = path.to_string_lossy();
        if text.chars().any(|c| c.is_control() || c.is_whitespace() || "%\"'$`\\".contains(c)) {
            bail!("{origin}: {what} {text:?}: a Slurm script needs a path without spaces, quotes, `%`, `$` or backslashes");
        }
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let mut sweep = vec![quote_path(&host)?, "sweep".into(), "--config".into(), quote_path(invocation.config)?];
    for assignment in invocation.overrides {
        sweep.extend(["--set".to_string(), quote(assignment)?]);
    }
    let plugin_path = std::env::join_paths(invocation.plugin_dirs.iter().map(|d| absolute(d)))
        .context("a --plugin-dir cannot be joined into HOST_PLUGIN_PATH")?;
    let plugin_path = quote(&plugin_path.to_string_lossy())?;
    let name = job_name(out_dir);
    let prelude = |lines: &mut Vec<String>| -> Result<()> {
        lines.push("set -u".into());
        lines.push(format!("cd {}", quote_path(&workdir)?));
        if !invocation.plugin_dirs.is_empty() {
            lines.push(format!("export HOST_PLUGIN_PATH={plugin_path}${{HOST_PLUGIN_PATH:+:$HOST_PLUGIN_PATH}}"));
        }
        Ok(())
    };

    let max = section.max_parallel.map_or(String::new(), |m| format!("%{m}"));
    let signal = section.signal_seconds.unwrap_or(DEFAULT_SIGNAL_SECONDS);
    let mut array = vec![
        "#!/bin/bash".to_string(),
        format!("# Written by `host sweep --slurm` for {}: one task per run.", invocation.config.display()),
        format!("#SBATCH --job-name={name}"),
        format!("#SBATCH --array=0-{}{max}", runs - 1),
        format!("#SBATCH --output={}", logs.join("run-%a.out").display()),
        "#SBATCH --open-mode=append".into(),
        "#SBATCH --requeue".into(),
        format!("#SBATCH --signal=B:USR1@{signal}"),
    ];
    array.extend(options.iter().map(|o| format!("#SBATCH {o}")));
    prelude(&mut array)?;
    array.extend([
        "# A stopped run saves a checkpoint and exits 75. On a preemption Slurm signals the run itself and".into(),
        "# requeues the task; before the time limit it sends SIGUSR1 to this shell, which passes it on and".into(),
        "# requeues the task itself. A plain scancel is not undone.".into(),
        "warned=0".into(),
        "trap 'warned=1; kill -TERM \"$run\" 2>/dev/null' USR1".into(),
        "trap ':' TERM".into(),
        format!("{} --run-index \"$SLURM_ARRAY_TASK_ID\" &", sweep.join(" ")),
        "run=$!".into(),
        "while :; do wait \"$run\"; status=$?; kill -0 \"$run\" 2>/dev/null || break; done".into(),
        "# A wait cut short by a trap reports the signal: the run's own status is still there to collect.".into(),
        "if [ \"$status\" -gt 128 ]; then wait \"$run\" 2>/dev/null; own=$?; [ \"$own\" -ne 127 ] && status=$own; fi".into(),
        format!(
            "if [ \"$warned\" = 1 ] && {{ [ \"$status\" -eq {} ] || [ \"$status\" -eq 143 ]; }} && [ -n \"${{SLURM_ARRAY_JOB_ID:-}}\" ]; then",
            crate::stop::EXIT_CODE
        ),
        "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"".into(),
        "fi".into(),
        "exit \"$status\"".into(),
    ]);

    let mut collect = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# Written by `host sweep --slurm`: summarises {} once every array task has ended.",
            invocation.config.display()
        ),
        format!("#SBATCH --job-name={name}-collect"),
        format!("#SBATCH --output={}", logs.join("collect.out").display()),
        "#SBATCH --cpus-per-task=1".into(),
    ];
    // Where and for whom it runs, not what each task needs.
    let placement = ["--partition=", "--account=", "--qos=", "--time="];
    collect
        .extend(options.iter().filter(|o| placement.iter().any(|p| o.starts_with(p))).map(|o| format!("#SBATCH {o}")));
    prelude(&mut collect)?;
    collect.push(format!("exec {} --collect", sweep.join(" ")));

    let scripts =
        Scripts { array: dir.join("array.sbatch"), collect: dir.join("collect.sbatch"), submit: dir.join("submit.sh") };
    let submit = vec![
        "#!/bin/sh".to_string(),
        "# Submits the sweep's array and the job that collects its results once every task has ended.".into(),
        "set -e".into(),
        format!("array=$(sbatch --parsable {})", quote_path(&scripts.array)?),
        "array=${array%%;*}".into(),
        format!("collect=$(sbatch --parsable --dependency=afterany:\"$array\" {})", quote_path(&scripts.collect)?),
        "collect=${collect%%;*}".into(),
        format!(
            "echo \"submitted array job $array ({runs} runs) and collect job $collect; logs in {}\"",
            logs.display()
        ),
    ];
    for (path, lines) in [(&scripts.array, array), (&scripts.collect, collect), (&scripts.submit, submit)] {
        crate::eval::write_atomic(path, &(lines.join("\n") + "\n"))?;
        set_executable(path)?;
    }
    Ok(scripts)
}

/// The `#SBATCH` options of `section`, each checked to stay on its line.
fn options(section: &SlurmSection) -> Result<Vec<String>> {
    let mut options = Vec::new();
    let texts = [
        ("partition", &section.partition),
        ("account", &section.account),
        ("qos", &section.qos),
        ("time", &section.time),
        ("mem", &section.mem),
    ];
    for (key, value) in texts {
        if let Some(value) = value {
            check_text(key, value)?;
            options.push(format!("--{key}={value}"));
        }
    }
    let counts = [("cpus-per-task", section.cpus_per_task), ("gpus-per-task", section.gpus_per_task)];
    for (key, value) in counts {
        match value {
            Some(0) => bail!("{}: 0 (leave it out, or give at least 1)", key.replace('-', "_")),
            Some(n) => options.push(format!("--{key}={n}")),
            None => {}
        }
    }
    if section.max_parallel == Some(0) {
        bail!("max_parallel: 0 (leave it out, or give at least 1)");
    }
    for (i, extra) in section.extra.iter().enumerate() {
        check_text(&format!("extra[{i}]"), extra)?;
        if !extra.starts_with('-') {
            bail!("extra[{i}] = `{extra}`: an sbatch option starts with `-`");
        }
        options.push(extra.clone());
    }
    Ok(options)
}

/// A value that cannot end its `#SBATCH` line or split into two options.
fn check_text(key: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("{key} = {value:?}: a single word without spaces or control characters");
    }
    Ok(())
}

/// The job name: the out_dir's last component, in characters Slurm shows as they are.
fn job_name(out_dir: &Path) -> String {
    let last = out_dir.file_name().map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    let name: String = last.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("sweep-{name}")
}

fn quote(text: &str) -> Result<String> {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|e| anyhow::anyhow!("cannot quote `{text}` for the shell: {e}"))
}

fn quote_path(path: &Path) -> Result<String> {
    quote(&path.to_string_lossy())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_options_and_line_breaks_are_refused() {
        let section = SlurmSection {
            partition: Some("gpu".into()),
            time: Some("2:00:00".into()),
            gpus_per_task: Some(1),
            extra: vec!["--constraint=h100".into()],
            ..Default::default()
        };
        let options = options(&section).unwrap();
        assert_eq!(options, ["--partition=gpu", "--time=2:00:00", "--gpus-per-task=1", "--constraint=h100"]);

        let injected = SlurmSection { partition: Some("gpu\nrm -rf ~".into()), ..Default::default() };
        let error = options_error(&injected);
        assert!(error.contains("partition") && error.contains("single word"), "{error}");
        let zero = SlurmSection { cpus_per_task: Some(0), ..Default::default() };
        assert!(options_error(&zero).contains("cpus_per_task: 0"));
        let bare = SlurmSection { extra: vec!["exclusive".into()], ..Default::default() };
        assert!(options_error(&bare).contains("starts with `-`"));
    }

    fn options_error(section: &SlurmSection) -> String {
        options(section).unwrap_err().to_string()
    }

    #[test]
    fn job_names_are_plain() {
        assert_eq!(job_name(Path::new("runs/my sweep")), "sweep-my_sweep");
        assert_eq!(job_name(Path::new("runs/quick-2")), "sweep-quick-2");
    }
}
