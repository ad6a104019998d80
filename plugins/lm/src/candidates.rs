//! The learner's top-K candidates of a position, from one head pass at the loss-bearing
//! positions.
//!
//! The head (d → V, the largest matmul of a small LM) and everything vocabulary-sized run only
//! where the loss is: the learner's soft CE needs log p there, and a construction means nothing
//! elsewhere. [`LossPositions`] runs the head once, at the N loss-bearing positions, takes its
//! log-softmax (attached: the learner step's loss reads it, as the baseline's does) and the
//! candidates from it (detached). At positions without loss every candidate is the true token
//! and its log-probability is 0 — no alternative, and nothing computed.

use crate::loss::LossRows;
use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// The candidates (…, K) of log-probabilities `logp` (…, V) with the true token `targets` (…)
/// first, then the learner's top K−1 among the other tokens, and their log-probabilities (…, K).
pub fn top_candidates(logp: &Tensor, targets: &Tensor, k: i64) -> Result<(Tensor, Tensor)> {
    let run = || -> std::result::Result<(Tensor, Tensor), tch::TchError> {
        let true_idx = targets.f_unsqueeze(-1)?; // (…,1)
                                                 // The top K may include the true token: keep the first K−1 others (a stable sort of
                                                 // `is_true` moves the true token, if present, to the end).
        let (_, top) = logp.f_topk(k, -1, true, true)?; // (…,K)
        let is_true = top.f_eq_tensor(&true_idx)?;
        let order = is_true
            .f_to_kind(Kind::Int64)?
            .f_argsort_stable(true, -1, false)?;
        let others = top.f_gather(-1, &order, false)?.f_narrow(-1, 0, k - 1)?; // (…,K−1)
        let cand = Tensor::f_cat(&[&true_idx, &others], -1)?; // (…,K)
        let cand_lp = logp.f_gather(-1, &cand, false)?;
        Ok((cand, cand_lp))
    };
    run().op("top-K candidates")
}

/// One head pass at the loss-bearing positions of a forward: their log-probabilities, and the
/// candidates of every position.
pub struct LossPositions {
    /// Log-probabilities (N, V) of the loss-bearing positions, in the graph when the hidden
    /// states were.
    pub logp: Tensor,
    /// Candidates (B, T, K), the true token first (every slot at positions without loss).
    pub cand: Tensor,
    /// Their detached log-probabilities (B, T, K) (0 at positions without loss).
    pub cand_lp: Tensor,
}

impl LossPositions {
    /// The head `head` (…,d → …,V) over final hidden states (B,T,d) at the positions where
    /// `mask` (B,T) ≠ 0, and the top-`k` candidates against `targets` (B,T).
    pub fn new(
        hidden: &Tensor,
        mask: &Tensor,
        targets: &Tensor,
        k: i64,
        head: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let rows = LossRows::new(mask)?;
        let logits = head(&rows.select(hidden)?)?; // (N,V)
        let logp = logits.f_log_softmax(-1, logits.kind()).op("log-softmax")?;
        let (cand, cand_lp) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let (c_on, lp_on) = top_candidates(
                &logp.f_detach()?,
                &rows.select(&targets.f_unsqueeze(-1)?)?.f_squeeze_dim(-1)?,
                k,
            )?;
            let (b, t) = (mask.size()[0], mask.size()[1]);
            let place = |off: Tensor, on: &Tensor| -> Result<Tensor> {
                off.f_reshape([b * t, k])?
                    .f_index_copy(0, rows.positions(), on)?
                    .f_reshape([b, t, k])
                    .op("candidates by position")
            };
            let all_true = targets.f_unsqueeze(-1)?.f_expand([b, t, k], false)?;
            let cand = place(all_true.f_contiguous()?, &c_on)?;
            let cand_lp = place(
                Tensor::f_zeros([b, t, k], (lp_on.kind(), lp_on.device()))?,
                &lp_on,
            )?;
            Ok((cand, cand_lp))
        })?;
        Ok(LossPositions {
            logp,
            cand,
            cand_lp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The candidates and log-probabilities at the loss-bearing positions are those of the full
    /// head; elsewhere every candidate is the true token with log p 0; the log-probabilities'
    /// gradient is the full head's at the loss-bearing positions.
    #[test]
    fn loss_positions_match_the_full_head() {
        let (b, t, d, v, k) = (2, 5, 4, 11, 3);
        let w = Tensor::randn([v, d], (Kind::Double, tch::Device::Cpu));
        let hidden = Tensor::randn([b, t, d], (Kind::Double, tch::Device::Cpu));
        let targets = Tensor::randint(v, [b, t], (Kind::Int64, tch::Device::Cpu));
        let mask = Tensor::from_slice(&[0f32, 1., 1., 0., 1., 1., 0., 0., 1., 0.]).reshape([b, t]);
        let head = |h: &Tensor| Ok(h.matmul(&w.tr()));
        let s = LossPositions::new(&hidden, &mask, &targets, k, head).unwrap();
        let full = hidden.matmul(&w.tr()).log_softmax(-1, Kind::Double);
        let (cand, lp) = top_candidates(&full, &targets, k).unwrap();
        let on = mask.unsqueeze(-1).expand([b, t, k], false).ne(0.0);
        assert!(s.cand.masked_select(&on).equal(&cand.masked_select(&on)));
        assert!(s
            .cand_lp
            .masked_select(&on)
            .allclose(&lp.masked_select(&on), 1e-12, 1e-12, false));
        let off = on.logical_not();
        let all_true = targets.unsqueeze(-1).expand([b, t, k], false);
        assert!(s
            .cand
            .masked_select(&off)
            .equal(&all_true.masked_select(&off)));
        assert_eq!(
            s.cand_lp
                .masked_select(&off)
                .abs()
                .sum(Kind::Double)
                .double_value(&[]),
            0.0
        );
        let rows = LossRows::new(&mask).unwrap();
        assert!(s
            .logp
            .allclose(&rows.select(&full).unwrap(), 1e-12, 1e-12, false));
        assert_eq!(s.logp.size(), vec![5, v]);
        // the true token is always the first candidate and, at loss positions, never repeated
        assert!(cand.select(-1, 0).equal(&targets));
        let repeats = cand.narrow(-1, 1, k - 1).eq_tensor(&targets.unsqueeze(-1));
        assert_eq!(repeats.sum(Kind::Int64).int64_value(&[]), 0);
    }
}
