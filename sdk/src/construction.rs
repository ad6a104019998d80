//! Named tensors, batches and constructions (the designer's output, tagged with a kind).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Kind of the top-K soft targets of the language modality: `cand_ids` (B,T,K) int64 and
/// `probs` (B,T,K) float, each row a distribution over the K candidates.
pub const KIND_LM_SOFT_TARGETS: &str = "lm.soft_targets/v1";
/// Kind of the vision modality's per-view soft masks: `mask` (B,V,1,H,W) in [0,1].
pub const KIND_VISION_VIEW_MASK: &str = "vision.view_mask/v1";
/// Kind of per-example loss weights `weights` (B,), non-negative with mean 1. The host applies
/// it itself to the task's per-example losses, so every task accepts it.
pub const KIND_EXAMPLE_WEIGHTS: &str = "any.example_weights/v1";

/// An ordered map of named tensors (names are unique; order is insertion order).
#[derive(Default, Debug)]
pub struct TensorMap {
    entries: Vec<(String, Tensor)>,
}

impl TensorMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Inserts or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = t,
            None => self.entries.push((name, t)),
        }
    }
    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, name: impl Into<String>, t: Tensor) -> Self {
        self.insert(name, t);
        self
    }
    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// The tensor called `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| Error::Tensor {
            name: name.into(),
            message: format!("missing (have: {})", self.names().join(", ")),
        })
    }
    /// Removes and returns `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }
    /// Names in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }
    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }
    /// Tensors in order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.entries.iter().map(|(_, t)| t)
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// A copy whose tensors are detached from any autograd graph (storage is shared).
    pub fn detached(&self) -> TensorMap {
        TensorMap {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.detach()))
                .collect(),
        }
    }
    /// A copy holding new references to the same tensors (graph kept).
    pub fn shallow_clone(&self) -> TensorMap {
        TensorMap {
            entries: self
                .entries
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        }
    }
    /// Only the entries whose names are in `names`, in the order of `names`; errors on a miss.
    pub fn select(&self, names: &[String]) -> Result<TensorMap> {
        let mut out = TensorMap::new();
        for n in names {
            out.insert(n.clone(), self.require(n)?.shallow_clone());
        }
        Ok(out)
    }
}

impl FromIterator<(String, Tensor)> for TensorMap {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        let mut m = TensorMap::new();
        for (n, t) in iter {
            m.insert(n, t);
        }
        m
    }
}

impl IntoIterator for TensorMap {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Where a batch comes from. The host tags every batch so that a feedback batch can never be
/// handed to `pretrain_loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchSource {
    /// The unlabeled stream of domain `domain` (0 for single-domain tasks).
    Unlabeled {
        /// Index into [`TaskInfo::domains`](crate::TaskInfo::domains).
        domain: u32,
    },
    /// Feedback set `set`, sampled independently of the unlabeled stream.
    Feedback {
        /// Index into [`TaskInfo::feedback_sets`](crate::TaskInfo::feedback_sets).
        set: u32,
    },
}

/// A batch as the task produced it; opaque to the host except for its source.
#[derive(Debug)]
pub struct Batch {
    /// Which stream it came from.
    pub source: BatchSource,
    /// The batch's tensors (token ids, images, masks …), named by the task.
    pub tensors: TensorMap,
}

/// What a designer made of a batch: tensors of a declared kind. An empty kind means the task's
/// default construction (the baseline recipe).
#[derive(Debug, Default)]
pub struct Construction {
    /// The construction kind, e.g. [`KIND_LM_SOFT_TARGETS`]; empty for the baseline.
    pub kind: String,
    /// The construction's tensors.
    pub tensors: TensorMap,
}

impl Construction {
    /// The baseline: no designer output, the task uses its default recipe.
    pub fn baseline() -> Self {
        Construction::default()
    }
    /// True for the baseline construction.
    pub fn is_baseline(&self) -> bool {
        self.kind.is_empty()
    }
    /// The mean of its floating tensor `name` (a metric value, e.g. a designer's mean gate),
    /// over the positions where tensor `weight` is 1 when it has one (e.g. `loss_mask`).
    pub fn mean_of(&self, name: &str, weight: Option<&str>) -> Result<f64> {
        let t = self
            .tensors
            .require(name)?
            .f_detach()?
            .f_to_kind(tch::Kind::Double)?;
        let mean = match weight.and_then(|w| self.tensors.get(w)) {
            None => t.f_mean(tch::Kind::Double)?,
            Some(w) => {
                let w = w.f_detach()?.f_to_kind(tch::Kind::Double)?;
                let count = w.f_sum(tch::Kind::Double)?.f_clamp_min(1.0)?;
                t.f_mul(&w)?.f_sum(tch::Kind::Double)?.f_div(&count)?
            }
        };
        Ok(mean.f_double_value(&[])?)
    }
    /// The same construction with every tensor detached (what the learner step receives).
    pub fn detached(&self) -> Construction {
        Construction {
            kind: self.kind.clone(),
            tensors: self.tensors.detached(),
        }
    }
}

/// Saved state of a task or designer: JSON for scalars and cursors, tensors for the rest.
#[derive(Debug, Default)]
pub struct State {
    /// Cursors, counters, RNG seeds and other small values.
    pub json: serde_json::Value,
    /// Weights, buffers, running statistics.
    pub tensors: TensorMap,
}
