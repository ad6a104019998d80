//! [`sgd_step`]: a reference learner step for plugin tests and benchmarks.

use crate::value::{grad, mean_pretrain_objective};
use crate::{Batch, Construction, Differentiation, Result, Task, TensorMap};
use tch::Tensor;

/// One plain-SGD learner step θ ← θ − lr·∇_θ L_pre(θ; batch, detach(c)) on every parameter of
/// the task, then [`Task::after_step`] with the loss's side outputs; returns L_pre. The pretraining objective is
/// the host's (see [`pretrain_objective`](super::pretrain_objective)); the host's own learner
/// step adds its optimizers, clipping and budgets.
pub fn sgd_step(
    task: &mut dyn Task,
    batch: &Batch,
    c: &Construction,
    lr: f64,
    step: u64,
) -> Result<f64> {
    let params: Vec<Tensor> = task
        .parameters()?
        .tensors()
        .map(Tensor::shallow_clone)
        .collect();
    let objective = mean_pretrain_objective(
        task,
        &[batch],
        &[&TensorMap::new()],
        &[c.detached()],
        Differentiation::Once,
    )?;
    let g = grad(&objective.loss, &params, false)?;
    tch::no_grad(|| -> Result<()> {
        for (p, g) in params.iter().zip(&g) {
            let _ = p.shallow_clone().f_sub_(&g.f_mul_scalar(lr)?)?;
        }
        Ok(())
    })?;
    task.after_step(step, &objective.side)?;
    Ok(objective.loss.f_double_value(&[])?)
}
