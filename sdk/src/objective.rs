//! The two pieces of autograd the host and the plugin test harness must agree on: how a
//! construction becomes the pretraining objective, and how gradients are taken.

use crate::{
    Batch, BatchSource, Construction, Differentiation, Error, Result, Task, TensorMap,
    KIND_EXAMPLE_WEIGHTS,
};
use tch::{Kind, Tensor};

/// A pretraining objective and the side outputs of its losses (one map per batch,
/// [`PretrainLoss::side`](crate::PretrainLoss)), which the learner step hands to
/// [`Task::after_step`].
#[derive(Debug)]
pub struct Objective {
    /// The scalar L_pre (f64).
    pub loss: Tensor,
    /// One map per batch, in the batches' order.
    pub side: Vec<TensorMap>,
}

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
) -> Result<Objective> {
    if !matches!(batch.source, BatchSource::Unlabeled { .. }) {
        return Err(Error::msg(format!(
            "refusing a {:?} batch in pretrain_loss: feedback never enters a learner batch",
            batch.source
        )));
    }
    let (out, weights) = if c.kind == KIND_EXAMPLE_WEIGHTS {
        crate::kinds::EXAMPLE_WEIGHTS.check(c)?;
        let out = task.pretrain_loss_from_forward(batch, state, &Construction::baseline(), diff)?;
        (out, Some(c.tensors.require("weights")?))
    } else {
        (
            task.pretrain_loss_from_forward(batch, state, c, diff)?,
            None,
        )
    };
    let per_example = match weights {
        Some(w) => out
            .per_example
            .f_mul(&w.f_to_kind(out.per_example.kind())?)?,
        None => out.per_example,
    };
    Ok(Objective {
        loss: per_example.f_mean(Kind::Double)?,
        side: vec![out.side],
    })
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
