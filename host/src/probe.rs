//! `vpt probe`: the one-step value probe. For many batches, the predicted change
//! η·g_downᵀg_pre is compared with the realised drop of L_down after one step on θ_S: a plain
//! gradient step θ_S ← θ_S − η·g_pre (`--optimizer sgd`; the paper reports Pearson r = 0.657),
//! or one real step of the learner's AdamW from its current state (`--optimizer adam`), for
//! which the preconditioned prediction η·g_downᵀ P g_pre is scored too. The drop that
//! generalises is measured on a fixed held-out set of feedback batches drawn before the first
//! point, so it is independent of every g_down batch (the feedback cursor walks the set
//! without replacement).

use crate::{train::Session, value::pearson, Result};
use serde::Serialize;
use tch::Tensor;
use vpt_sdk::value::{dot, grad, mean_pretrain_objective};
use vpt_sdk::{Batch, BatchSource, Differentiation, TensorMap};

/// The step whose effect the probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStep {
    /// θ_S ← θ_S − η·g_pre.
    Sgd,
    /// One step of the learner's AdamW on θ_S (learning rate η) from its current state.
    Adam,
}

/// One probed batch.
#[derive(Debug, Clone, Serialize)]
pub struct ProbePoint {
    /// η·g_downᵀg_pre.
    pub predicted: f64,
    /// η·g_downᵀ P g_pre with the learner optimizer's preconditioner P (when it has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_preconditioned: Option<f64>,
    /// L_down(θ) − L_down(θ − η·g_pre) on the feedback batch g_down came from.
    pub realised: f64,
    /// The same drop, averaged over the fixed held-out feedback batches (what generalises).
    pub realised_heldout: f64,
}

/// The probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    /// Per-batch points.
    pub points: Vec<ProbePoint>,
    /// Pearson correlation of predicted and realised (same feedback batch).
    pub pearson_r: f64,
    /// Pearson correlation of predicted and realised on the held-out feedback batches.
    pub pearson_r_heldout: f64,
    /// The same two correlations for the preconditioned prediction (when there is one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preconditioned: Option<[f64; 2]>,
    /// The step measured.
    pub step: ProbeStep,
    /// η.
    pub eta: f64,
    /// Number of held-out feedback batches the generalising drop is averaged over.
    pub heldout_batches: usize,
}

/// Most probed batches (`--batches`).
pub const MAX_BATCHES: usize = 1 << 20;
/// Most held-out feedback batches (`--heldout-batches`), all held in memory.
pub const MAX_HELDOUT_BATCHES: usize = 1 << 12;

/// `--batches`: 2 to [`MAX_BATCHES`] (a correlation needs two points).
pub fn check_batches(n: usize) -> std::result::Result<usize, String> {
    if (2..=MAX_BATCHES).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} batches: a correlation needs 2 to {MAX_BATCHES}"
        ))
    }
}

/// `--eta`: a positive, finite step size.
pub fn check_eta(eta: f64) -> std::result::Result<f64, String> {
    if eta > 0.0 && eta.is_finite() {
        Ok(eta)
    } else {
        Err(format!("{eta} is not a positive, finite step size"))
    }
}

/// `--heldout-batches`: 1 to [`MAX_HELDOUT_BATCHES`].
pub fn check_heldout_batches(n: usize) -> std::result::Result<usize, String> {
    if (1..=MAX_HELDOUT_BATCHES).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n}: must be 1 to {MAX_HELDOUT_BATCHES}"))
    }
}

/// Mean L_down over `batches` under no_grad.
fn mean_feedback_loss(task: &mut dyn vpt_sdk::Task, batches: &[Batch]) -> Result<f64> {
    let mut sum = 0.0;
    for b in batches {
        sum += tch::no_grad(|| task.feedback_loss(b))?.f_double_value(&[])?;
    }
    Ok(sum / batches.len().max(1) as f64)
}

