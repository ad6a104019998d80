//! The two pieces of autograd the host and the plugin test harness must agree on: how a
//! construction becomes the pretraining objective, and how gradients are taken.

use crate::{
    Batch, BatchSource, Construction, Differentiation, Error, Result, Task, TensorMap,
    KIND_EXAMPLE_WEIGHTS,
};
use tch::{Kind, Tensor};

/// L_pre(θ; B_u, c) of one batch whose forward is `state` (empty when none was run; see
/// [`Task::pretrain_loss_from_forward`]), to be differentiated as `diff` says: the task's mean
/// per-example loss, weighted by `weights` when `c` is of kind [`KIND_EXAMPLE_WEIGHTS`] (the
/// task then sees the baseline construction). A feedback batch is refused: feedback examples
/// never enter a learner batch.
pub fn pretrain_objective(
    task: &mut dyn Task,
    batch: &Batch,
    state: &TensorMap,
    c: &Construction,
    diff: Differentiation,
) -> Result<Tensor> {
    if !matches!(batch.source, BatchSource::Unlabeled { .. }) {
        return Err(Error::msg(format!(
            "refusing a {:?} batch in pretrain_loss: feedback never enters a learner batch",
            batch.source
        )));
    }
    if c.kind == KIND_EXAMPLE_WEIGHTS {
        crate::kinds::EXAMPLE_WEIGHTS.check(c)?;
        let per_example =
            task.pretrain_loss_from_forward(batch, state, &Construction::baseline(), diff)?;
        let w = c
            .tensors
            .require("weights")?
            .f_to_kind(per_example.kind())?;
        Ok(per_example.f_mul(&w)?.f_mean(Kind::Double)?)
    } else {
        Ok(task
            .pretrain_loss_from_forward(batch, state, c, diff)?
            .f_mean(Kind::Double)?)
    }
}

/// ∂y/∂xs without touching `.grad` (`create_graph` keeps the graph for a second derivative);
/// inputs that `y` does not depend on get zeros. A `y` outside any graph is an error here,
/// because libtorch's engine aborts the process on it instead of throwing.
pub fn grad(y: &Tensor, xs: &[Tensor], create_graph: bool) -> Result<Vec<Tensor>> {
    if !y.requires_grad() {
        return Err(Error::msg(
            "a loss does not require grad (was it detached or computed under no_grad?)",
        ));
    }
    let gs = Tensor::f_run_backward(&[y], xs, create_graph, create_graph)?;
    Ok(gs
        .into_iter()
        .zip(xs)
        .map(|(g, x)| if g.defined() { g } else { x.zeros_like() })
        .collect())
}
