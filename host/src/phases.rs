//! Per-phase timing of a training step ([`Phases`]), filled in when `vpt bench` times it.

use serde::Serialize;
use std::{collections::BTreeMap, time::Instant};

/// Seconds spent in each phase of `Session::train_step`, accumulated while a bench times it.
/// CPU timings are exact; on CUDA a phase also absorbs the kernels queued before it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Phase name → seconds.
    pub seconds: BTreeMap<String, f64>,
}

impl Phases {
    /// Adds the time elapsed since `since` to `phase`.
    pub fn add(&mut self, phase: &str, since: Instant) {
        *self.seconds.entry(phase.to_string()).or_default() += since.elapsed().as_secs_f64();
    }
}
