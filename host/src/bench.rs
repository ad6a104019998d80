//! `vpt bench`: throughput, per-phase times, MFU and peak memory of a baseline step and a V
//! step (meta every r steps), measured in one process on the real task. Both arms are warmed
//! up before either is timed, and the arms alternate which goes first across repeats, so
//! neither is favoured by the order; each repeat's ratio and the median are shown. Prints
//! figures; asserts nothing.

pub use crate::phases::Phases;
use crate::{compare::arm_config, error::HostTchContext, loader::Plugins, train::Session, Result};
use serde::Serialize;
use std::{collections::BTreeMap, path::Path, time::Instant};
use tch::{Kind, Tensor};

/// The order phases are shown in (others follow, sorted).
const PHASE_ORDER: [&str; 10] = [
    "learner forward",
    "designer forward",
    "learner loss",
    "learner backward",
    "learner optimizer",
    "meta g_down",
    "meta slice",
    "meta g_pre",
    "meta backward",
    "meta optimizer",
];

/// One arm's figures, over all its timed steps.
#[derive(Debug, Clone, Serialize)]
pub struct ArmFigures {
    /// Arm name.
    pub arm: String,
    /// Mean seconds per learner step (meta steps included, amortised).
    pub seconds_per_step: f64,
    /// Examples (rows, images) per second.
    pub examples_per_second: f64,
    /// Tokens per second, when `tokens_per_example` was given.
    pub tokens_per_second: Option<f64>,
    /// Model FLOP utilisation: 6 · |θ| · tokens/s over the matmul rate measured in this run
    /// (the usual training estimate; exact in spirit when all of θ trains). Needs tokens/s.
    pub mfu: Option<f64>,
    /// Trainable parameters |θ|.
    pub parameters: i64,
    /// Learner steps timed, over all repeats.
    pub timed_steps: u64,
    /// Meta steps among the timed steps.
    pub meta_steps: u64,
    /// Mean seconds per learner step of each phase (meta phases amortised over all steps).
    pub phases: BTreeMap<String, f64>,
    /// Peak resident memory of the process during this arm's timed steps, MiB (both arms are
    /// built and warm, so this is the process's peak, not the arm's alone).
    pub peak_rss_mib: f64,
}

/// One timed repeat: both arms, one after the other.
#[derive(Debug, Clone, Serialize)]
pub struct Repeat {
    /// The arms in the order they were timed.
    pub order: Vec<String>,
    /// The baseline's mean seconds per learner step in this repeat.
    pub baseline_seconds_per_step: f64,
    /// V's mean seconds per learner step in this repeat.
    pub v_seconds_per_step: f64,
    /// V's throughput over the baseline's in this repeat.
    pub ratio: f64,
}

/// Everything one `vpt bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// fp32 matmul rate of this process on this machine (n × n by n × n, n = 1024), GFLOP/s.
    pub matmul_gflops: f64,
    /// Untimed learner steps per arm, run for both arms before either is timed.
    pub warmup: u64,
    /// The arms, baseline first.
    pub arms: Vec<ArmFigures>,
    /// The timed repeats, the first arm alternating (the baseline first in the first).
    pub repeats: Vec<Repeat>,
    /// The median of the repeats' ratios (V throughput over the baseline's).
    pub median_ratio: f64,
}

/// The two arms, in the order they are built and warmed up.
const ARMS: [&str; 2] = ["baseline", "v"];

/// One arm under the bench: its session and what its timed steps measured so far.
struct Timed {
    session: Session,
    seconds: f64,
    steps: u64,
    meta_steps: u64,
    peak_rss_kib: u64,
}

