//! Optimizers over named tensors (θ or φ), a pure LR schedule, and global-norm clipping.
//! Built-in optimizers register themselves with `inventory`.

use crate::{error::HostTchContext, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use vpt_sdk::TensorMap;

/// An optimizer with a warmup + cosine schedule and global-norm clipping.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Optimizer: `adamw` or `sgd` (built-ins).
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup: u64,
    /// Cosine decay horizon in steps; default: `run.steps`, or constant after warmup when the
    /// budget is wall-clock only.
    #[serde(default)]
    pub decay_steps: Option<u64>,
    /// Final LR as a fraction of the peak.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[serde(default)]
    pub clip: f64,
    /// Adam betas, or `[momentum, _]` for SGD.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            optimizer: default_optimizer(),
            lr: default_lr(),
            warmup: 0,
            decay_steps: None,
            min_lr_ratio: default_min_lr_ratio(),
            weight_decay: 0.0,
            clip: 0.0,
            betas: default_betas(),
            eps: default_eps(),
        }
    }
}

impl OptimConfig {
    /// Default for Opt_φ: AdamW at 1e-3, constant.
    pub fn designer_default() -> Self {
        OptimConfig {
            lr: 1e-3,
            min_lr_ratio: 1.0,
            ..Default::default()
        }
    }
}

fn default_optimizer() -> String {
    "adamw".into()
}
fn default_lr() -> f64 {
    1e-4
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

/// The learning rate at `step`: linear warmup to `lr`, then cosine decay to `lr·min_lr_ratio`
/// over `decay_steps` (constant after warmup when there is no horizon).
pub fn lr_at(step: u64, cfg: &OptimConfig, horizon: Option<u64>) -> f64 {
    let (lr, warmup) = (cfg.lr, cfg.warmup);
    // 1) warmup
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let Some(total) = cfg.decay_steps.or(horizon) else {
        return lr; // 2) no horizon: constant
    };
    let min_lr = lr * cfg.min_lr_ratio;
    if step >= total {
        return min_lr; // 3) past the horizon
    }
    // 4) cosine from lr to min_lr over [warmup, total)
    let span = (total - warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (lr - min_lr)
}

/// An optimizer stepping named parameters in place.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr`; `grads[i]` belongs to `params[i]`.
    fn step(&mut self, params: &TensorMap, grads: &[Tensor], lr: f64) -> Result<()>;
    /// Its state (moments, step count) for checkpoints.
    fn state(&self) -> TensorMap;
    /// Restores [`state`](Self::state).
    fn load_state(&mut self, state: &TensorMap) -> Result<()>;
    /// The diagonal preconditioner P of the parameters at `indices` (positions in the
    /// parameter list `step` receives), detached: the next update moves parameter i by about
    /// −lr·P_i ⊙ (its gradient's contribution). `None`: the identity (SGD), or no state yet.
    fn preconditioner(&self, _indices: &[usize]) -> Result<Option<Vec<Tensor>>> {
        Ok(None)
    }
}

/// The part of an optimizer state (keys `NAME.i` per parameter, others shared such as `t`)
/// that belongs to the parameters at `indices`, renumbered 0.. in that order: the state of the
/// same optimizer over that subset.
pub fn select_state(state: &TensorMap, indices: &[usize]) -> TensorMap {
    let mut out = TensorMap::new();
    for (key, t) in state.iter() {
        match key.rsplit_once('.').map(|(n, i)| (n, i.parse::<usize>())) {
            Some((name, Ok(i))) => {
                if let Some(j) = indices.iter().position(|&k| k == i) {
                    out.insert(format!("{name}.{j}"), t.shallow_clone());
                }
            }
            _ => out.insert(key.to_string(), t.shallow_clone()),
        }
    }
    out
}

/// A built-in optimizer, registered with `inventory::submit!`.
pub struct OptimizerEntry {
    /// Config name (`learner.optimizer`).
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// Constructor.
    pub build: fn(&OptimConfig) -> Box<dyn Optimizer>,
}

inventory::collect!(OptimizerEntry);

/// The optimizer called `name`, or a message listing the available ones.
pub fn lookup(name: &str) -> std::result::Result<&'static OptimizerEntry, String> {
    let all: Vec<&'static OptimizerEntry> = inventory::iter::<OptimizerEntry>.into_iter().collect();
    all.iter().copied().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|e| e.name).collect();
        format!(
            "unknown optimizer `{name}` (available: {})",
            names.join(", ")
        )
    })
}

/// Builds the optimizer a config names.
pub fn build(cfg: &OptimConfig) -> Result<Box<dyn Optimizer>> {
    let entry = lookup(&cfg.optimizer).map_err(|m| crate::Error::config("optimizer", m))?;
    Ok((entry.build)(cfg))
}

