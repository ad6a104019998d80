//! The `vpt` command line (clap). Every flag has a doc comment; `main.rs` only dispatches.

use crate::config::RunConfig;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// vpt — V-pretraining: continued pretraining whose self-supervised task is designed by φ,
/// steered by a small labeled feedback set.
#[derive(Debug, Parser)]
#[command(name = "vpt", version, about, long_about = None)]
pub struct Cli {
    /// Extra plugin files or directories (searched before VPT_PLUGIN_PATH and the defaults).
    #[arg(long = "plugin", global = true, value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// Show full error details (e.g. abi_stable's layout report).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Config file plus `--set` overrides, shared by the commands that read a config.
#[derive(Debug, Args, Clone)]
pub struct ConfigArgs {
    /// The run config (TOML), e.g. examples/tiny.toml.
    pub config: PathBuf,
    /// Override a config value: `--set key.path=value` (repeatable; validated like the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// `--steps` / `--wall-clock`: the run's budget on the command line. Either one replaces the
/// config's budget (`run.steps`, `run.wall_clock`); given both, the run stops at whichever
/// comes first.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct BudgetArgs {
    /// Budget in learner steps (replaces the config's budget).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Budget in seconds of charged training time (replaces the config's budget).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    pub wall_clock: Option<f64>,
}

impl BudgetArgs {
    /// Sets `cfg`'s budget from the flags (leaves it alone when neither is given).
    pub fn apply(&self, cfg: &mut RunConfig) -> crate::Result<()> {
        if self.steps.is_some() || self.wall_clock.is_some() {
            cfg.run.steps = self.steps;
            cfg.run.wall_clock = self.wall_clock;
            cfg.validate()?;
        }
        Ok(())
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

/// `--log-every`: how often a run reports its progress when stderr is not a terminal.
#[derive(Debug, Args, Clone, PartialEq)]
pub struct ProgressArgs {
    /// Seconds between progress lines when stderr is not a terminal (e.g. redirected to a file).
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds,
          default_value_t = crate::progress::DEFAULT_LOG_EVERY)]
    pub log_every: f64,
}

fn count(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not a whole number"))
}

fn probe_batches(s: &str) -> Result<usize, String> {
    count(s).and_then(crate::probe::check_batches)
}

fn probe_heldout(s: &str) -> Result<usize, String> {
    count(s).and_then(crate::probe::check_heldout_batches)
}

fn probe_eta(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("`{s}` is not a number"))
        .and_then(crate::probe::check_eta)
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one run (one arm, one seed) under the config's budget.
    Run {
        /// Config and overrides (omit the config with --resume).
        #[arg(required_unless_present = "resume")]
        config: Option<PathBuf>,
        /// Override a config value: `--set key.path=value`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run directory (default: runs/<config stem>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Budget flags.
        #[command(flatten)]
        budget: BudgetArgs,
        /// Continue the run in this directory from its latest checkpoint (config from the run).
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Replace the run already in --out (its metrics and checkpoints are deleted); without
        /// it, a --out that holds a run is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// Stop after this many learner steps, as if interrupted (for testing resume).
        #[arg(long, hide = true)]
        halt_after: Option<u64>,
        /// Progress flags.
        #[command(flatten)]
        progress: ProgressArgs,
    },
    /// Evaluate a config's task (optionally from a checkpoint) and print the metrics as JSON.
    Eval {
        #[command(flatten)]
        config: ConfigArgs,
        /// A run directory (latest checkpoint) or a checkpoint directory.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Cap on evaluation examples (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Run arms × seeds under one budget and write report.md, report.json and SVG plots.
    Compare {
        #[command(flatten)]
        config: ConfigArgs,
        /// Comma-separated arms: baseline, v, random_feedback, or names from [arms.*].
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "baseline,v,random_feedback"
        )]
        arms: Vec<String>,
        /// Number of seeds per arm (run.seed, run.seed+1, …; at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Budget flags (for every arm and seed).
        #[command(flatten)]
        budget: BudgetArgs,
        /// Replace the runs in --out that were made with another config (without it, they are
        /// refused, naming the difference). Finished runs of this config are reused and
        /// unfinished ones continued either way.
        #[arg(long)]
        overwrite: bool,
        /// Progress flags.
        #[command(flatten)]
        progress: ProgressArgs,
    },
    /// One-step value probe: predicted η·g_downᵀg_pre against the realised drop of L_down
    /// after one plain gradient step, over many batches; prints Pearson r.
    Probe {
        #[command(flatten)]
        config: ConfigArgs,
        /// Number of batches (2 to 2^20).
        #[arg(long, default_value_t = 64, value_parser = probe_batches)]
        batches: usize,
        /// Step size η of the plain gradient step (the learning rate of the AdamW step; positive).
        #[arg(long, default_value_t = 1e-2, value_parser = probe_eta)]
        eta: f64,
        /// The step measured: `sgd` (θ_S − η·g_pre) or `adam` (one step of the learner's
        /// AdamW from its state after --warmup-steps; the preconditioned value is scored too).
        #[arg(long, value_enum, default_value_t = crate::probe::ProbeStep::Sgd)]
        optimizer: crate::probe::ProbeStep,
        /// Learner steps taken before probing (so θ is not at its initialisation).
        #[arg(long, default_value_t = 0)]
        warmup_steps: u64,
        /// Fixed feedback batches, independent of every g_down batch, over which the
        /// generalising drop of L_down is averaged (1 to 4096).
        #[arg(long, default_value_t = 8, value_parser = probe_heldout)]
        heldout_batches: usize,
        /// Write probe.json and a scatter plot here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Throughput and peak memory of a baseline step and a V step, measured in one process.
    Bench {
        #[command(flatten)]
        config: ConfigArgs,
        /// Timed learner steps per arm (at least 1; use a multiple of the meta period).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Stop timing an arm after this many seconds (at least one step is timed).
        #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
        wall_clock: Option<f64>,
        /// Untimed learner steps of each arm, both before either is timed.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Meta period r of the V arm (at least 1).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
        period: u64,
        /// Tokens per example (e.g. the LM's seq_len), to report tokens/s and MFU.
        #[arg(long)]
        tokens_per_example: Option<u64>,
        /// Timed repeats, each timing both arms after both were warmed up; the first arm
        /// alternates (baseline first in odd repeats, V in even ones). Each repeat's ratio and
        /// their median are shown.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
        repeats: u64,
        /// Print the figures as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's trained model in a format other tools read: `hf` (a Hugging Face
    /// directory), `gguf` (llama.cpp), `safetensors` (vision: the ViT and its config).
    Export {
        /// The run directory (holds config.json and checkpoints/).
        run_dir: PathBuf,
        /// The checkpoint's learner step (default: the latest).
        #[arg(long, value_name = "STEP")]
        checkpoint: Option<u64>,
        /// Output format: hf, gguf or safetensors (which ones a task writes is listed on error).
        #[arg(long)]
        format: String,
        /// Element type of the weights: f32, f16 or q8_0 (GGUF).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Also write the trained LoRA adapter alone, in PEFT's layout (OUT/adapter/).
        #[arg(long)]
        adapter: bool,
        /// Output directory (created if missing; refused when it is not empty, unless
        /// --overwrite, or when it is inside a run directory).
        #[arg(long)]
        out: PathBuf,
        /// Replace files of the same name in a non-empty --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Inspect plugins.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// Print the JSON Schema of a task's or designer's config (`NAME` or `PLUGIN:NAME`), or of
    /// the run config itself (`run`).
    Schema {
        /// Component name.
        name: String,
    },
    /// Scaffold new things.
    New {
        /// What to create.
        #[command(subcommand)]
        what: NewWhat,
    },
}

/// `vpt plugins …`.
#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// List plugins on the search path with their tasks, designers and schemas.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check one plugin file and show its manifest, or a short reason it cannot load. A file
    /// that is not a whole vpt plugin is refused from its headers, unopened; a plugin is
    /// loaded to read its manifest, which runs its code (plugins are code: see docs/trust.md).
    Inspect {
        /// The plugin file.
        path: PathBuf,
    },
}

/// `vpt new …`.
#[derive(Debug, Subcommand)]
pub enum NewWhat {
    /// Scaffold a designer plugin crate (builds outside the workspace against vpt-sdk).
    Plugin {
        /// Plugin name (a lowercase identifier).
        name: String,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to the vpt-sdk crate the new plugin depends on (default: the SDK installed with
        /// vpt, PREFIX/share/vpt/sdk, else the sdk/ of the checkout vpt was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}