impl Timed {
    /// Times up to `steps` learner steps (at least one; fewer once `wall_clock` seconds have
    /// passed); returns their mean seconds per step.
    fn time(&mut self, steps: u64, wall_clock: Option<f64>) -> Result<f64> {
        let meta_before = self.session.counters.meta_steps;
        reset_peak_rss();
        let started = Instant::now();
        let mut timed = 0;
        while timed < steps
            && (timed == 0 || wall_clock.is_none_or(|w| started.elapsed().as_secs_f64() < w))
        {
            self.session.train_step()?;
            timed += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        self.peak_rss_kib = self.peak_rss_kib.max(peak_rss_kib());
        self.seconds += seconds;
        self.steps += timed;
        self.meta_steps += self.session.counters.meta_steps - meta_before;
        Ok(seconds / timed as f64)
    }
}

/// Builds the baseline and V (meta period `period`), runs `warmup` untimed steps of each —
/// both before either is timed, so neither is timed while the other still grows the process's
/// heap — then times `repeats` repeats of `steps` learner steps per arm (or as many as fit in
/// `wall_clock` seconds, at least one), the first arm alternating between repeats.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    config: &Path,
    overrides: &[String],
    steps: u64,
    wall_clock: Option<f64>,
    warmup: u64,
    period: u64,
    repeats: u64,
    tokens_per_example: Option<u64>,
    plugins: &mut Plugins,
) -> Result<BenchReport> {
    let mut arms = Vec::new();
    let mut matmul_gflops = 0.0;
    for arm in ARMS {
        let mut ov = overrides.to_vec();
        ov.extend([
            format!("meta.period={period}"),
            "run.wall_clock=1e12".into(),
            format!("run.steps={}", steps * repeats + warmup + 1),
        ]);
        let cfg = arm_config(config, &ov, arm, 0)?;
        let session = Session::build(cfg, plugins)?;
        if matmul_gflops == 0.0 {
            // after the first build, so it runs with the config's thread count
            matmul_gflops = matmul_rate()?;
        }
        arms.push(Timed {
            session,
            seconds: 0.0,
            steps: 0,
            meta_steps: 0,
            peak_rss_kib: 0,
        });
    }
    for arm in &mut arms {
        for _ in 0..warmup {
            arm.session.train_step()?;
        }
        arm.session.phases = Some(Phases::default());
    }
    let mut repeats_done = Vec::new();
    for r in 0..repeats {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut per_step = [0.0; 2];
        for i in order {
            per_step[i] = arms[i].time(steps, wall_clock)?;
        }
        repeats_done.push(Repeat {
            order: order.iter().map(|&i| ARMS[i].to_string()).collect(),
            baseline_seconds_per_step: per_step[0],
            v_seconds_per_step: per_step[1],
            ratio: per_step[0] / per_step[1],
        });
    }
    let figures = arms
        .into_iter()
        .zip(ARMS)
        .map(|(mut a, name)| {
            let batch = a.session.info().batch_size as f64;
            let parameters = a
                .session
                .theta()
                .tensors()
                .map(Tensor::numel)
                .sum::<usize>() as i64;
            let per_step = a.seconds / a.steps as f64;
            let tokens_per_second = tokens_per_example.map(|t| batch * t as f64 / per_step);
            ArmFigures {
                arm: name.into(),
                seconds_per_step: per_step,
                examples_per_second: batch / per_step,
                tokens_per_second,
                mfu: tokens_per_second.map(|t| 6.0 * parameters as f64 * t / (matmul_gflops * 1e9)),
                parameters,
                timed_steps: a.steps,
                meta_steps: a.meta_steps,
                phases: a
                    .session
                    .phases
                    .take()
                    .unwrap_or_default()
                    .seconds
                    .into_iter()
                    .map(|(k, v)| (k, v / a.steps as f64))
                    .collect(),
                peak_rss_mib: a.peak_rss_kib as f64 / 1024.0,
            }
        })
        .collect();
    Ok(BenchReport {
        matmul_gflops,
        warmup,
        arms: figures,
        median_ratio: median(repeats_done.iter().map(|r| r.ratio).collect()),
        repeats: repeats_done,
    })
}