/// AdamW (decoupled weight decay), moments kept in the parameter's dtype.
pub struct AdamW {
    cfg: OptimConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i64,
}

impl Optimizer for AdamW {
    fn step(&mut self, params: &TensorMap, grads: &[Tensor], lr: f64) -> Result<()> {
        if self.m.is_empty() {
            self.m = params.tensors().map(|p| p.zeros_like()).collect();
            self.v = params.tensors().map(|p| p.zeros_like()).collect();
        }
        self.t += 1;
        let [b1, b2] = self.cfg.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        // In place, two temporaries per tensor (g², the denominator): the step is bound by
        // memory traffic over |θ|, not by arithmetic.
        tch::no_grad(|| -> Result<()> {
            for (i, (p, g)) in params.tensors().zip(grads).enumerate() {
                let mut p = p.shallow_clone();
                // m ← β1 m + (1−β1) g ; v ← β2 v + (1−β2) g²
                let _ = self.m[i].f_lerp_(g, 1.0 - b1)?;
                let _ = self.v[i].f_lerp_(&g.f_square()?, 1.0 - b2)?;
                if self.cfg.weight_decay > 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.cfg.weight_decay)?;
                }
                if lr == 0.0 {
                    continue;
                }
                // p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps), as p + m / (denom · (−bc1 / lr))
                let mut denom = self.v[i].f_sqrt()?;
                let _ = denom
                    .f_div_scalar_(bc2.sqrt())?
                    .f_add_scalar_(self.cfg.eps)?
                    .f_mul_scalar_(-bc1 / lr)?;
                let _ = p.f_addcdiv_(&self.m[i], &denom)?;
            }
            Ok(())
        })
    }

    fn state(&self) -> TensorMap {
        let mut s = TensorMap::new();
        s.insert("t", Tensor::from(self.t));
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            s.insert(format!("m.{i}"), m.shallow_clone());
            s.insert(format!("v.{i}"), v.shallow_clone());
        }
        s
    }

    fn load_state(&mut self, state: &TensorMap) -> Result<()> {
        // The state comes from a checkpoint file: fallible calls only.
        self.t = state
            .require("t")?
            .f_int64_value(&[])
            .op("optimizer state `t`")?;
        let n = state.len().saturating_sub(1) / 2;
        let copies = |prefix: &str| -> Result<Vec<Tensor>> {
            (0..n)
                .map(|i| {
                    let name = format!("{prefix}.{i}");
                    copy_of(state.require(&name)?).op(&format!("optimizer state `{name}`"))
                })
                .collect()
        };
        self.m = copies("m")?;
        self.v = copies("v")?;
        Ok(())
    }

    /// P = 1/(√v̂ + ε) with v̂ = v/(1 − β2^t), the denominator of the next step (up to the new
    /// gradient's (1 − β2)·g² share of v). `None` before the first step: Adam's first step is
    /// sign(g), which has no linear preconditioner.
    fn preconditioner(&self, indices: &[usize]) -> Result<Option<Vec<Tensor>>> {
        if self.t == 0 || self.v.is_empty() {
            return Ok(None);
        }
        let bc2 = 1.0 - self.cfg.betas[1].powi(self.t as i32);
        tch::no_grad(|| {
            indices
                .iter()
                .map(|&i| {
                    let v = self.v.get(i).ok_or_else(|| {
                        crate::Error::Msg(format!("optimizer has no state for parameter {i}"))
                    })?;
                    let denom = v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(self.cfg.eps)?;
                    Ok(denom.f_reciprocal()?)
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        })
    }
}

/// SGD with momentum `betas[0]` and decoupled weight decay.
pub struct Sgd {
    cfg: OptimConfig,
    buf: Vec<Tensor>,
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &TensorMap, grads: &[Tensor], lr: f64) -> Result<()> {
        let momentum = self.cfg.betas[0];
        if self.buf.is_empty() {
            self.buf = params.tensors().map(|p| p.zeros_like()).collect();
        }
        tch::no_grad(|| -> Result<()> {
            for (i, (p, g)) in params.tensors().zip(grads).enumerate() {
                let mut p = p.shallow_clone();
                let _ = self.buf[i].f_mul_scalar_(momentum)?.f_add_(g)?;
                if self.cfg.weight_decay > 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.cfg.weight_decay)?;
                }
                let _ = p.f_sub_(&(&self.buf[i] * lr))?;
            }
            Ok(())
        })
    }

    fn state(&self) -> TensorMap {
        self.buf
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("buf.{i}"), b.shallow_clone()))
            .collect()
    }

    fn load_state(&mut self, state: &TensorMap) -> Result<()> {
        // By name: a checkpoint file does not keep the map's order (buf.10 sorts before buf.2).
        self.buf = (0..state.len())
            .map(|i| {
                let name = format!("buf.{i}");
                copy_of(state.require(&name)?).op(&format!("optimizer state `{name}`"))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

inventory::submit! {
    OptimizerEntry {
        name: "adamw",
        description: "AdamW with decoupled weight decay",
        build: |cfg| Box::new(AdamW { cfg: cfg.clone(), m: vec![], v: vec![], t: 0 }),
    }
}

inventory::submit! {
    OptimizerEntry {
        name: "sgd",
        description: "SGD with momentum (betas[0]) and decoupled weight decay",
        build: |cfg| Box::new(Sgd { cfg: cfg.clone(), buf: vec![] }),
    }
}

/// A fresh copy of `t` (fallible: optimizer states come from checkpoint files).
fn copy_of(t: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    let mut c = t.f_zeros_like()?;
    c.f_copy_(t)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(warmup: u64, decay: Option<u64>) -> OptimConfig {
        OptimConfig {
            lr: 1.0,
            warmup,
            decay_steps: decay,
            min_lr_ratio: 0.1,
            ..Default::default()
        }
    }

    #[test]
    fn schedule_boundaries() {
        let c = cfg(4, Some(104));
        assert_eq!(lr_at(0, &c, None), 0.25); // first warmup step
        assert_eq!(lr_at(3, &c, None), 1.0); // end of warmup
        assert!((lr_at(4, &c, None) - 1.0).abs() < 1e-12); // cosine start
        assert!((lr_at(54, &c, None) - 0.55).abs() < 1e-12); // midpoint: (1 + 0.1) / 2
        assert!((lr_at(104, &c, None) - 0.1).abs() < 1e-12); // horizon
        assert!((lr_at(500, &c, None) - 0.1).abs() < 1e-12); // past it
        assert_eq!(lr_at(50, &cfg(0, None), None), 1.0); // no horizon: constant
        assert!((lr_at(50, &cfg(0, None), Some(100)) - 0.55).abs() < 1e-12); // horizon from run.steps
    }

    #[test]
    fn adamw_matches_closed_form_first_step() {
        // First Adam step moves each coordinate by lr·sign(g) (bias-corrected m/√v = g/|g|).
        let p = Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true);
        let params = TensorMap::new().with("p", p.shallow_clone());
        let mut opt = build(&OptimConfig {
            lr: 0.1,
            eps: 0.0,
            ..Default::default()
        })
        .unwrap();
        opt.step(&params, &[Tensor::from_slice(&[3.0f64, -0.5])], 0.1)
            .unwrap();
        let got = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-12 && (got[1] + 1.9).abs() < 1e-12,
            "{got:?}"
        );
    }

    #[test]
    fn adamw_state_round_trip_continues_identically() {
        let run = |split: bool| {
            let p = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).set_requires_grad(true);
            let params = TensorMap::new().with("p", p.shallow_clone());
            let c = OptimConfig {
                weight_decay: 0.1,
                ..Default::default()
            };
            let mut opt = build(&c).unwrap();
            for k in 0..6 {
                if split && k == 3 {
                    let s = opt.state();
                    opt = build(&c).unwrap();
                    opt.load_state(&s).unwrap();
                }
                let g = &p.detach() * (k as f64 + 1.0);
                opt.step(&params, &[g], 0.01).unwrap();
            }
            Vec::<f64>::try_from(&p.detach()).unwrap()
        };
        assert_eq!(run(false), run(true));
    }

    #[test]
    fn adam_preconditioner_is_the_jacobian_of_the_next_step() {
        // V_P's derivation: AdamW's next displacement Δ(g) = −lr·m̂'/(√v̂' + ε) with
        // m' = β1 m + (1 − β1) g, so dΔ/dg ≈ −lr·(1 − β1)/(1 − β1^{t+1})·P with P = 1/(√v̂ + ε)
        // from the current state. The neglected terms (the new g²'s share of v̂) are of order
        // (1 − β2)/(1 − β2^{t+1}); after 3,000 steps that is 1.6e-3. Central differences of the
        // real step against that closed form.
        let cfg = OptimConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let p0 = Tensor::from_slice(&[0.5f64, -1.0, 2.0, 0.1]);
        let params = TensorMap::new().with("p", p0.copy().set_requires_grad(true));
        let mut opt = build(&cfg).unwrap();
        tch::manual_seed(0);
        let scale = Tensor::from_slice(&[1.0f64, 0.1, 3.0, 0.01]);
        for _ in 0..3000 {
            let g = Tensor::randn([4], (tch::Kind::Double, tch::Device::Cpu)) * &scale;
            opt.step(&params, &[g], 0.0).unwrap(); // lr 0: only the moments move
        }
        let p = opt.preconditioner(&[0]).unwrap().unwrap().remove(0);
        let displacement = |g: &Tensor| {
            let mut o = build(&cfg).unwrap();
            o.load_state(&opt.state()).unwrap();
            let q = TensorMap::new().with("p", p0.copy().set_requires_grad(true));
            o.step(&q, &[g.shallow_clone()], cfg.lr).unwrap();
            q.require("p").unwrap().detach() - &p0
        };
        let g = Tensor::from_slice(&[0.3f64, -0.02, 1.0, 0.005]);
        let delta = Tensor::from_slice(&[1.0f64, 0.1, -2.0, 0.01]);
        let h = 1e-7;
        let numeric =
            (displacement(&(&g + &delta * h)) - displacement(&(&g - &delta * h))) / (2.0 * h);
        let [b1, _] = cfg.betas;
        let predicted = &p * &delta * (-cfg.lr * (1.0 - b1) / (1.0 - b1.powi(3001)));
        let rel = ((&numeric - &predicted).abs() / predicted.abs())
            .max()
            .double_value(&[]);
        assert!(
            rel < 1e-2,
            "dΔ/dg·δ {numeric:?} vs −lr(1−β1)/bc1·P⊙δ {predicted:?} (rel {rel})"
        );
        // and P is not the identity up to a scale (so V_P differs from V)
        let spread = (p.max() / p.min()).double_value(&[]);
        assert!(spread > 10.0, "P = {p:?}");
    }

    #[test]
    fn adam_has_no_preconditioner_before_its_first_step_and_sgd_none_at_all() {
        let params =
            TensorMap::new().with("p", Tensor::from_slice(&[1.0f64]).set_requires_grad(true));
        let mut adam = build(&OptimConfig::default()).unwrap();
        assert!(adam.preconditioner(&[0]).unwrap().is_none());
        adam.step(&params, &[Tensor::from_slice(&[2.0f64])], 0.0)
            .unwrap();
        // after one step v̂ = g², so P = 1/(|g| + ε)
        let p = adam.preconditioner(&[0]).unwrap().unwrap()[0].double_value(&[0]);
        assert!((p - 1.0 / (2.0 + 1e-8)).abs() < 1e-12, "{p}");
        let mut sgd = build(&OptimConfig {
            optimizer: "sgd".into(),
            ..Default::default()
        })
        .unwrap();
        sgd.step(&params, &[Tensor::from_slice(&[2.0f64])], 0.0)
            .unwrap();
        assert!(sgd.preconditioner(&[0]).unwrap().is_none());
    }

    #[test]
    fn a_selected_state_is_the_optimizer_over_that_subset() {
        // Stepping the full optimizer and the one restored from select_state on a subset give
        // the same update on that subset.
        let params = TensorMap::new()
            .with(
                "a",
                Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true),
            )
            .with("b", Tensor::from_slice(&[3.0f64]).set_requires_grad(true))
            .with(
                "c",
                Tensor::from_slice(&[-1.0f64, 0.5, 4.0]).set_requires_grad(true),
            );
        let grads = |k: f64| {
            vec![
                Tensor::from_slice(&[k, -k]),
                Tensor::from_slice(&[2.0 * k]),
                Tensor::from_slice(&[0.5, k, -k * k]),
            ]
        };
        let mut full = build(&OptimConfig::default()).unwrap();
        for k in 1..4 {
            full.step(&params, &grads(k as f64), 0.01).unwrap();
        }
        let mut sub = build(&OptimConfig::default()).unwrap();
        sub.load_state(&select_state(&full.state(), &[2, 0]))
            .unwrap();
        let subset = TensorMap::new()
            .with("c", params.require("c").unwrap().detach().copy())
            .with("a", params.require("a").unwrap().detach().copy());
        let g = grads(4.0);
        sub.step(&subset, &[g[2].copy(), g[0].copy()], 0.01)
            .unwrap();
        full.step(&params, &g, 0.01).unwrap();
        for name in ["a", "c"] {
            let want = Vec::<f64>::try_from(params.require(name).unwrap().detach()).unwrap();
            let got = Vec::<f64>::try_from(subset.require(name).unwrap()).unwrap();
            assert_eq!(want, got, "{name}");
        }
    }

    #[test]
    fn unknown_optimizer_lists_the_known_ones() {
        assert!(lookup("lion").err().is_some_and(|m| m.contains("adamw")));
    }
}
