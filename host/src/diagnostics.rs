//! Diagnostic arms, never defaults and labelled as diagnostics in every report: `frozen` (the
//! meta step measures V but φ never moves) and `oracle` (an upper bound: the learner's targets
//! are set straight from g_down every step, which breaks the information bottleneck on purpose
//! and answers "could any designer help in this setting?").

pub use crate::estimators::Diagnostic;
use crate::{
    error::HostTchContext,
    meta::{feedback_gradients, feedback_weights, FeedbackSlot},
    parallel::DataParallel,
    records::MetaRecord,
    Error, Result,
};
use tch::{Kind, Tensor};
use vpt_sdk::value::{cosine, global_norm, grad, value_at, weighted_sum, Align};
use vpt_sdk::{
    Batch, Construction, Designer, Task, TensorMap, KIND_EXAMPLE_WEIGHTS, KIND_LM_SOFT_TARGETS,
    KIND_VISION_VIEW_MASK,
};

/// The oracle's mirror-ascent step, in units of the RMS of ∂V/∂c over the entries that carry
/// a gradient: large enough to move a soft target well away from the designer's, small
/// enough to keep a distribution rather than a vertex.
pub const ORACLE_STEP: f64 = 3.0;

/// How the oracle moves the free tensor of a construction kind: in log or logit space, so it
/// stays a valid construction of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    /// Rows over the last axis sum to 1 (soft targets): softmax(log x + step).
    Simplex,
    /// Entries in [0, 1] (masks): sigmoid(logit x + step).
    Unit,
    /// Non-negative with mean 1 over the batch (example weights): B·softmax(log x + step).
    MeanOne,
}

/// The tensor the oracle sets for `kind`, and how.
fn free_tensor(kind: &str) -> Result<(&'static str, Param)> {
    match kind {
        KIND_LM_SOFT_TARGETS => Ok(("probs", Param::Simplex)),
        KIND_VISION_VIEW_MASK => Ok(("mask", Param::Unit)),
        KIND_EXAMPLE_WEIGHTS => Ok(("weights", Param::MeanOne)),
        other => Err(Error::config(
            "meta.estimator",
            format!(
                "the oracle does not know construction kind `{other}` (it knows {KIND_LM_SOFT_TARGETS}, {KIND_VISION_VIEW_MASK}, {KIND_EXAMPLE_WEIGHTS})"
            ),
        )),
    }
}

/// One mirror-ascent step: x* = param(x0 moved by `step`·a/rms(a) in log/logit space).
fn mirror_step(x0: &Tensor, a: &Tensor, param: Param, step: f64) -> Result<Tensor> {
    mirror(x0, a, param, step).op("oracle mirror step")
}

fn mirror(x0: &Tensor, a: &Tensor, param: Param, step: f64) -> tch::Result<Tensor> {
    let x0 = x0.f_to_kind(Kind::Double)?;
    let a = a.f_to_kind(Kind::Double)?;
    let nonzero = a.f_ne(0.0)?.f_sum(Kind::Double)?;
    let rms = (a.f_square()?.f_sum(Kind::Double)? / nonzero.f_clamp_min(1.0)?)
        .f_sqrt()?
        .f_double_value(&[])?;
    let delta = a.f_mul_scalar(step / rms.max(1e-300))?;
    let x = match param {
        Param::Simplex => x0
            .f_clamp_min(1e-12)?
            .f_log()?
            .f_add(&delta)?
            .f_softmax(-1, Kind::Double),
        Param::Unit => x0
            .f_clamp(1e-6, 1.0 - 1e-6)?
            .f_logit(None)?
            .f_add(&delta)?
            .f_sigmoid(),
        Param::MeanOne => x0
            .f_clamp_min(1e-12)?
            .f_log()?
            .f_add(&delta)?
            .f_softmax(0, Kind::Double)?
            .f_mul_scalar(x0.size()[0] as f64),
    }?;
    x.f_to_kind(a.kind())
}

/// The oracle diagnostic: at every learner step it draws g_down, takes ∂V/∂c of
/// V = g_down·∇_S L_pre(θ; B_u, c) at the designer's construction c (one create_graph pass, as
/// in a meta step) and moves c by one mirror-ascent step of [`ORACLE_STEP`]. V is linear in
/// soft targets and example weights, so this is the exact ascent direction there (a first-order
/// one for masks). The designer only supplies the starting point; φ is not updated.
pub struct Oracle<'a> {
    /// The task (θ lives in it).
    pub task: &'a mut dyn Task,
    /// The designer, for the starting construction's regulariser R (logged).
    pub designer: &'a mut dyn Designer,
    /// θ_S.
    pub s: &'a [Tensor],
    /// The feedback sets and weights.
    pub feedback: &'a [FeedbackSlot],
    /// The data-parallel group, if any.
    pub dp: Option<&'a DataParallel>,
}

