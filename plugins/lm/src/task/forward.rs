//! The task's forward passes and loss inputs: hidden states as a differentiation mode needs
//! them, soft-target CE, the construction's targets, design inputs and feedback rows.

use super::CausalLm;
use crate::data::{self, Example, Row};
use crate::eval::{self as ev};
use crate::loss::{soft_ce_logits, soft_ce_twice, LossRows};
use tch::{Kind, Tensor};
use vpt_llama::{Attention, Llama};
use vpt_sdk::{Batch, Construction, Differentiation, Metrics, Result, TensorMap};

impl CausalLm {
    /// Converts θ to `kind` (f64 for finite-difference tests).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }

    /// The loaded model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Final hidden states (B,T,d) of ids (B,T) as a pass differentiated `diff` needs them:
    /// fused attention for `Once`; for `Twice`, the blocks below S without grad (fused) and S
    /// with math attention (CPU fused attention has no double backward).
    pub(super) fn hidden_for(&self, ids: &Tensor, diff: Differentiation) -> Result<Tensor> {
        match (diff, self.s_start) {
            (Differentiation::Once, _) => self.model.forward_hidden(ids, Attention::Fused),
            (Differentiation::Twice, Some(start)) => {
                let s_in =
                    tch::no_grad(|| self.model.forward_prefix(ids, start, Attention::Fused))?;
                self.model.forward_from(&s_in, start, Attention::Math)
            }
            (Differentiation::Twice, None) => self.model.forward_hidden(ids, Attention::Math),
        }
    }

    /// Per-example soft CE (B,) from final hidden states (B,T,d): the head only at the
    /// loss-bearing positions, in the form `diff` needs.
    pub(super) fn soft_ce_hidden(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        cand: &Tensor,
        q: &Tensor,
        diff: Differentiation,
    ) -> Result<Tensor> {
        let rows = LossRows::new(mask)?;
        let (h, cand, q) = (rows.select(hidden)?, rows.select(cand)?, rows.select(q)?); // (N,…)
        let per = match diff {
            Differentiation::Once => soft_ce_logits(&self.model.logits(&h)?, &cand, &q)?,
            Differentiation::Twice => {
                soft_ce_twice(&h, self.model.head_weight(), &cand, &q, self.head_in_s)?
            }
        };
        rows.per_example(&per)
    }

    /// The candidates and weights of a construction, (B,T,K) each; the baseline is the true
    /// token with weight 1.
    pub(super) fn targets_of(
        &self,
        batch: &Batch,
        construction: &Construction,
    ) -> Result<(Tensor, Tensor)> {
        let targets = batch.tensors.require("targets")?;
        if construction.is_baseline() {
            // One-hot CE is the soft CE with the true token as the only candidate.
            let cand = targets.f_unsqueeze(-1)?; // (B,T,1)
            let q = Tensor::f_ones(cand.size(), (Kind::Float, self.device))?;
            return Ok((cand, q));
        }
        // `lm.soft_targets/v1`, checked against its spec (kinds::LM_SOFT_TARGETS) by the SDK glue.
        let cand = construction.tensors.require("cand_ids")?;
        let q = construction.tensors.require("probs")?;
        Ok((cand.shallow_clone(), q.shallow_clone()))
    }

    /// What the designer sees, from the final hidden states (B,T,d) and logits (B,T,V) of a
    /// forward (both detached; run under no_grad).
    pub(super) fn design_inputs_of(
        &self,
        batch: &Batch,
        hidden: &Tensor,
        logits: &Tensor,
    ) -> Result<TensorMap> {
        let (targets, mask) = (
            batch.tensors.require("targets")?,
            batch.tensors.require("mask")?,
        );
        let true_idx = targets.f_unsqueeze(-1)?; // (B,T,1)
                                                 // The learner's top K−1 among the tokens other than the true one: the true token's
                                                 // logit is pushed below every other before topk (no vocabulary-sized copy).
        let (_, top) = logits.f_topk(self.cfg.top_k, -1, true, true)?; // (B,T,K): the top K, which may include the true token
        let is_true = top.f_eq_tensor(&true_idx)?; // (B,T,K)
                                                   // Keep the first K−1 that are not the true token: stable sort of (is_true) moves the
                                                   // true token (if present) to the end.
        let order = is_true
            .f_to_kind(Kind::Int64)?
            .f_argsort_stable(true, -1, false)?;
        let others = top
            .f_gather(-1, &order, false)?
            .f_narrow(-1, 0, self.cfg.top_k - 1)?; // (B,T,K−1)
        let cand = Tensor::f_cat(&[&true_idx, &others], -1)?; // (B,T,K)
        let lse = logits.f_logsumexp(-1i64, true)?; // (B,T,1)
        let cand_lp = logits.f_gather(-1, &cand, false)?.f_sub(&lse)?;
        // Per-example summary for modality-agnostic designers: masked mean of the hidden
        // states (B,d) ⊕ mean NLL of the true tokens (B,1).
        let m = mask.f_to_kind(hidden.kind())?; // (B,T)
        let count = m
            .f_sum_dim_intlist(1, true, hidden.kind())?
            .f_clamp_min(1.0)?; // (B,1)
        let pooled =
            (hidden * m.f_unsqueeze(-1)?).f_sum_dim_intlist(1, false, hidden.kind())? / &count;
        let nll =
            (-cand_lp.f_select(-1, 0)? * &m).f_sum_dim_intlist(1, true, hidden.kind())? / &count;
        let example_features = Tensor::f_cat(&[pooled, nll], 1)?; // (B,d+1)
        let cand_embeddings = self.model.embed_tokens(&cand)?.detach(); // (B,T,K,d)
        Ok(TensorMap::new()
            .with("example_features", example_features)
            .with("features", hidden.detach())
            .with("cand_ids", cand)
            .with("cand_logprobs", cand_lp)
            .with("loss_mask", mask.shallow_clone())
            // token identity: the learner's input embeddings of the candidates, detached
            .with("cand_embeddings", cand_embeddings))
    }

    pub(super) fn feedback_rows(&self, examples: &[Example]) -> Result<Vec<Row>> {
        examples
            .iter()
            .map(|ex| data::example_row(self.codec.as_ref(), ex, self.cfg.feedback_max_len))
            .collect()
    }

    /// Inserts `name` = the mean of group means of `groups` (NaN without data) and, when
    /// bootstrapping is on and there is data, its 95 % interval as `name.ci_lo` / `name.ci_hi`
    /// (seeded by the run seed).
    pub(super) fn insert_with_ci(&self, m: &mut Metrics, name: &str, groups: &[Vec<f64>]) {
        m.insert(name.into(), ev::mean_of_means(groups));
        if self.cfg.eval.bootstrap > 0 && groups.iter().any(|g| !g.is_empty()) {
            // One seed for every metric: sets of equal size share resamples, so one set's
            // interval equals the aggregate's.
            let (lo, hi) = ev::bootstrap_ci(groups, self.seed, self.cfg.eval.bootstrap);
            m.insert(format!("{name}.ci_lo"), lo);
            m.insert(format!("{name}.ci_hi"), hi);
        }
    }
}
