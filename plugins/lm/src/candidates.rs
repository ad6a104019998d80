//! The learner's top-K candidates of a position, and the learner forward's logits split by
//! whether a position bears loss.
//!
//! The shared learner forward needs logits everywhere for the design inputs but a graph only at
//! the loss-bearing positions: [`SplitLogits`] runs the head once per position — attached at the
//! N loss-bearing ones, under no_grad at the others — so the learner's backward goes through
//! the head at N positions only, as the baseline's does.

use crate::loss::LossRows;
use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// The candidates (…, K) of logits (…, V) with the true token `targets` (…) first, then the
/// learner's top K−1 among the other tokens, and their log-probabilities (…, K).
pub fn top_candidates(logits: &Tensor, targets: &Tensor, k: i64) -> Result<(Tensor, Tensor)> {
    let run = || -> std::result::Result<(Tensor, Tensor), tch::TchError> {
        let true_idx = targets.f_unsqueeze(-1)?; // (…,1)
        // The top K may include the true token: keep the first K−1 others (a stable sort of
        // `is_true` moves the true token, if present, to the end).
        let (_, top) = logits.f_topk(k, -1, true, true)?; // (…,K)
        let is_true = top.f_eq_tensor(&true_idx)?;
        let order = is_true
            .f_to_kind(Kind::Int64)?
            .f_argsort_stable(true, -1, false)?;
        let others = top.f_gather(-1, &order, false)?.f_narrow(-1, 0, k - 1)?; // (…,K−1)
        let cand = Tensor::f_cat(&[&true_idx, &others], -1)?; // (…,K)
        let lse = logits.f_logsumexp(-1i64, true)?; // (…,1)
        let cand_lp = logits.f_gather(-1, &cand, false)?.f_sub(&lse)?;
        Ok((cand, cand_lp))
    };
    run().op("top-K candidates")
}

/// A learner forward's logits: attached at the loss-bearing positions, and the candidates of
/// every position.
pub struct SplitLogits {
    /// Logits (N, V) of the loss-bearing positions, in the graph.
    pub loss_logits: Tensor,
    /// Candidates (B, T, K), the true token first.
    pub cand: Tensor,
    /// Their detached log-probabilities (B, T, K).
    pub cand_lp: Tensor,
}

impl SplitLogits {
    /// The head over final hidden states (B,T,d) through `head` (…,d → …,V): with a graph at
    /// the positions where `mask` (B,T) ≠ 0, without one elsewhere; the top-`k` candidates of
    /// every position against `targets` (B,T).
    pub fn new(
        hidden: &Tensor,
        mask: &Tensor,
        targets: &Tensor,
        k: i64,
        head: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let (b, t) = (mask.size()[0], mask.size()[1]);
        let rows = LossRows::new(mask)?;
        let loss_logits = head(&rows.select(hidden)?)?; // (N,V)
        let flat_targets = targets.f_reshape([b * t])?;
        let rest = mask
            .f_reshape([b * t])?
            .f_eq(0)?
            .f_nonzero()?
            .f_squeeze_dim(-1)?; // (B·T−N,)
        let (cand, cand_lp) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let on = rows.positions();
            let (c_on, lp_on) = top_candidates(
                &loss_logits.f_detach()?,
                &flat_targets.f_index_select(0, on)?,
                k,
            )?;
            let flat_hidden = hidden.f_reshape([b * t, -1])?;
            let rest_logits = head(&flat_hidden.f_index_select(0, &rest)?.f_detach()?)?;
            let (c_off, lp_off) =
                top_candidates(&rest_logits, &flat_targets.f_index_select(0, &rest)?, k)?;
            let place = |on_v: &Tensor, off_v: &Tensor| -> Result<Tensor> {
                Tensor::f_zeros([b * t, k], (on_v.kind(), on_v.device()))?
                    .f_index_copy(0, on, on_v)?
                    .f_index_copy(0, &rest, off_v)?
                    .f_reshape([b, t, k])
                    .op("candidates by position")
            };
            Ok((place(&c_on, &c_off)?, place(&lp_on, &lp_off)?))
        })?;
        Ok(SplitLogits {
            loss_logits,
            cand,
            cand_lp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split head gives the candidates of the full logits, and loss logits whose gradient
    /// equals the full logits' at the loss-bearing positions.
    #[test]
    fn split_logits_match_the_full_head() {
        let (b, t, d, v, k) = (2, 5, 4, 11, 3);
        let w = Tensor::randn([v, d], (Kind::Double, tch::Device::Cpu));
        let hidden = Tensor::randn([b, t, d], (Kind::Double, tch::Device::Cpu));
        let targets = Tensor::randint(v, [b, t], (Kind::Int64, tch::Device::Cpu));
        let mask = Tensor::from_slice(&[0f32, 1., 1., 0., 1., 1., 0., 0., 1., 0.]).reshape([b, t]);
        let head = |h: &Tensor| Ok(h.matmul(&w.tr()));
        let s = SplitLogits::new(&hidden, &mask, &targets, k, head).unwrap();
        let full = hidden.matmul(&w.tr());
        let (cand, lp) = top_candidates(&full, &targets, k).unwrap();
        assert!(s.cand.equal(&cand));
        assert!(s.cand_lp.allclose(&lp, 1e-12, 1e-12, false));
        let rows = LossRows::new(&mask).unwrap();
        assert!(s
            .loss_logits
            .allclose(&rows.select(&full).unwrap(), 1e-12, 1e-12, false));
        assert_eq!(s.loss_logits.size(), vec![5, v]);
        // the true token is always the first candidate and never repeated
        assert!(cand.select(-1, 0).equal(&targets));
        let repeats = cand.narrow(-1, 1, k - 1).eq_tensor(&targets.unsqueeze(-1));
        assert_eq!(repeats.sum(Kind::Int64).int64_value(&[]), 0);
    }
}
