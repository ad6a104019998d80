//! The meta step (DESIGN §1, step 2): φ is moved to raise the alignment of the feedback
//! gradient with the pretraining gradient. θ is never touched here.

use crate::{
    error::HostTchContext,
    estimators::EstimatorEntry,
    optim::Optimizer,
    parallel::{mean_across, DataParallel},
    report::MetaRecord,
    Result,
};
use tch::{Kind, Tensor};
use vpt_sdk::{Batch, BatchSource, Construction, Designer, Task, TensorMap};

/// One feedback set in use: its index in the task, ω_j, and the domain it pairs with.
#[derive(Debug, Clone, Copy)]
pub struct FeedbackSlot {
    /// Index into `TaskInfo::feedback_sets`.
    pub set: u32,
    /// ω_j.
    pub weight: f64,
    /// Its unlabeled domain (for domain-matched alignment).
    pub domain: u32,
}

/// Everything a meta step reads.
pub struct MetaStep<'a> {
    /// The task (θ lives in it).
    pub task: &'a mut dyn Task,
    /// The designer φ.
    pub designer: &'a mut dyn Designer,
    /// θ_S, the alignment subset.
    pub s: &'a TensorMap,
    /// φ.
    pub phi: &'a TensorMap,
    /// The feedback sets and weights.
    pub feedback: &'a [FeedbackSlot],
    /// Value estimator.
    pub estimator: &'static EstimatorEntry,
    /// λ.
    pub lambda: f64,
    /// Domain-matched pairs instead of one weighted sum.
    pub domain_matched: bool,
    /// The data-parallel group, if any (g_down and ∇φ are averaged across ranks).
    pub dp: Option<&'a DataParallel>,
}

impl MetaStep<'_> {
    /// Runs one meta step on the learner's unlabeled batches (one per domain) and their design
    /// inputs (`inputs[i]` belongs to `unlabeled[i]`), and updates φ.
    pub fn run(
        self,
        unlabeled: &[Batch],
        inputs: &[TensorMap],
        opt_phi: &mut dyn Optimizer,
        lr_phi: f64,
    ) -> Result<MetaRecord> {
        let align = self
            .estimator
            .align
            .ok_or_else(|| crate::Error::Msg("estimator has no alignment".into()))?;
        let s: Vec<Tensor> = self.s.tensors().map(Tensor::shallow_clone).collect();

        // g_down = detach(∇_S L_down(θ; B_f^j)) per feedback set, B_f sampled independently of B_u
        self.task.prepare_feedback()?;
        let mut g_sets = Vec::with_capacity(self.feedback.len());
        for f in self.feedback {
            let b_f = self.task.next_batch(BatchSource::Feedback { set: f.set })?;
            let l_down = self.task.feedback_loss(&b_f)?;
            let mut g: Vec<Tensor> = grad(&l_down, &s, false)?
                .into_iter()
                .map(|g| g.detach())
                .collect();
            mean_across(self.dp, &mut g)?; // the one all-reduce of g_down
            g_sets.push(g);
        }

        // pairs (g_down, B_u): Σ_j ω_j g_j with every batch, or each set with its own domain
        let pairs: Vec<(Vec<Tensor>, Vec<usize>)> = if self.domain_matched {
            self.feedback
                .iter()
                .zip(g_sets)
                .map(|(f, g)| (g, domain_batches(unlabeled, f.domain)))
                .collect()
        } else {
            vec![(
                weighted_sum(&g_sets, self.feedback),
                (0..unlabeled.len()).collect(),
            )]
        };

        let mut out = MetaRecord::default();
        let (mut values, mut reg) = (Vec::new(), None::<Tensor>);
        for (i, (g_down, idx)) in pairs.into_iter().enumerate() {
            let g_down = (self.estimator.feedback)(g_down)?;
            // c = designer(inputs(B_u)) with grad enabled for φ
            let batches: Vec<&Batch> = idx.iter().map(|&k| &unlabeled[k]).collect();
            let constructions = idx
                .iter()
                .map(|&k| self.designer.construct(&inputs[k]))
                .collect::<vpt_sdk::Result<Vec<_>>>()?;
            // g_pre = ∇_S L_pre(θ; B_u, c) with create_graph = true
            let l_pre = pretrain_objective(self.task, &batches, &constructions)?;
            let g_pre = grad(&l_pre, &s, true)?;
            // V = Align(g_down, g_pre)
            values.push(align(&g_down, &g_pre)?);
            if i == 0 {
                out.g_down_norm = crate::optim::global_norm(&g_down)?;
                out.g_pre_norm = crate::optim::global_norm(&g_pre)?;
                out.cos = crate::value::cosine(&g_down, &g_pre)?
                    .f_double_value(&[])
                    .op("cos")?;
            }
            for c in &constructions {
                if let Some(r) = self.designer.regularizer(c)? {
                    let r = r.f_to_kind(Kind::Double)?;
                    reg = Some(match reg {
                        Some(acc) => acc + r,
                        None => r,
                    });
                }
            }
        }

        // L_meta = −V + λ·R(φ, c)
        let v = Tensor::f_stack(&values, 0)?.f_mean(Kind::Double)?;
        let mut l_meta = -&v;
        if let Some(r) = &reg {
            out.regularizer = r.f_double_value(&[])?;
            l_meta += r * self.lambda;
        }
        out.value = v.f_double_value(&[])?;
        if self.estimator.diagnostic == Some(crate::diagnostics::Diagnostic::Frozen) {
            return Ok(out); // diagnostic `frozen`: V and R are logged, φ never moves
        }

        // φ ← Opt_φ(∇_φ L_meta); a non-finite value or gradient skips the update
        let phi: Vec<Tensor> = self.phi.tensors().map(Tensor::shallow_clone).collect();
        let mut g_phi = grad(&l_meta, &phi, false)?;
        mean_across(self.dp, &mut g_phi)?; // ∇φ of the global V is the mean of the local ones
        if !out.value.is_finite() || !crate::optim::global_norm(&g_phi)?.is_finite() {
            out.skipped = true;
            return Ok(out);
        }
        opt_phi.step(self.phi, &g_phi, lr_phi)?;
        Ok(out)
    }
}

pub use vpt_sdk::objective::grad;

/// L_pre(θ; B_u, c) over the batches of one step: the mean of each batch's objective
/// ([`vpt_sdk::objective::pretrain_objective`], which also refuses feedback batches).
pub fn pretrain_objective(
    task: &mut dyn Task,
    batches: &[&Batch],
    constructions: &[Construction],
) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (b, c) in batches.iter().zip(constructions) {
        let loss = vpt_sdk::objective::pretrain_objective(task, b, c)?;
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    let total = total.ok_or_else(|| crate::Error::Msg("no unlabeled batch".into()))?;
    Ok(total / batches.len() as f64)
}

fn weighted_sum(g_sets: &[Vec<Tensor>], slots: &[FeedbackSlot]) -> Vec<Tensor> {
    let mut acc: Vec<Tensor> = g_sets[0].iter().map(|g| g * slots[0].weight).collect();
    for (g, f) in g_sets.iter().zip(slots).skip(1) {
        for (a, x) in acc.iter_mut().zip(g) {
            *a = &*a + x * f.weight;
        }
    }
    acc
}

/// Indices of the batches of `domain`.
fn domain_batches(unlabeled: &[Batch], domain: u32) -> Vec<usize> {
    (0..unlabeled.len())
        .filter(|&k| unlabeled[k].source == BatchSource::Unlabeled { domain })
        .collect()
}
