//! The soft-target loss ℓ = −Σ_k q_k log p_θ(c_k) of one position (candidates c (K), weights
//! q (K), logits z = W h), in the two forms the task needs, and the loss-bearing positions.
//!
//! - [`soft_ce_logits`]: from logits, for a loss differentiated once (the learner step).
//! - [`soft_ce_twice`]: for the meta step's `create_graph` pass. Written as
//!   ℓ = −Σ_k q_k z_{c_k} + s · lse(z) with s = Σ_k q_k, it needs z only at the K candidates
//!   with a graph; lse(z), p = softmax(z) and μ = Wᵀp come from one no-grad pass, and
//!   s · lse(z) is replaced by s · (lse + μ·(h − h̄) + Σ_v p_v (W − W̄)_v · h̄) (bars: detached),
//!   which has the same value, the same ∇θ (∇_h lse = μ, ∇_W lse = p ⊗ h) and the same mixed
//!   θ/q derivative. Only ∇²_θθ differs, which the meta step never takes. The double backward
//!   then never builds a vocabulary-sized graph.

use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// The loss-bearing positions of a (B, T) mask: their flat indices and each row's count.
pub struct LossRows {
    idx: Tensor,
    b: i64,
    t: i64,
    count: Tensor,
}

impl LossRows {
    /// The positions where `mask` (B, T) is non-zero.
    pub fn new(mask: &Tensor) -> Result<Self> {
        let (b, t) = (mask.size()[0], mask.size()[1]);
        let flat = mask.f_reshape([b * t])?.f_ne(0)?;
        let idx = flat.f_nonzero()?.f_squeeze_dim(-1)?; // (N,)
        let count = mask
            .f_ne(0)?
            .f_sum_dim_intlist(-1i64, false, Kind::Double)?
            .f_clamp_min(1.0)?; // (B,)
        Ok(LossRows { idx, b, t, count })
    }

    /// The flat indices (N,) of the loss-bearing positions in the (B·T) positions.
    pub fn positions(&self) -> &Tensor {
        &self.idx
    }

    /// The rows of x (B, T, …) at the loss-bearing positions: (N, …).
    pub fn select(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![self.b * self.t];
        shape.extend_from_slice(&x.size()[2..]);
        x.f_reshape(shape.as_slice())?
            .f_index_select(0, &self.idx)
            .op("positions")
    }

    /// Per-example mean over the loss-bearing positions of per-position losses (N,): (B,).
    pub fn per_example(&self, per: &Tensor) -> Result<Tensor> {
        let sums = Tensor::f_zeros([self.b * self.t], (per.kind(), per.device()))?
            .f_index_add(0, &self.idx, per)?
            .f_reshape([self.b, self.t])?
            .f_sum_dim_intlist(-1i64, false, per.kind())?;
        sums.f_div(&self.count.f_to_kind(per.kind())?).op("mean")
    }
}

/// −Σ_k q_k log softmax(z)_{c_k} of logits z (…, V), candidates (…, K), weights q (…, K): (…).
pub fn soft_ce_logits(logits: &Tensor, cand: &Tensor, q: &Tensor) -> Result<Tensor> {
    // log-softmax then gather: one vocabulary-sized pass each way (logsumexp + gather costs
    // about 1.6× as much on CPU, forward and backward)
    soft_ce_logp(&logits.f_log_softmax(-1, logits.kind())?, cand, q)
}

/// [`soft_ce_logits`] from log-probabilities (…, V) already computed.
pub fn soft_ce_logp(logp: &Tensor, cand: &Tensor, q: &Tensor) -> Result<Tensor> {
    let lp = logp.f_gather(-1, cand, false)?; // (…,K)
    lp.f_mul(&q.f_to_kind(lp.kind())?)?
        .f_sum_dim_intlist(-1i64, false, lp.kind())?
        .f_neg()
        .op("soft CE")
}