/// Probes `batches` unlabeled batches of the session's task with step size `eta`, measuring
/// the generalising drop on `heldout_batches` fixed feedback batches. θ is left exactly as it
/// was.
pub fn probe(
    session: &mut Session,
    batches: usize,
    eta: f64,
    heldout_batches: usize,
    step: ProbeStep,
) -> Result<ProbeResult> {
    let flag = |name: &'static str| move |m: String| crate::Error::config(name, m);
    check_batches(batches).map_err(flag("--batches"))?;
    check_eta(eta).map_err(flag("--eta"))?;
    check_heldout_batches(heldout_batches).map_err(flag("--heldout-batches"))?;
    let s_map = session.alignment_subset().shallow_clone();
    let s: Vec<Tensor> = s_map.tensors().map(Tensor::shallow_clone).collect();
    let precondition = session.learner_preconditioner()?;
    if step == ProbeStep::Adam && precondition.is_none() {
        return Err(crate::Error::config(
            "--optimizer",
            "`adam` measures a step of the learner's AdamW from its state: the learner must \
             use AdamW and have stepped (give --warmup-steps, e.g. 20)",
        ));
    }
    let held: Vec<Batch> = (0..heldout_batches)
        .map(|_| {
            session
                .task_mut()
                .next_batch(BatchSource::Feedback { set: 0 })
        })
        .collect::<vpt_sdk::Result<_>>()?;
    let mut points = Vec::with_capacity(batches);
    let bar = indicatif::ProgressBar::new(batches as u64);
    for _ in 0..batches {
        let b_u = session.next_unlabeled()?;
        let c = session.learner_constructions(&b_u)?;
        let mut adam = match step {
            ProbeStep::Adam => Some(session.learner_optimizer_on_s()?),
            ProbeStep::Sgd => None,
        };
        let task = session.task_mut();
        let b_f: Batch = task.next_batch(BatchSource::Feedback { set: 0 })?;
        let l_down = task.feedback_loss(&b_f)?;
        let l0 = l_down.f_double_value(&[])?;
        let h0 = mean_feedback_loss(task, &held)?;
        let g_down = grad(&l_down, &s, false)?;
        let refs: Vec<&Batch> = b_u.iter().collect();
        let none = TensorMap::new();
        let states = vec![&none; refs.len()];
        let l_pre = mean_pretrain_objective(task, &refs, &states, &c, Differentiation::Once)?.loss;
        let g_pre = grad(&l_pre, &s, false)?;
        let predicted = eta * dot(&g_down, &g_pre)?.f_double_value(&[])?;
        let predicted_preconditioned = match &precondition {
            Some(p) => {
                let pg: Vec<Tensor> = g_down.iter().zip(p).map(|(g, p)| g * p).collect();
                Some(eta * dot(&pg, &g_pre)?.f_double_value(&[])?)
            }
            None => None,
        };
        // one step on θ_S (plain, or the learner's AdamW from a copy of its state), measure,
        // restore exactly
        let saved: Vec<Tensor> = s.iter().map(|p| p.detach().copy()).collect();
        match adam.as_mut() {
            Some(opt) => opt.step(&s_map, &g_pre, eta)?,
            None => tch::no_grad(|| -> Result<()> {
                for (p, g) in s.iter().zip(&g_pre) {
                    let _ = p.shallow_clone().f_sub_(&(g * eta))?;
                }
                Ok(())
            })?,
        }
        let l1 = tch::no_grad(|| task.feedback_loss(&b_f))?.f_double_value(&[])?;
        let h1 = mean_feedback_loss(task, &held)?;
        tch::no_grad(|| -> Result<()> {
            for (p, v) in s.iter().zip(&saved) {
                p.shallow_clone().f_copy_(v)?;
            }
            Ok(())
        })?;
        points.push(ProbePoint {
            predicted,
            predicted_preconditioned,
            realised: l0 - l1,
            realised_heldout: h0 - h1,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let x: Vec<f64> = points.iter().map(|p| p.predicted).collect();
    let y: Vec<f64> = points.iter().map(|p| p.realised).collect();
    let h: Vec<f64> = points.iter().map(|p| p.realised_heldout).collect();
    let xp: Option<Vec<f64>> = points.iter().map(|p| p.predicted_preconditioned).collect();
    Ok(ProbeResult {
        pearson_r: pearson(&x, &y),
        pearson_r_heldout: pearson(&x, &h),
        preconditioned: xp.map(|xp| [pearson(&xp, &y), pearson(&xp, &h)]),
        step,
        points,
        eta,
        heldout_batches,
    })
}
