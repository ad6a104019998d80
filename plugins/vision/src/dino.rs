//! DINO: projection head, student/teacher networks, the self-distillation loss with centring and
//! temperatures, and the EMA teacher update with its cosine momentum schedule.

use crate::vit::{Linear, Vit, VitConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path, VarStore};
use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// DINO hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DinoConfig {
    /// Number of prototypes K (head output width).
    #[serde(default = "d_out")]
    pub out_dim: i64,
    /// Hidden width of the head's MLP.
    #[serde(default = "d_hidden")]
    pub hidden: i64,
    /// Bottleneck width before the normalised prototype layer.
    #[serde(default = "d_bottleneck")]
    pub bottleneck: i64,
    /// Student softmax temperature τ_s.
    #[serde(default = "d_ts")]
    pub student_temp: f64,
    /// Teacher softmax temperature τ_t.
    #[serde(default = "d_tt")]
    pub teacher_temp: f64,
    /// Momentum of the teacher-output centre.
    #[serde(default = "d_cm")]
    pub center_momentum: f64,
    /// EMA momentum of the teacher at step 0.
    #[serde(default = "d_m0")]
    pub momentum_start: f64,
    /// EMA momentum reached at `momentum_steps` (cosine schedule).
    #[serde(default = "d_m1")]
    pub momentum_end: f64,
    /// Length of the momentum schedule in learner steps.
    #[serde(default = "d_ms")]
    pub momentum_steps: u64,
}
fn d_out() -> i64 {
    256
}
fn d_hidden() -> i64 {
    256
}
fn d_bottleneck() -> i64 {
    64
}
fn d_ts() -> f64 {
    0.1
}
fn d_tt() -> f64 {
    0.04
}
fn d_cm() -> f64 {
    0.9
}
fn d_m0() -> f64 {
    0.99
}
fn d_m1() -> f64 {
    1.0
}
fn d_ms() -> u64 {
    1000
}

impl Default for DinoConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// The DINO projection head: MLP → L2-normalise → weight-normalised prototypes (no bias).
#[derive(Debug)]
pub struct DinoHead {
    l1: Linear,
    l2: Linear,
    l3: Linear,
    last: Tensor,
}

impl DinoHead {
    /// Builds the head under `p`.
    pub fn new(p: Path, dim: i64, c: &DinoConfig) -> Result<Self> {
        Ok(DinoHead {
            l1: Linear::new(&p / "mlp0", dim, c.hidden, true)?,
            l2: Linear::new(&p / "mlp1", c.hidden, c.hidden, true)?,
            l3: Linear::new(&p / "mlp2", c.hidden, c.bottleneck, true)?,
            last: p.f_var(
                "prototypes",
                &[c.out_dim, c.bottleneck],
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
        })
    }
    /// (N,d) → (N,K) logits (cosines to the prototypes).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.l1.forward(x)?.f_gelu("none")?;
        let h = self.l2.forward(&h)?.f_gelu("none")?;
        let z = l2_normalize(&self.l3.forward(&h)?)?;
        z.f_matmul(&l2_normalize(&self.last)?.f_transpose(0, 1)?)
            .op("prototypes")
    }
}

/// Rows divided by their L2 norm (with a floor).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?
        .f_clamp_min(1e-12)?;
    x.f_div(&n).op("l2 normalize")
}

/// Backbone + head: the student (θ) or the teacher (EMA of θ).
#[derive(Debug)]
pub struct Network {
    /// The ViT (names `backbone.*`).
    pub backbone: Vit,
    /// The DINO head (names `head.*`).
    pub head: DinoHead,
}

