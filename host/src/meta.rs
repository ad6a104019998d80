//! The meta step (DESIGN §1, step 2): φ is moved to raise the alignment of the feedback
//! gradient with the pretraining gradient. θ is never touched here.

use crate::{
    estimators::{Diagnostic, EstimatorEntry},
    optim::Optimizer,
    parallel::{mean_across, DataParallel},
    phases::Phases,
    records::MetaRecord,
    Result,
};
use std::time::Instant;
use tch::{Kind, Tensor};
use vpt_sdk::value::{
    clip_global_norm, cosine, designer_gradient, feedback_gradient, global_norm, value,
    weighted_sum,
};
use vpt_sdk::{Batch, BatchSource, Designer, Forward, MetaBatch, Task, TensorMap};

/// How many first meta steps [`zero_gradient_warning`] looks at.
pub const ZERO_GRADIENT_STEPS: usize = 3;

/// The warning for a run whose designer gradient ‖∇φ‖ was exactly 0 at each of its first
/// [`ZERO_GRADIENT_STEPS`] meta steps (`norms`: those steps' `phi_grad_norm`, in order, skipped
/// steps left out); `None` when it was not, or when fewer meta steps are known. One rule for the
/// live warning of `vpt run` and the report's.
pub fn zero_gradient_warning(norms: &[f64]) -> Option<String> {
    let first = norms.get(..ZERO_GRADIENT_STEPS)?;
    first.iter().all(|&n| n == 0.0).then(|| {
        format!(
            "φ's gradient was exactly 0 at each of the first {ZERO_GRADIENT_STEPS} meta steps \
             (phi_grad_norm = 0): φ does not move and this arm trains like the baseline. Likely \
             cause: a tensor of the designer's construction is cut off the graph (detach(), \
             no_grad, or computed from the design inputs alone), and \
             `vpt_sdk::testing::check_invariants` names it; otherwise V itself is constant, e.g. \
             batches without loss-bearing positions"
        )
    })
}

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
    /// The meta batch: a fraction of each unlabeled batch, and a longest sequence (0: whole).
    pub batch_fraction: f64,
    /// Longest sequence of the meta batch for tasks with sequences (0: whole sequences).
    pub max_seq_len: usize,
    /// Global-norm clip of ∇φ (`designer_optim.clip`; 0: off).
    pub clip: f64,
    /// P on S (`meta.precondition`): V aligns P ⊙ g_down with g_pre; `None` is the identity.
    pub precondition: Option<Vec<Tensor>>,
    /// Phase timer (`vpt bench`), if on.
    pub phases: Option<&'a mut Phases>,
}

