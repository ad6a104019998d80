//! Small fallible tch layers written once for every vpt model (the LM, its designers, the
//! vision ViT): [`Linear`], [`RmsNorm`], [`LayerNorm`] and multi-head [`attention`] with two
//! kernels, [`Attention::Math`] (explicit matmul + softmax, safe for `create_graph` double
//! backward, which the meta step needs and CPU `scaled_dot_product_attention` lacks) and
//! [`Attention::Fused`] (`scaled_dot_product_attention`). Layers hold their tensors; how those
//! are created (VarStore names, initialisation) is the model's business ([`Linear::new`] and
//! [`LayerNorm::new`] are the plain default forms).

use tch::{nn, Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// A linear map `y = x Wᵀ + b` over the last dim.
#[derive(Debug)]
pub struct Linear {
    /// (out, in) weight.
    pub w: Tensor,
    /// (out,) bias, if any.
    pub b: Option<Tensor>,
}

impl Linear {
    /// The layer made of existing tensors `w` (out, in) and optional `b` (out,).
    pub fn from_parts(w: Tensor, b: Option<Tensor>) -> Self {
        Linear { w, b }
    }

    /// New variables `weight` (N(0, 0.02²), the BERT / ViT / Llama default) and, with `bias`,
    /// `bias` (zeros) under `p`, created in that order.
    pub fn new<'a>(
        p: impl std::borrow::Borrow<nn::Path<'a>>,
        fan_in: i64,
        fan_out: i64,
        bias: bool,
    ) -> Result<Self> {
        let p = p.borrow();
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let w = p.f_var("weight", &[fan_out, fan_in], init)?;
        let b = match bias {
            true => Some(p.f_var("bias", &[fan_out], nn::Init::Const(0.0))?),
            false => None,
        };
        Ok(Linear { w, b })
    }

    /// Applies the map to the last dim of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.w, self.b.as_ref())?)
    }
}

/// Root-mean-square norm with a learned gain: `x / √(mean(x²) + ε) · w` over the last dim.
#[derive(Debug)]
pub struct RmsNorm {
    /// (d,) gain.
    pub w: Tensor,
    /// ε added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalises the last dim of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ms = x.f_square()?.f_mean_dim(-1, true, None::<Kind>)?; // (…, 1)
        let inv = ms.f_add_scalar(self.eps)?.f_rsqrt()?;
        Ok(x.f_mul(&inv)?.f_mul(&self.w)?)
    }
}

/// Layer normalisation with gain and bias over the last dim.
#[derive(Debug)]
pub struct LayerNorm {
    /// (d,) gain.
    pub w: Tensor,
    /// (d,) bias.
    pub b: Tensor,
    /// ε added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// New variables `weight` (ones) and `bias` (zeros) of width `dim` under `p`.
    pub fn new(p: &nn::Path, dim: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            w: p.f_var("weight", &[dim], nn::Init::Const(1.0))?,
            b: p.f_var("bias", &[dim], nn::Init::Const(0.0))?,
            eps,
        })
    }

    /// Normalises the last dim of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.w.size()[0];
        Ok(x.f_layer_norm([dim], Some(&self.w), Some(&self.b), self.eps, false)?)
    }
}

/// Which attention kernel a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// `scaled_dot_product_attention` (fast; CPU has no double backward).
    Fused,
    /// Explicit matmul + softmax + mask: safe for `create_graph` double backward.
    Math,
}

