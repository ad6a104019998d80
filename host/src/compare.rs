//! `vpt compare`: arms × seeds of one config under one budget, then the report. Its runs
//! survive interruption: rerun with the same command, a finished run is reused, an unfinished
//! one continues from its newest checkpoint (bit-exactly, as `vpt run --resume` does), and a run
//! made with another config is refused, naming the difference, unless `--overwrite`. A run
//! directory locked by another process is never touched.

use crate::{
    checkpoint,
    cli::BudgetArgs,
    config::{apply_overrides, builtin_arm, RunConfig},
    error::clip,
    interrupt,
    loader::Plugins,
    progress, report, resume,
    rundir::{Existing, RunDir},
    train::{self, Session},
    Error, Result,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

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
                "v_adam",
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

/// What `vpt compare` does with earlier runs in `--out`, and how it reports progress.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replace runs made with another config (they are refused otherwise).
    pub overwrite: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    pub log_every: f64,
}

impl Default for Options {
    /// Refuse runs of another config; the default progress cadence.
    fn default() -> Options {
        Options {
            overwrite: false,
            log_every: progress::DEFAULT_LOG_EVERY,
        }
    }
}

/// What an arm's run directory holds, against the config it is to run.
#[derive(Debug)]
enum Found {
    /// No run (or no directory).
    Nothing,
    /// A finished run of this config: reused.
    Finished,
    /// An unfinished run of this config with a checkpoint: continued from it.
    Unfinished,
    /// An unfinished run of this config that never checkpointed: started again.
    NoCheckpoint,
    /// A run of another config (why, in words): refused unless `--overwrite`.
    Other(String),
}

/// One arm and seed of the comparison.
struct Planned {
    arm: String,
    seed: u64,
    dir: PathBuf,
    cfg: RunConfig,
    found: Found,
}

/// Runs every arm for `seeds` seeds (under `budget` when given) into `out/ARM/seed-S/`, reusing
/// finished runs and continuing unfinished ones, then writes report.md, report.json and the
/// plots into `out`. SIGINT/SIGTERM stop it with every finished run kept and the current one
/// checkpointed ([`Error::CompareInterrupted`] names the command that continues it).
#[allow(clippy::too_many_arguments)]
pub fn compare(
    config: &Path,
    cli_overrides: &[String],
    arms: &[String],
    seeds: u64,
    out: &Path,
    budget: &BudgetArgs,
    opts: &Options,
    plugins: &mut Plugins,
) -> Result<report::Report> {
    // Every arm and seed is validated, and what its directory holds is known, before any time
    // is spent.
    let mut plan = Vec::new();
    for arm in arms {
        for k in 0..seeds {
            let mut cfg = arm_config(config, cli_overrides, arm, k)?;
            budget.apply(&mut cfg)?;
            cfg.resolve_paths(plugins)?;
            let seed = cfg.run.seed;
            let dir = out.join(arm).join(format!("seed-{seed}"));
            let found = inspect(&dir, &cfg)?;
            if let (Found::Other(why), false) = (&found, opts.overwrite) {
                return Err(Error::Msg(format!(
                    "[{arm} seed {seed}] {} holds {why}; rerun with the flags it was made \
                     with, choose another --out, or replace it with --overwrite",
                    dir.display()
                )));
            }
            plan.push(Planned {
                arm: arm.clone(),
                seed,
                dir,
                cfg,
                found,
            });
        }
    }
    if vpt_sdk::data_shard().world == 1 {
        interrupt::install().map_err(|e| Error::Msg(format!("installing signal handlers: {e}")))?;
    }
    let mut runs = Vec::new();
    for p in plan {
        let tag = format!("{} seed {}", p.arm, p.seed);
        let shown = progress::Options::new(&tag, opts.log_every);
        let stopped = |what: String| Error::CompareInterrupted {
            what,
            command: continue_command(),
        };
        if interrupt::requested() {
            return Err(stopped(format!("stopped before [{tag}]")));
        }
        let (mut session, run_dir) = match p.found {
            Found::Finished => {
                eprintln!(
                    "[{tag}] already finished in {} with this config, reusing it",
                    p.dir.display()
                );
                runs.push(record(p.arm, p.seed, p.dir));
                continue;
            }
            Found::Unfinished => {
                let run_dir = RunDir::resume(&p.dir)?;
                let _beat = progress::Heartbeat::start(&shown, "building and restoring the run");
                (resume::from_checkpoint(&run_dir, p.cfg, plugins)?, run_dir)
            }
            Found::Nothing | Found::NoCheckpoint | Found::Other(_) => {
                let existing = match &p.found {
                    Found::NoCheckpoint => {
                        eprintln!(
                            "[{tag}] {} holds an unfinished run of this config with no \
                             checkpoint; starting it again",
                            p.dir.display()
                        );
                        Existing::Overwrite
                    }
                    Found::Other(why) => {
                        eprintln!(
                            "[{tag}] {} holds {why}; replacing it (--overwrite)",
                            p.dir.display()
                        );
                        Existing::Overwrite
                    }
                    _ if opts.overwrite => Existing::Overwrite,
                    _ => Existing::Refuse,
                };
                eprintln!("[{tag}] → {}", p.dir.display());
                let run_dir = RunDir::create(&p.dir, &p.cfg, existing)?;
                let _beat = progress::Heartbeat::start(&shown, "building the task and designer");
                (Session::build(p.cfg, plugins)?, run_dir)
            }
        };
        if interrupt::requested() {
            return Err(stopped(format!("stopped before training [{tag}]")));
        }
        let s = train::run(&mut session, &run_dir, None, &shown).map_err(|e| match e {
            Error::Interrupted { step, run_dir } => stopped(format!(
                "[{tag}] stopped after step {step} and saved a checkpoint in {}",
                run_dir.display()
            )),
            e => e,
        })?;
        eprintln!("[{tag}] {} steps in {:.1}s", s.steps, s.seconds);
        runs.push(record(p.arm, p.seed, p.dir));
    }
    let rep = report::summarize(&runs)?;
    report::write_report(out, &rep)?;
    Ok(rep)
}

