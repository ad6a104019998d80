//! Per-arm summaries across seeds: [`discover_runs`] finds the runs of a compare directory,
//! [`summarize`] reduces each run to its final evaluation, steps and seconds, then each arm to
//! mean ± std (sample std, n−1; 0 for one seed), min and max across seeds.
//!
//! Layout read by [`discover_runs`] and written by `vpt compare`: `DIR/ARM/seed-S/metrics.jsonl`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::intervals::is_interval_key;
use crate::records::{read_metrics, EvalRecord, Record, RunRecord, METRICS_FILE};

/// The metrics every task returns from `evaluate`, shown first in tables and plots.
pub const CORE_METRICS: [&str; 2] = ["feedback_loss", "general_loss"];
/// The arm every other arm is compared with, seed by seed.
pub const BASELINE_ARM: &str = "baseline";
/// The V-pretraining arm of `vpt compare`.
pub const V_ARM: &str = "v";

/// Finds the runs of a compare directory: every `DIR/ARM/seed-S/` holding a `metrics.jsonl`.
///
/// Arms come in the order `baseline`, `v`, `random_feedback`, then the rest by name; seeds
/// ascending. Hidden directories are skipped.
pub fn discover_runs(dir: &Path) -> Result<Vec<RunRecord>> {
    let mut runs = Vec::new();
    for arm_dir in sorted_subdirs(dir)? {
        let arm = file_name(&arm_dir);
        for seed_dir in sorted_subdirs(&arm_dir)? {
            let Some(seed) = file_name(&seed_dir)
                .strip_prefix("seed-")
                .and_then(|s| s.parse().ok())
            else {
                continue;
            };
            if seed_dir.join(METRICS_FILE).is_file() {
                runs.push(RunRecord {
                    arm: arm.clone(),
                    seed,
                    dir: seed_dir,
                });
            }
        }
    }
    runs.sort_by(|a, b| {
        arm_rank(&a.arm)
            .cmp(&arm_rank(&b.arm))
            .then(a.seed.cmp(&b.seed))
    });
    Ok(runs)
}

fn arm_rank(arm: &str) -> (usize, &str) {
    let known = [BASELINE_ARM, V_ARM, "random_feedback"];
    (
        known.iter().position(|k| *k == arm).unwrap_or(known.len()),
        arm,
    )
}

/// The last component of `path`, lossily as text.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        if path.is_dir() && !file_name(&path).starts_with('.') {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// Mean ± std, min and max of one quantity across seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n−1 in the denominator); 0 when n = 1.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of seeds with a finite value (non-finite values are left out).
    pub n: usize,
}

impl Stats {
    /// Statistics of the finite values; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Stats {
            mean,
            std: var.sqrt(),
            min,
            max,
            n,
        })
    }
}

/// One run reduced to its final evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedResult {
    /// The run's seed.
    pub seed: u64,
    /// Learner steps taken (the largest step in the log).
    pub steps: u64,
    /// Wall-clock seconds charged to the run (the largest `seconds` in the log).
    pub seconds: f64,
    /// Metrics of the last evaluation.
    pub metrics: BTreeMap<String, f64>,
    /// The run directory.
    pub dir: PathBuf,
    /// Every record of the run's log, in file order (for plots).
    pub records: Vec<Record>,
}

/// How often an arm beats the baseline on one metric, pairing runs by seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeedWins {
    /// Seeds where this arm's final value is strictly better than the baseline's.
    pub wins: usize,
    /// Seeds both arms ran and both have a finite value for.
    pub paired: usize,
}

impl SeedWins {
    /// True when there is at least one pair and the arm wins every one.
    pub fn every_seed(&self) -> bool {
        self.paired > 0 && self.wins == self.paired
    }
}

