//! `vpt`: parse the command line and dispatch. Nothing else lives here.

use anyhow::Context;
use clap::Parser;
use std::{path::PathBuf, process::ExitCode};
use vpt_host::{
    bench, checkpoint,
    cli::{Cli, Command, NewWhat, PluginsAction},
    compare,
    config::RunConfig,
    loader::{self, Plugins, SearchPath},
    probe, report, scaffold,
    train::{self, RunDir, Session},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
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
            resume,
            halt_after,
        } => {
            let (mut session, dir) = match resume {
                Some(run_dir) => resume_session(&run_dir, &overrides, &mut plugins)?,
                None => {
                    let config = config.expect("clap requires CONFIG without --resume");
                    let cfg = RunConfig::load(&config, &overrides)?;
                    let out = out.unwrap_or_else(|| default_run_dir(&config));
                    let dir = RunDir::create(&out, &cfg)?;
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
                let ckpt = if path.join("checkpoints").exists() {
                    checkpoint::load_latest(&path)?
                } else {
                    checkpoint::load_dir(&path)?
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
        } => {
            let rep = compare::compare(
                &config.config,
                &config.overrides,
                &arms,
                seeds,
                &out,
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
            warmup_steps,
            out,
        } => {
            let cfg = RunConfig::load(&config.config, &config.overrides)?;
            let mut session = Session::build(cfg, &mut plugins)?;
            for _ in 0..warmup_steps {
                session.train_step()?;
            }
            let result = probe::probe(&mut session, batches, eta)?;
            println!(
                "one-step value probe over {batches} batches (eta {eta}): Pearson r = {:.3} \
                 (same feedback batch), {:.3} (held-out feedback batch)",
                result.pearson_r, result.pearson_r_heldout
            );
            if let Some(out) = out {
                std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
                checkpoint::atomic_write(
                    out.join("probe.json"),
                    &serde_json::to_vec_pretty(&result)?,
                )?;
                println!("points: {}", out.join("probe.json").display());
            }
        }
        Command::Bench {
            config,
            steps,
            warmup,
            period,
            tokens_per_example,
            json,
        } => {
            let report = bench::bench(
                &config.config,
                &config.overrides,
                steps,
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
    plugins: &mut Plugins,
) -> anyhow::Result<(Session, RunDir)> {
    if let Some(bad) = overrides.iter().find(|o| !o.starts_with("run.")) {
        anyhow::bail!(
            "on --resume only run.* may be overridden (the checkpoint fixes the rest); got `{bad}`"
        );
    }
    let path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not a run directory", run_dir.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    let mut doc =
        vpt_host::config::json_to_toml(json).with_context(|| path.display().to_string())?;
    vpt_host::config::apply_overrides(&mut doc, overrides)?;
    let cfg = RunConfig::from_toml(doc)?;
    let ckpt = checkpoint::load_latest(run_dir)?;
    let mut session = Session::build(cfg, plugins)?;
    session.restore(&ckpt)?;
    let dir = RunDir {
        path: run_dir.to_path_buf(),
    };
    dir.truncate_after(ckpt.step)?;
    eprintln!("resuming {} at step {}", run_dir.display(), ckpt.step);
    Ok((session, dir))
}

fn default_run_dir(config: &std::path::Path) -> PathBuf {
    let stem = config.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
    PathBuf::from("runs").join(stem)
}
