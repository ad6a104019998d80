//! The task's forward passes and loss inputs: hidden states as a differentiation mode needs
//! them, soft-target CE, the construction's targets, design inputs and feedback rows.

use super::stream::StreamRow;
use super::CausalLm;
use crate::candidates::LossPositions;
use crate::data::{self, Example, Row};
use crate::eval::{self as ev};
use crate::loss::{soft_ce_logits, soft_ce_twice, LossRows};
use tch::{Kind, Tensor};
use vpt_llama::{Attention, Llama};
use vpt_sdk::{
    Batch, BatchSource, Construction, Differentiation, Error, Metrics, Result, TchContext,
    TensorMap,
};

impl CausalLm {
    /// Converts θ to `kind` (f64 for finite-difference tests).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
        if let Some(c) = self.prefix_cache.as_mut() {
            c.clear();
        }
    }

    /// The loaded model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The batch of unlabeled rows: `ids`, `targets`, `mask`, and per target its source
    /// (`source`, (B,T) int64, [`crate::pack::Source`] values) and whether the corruption
    /// replaced it (`corrupt`, (B,T) float).
    pub(super) fn unlabeled_batch(
        &self,
        source: BatchSource,
        rows: Vec<StreamRow>,
    ) -> Result<Batch> {
        let (b, t) = (rows.len() as i64, self.cfg.seq_len as i64);
        let tags: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.source.iter().map(|&s| i64::from(s)))
            .collect();
        let corrupt: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.corrupt.iter().copied())
            .collect();
        let plain: Vec<Row> = rows.into_iter().map(|r| r.row).collect();
        let tensors = data::rows_to_tensors(&plain, self.device)?
            .with(
                "source",
                Tensor::from_slice(&tags)
                    .f_reshape([b, t])?
                    .f_to(self.device)?,
            )
            .with(
                "corrupt",
                Tensor::from_slice(&corrupt)
                    .f_reshape([b, t])?
                    .f_to(self.device)
                    .op("corrupt")?,
            );
        Ok(Batch { source, tensors })
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

    /// The head at the loss-bearing positions of final hidden states (B,T,d) of `batch`: their
    /// log-probabilities (in the graph when `hidden` is) and every position's candidates.
    pub(super) fn loss_positions(&self, batch: &Batch, hidden: &Tensor) -> Result<LossPositions> {
        LossPositions::new(
            hidden,
            batch.tensors.require("mask")?,
            batch.tensors.require("targets")?,
            self.cfg.top_k,
            |h| self.model.logits(h),
        )
    }

    /// What the designer sees, from the final hidden states (B,T,d) of a forward and the
    /// candidates (B,T,K) of [`LossPositions`] with their log-probabilities (all detached; run
    /// under no_grad).
    pub(super) fn design_inputs_of(
        &self,
        batch: &Batch,
        hidden: &Tensor,
        cand: Tensor,
        cand_lp: Tensor,
    ) -> Result<TensorMap> {
        let mask = batch.tensors.require("mask")?;
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
        let mut inputs = TensorMap::new();
        if self.cfg.diagnostic_corrupt_mask {
            // diagnostic only: where the stream's corruption replaced the target
            inputs.insert(
                "corrupt_mask",
                batch.tensors.require("corrupt")?.shallow_clone(),
            );
        }
        Ok(inputs
            .with("example_features", example_features)
            .with("features", hidden.detach())
            .with("cand_ids", cand)
            .with("cand_logprobs", cand_lp)
            .with("loss_mask", mask.shallow_clone())
            // token identity: the learner's input embeddings of the candidates, detached
            .with("cand_embeddings", cand_embeddings))
    }

    /// The detached input of S (B,T,d) of a feedback batch: from the prefix cache when it is on
    /// and the batch names its examples, else the blocks below S without grad.
    pub(super) fn feedback_s_input(&mut self, batch: &Batch, start: usize) -> Result<Tensor> {
        let ids = batch.tensors.require("ids")?;
        let prefix =
            |ids: &Tensor| tch::no_grad(|| self.model.forward_prefix(ids, start, Attention::Fused));
        let (Some(cache), Some(example), BatchSource::Feedback { set }) = (
            self.prefix_cache.as_mut(),
            batch.tensors.get("example"),
            batch.source,
        ) else {
            return prefix(ids);
        };
        let keys: Vec<(u32, i64)> = Vec::<i64>::try_from(example)
            .map_err(|e| Error::msg(format!("feedback batch `example`: {e}")))?
            .into_iter()
            .map(|i| (set, i))
            .collect();
        let lens = crate::prefix_cache::loss_lengths(batch.tensors.require("mask")?)?;
        cache.s_input(&keys, &lens, ids.size()[1], |rows| {
            let sel = Tensor::f_from_slice(rows)?.f_to(ids.device())?;
            prefix(&ids.f_index_select(0, &sel)?)
        })
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