/// One arm: its seeds and their statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmReport {
    /// Arm name.
    pub name: String,
    /// Its runs, by seed ascending.
    pub seeds: Vec<SeedResult>,
    /// Learner steps across seeds.
    pub steps: Stats,
    /// Wall-clock seconds across seeds.
    pub seconds: Stats,
    /// Final metric → statistics across seeds (metrics with no finite value are absent).
    pub metrics: BTreeMap<String, Stats>,
    /// Metric → seed-paired wins against the baseline arm; empty for the baseline itself or when
    /// there is no baseline arm.
    pub vs_baseline: BTreeMap<String, SeedWins>,
    /// A diagnostic arm (`frozen`, `oracle`: its estimator is marked diagnostic); never ranked
    /// best and labelled as a diagnostic wherever it is shown.
    pub diagnostic: bool,
}

impl ArmReport {
    /// The arm's name as reports show it: `oracle (diagnostic)` for diagnostic arms.
    pub fn label(&self) -> String {
        if self.diagnostic {
            format!("{} (diagnostic)", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Whether the run in `dir` is a diagnostic (read from its `config.json`): it used a diagnostic
/// estimator, or switched on a task-level diagnostic, a `task.config.diagnostic_*` field set to
/// `true` (the vision task's supervised upper bound).
fn is_diagnostic_run(dir: &Path) -> bool {
    fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| diagnostic_config(&v))
}

/// Whether a resolved run config (JSON) describes a diagnostic run; see [`is_diagnostic_run`].
fn diagnostic_config(v: &Value) -> bool {
    let estimator = v["meta"]["estimator"]
        .as_str()
        .and_then(|name| crate::estimators::lookup(name).ok())
        .is_some_and(|e| e.diagnostic.is_some());
    let task_switch = v["task"]["config"].as_object().is_some_and(|c| {
        c.iter()
            .any(|(k, x)| k.starts_with("diagnostic_") && x.as_bool() == Some(true))
    });
    estimator || task_switch
}

/// A compare report: every arm, in the order the runs were given.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Arms in run order (first appearance).
    pub arms: Vec<ArmReport>,
    /// Every final metric name, `feedback_loss` and `general_loss` first, then the rest sorted.
    pub metrics: Vec<String>,
}

/// Whether a smaller value of `metric` is better: a word of its name (split at `_`, `.`, `/`,
/// `@`, `-`) is a loss or an error (`loss`, `error`, `nll`, `perplexity`, `ppl`, `ce`, `mse`,
/// `rmse`, `mae`, `l1`, `l2`); everything else (accuracy, mIoU, pass@k, …) is higher-is-better.
pub fn lower_is_better(metric: &str) -> bool {
    const LOWER: [&str; 11] = [
        "loss",
        "error",
        "nll",
        "perplexity",
        "ppl",
        "ce",
        "mse",
        "rmse",
        "mae",
        "l1",
        "l2",
    ];
    metric
        .to_ascii_lowercase()
        .split(['_', '.', '/', '@', '-'])
        .any(|word| LOWER.contains(&word))
}

/// Orders metric names: `feedback_loss`, `general_loss` (where present), then the rest sorted.
pub fn metric_order<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&String> = names.into_iter().collect();
    let mut out: Vec<String> = CORE_METRICS
        .iter()
        .filter(|m| set.iter().any(|s| s == *m))
        .map(|m| m.to_string())
        .collect();
    out.extend(
        set.into_iter()
            .filter(|s| !CORE_METRICS.contains(&s.as_str()))
            .cloned(),
    );
    out
}

/// Reads every run's `metrics.jsonl` and summarizes it, per arm and across seeds.
///
/// Fails on no runs, a repeated (arm, seed), an unreadable log, or a log with no eval record.
pub fn summarize(runs: &[RunRecord]) -> Result<Report> {
    if runs.is_empty() {
        return Err(Error::Msg("report: no runs to summarize".into()));
    }
    let mut arms: Vec<(String, Vec<SeedResult>)> = Vec::new();
    for run in runs {
        let seed = seed_result(run)?;
        let idx = match arms.iter().position(|(name, _)| *name == run.arm) {
            Some(i) => i,
            None => {
                arms.push((run.arm.clone(), Vec::new()));
                arms.len() - 1
            }
        };
        if arms[idx].1.iter().any(|s| s.seed == run.seed) {
            return Err(Error::Msg(format!(
                "report: arm `{}` has seed {} twice ({})",
                run.arm,
                run.seed,
                run.dir.display()
            )));
        }
        arms[idx].1.push(seed);
    }
    let mut arm_reports: Vec<ArmReport> = arms
        .into_iter()
        .map(|(name, mut seeds)| {
            seeds.sort_by_key(|s| s.seed);
            arm_report(name, seeds)
        })
        .collect();
    if let Some(base) = arm_reports.iter().find(|a| a.name == BASELINE_ARM).cloned() {
        for arm in arm_reports.iter_mut().filter(|a| a.name != BASELINE_ARM) {
            arm.vs_baseline = seed_wins(arm, &base);
        }
    }
    let names: Vec<String> = arm_reports
        .iter()
        .flat_map(|a| a.seeds.iter().flat_map(|s| s.metrics.keys().cloned()))
        .filter(|m| !is_interval_key(m))
        .collect();
    Ok(Report {
        metrics: metric_order(&names),
        arms: arm_reports,
    })
}

fn seed_result(run: &RunRecord) -> Result<SeedResult> {
    let path = run.dir.join(METRICS_FILE);
    let records = read_metrics(&path)?;
    // The final evaluation: the largest step, and the last such line when steps tie.
    let last_eval = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval(e) => Some(e),
            Record::Train(_) => None,
        })
        .fold(None::<&EvalRecord>, |best, e| match best {
            Some(b) if b.step > e.step => Some(b),
            _ => Some(e),
        })
        .ok_or_else(|| {
            Error::Msg(format!(
                "{}: no eval record (arm `{}`, seed {}); every run must evaluate at least once, at \
                 its end",
                path.display(),
                run.arm,
                run.seed
            ))
        })?;
    let steps = records.iter().map(Record::step).max().unwrap_or(0);
    let seconds = records
        .iter()
        .map(Record::seconds)
        .filter(|s| s.is_finite())
        .fold(0.0, f64::max);
    Ok(SeedResult {
        seed: run.seed,
        steps,
        seconds,
        metrics: last_eval.metrics.clone(),
        dir: run.dir.clone(),
        records,
    })
}