/// The same loss as [`soft_ce_logits`] of z = h Wᵀ, for h (N, d), W (V, d), candidates and
/// weights (N, K), in the form whose `create_graph` backward has no vocabulary-sized graph
/// (module doc). `w_in_graph`: W's own gradient is wanted (W is in the differentiated set);
/// otherwise the W term, whose value is 0, is left out.
pub fn soft_ce_twice(
    h: &Tensor,
    w: &Tensor,
    cand: &Tensor,
    q: &Tensor,
    w_in_graph: bool,
) -> Result<Tensor> {
    let (n, k) = (cand.size()[0], cand.size()[1]);
    let d = h.size()[1];
    let q = q.f_to_kind(h.kind())?;
    // candidate logits with a graph: z_c = W[c] · h, (N,K)
    let w_c = w
        .f_index_select(0, &cand.f_reshape([n * k])?)?
        .f_reshape([n, k, d])?; // (N,K,d)
    let z_c = w_c.f_matmul(&h.f_unsqueeze(-1)?)?.f_squeeze_dim(-1)?; // (N,K)
                                                                     // lse, p and μ = Wᵀp without a graph: one vocabulary-sized pass
    let (h0, w0) = (h.f_detach()?, w.f_detach()?);
    let (lse, p, mu) = tch::no_grad(|| -> Result<(Tensor, Tensor, Tensor)> {
        let z = h0.f_matmul(&w0.f_tr()?)?; // (N,V)
        let lse = z.f_logsumexp(-1i64, true)?; // (N,1)
        let p = z.f_sub(&lse)?.f_exp()?; // (N,V)
        let mu = p.f_matmul(&w0)?; // (N,d)
        Ok((lse.f_squeeze_dim(-1)?, p, mu))
    })?;
    // s · lse(z) with the gradients of lse: μ through h, p ⊗ h through W
    let mut lse_term = lse.f_add(&h.f_sub(&h0)?.f_mul(&mu)?.f_sum_dim_intlist(
        -1i64,
        false,
        h.kind(),
    )?)?;
    if w_in_graph {
        let dz = h0.f_matmul(&w.f_sub(&w0)?.f_tr()?)?; // (N,V), value 0
        lse_term = lse_term.f_add(&dz.f_mul(&p)?.f_sum_dim_intlist(-1i64, false, h.kind())?)?;
    }
    let s = q.f_sum_dim_intlist(-1i64, false, h.kind())?; // (N,)
    let gathered = q.f_mul(&z_c)?.f_sum_dim_intlist(-1i64, false, h.kind())?;
    s.f_mul(&lse_term)?.f_sub(&gathered).op("soft CE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// The reformulation against the plain one, on random h, W, candidates and q whose rows do
    /// not sum to 1 (so the s · lse term matters): same value, same ∇h and ∇W, and the same
    /// mixed derivative ∂/∂q of r·∇_{h,W} (what the meta step's double backward takes).
    #[test]
    fn twice_form_has_the_same_value_gradient_and_mixed_derivative() {
        tch::manual_seed(7);
        let (n, d, v, k) = (6i64, 5i64, 40i64, 4i64);
        let opts = (Kind::Double, tch::Device::Cpu);
        let h = Tensor::randn([n, d], opts).set_requires_grad(true);
        let w = Tensor::randn([v, d], opts).set_requires_grad(true);
        let cand = Tensor::randint(v, [n, k], (Kind::Int64, tch::Device::Cpu));
        let q = (Tensor::rand([n, k], opts) * 0.6).set_requires_grad(true);
        let (rh, rw) = (Tensor::randn([n, d], opts), Tensor::randn([v, d], opts));

        let mixed = |loss: &Tensor| -> (Tensor, Vec<Tensor>, Tensor) {
            let g = Tensor::run_backward(&[loss.sum(Kind::Double)], &[&h, &w], true, true);
            let r = (&g[0] * &rh).sum(Kind::Double) + (&g[1] * &rw).sum(Kind::Double);
            let dq = Tensor::run_backward(&[r], &[&q], false, false).remove(0);
            (loss.detach(), g.iter().map(Tensor::detach).collect(), dq)
        };
        let plain = soft_ce_logits(&h.matmul(&w.tr()), &cand, &q).unwrap();
        let twice = soft_ce_twice(&h, &w, &cand, &q, true).unwrap();
        let (v0, g0, m0) = mixed(&plain);
        let (v1, g1, m1) = mixed(&twice);
        assert!(max_diff(&v0, &v1) < 1e-10, "value");
        assert!(max_diff(&g0[0], &g1[0]) < 1e-10, "∇h");
        assert!(max_diff(&g0[1], &g1[1]) < 1e-10, "∇W");
        assert!(max_diff(&m0, &m1) < 1e-10, "mixed θ/q derivative");
        assert!(
            m0.abs().max().double_value(&[]) > 1e-3,
            "the check is not vacuous"
        );

        // Without W's term, ∇h and the mixed derivative through h are unchanged.
        let no_w = soft_ce_twice(&h, &w, &cand, &q, false).unwrap();
        let g = Tensor::run_backward(&[no_w.sum(Kind::Double)], &[&h], false, false);
        assert!(max_diff(&g0[0], &g[0]) < 1e-10, "∇h without the W term");
    }

    #[test]
    fn loss_rows_select_and_average_the_masked_positions() {
        let mask = Tensor::from_slice(&[1i64, 1, 0, 0, 0, 1]).reshape([2, 3]);
        let rows = LossRows::new(&mask).unwrap();
        let x = Tensor::arange(6, (Kind::Double, tch::Device::Cpu)).reshape([2, 3]);
        let sel = rows.select(&x.unsqueeze(-1)).unwrap().squeeze_dim(-1);
        assert_eq!(Vec::<f64>::try_from(&sel).unwrap(), vec![0.0, 1.0, 5.0]);
        let mean = rows.per_example(&sel).unwrap();
        assert_eq!(Vec::<f64>::try_from(&mean).unwrap(), vec![0.5, 5.0]);
    }
}
