//! Rendering a [`Report`]: the terminal table, verdicts, intervals, paired differences and
//! `report.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::intervals::{example_interval, seed_interval, Interval, CI_HI, CI_LO};
use crate::meta::{zero_gradient_warning, ZERO_GRADIENT_STEPS};
use crate::records::{Record, HOST_COUNTERS};
use crate::summary::{
    file_name, lower_is_better, ArmReport, Report, SeedWins, Stats, BASELINE_ARM, CORE_METRICS,
    V_ARM,
};

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
    out.push_str(&render_warnings(report));
    if report.arms.iter().any(|a| a.diagnostic) {
        out.push_str(
            "\nArms marked *(diagnostic)* are not methods: `frozen` never updates φ (it shows what \
             the learner alone does to the designer's output) and `oracle` sets the learner's \
             targets from the feedback gradient itself, breaking the information bottleneck on \
             purpose (an upper bound: could any designer help here?); a run with a \
             `task.config.diagnostic_*` switch on (e.g. vision's `supervised_bound`, trained on the \
             feedback labels directly) is an upper bound of the same kind. None is ranked best.\n",
        );
    }
    out.push_str(&render_intervals(report));
    out.push_str(&render_paired(report));
    out.push_str(&render_step_metrics(report));
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

/// Warnings read off the runs' logs: a (non-diagnostic) run whose designer gradient was exactly
/// zero at its first meta steps ([`zero_gradient_warning`]). Empty when there is none.
pub fn render_warnings(report: &Report) -> String {
    let mut lines = Vec::new();
    for arm in report.arms.iter().filter(|a| !a.diagnostic) {
        for s in &arm.seeds {
            let norms: Vec<f64> = s
                .records
                .iter()
                .filter_map(|r| match r {
                    Record::Train(t) => t.meta.as_ref().filter(|m| !m.skipped),
                    Record::Eval(_) => None,
                })
                .map(|m| m.phi_grad_norm)
                .take(ZERO_GRADIENT_STEPS)
                .collect();
            if let Some(w) = zero_gradient_warning(&norms) {
                lines.push(format!("- **{}, seed {}**: {w}.\n", arm.name, s.seed));
            }
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!("\n## Warnings\n\n{}", lines.concat())
}

/// The learner steps' named scalars (designer metrics such as `alpha_mean`, the task's
/// `after_step` metrics): per metric and arm, each run's mean over its steps and its last
/// step's value, as mean ± std across seeds. Empty when no run reported any.
pub fn render_step_metrics(report: &Report) -> String {
    let names = report.step_metrics();
    if names.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Learner-step metrics\n\nNamed scalars of every learner step, from the designer \
         (`Designer::metrics`, of the constructions the learner trained on) and the task \
         (`after_step`): each run's mean over its steps and its value at its last step, as mean \
         ± std across seeds.\n\n| metric | arm | mean over the run | last step |\n|---|---|--:|--:|\n",
    );
    for m in &names {
        for arm in &report.arms {
            let (mut means, mut lasts) = (Vec::new(), Vec::new());
            for s in &arm.seeds {
                let values: Vec<f64> = s
                    .records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Train(t) => t.metrics.get(m).copied(),
                        Record::Eval(_) => None,
                    })
                    .filter(|x| x.is_finite())
                    .collect();
                if let Some(&last) = values.last() {
                    means.push(values.iter().sum::<f64>() / values.len() as f64);
                    lasts.push(last);
                }
            }
            if let (Some(mean), Some(last)) = (Stats::of(&means), Stats::of(&lasts)) {
                out.push_str(&format!(
                    "| {m} | {} | {} | {} |\n",
                    arm.label(),
                    format_stats(&mean),
                    format_stats(&last)
                ));
            }
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
