//! `vpt`: parse the command line and dispatch. Nothing else lives here.

use anyhow::Context;
use clap::Parser;
use std::{path::PathBuf, process::ExitCode};
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

fn main() -> ExitCode {
    vpt_host::malloc::keep_freed_memory();
    let cli = Cli::parse();
    let verbose = cli.verbose;
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if verbose {
                eprintln!("error: {e}");
            } else {
                eprintln!(
                    "error: {}",
                    vpt_host::error::clip_words(&e.to_string(), 300)
                );
            }
            if let Some(vpt_host::Error::Interrupted { .. }) = e.downcast_ref() {
                return ExitCode::from(130);
            }
            if verbose {
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
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
        } => {
            let (mut session, dir) = match resume {
                Some(run_dir) => resume_session(&run_dir, &overrides, &budget, &mut plugins)?,
                None => {
                    let config = config.expect("clap requires CONFIG without --resume");
                    let mut cfg = RunConfig::load(&config, &overrides)?;
                    budget.apply(&mut cfg)?;
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
            let summary = train::run(&mut session, &dir, halt_after)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            eprintln!("run directory: {}", dir.path.display());
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
            println!("{}", serde_json::to_string_pretty(&session.evaluate()?)?);
        }
        Command::Compare {
            config,
            arms,
            seeds,
            out,
            budget,
        } => {
            let rep = compare::compare(
                &config.config,
                &config.overrides,
                &arms,
                seeds,
                &out,
                &budget,
                &mut plugins,
            )?;
            println!("{}", report::render_table(&rep));
            println!(
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
            println!(
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
                println!("points: {}", out.join("probe.json").display());
            }
        }
        Command::Bench {
            config,
            steps,
            wall_clock,
            warmup,
            period,
            tokens_per_example,
            json,
        } => {
            let report = bench::bench(
                &config.config,
                &config.overrides,
                steps,
                wall_clock,
                warmup,
                period,
                tokens_per_example,
                &mut plugins,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bench::render(&report));
            }
        }
        Command::Export {
            run_dir,
            checkpoint,
            format,
            dtype,
            adapter,
            out,
        } => {
            let started = std::time::Instant::now();
            let request = vpt_sdk::ExportRequest {
                format,
                dtype,
                adapter,
                out_dir: out,
            };
            let files = export::export(&run_dir, checkpoint, &request, &mut plugins)?;
            for f in &files {
                let size = std::fs::metadata(f).map_or(0, |m| m.len());
                println!("{}  ({:.1} MB)", f.display(), size as f64 / 1e6);
            }
            eprintln!("exported in {:.1}s", started.elapsed().as_secs_f64());
        }
        Command::Plugins {
            action: PluginsAction::List { json },
        } => {
            print!("{}", loader::cmd_plugins_list(&search, json)?);
        }
        Command::Plugins {
            action: PluginsAction::Inspect { path },
        } => {
            print!("{}", loader::cmd_plugins_inspect(&path, cli.verbose)?);
        }
        Command::Schema { name } => {
            if name == "run" {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&schemars::schema_for!(RunConfig))?
                );
            } else {
                print!("{}", loader::cmd_schema(&search, &name)?);
            }
        }
        Command::New {
            what: NewWhat::Plugin { name, dir, sdk },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            scaffold::new_plugin(&name, &dir, sdk.as_deref())?;
            println!(
                "created {} — build it with `cargo build --release --manifest-path {}/Cargo.toml`",
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
    let ckpt = checkpoint::load_latest_on(run_dir, cfg.device())?;
    let mut session = Session::build(cfg, plugins)?;
    session.restore(&ckpt)?;
    dir.truncate_after(ckpt.step)?;
    eprintln!("resuming {} at step {}", run_dir.display(), ckpt.step);
    Ok((session, dir))
}

fn default_run_dir(config: &std::path::Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from("runs").join(stem)
}