impl Oracle<'_> {
    /// The learner's constructions for `batches`, set from g_down, and the step's record
    /// (`value` is V at the oracle's construction, `regularizer` its R).
    pub fn targets(
        self,
        batches: &[Batch],
        constructions: Vec<Construction>,
    ) -> Result<(Vec<Construction>, MetaRecord)> {
        let g_down = weighted_sum(
            &feedback_gradients(self.task, self.s, self.feedback, self.dp)?,
            &feedback_weights(self.feedback),
        );
        // c with its free tensor as a leaf, so ∂V/∂c comes out of the double backward
        let mut leaves = Vec::with_capacity(constructions.len());
        let mut live = Vec::with_capacity(constructions.len());
        for c in &constructions {
            let (name, _) = free_tensor(&c.kind)?;
            let x = c
                .tensors
                .require(name)?
                .f_detach_copy()?
                .set_requires_grad(true);
            let mut c2 = c.detached();
            c2.tensors.insert(name, x.shallow_clone());
            leaves.push(x);
            live.push(c2);
        }
        let refs: Vec<&Batch> = batches.iter().collect();
        // a fresh forward (no state), differentiated twice
        let none = TensorMap::new();
        let states = vec![&none; refs.len()];
        let (v, g_pre) = value_at(
            self.task,
            self.s,
            &g_down,
            &refs,
            &states,
            &live,
            Align::Dot,
        )?;
        let a = grad(&v, &leaves, false)?;
        let mut out = MetaRecord {
            value: v.f_double_value(&[])?,
            cos: cosine(&g_down, &g_pre)?.f_double_value(&[])?,
            g_down_norm: global_norm(&g_down)?,
            g_pre_norm: global_norm(&g_pre)?,
            ..MetaRecord::default()
        };
        if !out.value.is_finite() || !global_norm(&a)?.is_finite() {
            out.skipped = true;
            return Ok((constructions, out));
        }
        let mut result = Vec::with_capacity(constructions.len());
        let mut reg = 0.0;
        for ((c, x0), a) in constructions.into_iter().zip(&leaves).zip(&a) {
            let (name, param) = free_tensor(&c.kind)?;
            let x = tch::no_grad(|| mirror_step(&x0.detach(), a, param, ORACLE_STEP))?;
            // V is linear in the free tensor: V(c*) = V(c) + Σ a·(x* − x0)
            out.value += (a * (&x - x0.detach()))
                .f_sum(Kind::Double)?
                .f_double_value(&[])?;
            let mut c = c;
            c.tensors.insert(name, x);
            if let Some(r) = self.designer.regularizer(&c)? {
                reg += r.f_double_value(&[])?;
            }
            result.push(c);
        }
        out.regularizer = reg;
        Ok((result, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_step_keeps_each_kind_valid_and_ascends() {
        let a = Tensor::from_slice(&[1.0f64, -1.0, 0.0, 2.0, 0.0, -2.0]).reshape([2, 3]);
        // simplex rows: still distributions, and mass moves toward the larger a
        let q0 = Tensor::from_slice(&[0.5f64, 0.25, 0.25, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0])
            .reshape([2, 3]);
        let q = mirror_step(&q0, &a, Param::Simplex, ORACLE_STEP).unwrap();
        let sums = q.sum_dim_intlist(-1i64, false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-12);
        assert!(q.double_value(&[0, 0]) > 0.5 && q.double_value(&[0, 1]) < 0.25);
        assert!(q.double_value(&[1, 0]) > q.double_value(&[1, 1]));
        assert!(q.double_value(&[1, 2]) < 1.0 / 3.0);
        // the step raises the linear value a·q
        let gain = (&a * (&q - &q0)).sum(Kind::Double).double_value(&[]);
        assert!(gain > 0.0, "{gain}");
        // masks stay in [0, 1]; weights keep mean 1
        let m = mirror_step(&q0, &a, Param::Unit, ORACLE_STEP).unwrap();
        assert!(m.min().double_value(&[]) >= 0.0 && m.max().double_value(&[]) <= 1.0);
        assert!(m.double_value(&[0, 0]) > 0.5 && m.double_value(&[1, 2]) < 1.0 / 3.0);
        let w0 = Tensor::from_slice(&[1.0f64, 1.0, 1.0, 1.0]);
        let aw = Tensor::from_slice(&[1.0f64, 0.0, 0.0, -1.0]);
        let w = mirror_step(&w0, &aw, Param::MeanOne, ORACLE_STEP).unwrap();
        assert!((w.mean(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-12);
        assert!(w.double_value(&[0]) > 1.0 && w.double_value(&[3]) < 1.0);
        // a zero gradient leaves the construction where it was
        let same = mirror_step(&q0, &a.zeros_like(), Param::Simplex, ORACLE_STEP).unwrap();
        assert!((same - &q0).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn unknown_kind_is_refused_by_name() {
        let e = free_tensor("audio.spans/v1").unwrap_err().to_string();
        assert!(
            e.contains("audio.spans/v1") && e.contains("meta.estimator"),
            "{e}"
        );
    }
}
