//! The LM task's design inputs, declared once (its manifest, `vpt plugins inspect`, the guide).

use vpt_sdk::{Dtype, TensorSpec, Values};

/// What `causal_lm` hands a designer for each unlabeled batch (B rows of T positions; K
/// candidates per position, `top_k`; d the model width, `d_model`; F = d + 1).
pub(crate) const DESIGN_INPUTS: &[TensorSpec] = &[
    TensorSpec::new(
        "features",
        Dtype::Float,
        "B,T,d",
        Values::Any,
        "the learner's final hidden state at each position",
    ),
    TensorSpec::new(
        "cand_ids",
        Dtype::Int64,
        "B,T,K",
        Values::Any,
        "K candidate next tokens: the true token first, then the learner's top K−1 others",
    ),
    TensorSpec::new(
        "cand_logprobs",
        Dtype::Float,
        "B,T,K",
        Values::Any,
        "the learner's log-probabilities of the candidates",
    ),
    TensorSpec::new(
        "loss_mask",
        Dtype::Float,
        "B,T",
        Values::UnitInterval,
        "1 where a position carries a loss (not prompt or padding)",
    ),
    TensorSpec::new(
        "corrupt_mask",
        Dtype::Float,
        "B,T",
        Values::UnitInterval,
        "diagnostic only, given when task.config.diagnostic_corrupt_mask = true: 1 where the stream's corruption replaced the target",
    )
    .optional(),
    TensorSpec::new(
        "cand_embeddings",
        Dtype::Float,
        "B,T,K,d",
        Values::Any,
        "the learner's input embeddings of the candidates (token identity)",
    ),
    TensorSpec::new(
        "example_features",
        Dtype::Float,
        "B,F",
        Values::Any,
        "per example: masked mean hidden state ⊕ mean NLL of the true tokens",
    ),
];
