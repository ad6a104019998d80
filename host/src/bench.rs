//! `vpt bench`: throughput and peak memory of a baseline step and a V step (meta every r
//! steps), measured in one process on the real task. Prints figures; asserts nothing.

use crate::{compare::arm_config, loader::Plugins, train::Session, Result};
use serde::Serialize;
use std::{path::Path, time::Instant};

/// One arm's figures.
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
    /// Peak resident memory during the timed steps, MiB.
    pub peak_rss_mib: f64,
}

/// Times `steps` learner steps (or as many as fit in `wall_clock` seconds, at least one) of
/// the baseline and of V (meta period `period`) after `warmup` untimed steps each.
#[allow(clippy::too_many_arguments)]
pub fn bench(
    config: &Path,
    overrides: &[String],
    steps: u64,
    wall_clock: Option<f64>,
    warmup: u64,
    period: u64,
    tokens_per_example: Option<u64>,
    plugins: &mut Plugins,
) -> Result<Vec<ArmFigures>> {
    let mut out = Vec::new();
    for arm in ["baseline", "v"] {
        let mut ov = overrides.to_vec();
        ov.extend([
            format!("meta.period={period}"),
            "run.wall_clock=1e12".into(),
            format!("run.steps={}", steps + warmup + 1),
        ]);
        let cfg = arm_config(config, &ov, arm, 0)?;
        let mut session = Session::build(cfg, plugins)?;
        let batch = session.info().batch_size as f64;
        for _ in 0..warmup {
            session.train_step()?;
        }
        reset_peak_rss();
        let started = Instant::now();
        let mut timed = 0;
        while timed < steps
            && (timed == 0 || wall_clock.is_none_or(|w| started.elapsed().as_secs_f64() < w))
        {
            session.train_step()?;
            timed += 1;
        }
        let per_step = started.elapsed().as_secs_f64() / timed as f64;
        out.push(ArmFigures {
            arm: arm.into(),
            seconds_per_step: per_step,
            examples_per_second: batch / per_step,
            tokens_per_second: tokens_per_example.map(|t| batch * t as f64 / per_step),
            peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
        });
    }
    Ok(out)
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

/// The figures as a table, with the V/baseline ratios.
pub fn render(figures: &[ArmFigures]) -> String {
    let mut s = String::from(
        "| arm | s/step | examples/s | tokens/s | peak RSS MiB |\n|---|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let tok = f
            .tokens_per_second
            .map_or("-".into(), |t| format!("{t:.1}"));
        s += &format!(
            "| {} | {:.3} | {:.2} | {tok} | {:.0} |\n",
            f.arm, f.seconds_per_step, f.examples_per_second, f.peak_rss_mib
        );
    }
    if let [b, v] = figures {
        s += &format!(
            "\nV/baseline: throughput {:.1}% ({:+.1}%), peak memory {:+.1}%\n",
            100.0 * v.examples_per_second / b.examples_per_second,
            100.0 * (v.examples_per_second / b.examples_per_second - 1.0),
            100.0 * (v.peak_rss_mib / b.peak_rss_mib - 1.0)
        );
    }
    s
}