fn arm_report(name: String, seeds: Vec<SeedResult>) -> ArmReport {
    let nan_stats = Stats {
        mean: f64::NAN,
        std: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        n: 0,
    };
    let steps: Vec<f64> = seeds.iter().map(|s| s.steps as f64).collect();
    let seconds: Vec<f64> = seeds.iter().map(|s| s.seconds).collect();
    let names: BTreeSet<&String> = seeds
        .iter()
        .flat_map(|s| s.metrics.keys())
        .filter(|m| !is_interval_key(m))
        .collect();
    let metrics = names
        .into_iter()
        .filter_map(|m| {
            let values: Vec<f64> = seeds
                .iter()
                .filter_map(|s| s.metrics.get(m).copied())
                .collect();
            Stats::of(&values).map(|st| (m.clone(), st))
        })
        .collect();
    ArmReport {
        diagnostic: seeds.iter().any(|s| is_diagnostic_run(&s.dir)),
        name,
        steps: Stats::of(&steps).unwrap_or(nan_stats),
        seconds: Stats::of(&seconds).unwrap_or(nan_stats),
        seeds,
        metrics,
        vs_baseline: BTreeMap::new(),
    }
}

fn seed_wins(arm: &ArmReport, base: &ArmReport) -> BTreeMap<String, SeedWins> {
    let mut out = BTreeMap::new();
    for metric in arm.metrics.keys().filter(|m| base.metrics.contains_key(*m)) {
        let lower = lower_is_better(metric);
        let mut wins = SeedWins { wins: 0, paired: 0 };
        for s in &arm.seeds {
            let Some(b) = base.seeds.iter().find(|b| b.seed == s.seed) else {
                continue;
            };
            let (Some(&x), Some(&y)) = (s.metrics.get(metric), b.metrics.get(metric)) else {
                continue;
            };
            if !(x.is_finite() && y.is_finite()) {
                continue;
            }
            wins.paired += 1;
            if (lower && x < y) || (!lower && x > y) {
                wins.wins += 1;
            }
        }
        out.insert(metric.clone(), wins);
    }
    out
}

