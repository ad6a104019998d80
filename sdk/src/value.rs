//! The value V of the designer's constructions and its gradient in φ (DESIGN §1), implemented
//! once for the host's meta step and diagnostics, the testing harness and plugin tests.
//!
//! - Gradient algebra on lists of tensors (one list: the gradients of one parameter set):
//!   [`grad`], [`dot`], [`cosine`], [`global_norm`], [`clip_global_norm`], [`weighted_sum`]
//!   and the random-feedback control [`random_like_with_norm`].
//! - The value: g_down = detach(∇_S L_down(θ; B_f)) ([`feedback_gradient`]),
//!   g_pre = ∇_S L_pre(θ; B_u, c(φ)) built with `create_graph`, and V = Align(g_down, g_pre)
//!   ([`value`], or [`value_at`] for given constructions); the designer's gradient is
//!   ∇_φ of V (or of the meta loss) ([`designer_gradient`]).

use crate::objective::{self, Objective};
use crate::{
    Batch, Construction, Designer, Differentiation, Error, Forward, Result, Task, TensorMap,
};
use tch::{Device, Kind, Tensor};

pub use crate::objective::grad;

/// How V aligns the feedback gradient with the pretraining gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// V = g_down · g_pre (the paper's one-step value).
    Dot,
    /// V = cos(g_down, g_pre).
    Cosine,
}

impl Align {
    /// Align(g_down, g_pre), differentiable in both.
    pub fn apply(self, g_down: &[Tensor], g_pre: &[Tensor]) -> Result<Tensor> {
        match self {
            Align::Dot => dot(g_down, g_pre),
            Align::Cosine => cosine(g_down, g_pre),
        }
    }
}

/// Σ_i ⟨a_i, b_i⟩ over matching tensors, summed in f64 (differentiable in both); an empty
/// list is an error (the alignment subset S is empty).
pub fn dot(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (x, y) in a.iter().zip(b) {
        let term = x.f_mul(y)?.f_sum(Kind::Double)?;
        acc = Some(match acc {
            Some(s) => s + term,
            None => term,
        });
    }
    acc.ok_or_else(|| Error::msg("alignment subset S is empty"))
}

/// ⟨a, b⟩ / (‖a‖‖b‖) over the concatenation of the lists.
pub fn cosine(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    let num = dot(a, b)?;
    let na = dot(a, a)?.f_sqrt()?;
    let nb = dot(b, b)?.f_sqrt()?;
    Ok(num / (na * nb + 1e-12))
}

/// Global L2 norm of a list of tensors (one CPU–GPU sync point for the whole list).
pub fn global_norm(ts: &[Tensor]) -> Result<f64> {
    let squares = ts
        .iter()
        .filter(|t| t.numel() > 0)
        .map(|t| t.f_square()?.f_sum(Kind::Double)?.f_to_device(Device::Cpu))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sq = Tensor::f_stack(&squares, 0)?
        .f_sum(Kind::Double)?
        .f_double_value(&[])?;
    Ok(sq.sqrt())
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. `max_norm <= 0` only measures.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            let _ = g.f_mul_scalar_(scale)?;
        }
    }
    Ok(norm)
}

/// Σ_j w_j g_j of gradient lists (`g_sets[j]` weighted by `weights[j]`; at least one list).
pub fn weighted_sum(g_sets: &[Vec<Tensor>], weights: &[f64]) -> Vec<Tensor> {
    let mut acc: Vec<Tensor> = g_sets[0].iter().map(|g| g * weights[0]).collect();
    for (g, w) in g_sets.iter().zip(weights).skip(1) {
        for (a, x) in acc.iter_mut().zip(g) {
            *a = &*a + x * *w;
        }
    }
    acc
}

/// Random Gaussian tensors shaped like `g`, scaled so the list has the same global norm
/// (the random-feedback control). Uses the torch RNG, which the host reseeds every step.
pub fn random_like_with_norm(g: Vec<Tensor>) -> Result<Vec<Tensor>> {
    let norm = global_norm(&g)?;
    let r = g
        .iter()
        .map(Tensor::f_randn_like)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let rn = global_norm(&r)?;
    Ok(r.into_iter().map(|t| t * (norm / rn.max(1e-30))).collect())
}

