//! A reference implementation of the host's two steps, through the SDK traits only, for this
//! crate's tests and benchmark (the real loop lives in `vpt-host`; the plugin never calls this).

use tch::{Kind, Tensor};
use vpt_sdk::{
    Batch, BatchSource, Construction, Designer, Differentiation, Result, Task, TchContext,
    TensorMap,
};

/// Parameters of `m` in the order of `names`, as a vector.
fn ordered(m: &TensorMap, names: &[String]) -> Result<Vec<Tensor>> {
    Ok(m.select(names)?.into_iter().map(|(_, t)| t).collect())
}

/// g_down = detach(∇_{θ_S} L_down(B_f)).
pub fn g_down(task: &mut dyn Task, fb: &Batch) -> Result<Vec<Tensor>> {
    let s = ordered(&task.parameters()?, &task.info().alignment)?;
    let ld = task.feedback_loss(fb)?;
    let g = Tensor::f_run_backward(&[ld], &s, false, false).op("g_down")?;
    Ok(g.into_iter().map(|t| t.detach()).collect())
}

/// V = ⟨g_down, ∇_{θ_S} L_pre(B_u, c(φ))⟩ with the graph kept to φ (create_graph).
pub fn value(
    task: &mut dyn Task,
    designer: &mut dyn Designer,
    bu: &Batch,
    gd: &[Tensor],
) -> Result<(Tensor, Construction)> {
    let s = ordered(&task.parameters()?, &task.info().alignment)?;
    let inputs = task.design_inputs(bu)?;
    let c = designer.construct(&inputs)?;
    let lpre = task
        .pretrain_loss(bu, &c, Differentiation::Twice)?
        .f_mean(Kind::Float)?;
    let gp = Tensor::f_run_backward(&[lpre], &s, true, true).op("g_pre")?;
    let mut v = Tensor::f_zeros([], (gp[0].kind(), gp[0].device()))?;
    for (a, b) in gd.iter().zip(&gp) {
        v = v.f_add(&a.f_mul(b)?.f_sum(b.kind())?)?;
    }
    Ok((v, c))
}

/// One meta step's ∇_φ V (no optimizer step): returns (V, ∇φ in the order of φ's names).
pub fn meta_gradient(
    task: &mut dyn Task,
    designer: &mut dyn Designer,
    bu: &Batch,
    fb: &Batch,
) -> Result<(f64, Vec<Tensor>)> {
    task.prepare_feedback()?;
    let gd = g_down(task, fb)?;
    let (v, _) = value(task, designer, bu, &gd)?;
    let phi: Vec<Tensor> = designer.parameters()?.into_iter().map(|(_, t)| t).collect();
    let g = Tensor::f_run_backward(&[v.shallow_clone()], &phi, false, false).op("∇φ V")?;
    Ok((v.f_double_value(&[])?, g))
}

/// One plain SGD learner step on the construction `c` (detached), then `after_step`.
pub fn learner_step(
    task: &mut dyn Task,
    bu: &Batch,
    c: &Construction,
    lr: f64,
    step: u64,
) -> Result<f64> {
    let params: Vec<Tensor> = task.parameters()?.into_iter().map(|(_, t)| t).collect();
    let loss = task
        .pretrain_loss(bu, &c.detached(), Differentiation::Once)?
        .f_mean(Kind::Float)?;
    let g = Tensor::f_run_backward(&[loss.shallow_clone()], &params, false, false)
        .op("learner grad")?;
    tch::no_grad(|| -> Result<()> {
        for (p, g) in params.iter().zip(&g) {
            let _ = p.shallow_clone().f_sub_(&g.f_mul_scalar(lr)?)?;
        }
        Ok(())
    })?;
    task.after_step(step)?;
    loss.f_double_value(&[]).op("loss")
}

/// An unlabeled batch of domain 0.
pub const UNLABELED: BatchSource = BatchSource::Unlabeled { domain: 0 };
/// The feedback set 0.
pub const FEEDBACK: BatchSource = BatchSource::Feedback { set: 0 };