/// The median of `xs` (the mean of the middle two for an even count; NaN when empty).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// fp32 GFLOP/s of a 1024³ matmul in this process (best of 5 after a warm-up).
pub fn matmul_rate() -> Result<f64> {
    let n = 1024i64;
    let rate = || -> tch::Result<f64> {
        let a = Tensor::f_randn([n, n], (Kind::Float, tch::Device::Cpu))?;
        let b = Tensor::f_randn([n, n], (Kind::Float, tch::Device::Cpu))?;
        let mut best = f64::INFINITY;
        for i in 0..6 {
            let t = Instant::now();
            let _ = a.f_matmul(&b)?.f_sum(Kind::Float)?.f_double_value(&[]);
            if i > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        Ok(2.0 * (n * n * n) as f64 / best / 1e9)
    };
    rate().op("matmul rate")
}

/// Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size (VmHWM) in KiB; 0 where /proc is unavailable.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The figures as tables (throughput, then seconds per step by phase), with the V/baseline
/// ratios.
pub fn render(report: &BenchReport) -> String {
    let figures = &report.arms;
    let mut s = format!(
        "fp32 matmul rate (1024³, this process): {:.1} GFLOP/s\n\n| arm | s/step | examples/s | tokens/s | MFU | meta steps | process peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|\n",
        report.matmul_gflops
    );
    for f in figures {
        let tok = f
            .tokens_per_second
            .map_or("-".into(), |t| format!("{t:.1}"));
        let mfu = f.mfu.map_or("-".into(), |m| format!("{:.1}%", 100.0 * m));
        s += &format!(
            "| {} | {:.3} | {:.2} | {tok} | {mfu} | {} | {:.0} |\n",
            f.arm, f.seconds_per_step, f.examples_per_second, f.meta_steps, f.peak_rss_mib
        );
    }
    let mut names: Vec<&str> = PHASE_ORDER.to_vec();
    for f in figures {
        for k in f.phases.keys() {
            if !names.contains(&k.as_str()) {
                names.push(k);
            }
        }
    }
    s +=
        "\nseconds per learner step, by phase (meta phases amortised over all steps):\n\n| phase |";
    s += &figures
        .iter()
        .map(|f| format!(" {} |", f.arm))
        .collect::<String>();
    s += "\n|---|";
    s += &"---:|".repeat(figures.len());
    s += "\n";
    for name in names {
        if figures.iter().all(|f| !f.phases.contains_key(name)) {
            continue;
        }
        s += &format!("| {name} |");
        for f in figures {
            s += &f
                .phases
                .get(name)
                .map_or(" - |".into(), |v| format!(" {v:.3} |"));
        }
        s += "\n";
    }
    s += &format!(
        "\nV/baseline throughput by repeat (after {} untimed steps of each arm, both before \
         either was timed):\n",
        report.warmup
    );
    for (i, r) in report.repeats.iter().enumerate() {
        s += &format!(
            "  repeat {} ({}): {:.1}%\n",
            i + 1,
            r.order.join(", then "),
            100.0 * r.ratio
        );
    }
    s += &format!(
        "V/baseline: throughput {:.1}% ({:+.1}%), the median of {} repeats\n",
        100.0 * report.median_ratio,
        100.0 * (report.median_ratio - 1.0),
        report.repeats.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_accumulate_and_render_in_order() {
        let mut p = Phases::default();
        let t = Instant::now();
        p.add("meta g_pre", t);
        p.add("learner forward", t);
        p.add("learner forward", t);
        assert_eq!(p.seconds.len(), 2);
        let arm = |name: &str, eps: f64| ArmFigures {
            arm: name.into(),
            seconds_per_step: 1.0 / eps,
            examples_per_second: eps,
            tokens_per_second: Some(eps * 10.0),
            mfu: Some(0.25),
            parameters: 10,
            timed_steps: 4,
            meta_steps: 0,
            phases: p.seconds.clone(),
            peak_rss_mib: 100.0,
        };
        let repeat = |first: &str, second: &str, ratio: f64| Repeat {
            order: vec![first.into(), second.into()],
            baseline_seconds_per_step: 1.0,
            v_seconds_per_step: 1.0 / ratio,
            ratio,
        };
        let r = BenchReport {
            matmul_gflops: 50.0,
            warmup: 2,
            arms: vec![arm("baseline", 4.0), arm("v", 3.0)],
            repeats: vec![
                repeat("baseline", "v", 0.7),
                repeat("v", "baseline", 0.8),
                repeat("baseline", "v", 0.75),
            ],
            median_ratio: median(vec![0.7, 0.8, 0.75]),
        };
        let text = render(&r);
        assert!(text.contains("50.0 GFLOP/s"), "{text}");
        assert!(text.contains("| 25.0% |"), "{text}");
        assert!(
            text.contains("repeat 1 (baseline, then v): 70.0%"),
            "{text}"
        );
        assert!(
            text.contains("repeat 2 (v, then baseline): 80.0%"),
            "{text}"
        );
        assert!(
            text.contains("V/baseline: throughput 75.0% (-25.0%), the median of 3 repeats"),
            "{text}"
        );
        assert_eq!(median(vec![3.0, 1.0]), 2.0);
        let fwd = text.find("| learner forward |").unwrap();
        assert!(fwd < text.find("| meta g_pre |").unwrap(), "{text}");
        assert!(!text.contains("| learner backward |"), "{text}");
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains("\"matmul_gflops\":50.0"));
    }

    #[test]
    fn the_matmul_rate_is_positive_and_finite() {
        let r = matmul_rate().unwrap();
        assert!(r > 0.0 && r.is_finite(), "{r}");
    }
}