/// θ_S: the task's alignment subset ([`TaskInfo::alignment`](crate::TaskInfo)), in that order.
pub fn alignment_subset(task: &dyn Task) -> Result<Vec<Tensor>> {
    let info = task.info();
    Ok(task
        .parameters()?
        .select(&info.alignment)?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// g_down = detach(∇_S L_down(θ; B_f)) on the feedback batch `batch`.
pub fn feedback_gradient(task: &mut dyn Task, s: &[Tensor], batch: &Batch) -> Result<Vec<Tensor>> {
    let l_down = task.feedback_loss(batch)?;
    Ok(grad(&l_down, s, false)?
        .iter()
        .map(Tensor::detach)
        .collect())
}

/// L_pre(θ; B_u, c) over the batches of one step: the mean of each batch's
/// [`objective::pretrain_objective`] (`states[i]` and `constructions[i]` belong to
/// `batches[i]`; empty states when no forward ran), to be differentiated as `diff` says, with
/// each batch's side outputs.
pub fn mean_pretrain_objective(
    task: &mut dyn Task,
    batches: &[&Batch],
    states: &[&TensorMap],
    constructions: &[Construction],
    diff: Differentiation,
) -> Result<Objective> {
    let mut total: Option<Tensor> = None;
    let mut side = Vec::with_capacity(batches.len());
    for ((b, state), c) in batches.iter().zip(states).zip(constructions) {
        let one = objective::pretrain_objective(task, b, state, c, diff)?;
        total = Some(match total {
            Some(t) => t + one.loss,
            None => one.loss,
        });
        side.extend(one.side);
    }
    let total = total.ok_or_else(|| Error::msg("no unlabeled batch"))?;
    Ok(Objective {
        loss: total / batches.len() as f64,
        side,
    })
}

/// One evaluation of V on the batches of a meta step.
pub struct Value {
    /// V (an f64 scalar), differentiable in φ through g_pre's graph.
    pub v: Tensor,
    /// g_pre = ∇_S L_pre(θ; B_u, c(φ)), built with `create_graph`.
    pub g_pre: Vec<Tensor>,
    /// The designer's constructions c(φ), one per batch, attached to φ.
    pub constructions: Vec<Construction>,
}

/// V = Align(g_down, g_pre) with g_pre = ∇_S L_pre(θ; B_u, c(φ)) at the constructions
/// `constructions` (the task is told [`Differentiation::Twice`]); returns (V, g_pre).
pub fn value_at(
    task: &mut dyn Task,
    s: &[Tensor],
    g_down: &[Tensor],
    batches: &[&Batch],
    states: &[&TensorMap],
    constructions: &[Construction],
    align: Align,
) -> Result<(Tensor, Vec<Tensor>)> {
    let l_pre =
        mean_pretrain_objective(task, batches, states, constructions, Differentiation::Twice)?.loss;
    let g_pre = grad(&l_pre, s, true)?;
    Ok((align.apply(g_down, &g_pre)?, g_pre))
}

/// V of the designer's constructions c = designer(forward.design_inputs) of each batch
/// (`forwards[i]` is the forward of `batches[i]`, from [`Task::pretrain_forward`] or
/// [`Task::meta_batch`]), grad enabled for φ: [`value_at`] of them.
pub fn value(
    task: &mut dyn Task,
    designer: &mut dyn Designer,
    s: &[Tensor],
    g_down: &[Tensor],
    batches: &[&Batch],
    forwards: &[&Forward],
    align: Align,
) -> Result<Value> {
    let constructions = forwards
        .iter()
        .map(|f| designer.construct(&f.design_inputs))
        .collect::<Result<Vec<_>>>()?;
    let states: Vec<&TensorMap> = forwards.iter().map(|f| &f.state).collect();
    let (v, g_pre) = value_at(task, s, g_down, batches, &states, &constructions, align)?;
    Ok(Value {
        v,
        g_pre,
        constructions,
    })
}

/// The designer's gradient ∇_φ `loss` (V, or the meta loss −V + λR), in the order of `phi`.
pub fn designer_gradient(loss: &Tensor, phi: &TensorMap) -> Result<Vec<Tensor>> {
    let phi: Vec<Tensor> = phi.tensors().map(Tensor::shallow_clone).collect();
    grad(loss, &phi, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_cosine() {
        let a = [
            Tensor::from_slice(&[1.0f64, 2.0]),
            Tensor::from_slice(&[3.0f64]),
        ];
        let b = [
            Tensor::from_slice(&[4.0f64, 5.0]),
            Tensor::from_slice(&[6.0f64]),
        ];
        assert_eq!(dot(&a, &b).unwrap().double_value(&[]), 32.0);
        assert_eq!(Align::Dot.apply(&a, &b).unwrap().double_value(&[]), 32.0);
        let c = Align::Cosine.apply(&a, &a).unwrap().double_value(&[]);
        assert!((c - 1.0).abs() < 1e-12);
        assert!(dot(&[], &[]).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn weighted_sum_weights_each_list() {
        let g = vec![
            vec![Tensor::from_slice(&[1.0f64, 2.0])],
            vec![Tensor::from_slice(&[10.0f64, 20.0])],
        ];
        let s = weighted_sum(&g, &[1.0, 0.5]);
        assert_eq!(Vec::<f64>::try_from(&s[0]).unwrap(), vec![6.0, 12.0]);
    }

    #[test]
    fn random_feedback_keeps_the_norm_but_not_the_direction() {
        tch::manual_seed(0);
        let g = vec![
            Tensor::from_slice(&[3.0f64, 0.0]),
            Tensor::from_slice(&[4.0f64; 50]),
        ];
        let norm = global_norm(&g).unwrap();
        let r = random_like_with_norm(g.iter().map(|t| t.copy()).collect()).unwrap();
        assert!((global_norm(&r).unwrap() - norm).abs() < 1e-9);
        assert!(cosine(&g, &r).unwrap().double_value(&[]).abs() < 0.5);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![Tensor::from_slice(&[3.0f64]), Tensor::from_slice(&[4.0f64])];
        let before = clip_global_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-12);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_designer_gradient_of_v_through_create_graph() {
        // S = {θ}, L_pre = ½ Σ (θ − φ)², so g_pre = θ − φ and V = g_down · (θ − φ):
        // ∇_φ V = −g_down, which exists only if g_pre kept its graph.
        let theta = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let phi = Tensor::from_slice(&[0.5f64, -1.0]).set_requires_grad(true);
        let l_pre = (&theta - &phi).square().sum(Kind::Double) * 0.5;
        let s = [theta.shallow_clone()];
        let g_pre = grad(&l_pre, &s, true).unwrap();
        let g_down = [Tensor::from_slice(&[3.0f64, -4.0])];
        let v = Align::Dot.apply(&g_down, &g_pre).unwrap();
        assert_eq!(v.double_value(&[]), 3.0 * 0.5 - 4.0 * 3.0);
        let g = designer_gradient(&v, &TensorMap::new().with("phi", phi)).unwrap();
        assert_eq!(Vec::<f64>::try_from(&g[0]).unwrap(), vec![-3.0, 4.0]);
    }
}