impl MetaStep<'_> {
    /// Runs one meta step on the learner's unlabeled batches (one per domain) and their
    /// forwards (`forwards[i]` belongs to `unlabeled[i]`; θ is the same as when they ran), and
    /// updates φ.
    pub fn run(
        mut self,
        unlabeled: &[Batch],
        forwards: &[Forward],
        opt_phi: &mut dyn Optimizer,
        lr_phi: f64,
    ) -> Result<MetaRecord> {
        let s: Vec<Tensor> = self.s.tensors().map(Tensor::shallow_clone).collect();

        // g_down = detach(∇_S L_down(θ; B_f^j)) per feedback set, B_f sampled independently of B_u
        let started = Instant::now();
        let g_sets = feedback_gradients(self.task, &s, self.feedback, self.dp)?;
        self.mark("meta g_down", started);

        // the meta batch: a slice of each learner batch and of its forward (θ is unchanged)
        let started = Instant::now();
        let (unlabeled, forwards) = self.meta_batches(unlabeled, forwards)?;
        self.mark("meta slice", started);

        // V = Align(g_down, g_pre) with g_pre = ∇_S L_pre(θ; B_u, designer_φ(B_u)), and R(φ, c)
        let started = Instant::now();
        let mut out = MetaRecord {
            rows: unlabeled.iter().map(batch_rows).sum(),
            preconditioned: self.precondition.is_some(),
            max_seq_len: self.max_seq_len as u64,
            ..MetaRecord::default()
        };
        let pairs = self.pairs(g_sets, &unlabeled);
        let (v, reg) = self.value(&s, pairs, &unlabeled, &forwards, &mut out)?;

        // L_meta = −V + λ·R(φ, c)
        let mut l_meta = -&v;
        if let Some(r) = &reg {
            out.regularizer = r.f_double_value(&[])?;
            l_meta += r * self.lambda;
        }
        out.value = v.f_double_value(&[])?;
        self.mark("meta g_pre", started);
        if self.estimator.diagnostic == Some(Diagnostic::Frozen) {
            return Ok(out); // diagnostic `frozen`: V and R are logged, φ never moves
        }

        // ∇_φ L_meta: the second backward, through g_pre's graph
        let started = Instant::now();
        let mut g_phi = designer_gradient(&l_meta, self.phi)?;
        mean_across(self.dp, &mut g_phi)?; // ∇φ of the global V is the mean of the local ones
        out.phi_grad_norm = clip_global_norm(&mut g_phi, self.clip)?;
        self.mark("meta backward", started);

        // φ ← Opt_φ(clip(∇_φ L_meta)); a non-finite value or gradient skips the update
        if !out.value.is_finite() || !out.phi_grad_norm.is_finite() {
            out.skipped = true;
            return Ok(out);
        }
        let started = Instant::now();
        opt_phi.step(self.phi, &g_phi, lr_phi)?;
        self.mark("meta optimizer", started);
        Ok(out)
    }

    /// The pairs (g_down, batch indices): Σ_j ω_j g_j with every batch, or, domain-matched,
    /// each set's g_down with the batches of its own domain.
    fn pairs(
        &self,
        g_sets: Vec<Vec<Tensor>>,
        unlabeled: &[Batch],
    ) -> Vec<(Vec<Tensor>, Vec<usize>)> {
        if self.domain_matched {
            self.feedback
                .iter()
                .zip(g_sets)
                .map(|(f, g)| (g, domain_batches(unlabeled, f.domain)))
                .collect()
        } else {
            vec![(
                weighted_sum(&g_sets, &feedback_weights(self.feedback)),
                (0..unlabeled.len()).collect(),
            )]
        }
    }

    /// V (the mean over the pairs of Align(g_down, g_pre), differentiable in φ) and the
    /// designer's regulariser summed over the constructions; the first pair's norms and cosine
    /// go into `out`.
    fn value(
        &mut self,
        s: &[Tensor],
        pairs: Vec<(Vec<Tensor>, Vec<usize>)>,
        unlabeled: &[Batch],
        forwards: &[Forward],
        out: &mut MetaRecord,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let align = self
            .estimator
            .align
            .ok_or_else(|| crate::Error::Msg("estimator has no alignment".into()))?;
        let (mut values, mut reg) = (Vec::new(), None::<Tensor>);
        for (i, (g_down, idx)) in pairs.into_iter().enumerate() {
            let g_down = (self.estimator.feedback)(g_down)?;
            // V_P = (P g_down)ᵀ g_pre: the learner optimizer's metric (P detached, diagonal)
            let g_down = match &self.precondition {
                Some(p) => g_down.iter().zip(p).map(|(g, p)| g * p).collect(),
                None => g_down,
            };
            // V = Align(g_down, g_pre), g_pre = ∇_S L_pre(θ; B_u, designer_φ(B_u)) built with
            // create_graph (the task is told: Twice)
            let batches: Vec<&Batch> = idx.iter().map(|&k| &unlabeled[k]).collect();
            let fwds: Vec<&Forward> = idx.iter().map(|&k| &forwards[k]).collect();
            let v = value(self.task, self.designer, s, &g_down, &batches, &fwds, align)?;
            if i == 0 {
                out.g_down_norm = global_norm(&g_down)?;
                out.g_pre_norm = global_norm(&v.g_pre)?;
                out.cos = cosine(&g_down, &v.g_pre)?.f_double_value(&[])?;
            }
            for c in &v.constructions {
                if let Some(r) = self.designer.regularizer(c)? {
                    let r = r.f_to_kind(Kind::Double)?;
                    reg = Some(match reg {
                        Some(acc) => acc + r,
                        None => r,
                    });
                }
            }
            values.push(v.v);
        }

        let v = Tensor::f_stack(&values, 0)?.f_mean(Kind::Double)?;
        Ok((v, reg))
    }

    /// Each batch and forward cut to the meta batch (as they are when it is the whole batch).
    fn meta_batches(
        &mut self,
        unlabeled: &[Batch],
        forwards: &[Forward],
    ) -> Result<(Vec<Batch>, Vec<Forward>)> {
        let mut batches = Vec::with_capacity(unlabeled.len());
        let mut sliced = Vec::with_capacity(unlabeled.len());
        for (b, f) in unlabeled.iter().zip(forwards) {
            let size = MetaBatch {
                rows: meta_rows(batch_rows(b) as usize, self.batch_fraction),
                max_len: (self.max_seq_len > 0).then_some(self.max_seq_len),
            };
            let (b, f) = self.task.meta_batch(b, f, size)?;
            batches.push(b);
            sliced.push(f);
        }
        Ok((batches, sliced))
    }

    fn mark(&mut self, phase: &str, since: Instant) {
        if let Some(p) = self.phases.as_deref_mut() {
            p.add(phase, since);
        }
    }
}

/// Examples in the meta batch of a batch of `rows`: ⌈f·rows⌉, at least 1.
pub fn meta_rows(rows: usize, fraction: f64) -> usize {
    ((rows as f64 * fraction).ceil() as usize).clamp(1, rows.max(1))
}

/// Rows of a batch: the leading size of its first tensor (0 when it has none).
fn batch_rows(b: &Batch) -> u64 {
    b.tensors
        .tensors()
        .next()
        .and_then(|t| t.size().first().copied())
        .unwrap_or(0) as u64
}

/// ω_j of each feedback slot.
pub fn feedback_weights(slots: &[FeedbackSlot]) -> Vec<f64> {
    slots.iter().map(|f| f.weight).collect()
}

/// g_down per feedback set: detach(∇_S L_down(θ; B_f^j)), each B_f^j a fresh feedback batch
/// (sampled independently of B_u), averaged across data-parallel ranks.
pub fn feedback_gradients(
    task: &mut dyn Task,
    s: &[Tensor],
    feedback: &[FeedbackSlot],
    dp: Option<&DataParallel>,
) -> Result<Vec<Vec<Tensor>>> {
    task.prepare_feedback()?;
    let mut g_sets = Vec::with_capacity(feedback.len());
    for f in feedback {
        let b_f = task.next_batch(BatchSource::Feedback { set: f.set })?;
        let mut g = feedback_gradient(task, s, &b_f)?;
        mean_across(dp, &mut g)?; // the one all-reduce of g_down
        g_sets.push(g);
    }
    Ok(g_sets)
}

/// Indices of the batches of `domain`.
fn domain_batches(unlabeled: &[Batch], domain: u32) -> Vec<usize> {
    (0..unlabeled.len())
        .filter(|&k| unlabeled[k].source == BatchSource::Unlabeled { domain })
        .collect()
}
