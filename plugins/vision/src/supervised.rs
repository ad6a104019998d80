//! The supervised upper bound of the headroom study: a **diagnostic**, never a method arm.
//!
//! With `task.config.diagnostic_supervised = true` the learner step fine-tunes the last
//! `align_blocks` ViT blocks and the final norm (the alignment subset S), together with the two
//! linear heads, directly on feedback labels: the dense loss α_seg·CE + α_dep·L1 on labelled
//! feedback-meta scenes (the scenes with the indices of the unlabeled batch, whose images and
//! constructions are ignored). This breaks the information bottleneck on purpose: it asks how far
//! these labels can move mIoU and depth RMSE on this backbone at all, the headroom any designer
//! works inside. Evaluation is unchanged (fresh heads on frozen features, same held-out sets);
//! reports label such runs "(diagnostic)" (a `task.config.diagnostic_*` switch).

use crate::dino::Model;
use crate::probe::LinearHead;
use tch::Tensor;

/// Name prefix of the heads' parameters in θ.
const PREFIX: &str = "diagnostic_supervised";

/// The two linear heads trained jointly with S by the supervised diagnostic.
pub struct SupervisedHeads {
    /// Segmentation head (11 classes).
    pub seg: LinearHead,
    /// Depth head (1 output).
    pub dep: LinearHead,
}

impl SupervisedHeads {
    /// Trainable copies of fitted heads: weights and biases become leaves of θ; the feature
    /// standardisation stays fixed.
    pub fn new(seg: &LinearHead, dep: &LinearHead) -> Self {
        let trainable = |h: &LinearHead| LinearHead {
            mean: h.mean.detach(),
            std: h.std.detach(),
            w: h.w.detach().copy().set_requires_grad(true),
            b: h.b.detach().copy().set_requires_grad(true),
        };
        SupervisedHeads {
            seg: trainable(seg),
            dep: trainable(dep),
        }
    }

    /// The heads' trainable tensors by name (`diagnostic_supervised.{seg,dep}_head.{w,b}`).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        [("seg_head", &self.seg), ("dep_head", &self.dep)]
            .into_iter()
            .flat_map(|(n, h)| {
                [
                    (format!("{PREFIX}.{n}.w"), h.w.shallow_clone()),
                    (format!("{PREFIX}.{n}.b"), h.b.shallow_clone()),
                ]
            })
            .collect()
    }
}

/// Stops gradients to every student parameter outside `keep` (the alignment subset S): the
/// patch embedding, the first blocks and the DINO head stay at stage 0.
pub fn freeze_outside(student: &Model, keep: &[String]) {
    for (name, t) in student.named() {
        if !keep.contains(&name) {
            let _ = t.set_requires_grad(false);
        }
    }
}
