//! Value estimators (DESIGN §1), registered with `inventory`: how g_down and g_pre become V.

use tch::Tensor;
use vpt_sdk::value::{random_like_with_norm, Align};
use vpt_sdk::Result;

/// What a diagnostic estimator changes in the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnostic {
    /// The meta step runs and is logged (V, R, cos), but φ is never updated.
    Frozen,
    /// No meta step; every learner step's construction is moved along ∂V/∂c (see [`Oracle`]).
    Oracle,
}

/// A built-in value estimator.
pub struct EstimatorEntry {
    /// Config name (`meta.estimator`).
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// Turns the feedback gradient into the vector φ is aligned with (identity for all but
    /// the random-feedback control).
    pub feedback: fn(Vec<Tensor>) -> Result<Vec<Tensor>>,
    /// Align(g_down, g_pre) → V; `None` means no meta step (the baseline).
    pub align: Option<Align>,
    /// `Some` for the diagnostic arms (never defaults; reports label them as diagnostics).
    pub diagnostic: Option<Diagnostic>,
}

inventory::collect!(EstimatorEntry);

/// The estimator called `name`, or a message listing the available ones.
pub fn lookup(name: &str) -> std::result::Result<&'static EstimatorEntry, String> {
    let all: Vec<&'static EstimatorEntry> = inventory::iter::<EstimatorEntry>.into_iter().collect();
    all.iter().copied().find(|e| e.name == name).ok_or_else(|| {
        let mut names: Vec<_> = all.iter().map(|e| e.name).collect();
        names.sort();
        format!(
            "unknown estimator `{name}` (available: {})",
            names.join(", ")
        )
    })
}

fn identity(g: Vec<Tensor>) -> Result<Vec<Tensor>> {
    Ok(g)
}

inventory::submit! {
    EstimatorEntry {
        name: "exact",
        description: "V = g_down · g_pre (the paper's one-step value)",
        feedback: identity,
        align: Some(Align::Dot),
        diagnostic: None,
    }
}

inventory::submit! {
    EstimatorEntry {
        name: "cosine",
        description: "V = cos(g_down, g_pre)",
        feedback: identity,
        align: Some(Align::Cosine),
        diagnostic: None,
    }
}

inventory::submit! {
    EstimatorEntry {
        name: "random_feedback",
        description: "control: g_down replaced by a random vector of the same norm",
        feedback: random_like_with_norm,
        align: Some(Align::Dot),
        diagnostic: None,
    }
}

inventory::submit! {
    EstimatorEntry {
        name: "none",
        description: "baseline: no meta step; the designer (if any) stays as initialised",
        feedback: identity,
        align: None,
        diagnostic: None,
    }
}

inventory::submit! {
    EstimatorEntry {
        name: "frozen",
        description: "diagnostic: the meta step measures V = g_down · g_pre and R, but phi is never updated",
        feedback: identity,
        align: Some(Align::Dot),
        diagnostic: Some(Diagnostic::Frozen),
    }
}

inventory::submit! {
    EstimatorEntry {
        name: "oracle",
        description: "diagnostic upper bound: every learner step's construction is moved along dV/dc from g_down (breaks the information bottleneck)",
        feedback: identity,
        align: None,
        diagnostic: Some(Diagnostic::Oracle),
    }
}