/// Multi-head attention of q (B, Hq, T, hd) over k, v (B, Hk, S, hd) → (B, Hq, T, hd), with
/// `Hk` dividing `Hq` (grouped KV heads: each KV head serves `Hq / Hk` query heads).
///
/// `blocked` (bool, broadcastable to (B, Hq, T, S), true where a query must NOT attend) and
/// `causal` (query i sees keys `..=i`; needs T = S) mask the scores; every query must see at
/// least one key. Scores are `q·k · scale`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    blocked: Option<&Tensor>,
    causal: bool,
    scale: f64,
    kernel: Attention,
) -> Result<Tensor> {
    match kernel {
        Attention::Fused => {
            let keep = blocked.map(Tensor::f_logical_not).transpose()?;
            Tensor::f_scaled_dot_product_attention(q, k, v, keep, 0.0, causal, scale, true)
                .op("fused attention")
        }
        Attention::Math => {
            let rep = q.size()[1] / k.size()[1];
            let (k, v) = if rep > 1 {
                (
                    k.f_repeat_interleave_self_int(rep, 1, None)?,
                    v.f_repeat_interleave_self_int(rep, 1, None)?,
                )
            } else {
                (k.shallow_clone(), v.shallow_clone())
            };
            let mut scores = q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?; // (B,H,T,S)
            if causal {
                let (t, s) = (q.size()[2], k.size()[2]);
                let future = Tensor::f_ones([t, s], (Kind::Bool, q.device()))?.f_triu(1)?;
                scores = scores.f_masked_fill(&future, f64::NEG_INFINITY)?;
            }
            if let Some(b) = blocked {
                scores = scores.f_masked_fill(b, f64::NEG_INFINITY)?;
            }
            scores
                .f_softmax(-1, None::<Kind>)?
                .f_matmul(&v)
                .op("math attention")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn qkv(kind: Kind) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(5);
        let o = (kind, Device::Cpu);
        (
            Tensor::randn([2, 4, 6, 8], o),
            Tensor::randn([2, 2, 6, 8], o),
            Tensor::randn([2, 2, 6, 8], o),
        )
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn math_and_fused_attention_agree() {
        let (q, k, v) = qkv(Kind::Float);
        let scale = 1.0 / 8f64.sqrt();
        for causal in [false, true] {
            let a = attention(&q, &k, &v, None, causal, scale, Attention::Math).unwrap();
            let b = attention(&q, &k, &v, None, causal, scale, Attention::Fused).unwrap();
            assert_eq!(a.size(), vec![2, 4, 6, 8]);
            assert!(
                max_diff(&a, &b) < 1e-5,
                "causal {causal}: {}",
                max_diff(&a, &b)
            );
        }
        // An explicit mask (one hidden key per row, never the diagonal) agrees too and differs
        // from no mask.
        let blocked = Tensor::eye(6, (Kind::Bool, Device::Cpu)).roll([1], [1]);
        let a = attention(&q, &k, &v, Some(&blocked), false, 0.3, Attention::Math).unwrap();
        let b = attention(&q, &k, &v, Some(&blocked), false, 0.3, Attention::Fused).unwrap();
        let free = attention(&q, &k, &v, None, false, 0.3, Attention::Math).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        assert!(max_diff(&a, &free) > 1e-3);
    }

    /// ∂/∂q of Σ (∂L/∂q)² through the math kernel: finite, non-zero, and equal to a central
    /// finite difference of the first derivative.
    #[test]
    fn math_attention_has_finite_second_derivatives() {
        let (q, k, v) = qkv(Kind::Double);
        let grad_sq = |q: &Tensor, create: bool| -> (Tensor, Tensor) {
            let q = q.detach().set_requires_grad(true);
            let y = attention(&q, &k, &v, None, true, 0.35, Attention::Math).unwrap();
            let loss = (&y * &y).sum(Kind::Double);
            let g = Tensor::run_backward(&[&loss], &[&q], true, create)
                .pop()
                .unwrap();
            ((&g * &g).sum(Kind::Double), q)
        };
        let (s, q_leaf) = grad_sq(&q, true);
        let h = Tensor::run_backward(&[&s], &[&q_leaf], false, false)
            .pop()
            .unwrap();
        assert!(bool::try_from(h.isfinite().all()).unwrap());
        assert!(h.abs().max().double_value(&[]) > 0.0);
        // Directional check along a random direction u: d/dε s(q + εu) ≈ ⟨h, u⟩.
        let u = Tensor::randn_like(&q);
        let eps = 1e-5;
        let f = |e: f64| grad_sq(&(&q + &u * e), false).0.double_value(&[]);
        let fd = (f(eps) - f(-eps)) / (2.0 * eps);
        let an = (&h * &u).sum(Kind::Double).double_value(&[]);
        assert!(
            (fd - an).abs() < 1e-5 * an.abs().max(1.0),
            "fd {fd} vs {an}"
        );
    }

    #[test]
    fn layers_compute_their_formulas() {
        tch::manual_seed(1);
        let x = Tensor::randn([3, 4], (Kind::Double, Device::Cpu));
        let lin = Linear::from_parts(
            Tensor::randn([2, 4], (Kind::Double, Device::Cpu)),
            Some(Tensor::from_slice(&[1.0f64, -1.0])),
        );
        let want = x.matmul(&lin.w.tr()) + lin.b.as_ref().unwrap();
        assert!(max_diff(&lin.forward(&x).unwrap(), &want) < 1e-12);
        let w = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]);
        let rms = RmsNorm {
            w: w.shallow_clone(),
            eps: 1e-6,
        };
        let ms = (&x * &x).mean_dim(-1, true, Kind::Double);
        let want = &x / (ms + 1e-6).sqrt() * &w;
        assert!(max_diff(&rms.forward(&x).unwrap(), &want) < 1e-12);
        let ln = LayerNorm {
            w,
            b: Tensor::zeros([4], (Kind::Double, Device::Cpu)),
            eps: 1e-5,
        };
        let y = ln.forward(&x).unwrap() / Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]);
        let mean = y
            .mean_dim(-1, false, Kind::Double)
            .abs()
            .max()
            .double_value(&[]);
        assert!(mean < 1e-9, "normalised rows have mean 0, got {mean}");
    }
}