impl Network {
    /// Builds the network under `p`.
    pub fn new(p: Path, vit: &VitConfig, dino: &DinoConfig) -> Result<Self> {
        Ok(Network {
            backbone: Vit::new(&p / "backbone", vit)?,
            head: DinoHead::new(&p / "head", vit.dim, dino)?,
        })
    }
    /// Head logits of the CLS token for images (N,C,H,W): (N,K).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let cls = self.backbone.forward(x)?.f_select(1, 0)?;
        self.head.forward(&cls)
    }
    /// Logits for every view of `views` (B,V,C,H,W): V tensors of shape (B,K).
    pub fn view_logits(&self, views: &Tensor) -> Result<Vec<Tensor>> {
        let s = views.size();
        let (b, v) = (s[0], s[1]);
        if v == 0 {
            return Ok(vec![]);
        }
        // (B,V,C,H,W) → (B·V,C,H,W) → (B·V,K) → (B,V,K)
        let flat = views.f_reshape([b * v, s[2], s[3], s[4]])?;
        let k = self.logits(&flat)?;
        let k = k.f_reshape([b, v, -1])?;
        (0..v).map(|i| k.f_select(1, i).op("view logits")).collect()
    }
}

/// A network with its own VarStore.
pub struct Model {
    /// The parameters.
    pub vs: VarStore,
    /// The network.
    pub net: Network,
}

impl Model {
    /// A fresh model on `device`, initialised from the current torch RNG.
    pub fn new(device: tch::Device, vit: &VitConfig, dino: &DinoConfig) -> Result<Self> {
        let vs = VarStore::new(device);
        let net = Network::new(vs.root(), vit, dino)?;
        Ok(Model { vs, net })
    }
    /// Parameters sorted by name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Per-example DINO loss (B,): cross-entropy from each centred, sharpened teacher distribution
/// (global view i) to each student view j ≠ i, averaged over pairs. Teacher logits are detached.
pub fn dino_loss(
    student: &[Tensor],
    teacher: &[Tensor],
    center: &Tensor,
    student_temp: f64,
    teacher_temp: f64,
) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    let mut pairs = 0;
    for (i, t) in teacher.iter().enumerate() {
        let q = t
            .detach()
            .f_sub(center)?
            .f_div_scalar(teacher_temp)?
            .f_softmax(-1, t.kind())?;
        for (j, s) in student.iter().enumerate() {
            if i == j {
                continue;
            }
            let logp = s.f_div_scalar(student_temp)?.f_log_softmax(-1, s.kind())?;
            // −Σ_k q_k log p_k per example: (B,)
            let ce = q
                .f_mul(&logp)?
                .f_sum_dim_intlist([-1i64].as_slice(), false, s.kind())?
                .f_neg()?;
            total = Some(match total {
                None => ce,
                Some(acc) => acc.f_add(&ce)?,
            });
            pairs += 1;
        }
    }
    let total =
        total.ok_or_else(|| vpt_sdk::Error::msg("dino_loss: no (teacher, student) view pairs"))?;
    total.f_div_scalar(pairs as f64).op("dino loss")
}

/// New centre: `c·m + (1−m)·mean(teacher logits)` over batch and views; (1,K).
pub fn updated_center(center: &Tensor, teacher: &[Tensor], momentum: f64) -> Result<Tensor> {
    let all = Tensor::f_cat(teacher, 0)?.detach();
    let mean = all.f_mean_dim([0i64].as_slice(), true, all.kind())?;
    center
        .f_mul_scalar(momentum)?
        .f_add(&mean.f_mul_scalar(1.0 - momentum)?)
        .op("center update")
}

/// Cosine momentum schedule from `start` (step 0) to `end` (step ≥ `steps`).
pub fn momentum_at(step: u64, start: f64, end: f64, steps: u64) -> f64 {
    let s = step.min(steps) as f64 / steps.max(1) as f64;
    end - (end - start) * ((std::f64::consts::PI * s).cos() + 1.0) / 2.0
}

