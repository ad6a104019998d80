//! `vpt`: parse the command line and dispatch. Nothing else lives here.

use anyhow::Context;
use clap::Parser;
use std::{io::Write, path::PathBuf, process::ExitCode};
use vpt_host::{
    bench, checkpoint,
    cli::{BudgetArgs, Cli, Command, NewWhat, PluginsAction},
    compare,
    config::RunConfig,
    export,
    loader::{self, Plugins, SearchPath},
    probe, report,
    rundir::{Existing, RunDir},
    scaffold,
    train::{self, Session},
};

/// `println!` to stdout, returning an I/O error instead of panicking when stdout is a closed
/// pipe (`vpt schema run | head -1`); [`main`] turns that error into a quiet exit 141.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(StdoutFailed)?
    };
}

/// `print!` to stdout, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        write!(std::io::stdout().lock(), $($arg)*).map_err(StdoutFailed)?
    };
}

/// `eprintln!` that ignores a closed stderr (the message has nowhere to go; panicking would
/// turn a finished command into a crash).
macro_rules! note {
    ($($arg:tt)*) => {
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    };
}

/// The exit status when stdout is a pipe closed by its reader: 128 + SIGPIPE, what a shell
/// reports for a program killed by the signal (vpt is not killed: a run still checkpoints).
const BROKEN_PIPE_STATUS: u8 = 141;

/// A write to stdout failed.
#[derive(Debug)]
struct StdoutFailed(std::io::Error);

impl std::fmt::Display for StdoutFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutFailed {}

