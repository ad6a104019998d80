//! Run reports: typed `metrics.jsonl` records, per-arm summaries across seeds, `report.json`,
//! `report.md`, a terminal table, and `atomic_write` (write a temp file, fsync, then rename).
//!
//! Layout read by [`discover_runs`] and written by `vpt compare`: `DIR/ARM/seed-S/metrics.jsonl`.
//! [`summarize`] reduces each run to its final evaluation, steps and seconds, then each arm to
//! mean ± std (sample std, n−1; 0 for one seed), min and max across seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::intervals::{example_interval, is_interval_key, seed_interval, Interval, CI_HI, CI_LO};

/// File name of the per-run metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The metrics every task returns from `evaluate`, shown first in tables and plots.
pub const CORE_METRICS: [&str; 2] = ["feedback_loss", "general_loss"];
/// The arm every other arm is compared with, seed by seed.
pub const BASELINE_ARM: &str = "baseline";
/// The V-pretraining arm of `vpt compare`.
pub const V_ARM: &str = "v";

// ---------------------------------------------------------------------------------------------
// metrics.jsonl records
// ---------------------------------------------------------------------------------------------

/// One finished run of `vpt compare`: its arm, its seed and its run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Arm name (`baseline`, `v`, `random_feedback`, or a config-defined arm).
    pub arm: String,
    /// The run's base seed.
    pub seed: u64,
    /// The run directory, holding `metrics.jsonl`.
    pub dir: PathBuf,
}

/// One line of `metrics.jsonl`, tagged by its `"kind"` field.
///
/// Numbers that are `null` in the file (serde_json writes NaN and ±inf as `null`) read back as
/// NaN; fields this version does not know are ignored, so newer hosts can add some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A learner step.
    Train(TrainRecord),
    /// An evaluation.
    Eval(EvalRecord),
}

impl Record {
    /// Learner step of the record.
    pub fn step(&self) -> u64 {
        match self {
            Record::Train(r) => r.step,
            Record::Eval(r) => r.step,
        }
    }
    /// Wall-clock seconds charged to the run when the record was written.
    pub fn seconds(&self) -> f64 {
        match self {
            Record::Train(r) => r.seconds,
            Record::Eval(r) => r.seconds,
        }
    }
}

/// `{"kind":"train", ...}`: one learner step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Learner step.
    pub step: u64,
    /// Wall-clock seconds charged to the run so far, meta-step time included.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
    /// Learner learning rate used at this step.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// The learner's self-supervised loss on this step's batch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub pretrain_loss: f64,
    /// The meta step taken before this learner step, if any.
    #[serde(default)]
    pub meta: Option<MetaRecord>,
}

/// The diagnostics of one meta step (what `meta::MetaStep::run` returns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaRecord {
    /// The value V = Align(g_down, g_pre).
    #[serde(deserialize_with = "f64_or_nan")]
    pub value: f64,
    /// cos(g_down, g_pre).
    #[serde(deserialize_with = "f64_or_nan")]
    pub cos: f64,
    /// ‖g_down‖ on the alignment subset.
    #[serde(deserialize_with = "f64_or_nan")]
    pub g_down_norm: f64,
    /// ‖g_pre‖ on the alignment subset.
    #[serde(deserialize_with = "f64_or_nan")]
    pub g_pre_norm: f64,
    /// R(φ, c) (0 when the designer has none).
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub regularizer: f64,
    /// True when the φ update was skipped (e.g. a non-finite meta gradient).
    pub skipped: bool,
    /// ‖∇φ L_meta‖ before clipping (`designer_optim.clip`).
    #[serde(default, deserialize_with = "f64_or_nan")]
    pub phi_grad_norm: f64,
    /// Unlabeled examples the meta step used (all its batches; `meta.batch_fraction`).
    #[serde(default)]
    pub rows: u64,
    /// Longest sequence the meta step used (`meta.max_seq_len`; 0 = whole sequences).
    #[serde(default)]
    pub max_seq_len: u64,
}

/// `{"kind":"eval", ...}`: one evaluation, metric name → value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Learner step at which the evaluation ran.
    pub step: u64,
    /// Wall-clock seconds charged to the run so far (evaluation time excluded or not, as the
    /// run loop decides; the report only reads it).
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
    /// Metric name → value (`feedback_loss`, `general_loss`, and the task's own).
    #[serde(deserialize_with = "metrics_or_nan")]
    pub metrics: BTreeMap<String, f64>,
}

fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn metrics_or_nan<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Reads a `metrics.jsonl`: one [`Record`] per non-blank line, in file order.
///
/// A line that is not a valid record fails with `FILE:LINE: why`.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| {
            Error::Msg(format!(
                "{}:{}: not a metrics record: {e}",
                path.display(),
                i + 1
            ))
        })?;
        records.push(record);
    }
    Ok(records)
}

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

fn file_name(path: &Path) -> String {
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

/// Whether the run in `dir` used a diagnostic estimator (read from its `config.json`).
fn is_diagnostic_run(dir: &Path) -> bool {
    fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["meta"]["estimator"].as_str().map(String::from))
        .and_then(|name| crate::estimators::lookup(&name).ok())
        .is_some_and(|e| e.diagnostic.is_some())
}

/// A compare report: every arm, in the order the runs were given.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Arms in run order (first appearance).
    pub arms: Vec<ArmReport>,
    /// Every final metric name, `feedback_loss` and `general_loss` first, then the rest sorted.
    pub metrics: Vec<String>,
}

/// Whether a smaller value of `metric` is better: names containing `loss`, `error`, `nll`,
/// `perplexity` or `ppl`; everything else (accuracy, pass@k, …) is higher-is-better.
pub fn lower_is_better(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    ["loss", "error", "nll", "perplexity", "ppl"]
        .iter()
        .any(|k| m.contains(k))
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

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Decimal places giving about four significant digits for a number of magnitude `x`.
fn decimals_for(x: f64) -> usize {
    if !x.is_finite() || x == 0.0 {
        return 4;
    }
    (3 - x.abs().log10().floor() as i64).clamp(0, 6) as usize
}

/// `mean ± std` with about four significant digits of the mean; both parts share one number of
/// decimals, raised (up to 6) until a non-zero std shows at least one significant digit.
pub fn format_stats(s: &Stats) -> String {
    let mut d = decimals_for(s.mean);
    if s.std > 0.0 && s.std.is_finite() {
        d = d.max(((-s.std.log10()).ceil().max(0.0) as usize).min(6));
    }
    format!("{:.d$} ± {:.d$}", s.mean, s.std)
}

/// The summary table (a padded markdown table, readable as-is in a terminal) followed by one
/// line per metric naming the best arm and one line per arm saying whether it beats the
/// baseline on `feedback_loss` in every seed.
pub fn render_table(report: &Report) -> String {
    let mut header = vec!["arm".to_string(), "seeds".to_string()];
    header.extend(report.metrics.iter().cloned());
    header.extend(["steps".to_string(), "seconds".to_string()]);
    let mut rows = vec![header];
    for arm in &report.arms {
        let n_seeds = arm.seeds.len();
        let mut row = vec![arm.label(), n_seeds.to_string()];
        for m in &report.metrics {
            row.push(match arm.metrics.get(m) {
                Some(s) if s.n < n_seeds => format!("{} (n={})", format_stats(s), s.n),
                Some(s) => format_stats(s),
                None => "—".into(),
            });
        }
        row.push(format!("{:.0} ± {:.0}", arm.steps.mean, arm.steps.std));
        row.push(format!("{:.1} ± {:.1}", arm.seconds.mean, arm.seconds.std));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                let pad = " ".repeat(w - cell.chars().count());
                // Text columns left-aligned, numbers right-aligned.
                if c == 0 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&rows[0]);
    // Delimiter cells span the cell and its two padding spaces; `:` right-aligns numbers.
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, w)| {
            if c == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in &rows[1..] {
        out.push_str(&line(row));
    }
    out.push('\n');
    for v in verdicts(report) {
        out.push_str(&format!("- {v}\n"));
    }
    out
}

/// Bookkeeping the host adds to every evaluation; tabulated, but never ranked "best".
pub const HOST_COUNTERS: [&str; 3] = ["meta_steps", "meta_skipped", "learner_skipped"];

/// One sentence per metric naming the best arm, then one per non-baseline arm saying whether it
/// beats the baseline on `feedback_loss` in every seed.
pub fn verdicts(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for m in report
        .metrics
        .iter()
        .filter(|m| !HOST_COUNTERS.contains(&m.as_str()))
    {
        if let Some((arm, s)) = report.best_arm(m) {
            let dir = if lower_is_better(m) {
                "lower"
            } else {
                "higher"
            };
            out.push(format!(
                "best on {m} ({dir} is better): {} ({})",
                arm.name,
                format_stats(&s)
            ));
        }
    }
    let metric = CORE_METRICS[0];
    if !report.arms.iter().any(|a| a.name == BASELINE_ARM) {
        out.push(format!(
            "no `{BASELINE_ARM}` arm: no seed-by-seed comparison on {metric}"
        ));
        return out;
    }
    // V first, then the other arms in run order.
    let mut others: Vec<&ArmReport> = report
        .arms
        .iter()
        .filter(|a| a.name != BASELINE_ARM)
        .collect();
    others.sort_by_key(|a| a.name != V_ARM);
    for arm in others {
        out.push(match arm.vs_baseline.get(metric) {
            Some(w) if w.every_seed() => format!(
                "{} beats {BASELINE_ARM} on {metric} in every seed ({}/{})",
                arm.label(),
                w.wins,
                w.paired
            ),
            Some(w) => format!(
                "{} does NOT beat {BASELINE_ARM} on {metric} in every seed ({}/{} seeds)",
                arm.label(),
                w.wins,
                w.paired
            ),
            None => format!(
                "{} vs {BASELINE_ARM}: no paired seeds with {metric}",
                arm.label()
            ),
        });
    }
    out
}

/// The markdown report: the table, the verdicts and links to `plots` (file names in `dir`).
pub fn render_markdown(report: &Report, plots: &[PathBuf]) -> String {
    let mut seeds: BTreeSet<u64> = BTreeSet::new();
    for a in &report.arms {
        seeds.extend(a.seeds.iter().map(|s| s.seed));
    }
    let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
    let mut out = String::from("# vpt compare report\n\n");
    out.push_str(&format!(
        "{} arms × seeds {{{}}}. Each cell is the mean ± sample std (n−1) across seeds of the \
         run's final evaluation; steps are learner steps, seconds are wall-clock seconds charged \
         to the run (meta-step time included).\n\n",
        report.arms.len(),
        seeds.join(", ")
    ));
    out.push_str(&render_table(report));
    if report.arms.iter().any(|a| a.diagnostic) {
        out.push_str(
            "\nArms marked *(diagnostic)* are not methods: `frozen` never updates φ (it shows what \
             the learner alone does to the designer's output) and `oracle` sets the learner's \
             targets from the feedback gradient itself, breaking the information bottleneck on \
             purpose (an upper bound: could any designer help here?). Neither is ranked best.\n",
        );
    }
    out.push_str(&render_intervals(report));
    out.push_str(&render_paired(report));
    if !plots.is_empty() {
        out.push_str(
            "\n## Plots\n\nLines: mean across seeds; bands: min–max across seeds. \
             `meta_regularizer` is R(φ, c) at each meta step (for `topk_soft` and the other LM \
             designers: the off-target mass, mean 1 − q_true over loss-bearing positions); the \
             oracle logs it for the targets it sets.\n\n",
        );
        for p in plots {
            let name = file_name(p);
            out.push_str(&format!("![{}]({name})\n\n", name.trim_end_matches(".svg")));
        }
    }
    out
}

/// `(value, lo, hi)` of `metric` in each seed that has it (bounds NaN where the task gave none).
fn seed_bounds(arm: &ArmReport, metric: &str) -> Vec<(f64, f64, f64)> {
    arm.seeds
        .iter()
        .filter_map(|s| {
            let x = *s.metrics.get(metric)?;
            let bound = |suffix: &str| {
                s.metrics
                    .get(&format!("{metric}{suffix}"))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            Some((x, bound(CI_LO), bound(CI_HI)))
        })
        .collect()
}

/// The 95 % interval section: for each metric and arm, the interval over evaluation examples
/// (the task's bootstrap bounds) and the one over seeds (Student t, n−1), where available.
pub fn render_intervals(report: &Report) -> String {
    let mut out = String::from(
        "\n## 95 % intervals\n\n`examples`: the task's bootstrap interval over evaluation \
         examples (one seed: as reported; several: the seeds' standard errors combined for their \
         mean). `seeds`: mean ± t·s/√n across seeds. — where a source is missing.\n\n\
         | metric | arm | mean | examples | seeds |\n|---|---|--:|--:|--:|\n",
    );
    let fmt = |i: Option<Interval>, d: usize| i.map_or("—".to_string(), |i| i.format(d));
    for m in report
        .metrics
        .iter()
        .filter(|m| !HOST_COUNTERS.contains(&m.as_str()))
    {
        for arm in &report.arms {
            let Some(st) = arm.metrics.get(m) else {
                continue;
            };
            let d = decimals_for(st.mean);
            let bounds = seed_bounds(arm, m);
            let values: Vec<f64> = bounds.iter().map(|b| b.0).collect();
            out.push_str(&format!(
                "| {m} | {} | {:.d$} | {} | {} |\n",
                arm.label(),
                st.mean,
                fmt(example_interval(&bounds), d),
                fmt(seed_interval(&values), d),
            ));
        }
    }
    out
}

/// The seed-paired differences section: arm − baseline per seed on every metric, their mean and
/// 95 % t interval, and in how many seeds the arm is better.
pub fn render_paired(report: &Report) -> String {
    let Some(base) = report.arms.iter().find(|a| a.name == BASELINE_ARM) else {
        return String::new();
    };
    let mut out = String::from(
        "\n## Paired differences against the baseline\n\nArm − baseline, seed by seed (same \
         seed, same data order); the interval is a t interval over the paired differences.\n\n\
         | metric | arm | per seed | mean | 95 % interval | better in |\n|---|---|---|--:|--:|--:|\n",
    );
    for m in report
        .metrics
        .iter()
        .filter(|m| !HOST_COUNTERS.contains(&m.as_str()))
    {
        for arm in report.arms.iter().filter(|a| a.name != BASELINE_ARM) {
            let diffs: Vec<(u64, f64)> = arm
                .seeds
                .iter()
                .filter_map(|s| {
                    let b = base.seeds.iter().find(|b| b.seed == s.seed)?;
                    let d = s.metrics.get(m)? - b.metrics.get(m)?;
                    d.is_finite().then_some((s.seed, d))
                })
                .collect();
            if diffs.is_empty() {
                continue;
            }
            let values: Vec<f64> = diffs.iter().map(|d| d.1).collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let dec = decimals_for(mean).max(3);
            let per_seed: Vec<String> = diffs
                .iter()
                .map(|(seed, d)| format!("{seed}: {d:+.dec$}"))
                .collect();
            let interval = seed_interval(&values).map_or("—".to_string(), |i| i.format(dec));
            let w = arm
                .vs_baseline
                .get(m)
                .copied()
                .unwrap_or(SeedWins { wins: 0, paired: 0 });
            out.push_str(&format!(
                "| {m} | {} | {} | {mean:+.dec$} | {interval} | {}/{} |\n",
                arm.label(),
                per_seed.join(", "),
                w.wins,
                w.paired
            ));
        }
    }
    out
}

/// Writes `report.json`, `report.md` and the SVG plots (see [`crate::plot::write_plots`]) into
/// `dir`, creating it if needed. Every file is written atomically.
pub fn write_report(dir: &Path, report: &Report) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| Error::Msg(format!("report.json: {e}")))?;
    atomic_write(dir.join("report.json"), format!("{json}\n").as_bytes())?;
    let plots = crate::plot::write_plots(dir, report)?;
    atomic_write(
        dir.join("report.md"),
        render_markdown(report, &plots).as_bytes(),
    )
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over
/// `path`, then a best-effort fsync of the directory. A reader sees the old file or the new one,
/// never a torn one. The parent directory must exist.
pub fn atomic_write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let name = path
        .file_name()
        .ok_or_else(|| Error::Msg(format!("atomic_write: {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Persist the rename itself; directories cannot be opened for sync on every platform.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh, empty temp directory unique to this process and test, removed on drop (also
    /// when the test panics).
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn temp_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vpt-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// (feedback_loss, general_loss, pass@1) of one run's final evaluation.
    type Finals = (f64, f64, f64);
    /// Final values per arm and seed 0, 1, 2.
    pub(crate) const FINAL: [(&str, [Finals; 3]); 2] = [
        (
            "baseline",
            [(2.0, 3.0, 0.10), (2.2, 3.1, 0.20), (2.4, 3.2, 0.30)],
        ),
        (
            "v",
            [(1.9, 3.05, 0.30), (2.1, 3.15, 0.40), (2.5, 3.25, 0.20)],
        ),
    ];

    /// Writes `DIR/ARM/seed-S/metrics.jsonl` for [`FINAL`]: 20 train steps (a meta step every
    /// 4 for `v`), evals at steps 0, 10, 20 approaching the final values; `v` runs slower.
    pub(crate) fn fake_compare(dir: &Path) -> Vec<RunRecord> {
        let mut runs = Vec::new();
        for (arm, finals) in FINAL {
            let secs_per_step = if arm == "v" { 0.7 } else { 0.5 };
            for (seed, (fl, gl, pass)) in finals.iter().enumerate() {
                let run_dir = dir.join(arm).join(format!("seed-{seed}"));
                fs::create_dir_all(&run_dir).unwrap();
                let mut lines = Vec::new();
                for step in 0..=20u64 {
                    let t = step as f64 * secs_per_step + seed as f64 * 0.1;
                    if step % 10 == 0 {
                        let k = (20 - step) as f64 / 10.0; // 2, 1, 0
                        lines.push(json!({"kind": "eval", "step": step, "seconds": t,
                            "metrics": {"feedback_loss": fl + k, "general_loss": gl + k,
                                        "pass@1": pass * (1.0 - k / 3.0)}}));
                    }
                    if step < 20 {
                        let meta = (arm == "v" && step % 4 == 0).then(|| {
                            json!({"value": 0.1, "cos": 0.2 + 0.1 * seed as f64,
                                   "g_down_norm": 1.0, "g_pre_norm": 2.0, "skipped": false})
                        });
                        lines.push(json!({"kind": "train", "step": step, "seconds": t,
                            "lr": 1e-4, "meta": meta,
                            "pretrain_loss": 4.0 - step as f64 * 0.05 + seed as f64 * 0.01}));
                    }
                }
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                fs::write(run_dir.join(METRICS_FILE), text).unwrap();
                runs.push(RunRecord {
                    arm: arm.into(),
                    seed: seed as u64,
                    dir: run_dir,
                });
            }
        }
        runs
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn reads_typed_records_with_nulls_as_nan() {
        let dir = temp_dir("read");
        let path = dir.join(METRICS_FILE);
        fs::write(
            &path,
            concat!(
                r#"{"kind":"train","step":3,"seconds":1.5,"lr":0.001,"pretrain_loss":2.5,"meta":null}"#,
                "\n\n",
                r#"{"kind":"train","step":4,"seconds":2,"lr":0.001,"pretrain_loss":null,"meta":{"value":0.5,"cos":0.25,"g_down_norm":1,"g_pre_norm":2,"skipped":true},"extra":7}"#,
                "\n",
                r#"{"kind":"eval","step":4,"seconds":2.5,"metrics":{"feedback_loss":1.25,"acc":null}}"#,
                "\n"
            ),
        )
        .unwrap();
        let recs = read_metrics(&path).unwrap();
        assert_eq!(recs.len(), 3);
        let Record::Train(t) = &recs[0] else {
            panic!("{:?}", recs[0])
        };
        assert_eq!(
            (t.step, t.seconds, t.lr, t.pretrain_loss),
            (3, 1.5, 0.001, 2.5)
        );
        assert!(t.meta.is_none());
        let Record::Train(t) = &recs[1] else {
            panic!("{:?}", recs[1])
        };
        assert!(t.pretrain_loss.is_nan());
        let m = t.meta.as_ref().unwrap();
        assert_eq!(
            (m.value, m.cos, m.g_down_norm, m.g_pre_norm, m.skipped),
            (0.5, 0.25, 1.0, 2.0, true)
        );
        let Record::Eval(e) = &recs[2] else {
            panic!("{:?}", recs[2])
        };
        assert_eq!(
            (e.step, e.seconds, e.metrics["feedback_loss"]),
            (4, 2.5, 1.25)
        );
        assert!(e.metrics["acc"].is_nan());
        // A written record reads back unchanged.
        let line = serde_json::to_string(&recs[2]).unwrap();
        assert!(line.contains(r#""kind":"eval""#), "{line}");
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = temp_dir("malformed");
        let path = dir.join(METRICS_FILE);
        fs::write(
            &path,
            concat!(
                r#"{"kind":"eval","step":0,"seconds":0,"metrics":{}}"#,
                "\n",
                r#"{"kind":"train","step":1,"seconds":0.1,"lr":0.1,"pretrain_loss":1,"meta":null}"#,
                "\n",
                r#"{"kind":"train","step":2,"seconds":0.2,"lr":0.1}"#,
                "\n"
            ),
        )
        .unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
        assert!(err.contains("pretrain_loss"), "{err}");
        fs::write(&path, "{\"kind\":\"bogus\",\"step\":0}\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("bogus"), "{err}");
        let err = read_metrics(dir.join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn summarizes_final_metrics_across_seeds() {
        let dir = temp_dir("summary");
        let report = summarize(&fake_compare(&dir)).unwrap();
        assert_eq!(report.metrics, ["feedback_loss", "general_loss", "pass@1"]);
        let names: Vec<&str> = report.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["baseline", "v"]);
        let base = &report.arms[0];
        assert_eq!(base.seeds.len(), 3);
        assert_eq!(base.seeds[1].steps, 20);
        assert!(close(base.seeds[1].seconds, 10.1));
        assert_eq!(base.seeds[2].metrics["feedback_loss"], 2.4);
        let fl = base.metrics["feedback_loss"];
        assert!(close(fl.mean, 2.2) && close(fl.std, 0.2), "{fl:?}");
        assert_eq!((fl.min, fl.max, fl.n), (2.0, 2.4, 3));
        let p = report.arms[1].metrics["pass@1"];
        assert!(close(p.mean, 0.3) && close(p.std, 0.1), "{p:?}");
        let secs = report.arms[1].seconds;
        assert!(close(secs.mean, 14.1) && close(secs.std, 0.1), "{secs:?}");
        assert_eq!(
            report.arms[1].steps,
            Stats {
                mean: 20.0,
                std: 0.0,
                min: 20.0,
                max: 20.0,
                n: 3
            }
        );
        // v wins seeds 0 and 1 on feedback_loss (lower) and pass@1 (higher), loses seed 2.
        assert!(base.vs_baseline.is_empty());
        let wins = &report.arms[1].vs_baseline;
        assert_eq!(wins["feedback_loss"], SeedWins { wins: 2, paired: 3 });
        assert_eq!(wins["pass@1"], SeedWins { wins: 2, paired: 3 });
        assert_eq!(wins["general_loss"], SeedWins { wins: 0, paired: 3 });
        assert!(!wins["feedback_loss"].every_seed());
        assert_eq!(report.best_arm("feedback_loss").unwrap().0.name, "v"); // 2.167 < 2.2
        assert_eq!(report.best_arm("general_loss").unwrap().0.name, "baseline");
        assert_eq!(report.best_arm("pass@1").unwrap().0.name, "v");
    }

    #[test]
    fn formats_mean_and_std() {
        let st = |mean, std| Stats {
            mean,
            std,
            min: 0.0,
            max: 0.0,
            n: 2,
        };
        assert_eq!(format_stats(&st(2.2, 0.2)), "2.200 ± 0.200");
        assert_eq!(format_stats(&st(2.692, 0.0004)), "2.6920 ± 0.0004");
        assert_eq!(format_stats(&st(1234.5, 10.0)), "1234 ± 10");
        assert_eq!(format_stats(&st(0.0123, 0.0)), "0.01230 ± 0.00000");
        assert_eq!(format_stats(&st(f64::NAN, f64::NAN)), "NaN ± NaN");
    }

    #[test]
    fn stats_of_one_value_and_non_finite() {
        assert_eq!(
            Stats::of(&[3.0]),
            Some(Stats {
                mean: 3.0,
                std: 0.0,
                min: 3.0,
                max: 3.0,
                n: 1
            })
        );
        let s = Stats::of(&[1.0, f64::NAN, 3.0]).unwrap();
        assert!(
            close(s.mean, 2.0) && close(s.std, 2f64.sqrt()) && s.n == 2,
            "{s:?}"
        );
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }

    #[test]
    fn refuses_runs_without_eval_or_with_repeated_seed() {
        let dir = temp_dir("refuse");
        let mut runs = fake_compare(&dir);
        let dup = RunRecord {
            arm: "v".into(),
            seed: 1,
            dir: runs[4].dir.clone(),
        };
        let err = summarize(&[runs[4].clone(), dup]).unwrap_err().to_string();
        assert!(err.contains("seed 1 twice"), "{err}");
        let path = runs[0].dir.join(METRICS_FILE);
        fs::write(
            &path,
            r#"{"kind":"train","step":0,"seconds":0,"lr":0.1,"pretrain_loss":1,"meta":null}"#,
        )
        .unwrap();
        let err = summarize(&runs).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("no eval record"),
            "{err}"
        );
        runs.clear();
        assert!(summarize(&runs).is_err());
    }

    #[test]
    fn report_json_has_the_exact_schema() {
        let dir = temp_dir("json");
        let report = summarize(&fake_compare(&dir)).unwrap();
        write_report(&dir, &report).unwrap();
        let v: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(keys(&v), ["arms"]);
        assert_eq!(keys(&v["arms"]), ["baseline", "v"]);
        assert_eq!(keys(&v["arms"]["baseline"]), ["seeds", "summary"]);
        assert_eq!(keys(&v["arms"]["v"]), ["seeds", "summary", "vs_baseline"]);
        let seeds = v["arms"]["v"]["seeds"].as_array().unwrap();
        assert_eq!(seeds.len(), 3);
        for (i, s) in seeds.iter().enumerate() {
            assert_eq!(keys(s), ["metrics", "seconds", "seed", "steps"]);
            assert_eq!(s["seed"], json!(i));
            assert_eq!(s["steps"], json!(20));
            assert!(s["seconds"].is_f64());
            assert_eq!(
                keys(&s["metrics"]),
                ["feedback_loss", "general_loss", "pass@1"]
            );
        }
        assert_eq!(seeds[2]["metrics"]["feedback_loss"], json!(2.5));
        let fl = &v["arms"]["baseline"]["summary"]["metrics"]["feedback_loss"];
        assert_eq!(keys(fl), ["max", "mean", "min", "n", "std"]);
        assert!(
            close(fl["mean"].as_f64().unwrap(), 2.2) && close(fl["std"].as_f64().unwrap(), 0.2)
        );
        assert_eq!(
            v["arms"]["v"]["vs_baseline"]["feedback_loss"],
            json!({"wins": 2, "paired": 3, "every_seed": false})
        );
        // No temp files are left behind.
        let stray: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[test]
    fn intervals_paired_differences_and_diagnostic_labels() {
        let dir = temp_dir("intervals");
        // (arm, [(feedback_loss, ci_lo, ci_hi) per seed]); the oracle is best but diagnostic.
        type Bounds = (f64, f64, f64);
        let arms: [(&str, [Bounds; 2]); 3] = [
            ("baseline", [(2.0, 1.8, 2.3), (2.2, 2.0, 2.4)]),
            ("v", [(1.9, f64::NAN, f64::NAN), (2.0, f64::NAN, f64::NAN)]),
            ("oracle", [(1.0, 0.9, 1.1), (1.2, 1.1, 1.3)]),
        ];
        let mut runs = Vec::new();
        for (arm, seeds) in arms {
            for (seed, (fl, lo, hi)) in seeds.iter().enumerate() {
                let run_dir = dir.join(arm).join(format!("seed-{seed}"));
                fs::create_dir_all(&run_dir).unwrap();
                let mut m = json!({"feedback_loss": fl});
                if lo.is_finite() {
                    m["feedback_loss.ci_lo"] = json!(lo);
                    m["feedback_loss.ci_hi"] = json!(hi);
                }
                let line = json!({"kind": "eval", "step": 5, "seconds": 1.0, "metrics": m});
                fs::write(run_dir.join(METRICS_FILE), format!("{line}\n")).unwrap();
                let estimator = if arm == "oracle" { "oracle" } else { "exact" };
                let cfg = json!({"meta": {"estimator": estimator}});
                fs::write(run_dir.join("config.json"), cfg.to_string()).unwrap();
                runs.push(RunRecord {
                    arm: arm.into(),
                    seed: seed as u64,
                    dir: run_dir,
                });
            }
        }
        let report = summarize(&runs).unwrap();
        assert_eq!(report.metrics, ["feedback_loss"]); // bounds are not metrics
        assert!(report.arms[2].diagnostic && !report.arms[1].diagnostic);
        assert_eq!(report.best_arm("feedback_loss").unwrap().0.name, "v");
        let md = render_markdown(&report, &[]);
        assert!(md.contains("| oracle (diagnostic) |"), "{md}");
        // baseline: both seeds report bounds → combined examples interval; seeds → t interval
        let se = |h: f64| h / (2.0 * 1.959_963_984_540_054);
        let half = 1.959_963_984_540_054 * (se(0.5).powi(2) + se(0.4).powi(2)).sqrt() / 2.0;
        let want = Interval {
            lo: 2.1 - half,
            hi: 2.1 + half,
        }
        .format(3);
        let t = seed_interval(&[2.0, 2.2]).unwrap().format(3);
        assert!(
            md.contains(&format!(
                "| feedback_loss | baseline | 2.100 | {want} | {t} |"
            )),
            "{md}"
        );
        assert!(md.contains("| feedback_loss | v | 1.950 | — |"), "{md}");
        // v − baseline per seed: −0.1, −0.2
        assert!(
            md.contains("| feedback_loss | v | 0: -0.1000, 1: -0.2000 | -0.1500 |"),
            "{md}"
        );
        assert!(md.contains("| 2/2 |"), "{md}");
    }

    #[test]
    fn renders_table_and_verdicts() {
        let dir = temp_dir("table");
        let report = summarize(&fake_compare(&dir)).unwrap();
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        let header: Vec<&str> = lines[0]
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            [
                "arm",
                "seeds",
                "feedback_loss",
                "general_loss",
                "pass@1",
                "steps",
                "seconds"
            ]
        );
        assert!(
            lines[1].starts_with("|---") && lines[1].ends_with(":|"),
            "{}",
            lines[1]
        );
        let base: Vec<&str> = lines[2]
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            base,
            [
                "baseline",
                "3",
                "2.200 ± 0.200",
                "3.100 ± 0.100",
                "0.2000 ± 0.1000",
                "20 ± 0",
                "10.1 ± 0.1"
            ]
        );
        assert!(lines[3].starts_with("| v "), "{}", lines[3]);
        // Every table row has the same width.
        assert!(
            lines[..4]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{table}"
        );
        assert!(
            table.contains("- best on feedback_loss (lower is better): v (2.167 ± 0.306)"),
            "{table}"
        );
        assert!(
            table.contains("- best on general_loss (lower is better): baseline (3.100 ± 0.100)"),
            "{table}"
        );
        assert!(
            table.contains("- best on pass@1 (higher is better): v (0.3000 ± 0.1000)"),
            "{table}"
        );
        assert!(
            table.contains("- v does NOT beat baseline on feedback_loss in every seed (2/3 seeds)"),
            "{table}"
        );
        let md = fs::read_to_string({
            write_report(&dir, &report).unwrap();
            dir.join("report.md")
        })
        .unwrap();
        assert!(
            md.starts_with("# vpt compare report") && md.contains(&table),
            "{md}"
        );
        assert!(
            md.contains("![plot_feedback_loss_vs_seconds](plot_feedback_loss_vs_seconds.svg)"),
            "{md}"
        );
    }

    #[test]
    fn verdict_when_v_wins_every_seed_and_without_baseline() {
        let dir = temp_dir("verdict");
        let runs = fake_compare(&dir);
        // Seed 2 of v: feedback_loss 2.5 → 2.3, below baseline's 2.4.
        let path = runs[5].dir.join(METRICS_FILE);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"feedback_loss\":2.5", "\"feedback_loss\":2.3");
        fs::write(&path, text).unwrap();
        let report = summarize(&runs).unwrap();
        assert!(verdicts(&report)
            .contains(&"v beats baseline on feedback_loss in every seed (3/3)".to_string()));
        let report = summarize(&runs[3..]).unwrap();
        let v = verdicts(&report);
        assert_eq!(
            v.last().unwrap(),
            "no `baseline` arm: no seed-by-seed comparison on feedback_loss"
        );
    }

    #[test]
    fn discovers_runs_in_arm_order() {
        let dir = temp_dir("discover");
        fake_compare(&dir);
        for d in [
            "aaa/seed-0",
            "random_feedback/seed-1",
            "random_feedback/seed-0",
            "v/notes",
            ".hidden/seed-0",
        ] {
            fs::create_dir_all(dir.join(d)).unwrap();
            fs::write(dir.join(d).join(METRICS_FILE), "").unwrap();
        }
        fs::create_dir_all(dir.join("zzz/seed-0")).unwrap(); // no metrics.jsonl: skipped
        let found: Vec<(String, u64)> = discover_runs(&dir)
            .unwrap()
            .into_iter()
            .map(|r| (r.arm, r.seed))
            .collect();
        let want = [
            ("baseline", 0),
            ("baseline", 1),
            ("baseline", 2),
            ("v", 0),
            ("v", 1),
            ("v", 2),
            ("random_feedback", 0),
            ("random_feedback", 1),
            ("aaa", 0),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(a, s)| (a.to_string(), *s)).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("x.bin");
        atomic_write(&path, b"first version, longer").unwrap();
        atomic_write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let err = atomic_write(dir.join("no/such/dir/x"), b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no/such/dir"), "{err}");
    }

    #[test]
    fn metric_order_puts_core_metrics_first() {
        let names: Vec<String> = ["zeta", "general_loss", "acc", "feedback_loss", "acc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            metric_order(&names),
            ["feedback_loss", "general_loss", "acc", "zeta"]
        );
        assert!(lower_is_better("feedback_loss") && lower_is_better("val_PPL"));
        assert!(!lower_is_better("pass@1") && !lower_is_better("accuracy"));
    }
}