impl Report {
    /// The named scalars of the learner steps (`metrics` of the train records: the designer's
    /// `Designer::metrics`, e.g. `alpha_mean`, and the task's `after_step`), sorted.
    pub fn step_metrics(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .arms
            .iter()
            .flat_map(|a| a.seeds.iter())
            .flat_map(|s| s.records.iter())
            .filter_map(|r| match r {
                Record::Train(t) => Some(t.metrics.keys()),
                Record::Eval(_) => None,
            })
            .flatten()
            .collect();
        names.into_iter().cloned().collect()
    }

    /// The arm with the best mean on `metric` (direction from [`lower_is_better`]).
    pub fn best_arm(&self, metric: &str) -> Option<(&ArmReport, Stats)> {
        let lower = lower_is_better(metric);
        self.arms
            .iter()
            .filter(|a| !a.diagnostic)
            .filter_map(|a| a.metrics.get(metric).map(|s| (a, *s)))
            .reduce(|best, cur| {
                let better = if lower {
                    cur.1.mean < best.1.mean
                } else {
                    cur.1.mean > best.1.mean
                };
                if better {
                    cur
                } else {
                    best
                }
            })
    }

    /// `report.json`: `{"arms": {ARM: {"seeds": [{"seed","steps","seconds","metrics"}],
    /// "summary": {"steps","seconds","metrics": {NAME: Stats}}, "vs_baseline": {NAME: wins}}}}`.
    ///
    /// Non-finite numbers become `null`.
    pub fn to_json(&self) -> Value {
        let mut arms = Map::new();
        for arm in &self.arms {
            let seeds: Vec<Value> = arm
                .seeds
                .iter()
                .map(|s| {
                    json!({
                        "seed": s.seed, "steps": s.steps, "seconds": s.seconds, "metrics": s.metrics
                    })
                })
                .collect();
            let mut obj = Map::new();
            obj.insert("seeds".into(), Value::Array(seeds));
            obj.insert(
                "summary".into(),
                json!({"steps": arm.steps, "seconds": arm.seconds, "metrics": arm.metrics}),
            );
            if !arm.vs_baseline.is_empty() {
                let wins: Map<String, Value> = arm
                    .vs_baseline
                    .iter()
                    .map(|(m, w)| {
                        (
                            m.clone(),
                            json!({
                                "wins": w.wins, "paired": w.paired, "every_seed": w.every_seed()
                            }),
                        )
                    })
                    .collect();
                obj.insert("vs_baseline".into(), Value::Object(wins));
            }
            arms.insert(arm.name.clone(), Value::Object(obj));
        }
        json!({ "arms": arms })
    }
}

#[cfg(test)]
mod tests {
    /// Losses and errors rank lower-first, by whole words of the name (not substrings:
    /// `choice_accuracy` contains "ce" inside a word).
    #[test]
    fn metric_direction_is_read_from_whole_words() {
        for m in [
            "feedback_loss",
            "feedback_loss/gsm8k",
            "general_ppl",
            "seg_ce",
            "depth_rmse",
            "depth_l1",
        ] {
            assert!(super::lower_is_better(m), "{m}");
        }
        for m in ["miou", "pass@1", "choice_accuracy", "probe_acc"] {
            assert!(!super::lower_is_better(m), "{m}");
        }
    }

    use super::diagnostic_config;
    use serde_json::json;

    #[test]
    fn diagnostic_estimators_and_task_switches_mark_a_run() {
        let run = |estimator: &str, task: serde_json::Value| json!({"meta": {"estimator": estimator}, "task": {"config": task}});
        assert!(!diagnostic_config(&run("none", json!({"batch_size": 4}))));
        assert!(!diagnostic_config(&run("exact", json!({}))));
        assert!(diagnostic_config(&run("oracle", json!({}))));
        assert!(diagnostic_config(&run(
            "none",
            json!({"diagnostic_supervised": true})
        )));
        // a switch that is off, or a field that is not a switch, does not count
        assert!(!diagnostic_config(&run(
            "none",
            json!({"diagnostic_supervised": false, "diagnostics": true})
        )));
    }
}