/// Whether `e` is a write to a stdout pipe that its reader has closed.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutFailed>()
        .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    vpt_host::malloc::keep_freed_memory();
    let cli = Cli::parse();
    let verbose = cli.verbose;
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_STATUS),
        Err(e) => {
            if verbose {
                note!("error: {e}");
            } else {
                note!(
                    "error: {}",
                    vpt_host::error::clip_words(&e.to_string(), 300)
                );
            }
            if e.downcast_ref::<vpt_host::Error>()
                .is_some_and(vpt_host::Error::is_interrupted)
            {
                return ExitCode::from(130);
            }
            if verbose {
                for cause in e.chain().skip(1) {
                    note!("  caused by: {cause}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let search = SearchPath::from_env(&cli.plugins);
    let mut plugins = Plugins::discover(&search);
    match cli.command {
        Command::Run {
            config,
            overrides,
            out,
            budget,
            resume,
            overwrite,
            halt_after,
            progress,
        } => {
            let (mut session, dir) = match resume {
                Some(run_dir) => resume_session(&run_dir, &overrides, &budget, &mut plugins)?,
                None => {
                    let config = config.expect("clap requires CONFIG without --resume");
                    let mut cfg = RunConfig::load(&config, &overrides)?;
                    budget.apply(&mut cfg)?;
                    cfg.resolve_paths(&mut plugins)?;
                    let out = out.unwrap_or_else(|| default_run_dir(&config));
                    let existing = if overwrite {
                        Existing::Overwrite
                    } else {
                        Existing::Refuse
                    };
                    let dir = RunDir::create(&out, &cfg, existing)?;
                    (Session::build(cfg, &mut plugins)?, dir)
                }
            };
            let shown = vpt_host::progress::Options::new(
                dir.path.display().to_string(),
                progress.log_every,
            );
            let summary = train::run(&mut session, &dir, halt_after, &shown)?;
            outln!("{}", serde_json::to_string_pretty(&summary)?);
            note!("run directory: {}", dir.path.display());
        }
        Command::Eval {
            config,
            checkpoint,
            limit,
        } => {
            let mut cfg = RunConfig::load(&config.config, &config.overrides)?;
            if limit.is_some() {
                cfg.run.eval_limit = limit;
            }
            let mut session = Session::build(cfg, &mut plugins)?;
            if let Some(path) = checkpoint {
                let device = session.cfg.device();
                let ckpt = if path.join("checkpoints").exists() {
                    checkpoint::load_latest_on(&path, device)?
                } else {
                    checkpoint::load_dir_on(&path, device)?
                };
                session.restore(&ckpt)?;
            }
            outln!("{}", serde_json::to_string_pretty(&session.evaluate()?)?);
        }
        Command::Compare {
            config,
            arms,
            seeds,
            out,
            budget,
            overwrite,
            progress,
        } => {
            let opts = compare::Options {
                overwrite,
                log_every: progress.log_every,
            };
            let rep = compare::compare(
                &config.config,
                &config.overrides,
                &arms,
                seeds,
                &out,
                &budget,
                &opts,
                &mut plugins,
            )?;
            outln!("{}", report::render_table(&rep));
            outln!(
                "report: {}  plots: {}/plot_*.svg",
                out.join("report.md").display(),
                out.display()
            );
        }
        Command::Probe {
            config,
            batches,
            eta,
            optimizer,
            warmup_steps,
            heldout_batches,
            out,
        } => {
            let cfg = RunConfig::load(&config.config, &config.overrides)?;
            let mut session = Session::build(cfg, &mut plugins)?;
            for _ in 0..warmup_steps {
                session.train_step()?;
            }
            let result = probe::probe(&mut session, batches, eta, heldout_batches, optimizer)?;
            outln!(
                "one-step value probe over {batches} batches ({} step, eta {eta}): \
                 Pearson r = {:.3} (same feedback batch), {:.3} ({heldout_batches} held-out \
                 feedback batches)",
                match optimizer {
                    probe::ProbeStep::Sgd => "plain gradient",
                    probe::ProbeStep::Adam => "learner AdamW",
                },
                result.pearson_r,
                result.pearson_r_heldout
            );
            if let Some([same, held]) = result.preconditioned {
                println!(
                    "preconditioned value g_down·P·g_pre (the learner's AdamW metric): Pearson \
                     r = {same:.3} (same feedback batch), {held:.3} (held-out)"
                );
            }
            if let Some(out) = out {
                std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
                vpt_host::fileio::atomic_write(
                    out.join("probe.json"),
                    &serde_json::to_vec_pretty(&result)?,
                )?;
                outln!("points: {}", out.join("probe.json").display());
            }
        }
        Command::Bench {
            config,
            steps,
            wall_clock,
            warmup,
            period,
            tokens_per_example,
            repeats,
            json,
        } => {
            let report = bench::bench(
                &config.config,
                &config.overrides,
                steps,
                wall_clock,
                warmup,
                period,
                repeats,
                tokens_per_example,
                &mut plugins,
            )?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{}", bench::render(&report));
            }
        }
        Command::Export {
            run_dir,
            checkpoint,
            format,
            dtype,
            adapter,
            out,
            overwrite,
        } => {
            let started = std::time::Instant::now();
            let request = vpt_sdk::ExportRequest {
                format,
                dtype,
                adapter,
                out_dir: out,
            };
            let files = export::export(&run_dir, checkpoint, &request, overwrite, &mut plugins)?;
            for f in &files {
                let size = std::fs::metadata(f).map_or(0, |m| m.len());
                outln!("{}  ({:.1} MB)", f.display(), size as f64 / 1e6);
            }
            note!("exported in {:.1}s", started.elapsed().as_secs_f64());
        }
        Command::Plugins {
            action: PluginsAction::List { json },
        } => {
            out!("{}", loader::cmd_plugins_list(&search, json)?);
        }
        Command::Plugins {
            action: PluginsAction::Inspect { path },
        } => {
            out!("{}", loader::cmd_plugins_inspect(&path, cli.verbose)?);
        }
        Command::Schema { name } => {
            if name == "run" {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&schemars::schema_for!(RunConfig))?
                );
            } else {
                out!("{}", loader::cmd_schema(&search, &name)?);
            }
        }
        Command::New {
            what: NewWhat::Plugin { name, dir, sdk },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::new_plugin(&name, &dir, sdk.as_deref())?;
            outln!(
                "created {} — build it with `cd {} && cargo build --release`",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Rebuilds a session from a run directory's resolved config and latest checkpoint. Only
/// budget and cadence (`run.*`) may be overridden on resume.
fn resume_session(
    run_dir: &std::path::Path,
    overrides: &[String],
    budget: &BudgetArgs,
    plugins: &mut Plugins,
) -> anyhow::Result<(Session, RunDir)> {
    if let Some(bad) = overrides.iter().find(|o| !o.starts_with("run.")) {
        anyhow::bail!(
            "on --resume only run.* may be overridden (the checkpoint fixes the rest); got `{bad}`"
        );
    }
    let mut cfg = vpt_host::rundir::run_config(run_dir, overrides)?;
    budget.apply(&mut cfg)?;
    let dir = RunDir::resume(run_dir)?;
    let changed = !overrides.is_empty() || budget.steps.is_some() || budget.wall_clock.is_some();
    let session = vpt_host::resume::from_checkpoint(&dir, cfg, plugins)?;
    if changed {
        // saved, so that the next `--resume` (the one an interrupt names) keeps them
        dir.save_config(&session.cfg)?;
    }
    Ok((session, dir))
}

fn default_run_dir(config: &std::path::Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from("runs").join(stem)
}
