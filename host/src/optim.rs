//! Optimizers over named tensors (θ or φ), a pure LR schedule, and global-norm clipping.
//! Built-in optimizers register themselves with `inventory`.

use crate::{config::OptimConfig, error::HostTchContext, Result};
use tch::{Kind, Tensor};
use vpt_sdk::TensorMap;

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

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. `max_norm <= 0` only measures.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            let _ = g.f_mul_scalar_(scale).op("clip")?;
        }
    }
    Ok(norm)
}

/// Global L2 norm of a list of tensors (one CPU–GPU sync point for the whole list).
pub fn global_norm(ts: &[Tensor]) -> Result<f64> {
    let squares = ts
        .iter()
        .filter(|t| t.numel() > 0)
        .map(|t| {
            t.f_square()?
                .f_sum(Kind::Double)?
                .f_to_device(tch::Device::Cpu)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .op("norm")?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sq = Tensor::f_stack(&squares, 0)
        .and_then(|s| s.f_sum(Kind::Double))
        .and_then(|s| s.f_double_value(&[]))
        .op("norm")?;
    Ok(sq.sqrt())
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
    fn clipping_caps_the_global_norm() {
        let mut g = vec![Tensor::from_slice(&[3.0f64]), Tensor::from_slice(&[4.0f64])];
        let before = clip_global_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-12);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
        assert!(lookup("lion").err().is_some_and(|m| m.contains("adamw")));
    }
}
