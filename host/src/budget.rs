//! Step and wall-clock budgets. Charged time covers learner and meta steps (so the V arm pays
//! for its meta steps); evaluation and checkpointing are not charged.

use vpt_sdk::rng::{mix64, GOLDEN_GAMMA};

/// A run's budget.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Learner steps, if bounded by steps.
    pub steps: Option<u64>,
    /// Charged seconds, if bounded by wall-clock.
    pub wall_clock: Option<f64>,
}

impl Budget {
    /// True once either bound is reached.
    pub fn exhausted(&self, step: u64, seconds: f64) -> bool {
        self.steps.is_some_and(|s| step >= s) || self.wall_clock.is_some_and(|w| seconds >= w)
    }

    /// Fraction spent in [0, 1] (the larger of the two, for progress bars).
    pub fn fraction(&self, step: u64, seconds: f64) -> f64 {
        let a = self.steps.map_or(0.0, |s| step as f64 / s.max(1) as f64);
        let b = self.wall_clock.map_or(0.0, |w| seconds / w);
        a.max(b).clamp(0.0, 1.0)
    }
}

/// Whether learner step `step` is preceded by a meta step: t ≥ burn_in and t mod r == 0.
pub fn is_meta_step(step: u64, burn_in: u64, period: u64) -> bool {
    step >= burn_in && step.is_multiple_of(period.max(1))
}

/// The torch seed of learner step `step`: a pure function of (seed, step), so a resumed run
/// draws exactly what the uninterrupted run drew.
pub fn step_seed(seed: u64, step: u64) -> i64 {
    let z = seed ^ step.wrapping_mul(GOLDEN_GAMMA) ^ 0xD1B5_4A32_D192_ED03;
    (mix64(z) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_and_meta_schedule() {
        let b = Budget {
            steps: Some(10),
            wall_clock: Some(5.0),
        };
        assert!(!b.exhausted(9, 4.9));
        assert!(b.exhausted(10, 0.0));
        assert!(b.exhausted(3, 5.0));
        assert_eq!(b.fraction(5, 1.0), 0.5);
        let meta: Vec<u64> = (0..20).filter(|&t| is_meta_step(t, 4, 8)).collect();
        assert_eq!(meta, vec![8, 16]);
        let meta: Vec<u64> = (0..5).filter(|&t| is_meta_step(t, 0, 1)).collect();
        assert_eq!(meta, vec![0, 1, 2, 3, 4]);
        assert_ne!(step_seed(0, 1), step_seed(0, 2));
        assert_eq!(step_seed(3, 7), step_seed(3, 7));
        assert!(step_seed(u64::MAX, u64::MAX) >= 0);
    }
}