/// EMA update in place: `t ← m·t + (1−m)·s` for matching (teacher, student) pairs, no grad.
pub fn ema_update(
    teacher: &[(String, Tensor)],
    student: &[(String, Tensor)],
    m: f64,
) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for ((nt, t), (ns, s)) in teacher.iter().zip(student) {
            if nt != ns {
                return Err(vpt_sdk::Error::msg(format!(
                    "EMA: teacher `{nt}` paired with student `{ns}`"
                )));
            }
            let mut t = t.shallow_clone();
            let _ = t.f_mul_scalar_(m)?;
            let _ = t.f_add_(&s.f_mul_scalar(1.0 - m)?)?;
        }
        Ok(())
    })
}

/// The zero centre (1,K) in `kind` on `device`.
pub fn zero_center(k: i64, kind: Kind, device: tch::Device) -> Result<Tensor> {
    Tensor::f_zeros([1, k], (kind, device)).op("center")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn uniform_teacher_gives_log_k_for_uniform_student() {
        let k = 32;
        let z = Tensor::zeros([4, k], (Kind::Double, Device::Cpu));
        let c = zero_center(k, Kind::Double, Device::Cpu).unwrap();
        let l = dino_loss(
            &[z.copy(), z.copy(), z.copy()],
            &[z.copy(), z.copy()],
            &c,
            0.1,
            0.04,
        )
        .unwrap();
        assert_eq!(l.size(), [4]);
        let want = (k as f64).ln();
        assert!((l.double_value(&[0]) - want).abs() < 1e-9);
    }

    #[test]
    fn loss_is_lower_when_student_matches_teacher() {
        tch::manual_seed(0);
        let t = Tensor::randn([8, 16], (Kind::Double, Device::Cpu));
        let c = zero_center(16, Kind::Double, Device::Cpu).unwrap();
        // Student logits that reproduce the teacher's sharpened distribution: s/τs = t/τt.
        let matched = t.shallow_clone() * (0.1 / 0.04);
        let other = Tensor::randn([8, 16], (Kind::Double, Device::Cpu));
        let lm = dino_loss(
            &[matched.copy(), matched.copy()],
            &[t.copy(), t.copy()],
            &c,
            0.1,
            0.04,
        )
        .unwrap();
        let lo = dino_loss(
            &[other.copy(), other.copy()],
            &[t.copy(), t.copy()],
            &c,
            0.1,
            0.04,
        )
        .unwrap();
        assert!(lm.mean(Kind::Double).double_value(&[]) < lo.mean(Kind::Double).double_value(&[]));
        // Matched student: loss = entropy of the teacher distribution (the minimum of CE).
        let q = (t / 0.04).softmax(-1, Kind::Double);
        let h =
            -(q.shallow_clone() * q.log()).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
        assert!((lm - h).abs().max().double_value(&[]) < 1e-9);
    }

    #[test]
    fn ema_and_momentum_schedule() {
        let t = Tensor::from_slice(&[1.0f64, 2.0]);
        let s = Tensor::from_slice(&[3.0f64, -2.0]);
        ema_update(&[("a".into(), t.shallow_clone())], &[("a".into(), s)], 0.75).unwrap();
        // 0.75·1 + 0.25·3 = 1.5 ; 0.75·2 + 0.25·(−2) = 1.0
        assert_eq!(Vec::<f64>::try_from(&t).unwrap(), vec![1.5, 1.0]);
        assert!((momentum_at(0, 0.99, 1.0, 100) - 0.99).abs() < 1e-12);
        assert!((momentum_at(50, 0.99, 1.0, 100) - 0.995).abs() < 1e-12);
        assert_eq!(momentum_at(500, 0.99, 1.0, 100), 1.0);
        let c = zero_center(2, Kind::Double, Device::Cpu).unwrap();
        let nc =
            updated_center(&c, &[Tensor::from_slice(&[1.0f64, 3.0]).view([1, 2])], 0.9).unwrap();
        assert!((nc.double_value(&[0, 1]) - 0.3).abs() < 1e-12);
    }
}
