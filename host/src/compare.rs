//! `vpt compare`: arms × seeds of one config under one budget, then the report.

use crate::{
    cli::BudgetArgs,
    config::{apply_overrides, builtin_arm, RunConfig},
    loader::Plugins,
    report,
    rundir::{Existing, RunDir},
    train::{self, Session},
    Error, Result,
};
use std::path::Path;

/// The overrides that make `arm` out of the config document `doc`.
pub fn arm_overrides(doc: &toml::Value, arm: &str) -> Result<Vec<String>> {
    let has_designer = doc.get("designer").is_some();
    if let Some(ov) = builtin_arm(arm) {
        // A config without a designer has nothing to switch off.
        return Ok(ov
            .into_iter()
            .filter(|o| has_designer || !o.starts_with("designer."))
            .collect());
    }
    let defined = doc.get("arms").and_then(|a| a.as_table());
    let set = defined
        .and_then(|t| t.get(arm))
        .and_then(|a| a.get("set"))
        .and_then(|s| s.as_array());
    match set {
        Some(items) => Ok(items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()),
        None => {
            let mut names: Vec<String> = [
                "baseline",
                "v",
                "random_feedback",
                "cosine",
                "frozen (diagnostic)",
                "oracle (diagnostic)",
            ]
            .map(String::from)
            .to_vec();
            names.extend(defined.into_iter().flat_map(|t| t.keys().cloned()));
            Err(Error::config(
                "--arms",
                format!("unknown arm `{arm}` (available: {})", names.join(", ")),
            ))
        }
    }
}

/// The resolved config of one arm and seed.
pub fn arm_config(
    config: &Path,
    cli_overrides: &[String],
    arm: &str,
    seed_offset: u64,
) -> Result<RunConfig> {
    let text = std::fs::read_to_string(config).map_err(|e| Error::io(config, e))?;
    let mut doc: toml::Value = toml::from_str(&text)
        .map_err(|e| Error::config("(file)", format!("{}: {}", config.display(), e.message())))?;
    let mut overrides = arm_overrides(&doc, arm)?;
    overrides.extend(cli_overrides.iter().cloned());
    apply_overrides(&mut doc, &overrides)?;
    let base_seed = doc
        .get("run")
        .and_then(|r| r.get("seed"))
        .and_then(|s| s.as_integer())
        .unwrap_or(0) as u64;
    apply_overrides(&mut doc, &[format!("run.seed={}", base_seed + seed_offset)])?;
    RunConfig::from_toml(doc)?.read_from(config, cli_overrides)
}

/// Runs every arm for `seeds` seeds (under `budget` when given) into `out/ARM/seed-S/` (finished runs are reused), then
/// writes report.md, report.json and the plots into `out`.
pub fn compare(
    config: &Path,
    cli_overrides: &[String],
    arms: &[String],
    seeds: u64,
    out: &Path,
    budget: &BudgetArgs,
    plugins: &mut Plugins,
) -> Result<report::Report> {
    // Validate every arm before spending any time.
    for arm in arms {
        let mut cfg = arm_config(config, cli_overrides, arm, 0)?;
        budget.apply(&mut cfg)?;
        cfg.resolve_paths(plugins)?;
    }
    let mut runs = Vec::new();
    for arm in arms {
        for k in 0..seeds {
            let mut cfg = arm_config(config, cli_overrides, arm, k)?;
            budget.apply(&mut cfg)?;
            cfg.resolve_paths(plugins)?;
            let seed = cfg.run.seed;
            let dir = out.join(arm).join(format!("seed-{seed}"));
            if dir.join("summary.json").exists() && same_config(&dir, &cfg) {
                eprintln!(
                    "[{arm} seed {seed}] already finished in {} with this config, reusing it",
                    dir.display()
                );
            } else {
                if dir.exists() {
                    eprintln!("[{arm} seed {seed}] {} holds another or an unfinished run; starting afresh", dir.display());
                    let _ = std::fs::remove_dir_all(&dir);
                }
                eprintln!("[{arm} seed {seed}] → {}", dir.display());
                let run_dir = RunDir::create(&dir, &cfg, Existing::Refuse)?;
                let mut session = Session::build(cfg, plugins)?;
                let s = train::run(&mut session, &run_dir, None)?;
                eprintln!("[{arm} seed {seed}] {} steps in {:.1}s", s.steps, s.seconds);
            }
            runs.push(report::RunRecord {
                arm: arm.clone(),
                seed,
                dir,
            });
        }
    }
    let rep = report::summarize(&runs)?;
    report::write_report(out, &rep)?;
    Ok(rep)
}

/// True when `dir` holds a run of exactly `cfg` (its resolved `config.json`; the `arms` table
/// only defines other runs, so it does not count).
fn same_config(dir: &Path, cfg: &RunConfig) -> bool {
    let identity = |mut v: serde_json::Value| {
        v.as_object_mut().map(|o| o.remove("arms"));
        v
    };
    let saved = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    match (saved, serde_json::to_value(cfg)) {
        (Some(saved), Ok(now)) => identity(saved) == identity(now),
        _ => false,
    }
}
