//! The records of a run: typed `metrics.jsonl` lines ([`Record`]) and reading them back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// File name of the per-run metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Counters reported with every evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Meta steps run.
    pub meta_steps: u64,
    /// Meta steps skipped because V or ∇φ was not finite.
    pub meta_skipped: u64,
    /// Learner steps skipped because the loss was not finite.
    pub learner_skipped: u64,
    /// Current run of non-finite learner losses.
    pub nonfinite_in_a_row: u64,
}

/// Bookkeeping the host adds to every evaluation; tabulated, but never ranked "best".
pub const HOST_COUNTERS: [&str; 3] = ["meta_steps", "meta_skipped", "learner_skipped"];

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
    /// Named scalars the designer reported of this step's constructions and the task of the
    /// step (`Designer::metrics`, `Task::after_step`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
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
    /// ‖∇φ L_meta‖ before clipping (`designer_optim.clip`); NaN when the log has none.
    #[serde(default = "unknown", deserialize_with = "f64_or_nan")]
    pub phi_grad_norm: f64,
    /// Unlabeled examples the meta step used (all its batches; `meta.batch_fraction`).
    #[serde(default)]
    pub rows: u64,
    /// Longest sequence the meta step used (`meta.max_seq_len`; 0 = whole sequences).
    #[serde(default)]
    pub max_seq_len: u64,
    /// True when V was taken in the learner optimizer's metric (`meta.precondition = "adam"`
    /// once the learner has stepped); `g_down_norm` and `cos` are then of P ⊙ g_down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preconditioned: bool,
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

/// A number a log does not hold.
fn unknown() -> f64 {
    f64::NAN
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
    let bytes = crate::fileio::read_nofollow(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
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