fn record(arm: String, seed: u64, dir: PathBuf) -> report::RunRecord {
    report::RunRecord { arm, seed, dir }
}

/// What `dir` holds against `cfg`. A directory another process has locked is refused, naming
/// the lock, before anything is read.
fn inspect(dir: &Path, cfg: &RunConfig) -> Result<Found> {
    if !dir.is_dir() {
        return Ok(Found::Nothing);
    }
    let _lock = RunDir::resume(dir)?;
    let saved = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => {
            return Ok(Found::Other(format!(
                "a run whose config.json cannot be read ({e})"
            )))
        }
    };
    let saved: Value = match serde_json::from_str(&saved) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Found::Other(format!(
                "a run whose config.json is not JSON ({e})"
            )))
        }
    };
    let now = serde_json::to_value(cfg).map_err(|e| Error::Msg(e.to_string()))?;
    let diffs = differences(&saved, &now);
    if !diffs.is_empty() {
        const SHOWN: usize = 6;
        let mut why = diffs[..diffs.len().min(SHOWN)].join("; ");
        if diffs.len() > SHOWN {
            why += &format!("; and {} more", diffs.len() - SHOWN);
        }
        return Ok(Found::Other(format!("a run of another config ({why})")));
    }
    Ok(if dir.join("summary.json").is_file() {
        Found::Finished
    } else if checkpoint::list_steps(dir)?.is_empty() {
        Found::NoCheckpoint
    } else {
        Found::Unfinished
    })
}

/// Where the resolved config `saved` (a run's `config.json`) and `now` differ, as
/// `field.path is X there, Y now`. The `arms` table only defines other runs: it does not count.
fn differences(saved: &Value, now: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let (mut saved, mut now) = (saved.clone(), now.clone());
    for v in [&mut saved, &mut now] {
        v.as_object_mut().map(|o| o.remove("arms"));
    }
    walk("", &saved, &now, &mut out);
    out
}

fn walk(path: &str, saved: &Value, now: &Value, out: &mut Vec<String>) {
    let join = |key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    match (saved, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let absent = Value::Null;
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => walk(&join(k), x, y, out),
                    (x, y) => out.push(format!(
                        "{} is {} there, {} now",
                        join(k),
                        show(x.unwrap_or(&absent), x.is_none()),
                        show(y.unwrap_or(&absent), y.is_none())
                    )),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (x, y) if x != y => out.push(format!(
            "{path} is {} there, {} now",
            show(x, false),
            show(y, false)
        )),
        _ => {}
    }
}

fn show(v: &Value, absent: bool) -> String {
    if absent {
        "absent".into()
    } else {
        clip(&v.to_string(), 80)
    }
}

/// This command line, quoted for a POSIX shell: what continues an interrupted comparison.
fn continue_command() -> String {
    std::env::args()
        .map(|a| shell_word(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=,:@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_the_field_and_both_values() {
        let saved = json!({"run": {"steps": 300, "seed": 0}, "learner": {"lr": 0.003},
                           "meta": {"feedback": [{"set": "a"}]}, "arms": {"x": 1}});
        let now = json!({"run": {"steps": 300, "seed": 0}, "learner": {"lr": 0.01, "clip": 1.0},
                         "meta": {"feedback": [{"set": "b"}]}, "arms": {"x": 2}});
        assert_eq!(
            differences(&saved, &now),
            vec![
                "learner.clip is absent there, 1.0 now",
                "learner.lr is 0.003 there, 0.01 now",
                "meta.feedback[0].set is \"a\" there, \"b\" now",
            ]
        );
        assert!(differences(&saved, &saved).is_empty());
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("--set"), "--set");
        assert_eq!(shell_word("run.steps=3"), "run.steps=3");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
