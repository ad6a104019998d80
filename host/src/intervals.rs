//! 95 % intervals for reports: over evaluation examples (the task's bootstrap bounds,
//! `METRIC.ci_lo` / `METRIC.ci_hi`), over seeds (Student t), and for seed-paired differences.

use serde::Serialize;

/// Suffix of the lower bound a task reports next to a metric (`feedback_loss.ci_lo`).
pub const CI_LO: &str = ".ci_lo";
/// Suffix of the upper bound a task reports next to a metric.
pub const CI_HI: &str = ".ci_hi";

/// z of a two-sided 95 % normal interval.
const Z_975: f64 = 1.959_963_984_540_054;

/// True for the interval bounds a task reports beside a metric (not metrics themselves).
pub fn is_interval_key(name: &str) -> bool {
    name.ends_with(CI_LO) || name.ends_with(CI_HI)
}

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl Interval {
    /// `[lo, hi]` with `decimals` places.
    pub fn format(&self, decimals: usize) -> String {
        format!("[{:.d$}, {:.d$}]", self.lo, self.hi, d = decimals)
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (table to 30, then normal).
pub fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => Z_975,
    }
}

/// Mean ± t·s/√n over the finite `values` (seeds); `None` with fewer than two.
pub fn seed_interval(values: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t_975(n - 1) * sd / (n as f64).sqrt();
    Some(Interval {
        lo: mean - half,
        hi: mean + half,
    })
}

/// The interval over evaluation examples of the mean across seeds, from each seed's value and
/// its task-reported 95 % bounds `(value, lo, hi)`: one seed's bounds as they are; for several,
/// each seed's standard error (half-width / 1.96) combined as that of a mean of independent
/// estimates. `None` when no seed reports bounds; seeds without bounds are left out.
pub fn example_interval(seeds: &[(f64, f64, f64)]) -> Option<Interval> {
    let v: Vec<&(f64, f64, f64)> = seeds
        .iter()
        .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
        .collect();
    match v.as_slice() {
        [] => None,
        [(_, lo, hi)] => Some(Interval { lo: *lo, hi: *hi }),
        many => {
            let n = many.len() as f64;
            let mean = many.iter().map(|s| s.0).sum::<f64>() / n;
            let var: f64 = many
                .iter()
                .map(|(_, lo, hi)| ((hi - lo) / (2.0 * Z_975)).powi(2))
                .sum();
            let half = Z_975 * var.sqrt() / n;
            Some(Interval {
                lo: mean - half,
                hi: mean + half,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_interval_matches_a_hand_computed_t_interval() {
        // mean 2, s = 1, n = 3: 2 ± 4.303/√3
        let i = seed_interval(&[1.0, 2.0, 3.0]).unwrap();
        let half = 4.303 / 3f64.sqrt();
        assert!((i.lo - (2.0 - half)).abs() < 1e-12 && (i.hi - (2.0 + half)).abs() < 1e-12);
        assert!(seed_interval(&[1.0, f64::NAN]).is_none());
        assert_eq!(t_975(100), Z_975);
        assert_eq!(
            i.format(2),
            format!("[{:.2}, {:.2}]", 2.0 - half, 2.0 + half)
        );
    }

    #[test]
    fn example_interval_keeps_one_seed_and_shrinks_with_more() {
        let one = example_interval(&[(1.0, 0.8, 1.3)]).unwrap();
        assert_eq!((one.lo, one.hi), (0.8, 1.3));
        // Two seeds with the same half-width h: the mean's half-width is h/√2.
        let two =
            example_interval(&[(1.0, 0.9, 1.1), (2.0, 1.9, 2.1), (3.0, f64::NAN, 1.0)]).unwrap();
        assert!((two.hi - two.lo - 0.2 / 2f64.sqrt()).abs() < 1e-12);
        assert!(((two.lo + two.hi) / 2.0 - 1.5).abs() < 1e-12);
        assert!(example_interval(&[]).is_none());
        assert!(is_interval_key("feedback_loss.ci_lo") && !is_interval_key("feedback_loss"));
    }
}
