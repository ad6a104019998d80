//! The outer loop (DESIGN §1): batches, meta steps, the learner step, budget, evaluation,
//! checkpoints and metrics. The meta step itself lives in `meta.rs`.

use crate::{
    budget::{is_meta_step, step_seed, Budget},
    checkpoint::{self, add_prefixed, with_prefix, Checkpoint},
    config::{Precondition, RunConfig},
    error::HostTchContext,
    estimators::{self, Diagnostic, EstimatorEntry},
    fileio::atomic_write,
    interrupt,
    loader::Plugins,
    meta::{FeedbackSlot, MetaStep},
    optim::{self, lr_at, Optimizer},
    parallel::{mean_across, DataParallel},
    phases::Phases,
    progress::{self, Progress},
    records::{EvalRecord, MetaRecord, Record, TrainRecord},
    rundir::RunDir,
    Error, Result,
};
use serde::Serialize;
use std::time::Instant;
use tch::Tensor;
use vpt_sdk::value::{clip_global_norm, grad, mean_pretrain_objective};
use vpt_sdk::{
    Batch, BatchSource, BuildContext, Construction, Designer, Differentiation, Forward, Metrics,
    Task, TaskInfo, TensorMap, KIND_EXAMPLE_WEIGHTS,
};

/// Consecutive non-finite learner losses after which the run stops with an error.
const MAX_NONFINITE_IN_A_ROW: u64 = 10;

pub use crate::records::Counters;

/// A built run: task, designer, parameters, optimizers and position.
pub struct Session {
    /// The resolved config.
    pub cfg: RunConfig,
    task: Box<dyn Task>,
    designer: Option<Box<dyn Designer>>,
    info: TaskInfo,
    theta: TensorMap,
    s: TensorMap,
    /// Positions of S's tensors in θ (for the learner optimizer's preconditioner on S).
    s_in_theta: Vec<usize>,
    phi: TensorMap,
    opt_theta: Box<dyn Optimizer>,
    opt_phi: Box<dyn Optimizer>,
    estimator: &'static EstimatorEntry,
    feedback: Vec<FeedbackSlot>,
    /// Learner steps completed.
    pub step: u64,
    /// Charged seconds (learner + meta).
    pub seconds: f64,
    /// Skip/step counters.
    pub counters: Counters,
    dp: Option<DataParallel>,
    /// Seconds per phase of `train_step`, accumulated when on (`vpt bench`).
    pub phases: Option<Phases>,
    /// ‖∇φ‖ of the run's first meta steps, for the zero-gradient warning.
    first_phi_norms: Vec<f64>,
}

impl Session {
    /// Loads the plugins the config names, builds task and designer, checks kinds and S.
    /// Relative paths in the component configs are resolved first ([`RunConfig::resolve_paths`]).
    pub fn build(mut cfg: RunConfig, plugins: &mut Plugins) -> Result<Session> {
        cfg.resolve_paths(plugins)?;
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads);
        }
        let ctx = BuildContext {
            seed: cfg.run.seed,
            device: cfg.run.device.clone(),
        };
        let task_plugin = plugins.get(&cfg.task.plugin)?;
        let consumes = task_plugin
            .manifest
            .tasks
            .iter()
            .find(|t| t.name == cfg.task.name)
            .map(|t| t.kinds.clone())
            .ok_or_else(|| {
                Error::config(
                    "task.name",
                    format!(
                        "plugin `{}` has no task `{}`",
                        cfg.task.plugin, cfg.task.name
                    ),
                )
            })?;
        let task: Box<dyn Task> = Box::new(
            task_plugin
                .new_task(&cfg.task.name, &cfg.task.config, &ctx)
                .map_err(|e| under(e, "task.config"))?,
        );
        let info = task.info();

        let designer: Option<Box<dyn Designer>> = match cfg.active_designer() {
            None => None,
            Some(d) => {
                let plugin = plugins.get(d.plugin.as_deref().unwrap_or(&cfg.task.plugin))?;
                let manifest = plugin
                    .manifest
                    .designers
                    .iter()
                    .find(|m| m.name == d.name)
                    .ok_or_else(|| {
                        Error::config(
                            "designer.name",
                            format!(
                                "plugin `{}` has no designer `{}`",
                                plugin.manifest.plugin, d.name
                            ),
                        )
                    })?;
                let kind = manifest.produced_kind(&d.config)?;
                if kind != KIND_EXAMPLE_WEIGHTS && !consumes.contains(&kind) {
                    return Err(Error::config("designer.name", format!(
                        "designer `{}` produces `{kind}`, but task `{}` consumes only [{}] (and {KIND_EXAMPLE_WEIGHTS})",
                        d.name, cfg.task.name, consumes.join(", "))));
                }
                Some(Box::new(
                    plugin
                        .new_designer(&d.name, &d.config, &info.designer_context, &ctx)
                        .map_err(|e| under(e, "designer.config"))?,
                ))
            }
        };

        // θ: the trainable learner parameters; S ⊂ θ; φ.
        let theta: TensorMap = task
            .parameters()?
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        for name in &info.alignment {
            if theta.get(name).is_none() {
                return Err(Error::Msg(format!(
                    "task `{}`: alignment parameter `{name}` is not a trainable parameter",
                    cfg.task.name
                )));
            }
        }
        let s = theta.select(&info.alignment)?;
        let theta_names = theta.names();
        let s_in_theta = info
            .alignment
            .iter()
            .filter_map(|n| theta_names.iter().position(|m| m == n))
            .collect();
        let phi = match &designer {
            Some(d) => d.parameters()?,
            None => TensorMap::new(),
        };

        let dp = DataParallel::from_env(&cfg.run.device)?;
        if let Some(dp) = &dp {
            let manifest = plugins
                .get(&cfg.task.plugin)?
                .task_manifest(&cfg.task.name)
                .cloned();
            if !manifest.is_some_and(|m| m.data_parallel) {
                return Err(Error::Msg(format!(
                    "task `{}` does not shard its batches (TaskFactory::DATA_PARALLEL is false); run it with WORLD_SIZE=1",
                    cfg.task.name
                )));
            }
            if cfg.meta.estimator == "cosine" {
                return Err(Error::config("meta.estimator", "cosine is not yet supported with WORLD_SIZE > 1 (it needs the global ‖g_pre‖); use exact"));
            }
            dp.broadcast(&theta)?;
            dp.broadcast(&phi)?;
        }
        let feedback = feedback_slots(&cfg, &info)?;
        let estimator = estimators::lookup(&cfg.meta.estimator)
            .map_err(|m| Error::config("meta.estimator", m))?;
        Ok(Session {
            opt_theta: optim::build(&cfg.learner)?,
            opt_phi: optim::build(&cfg.designer_optim)?,
            cfg,
            task,
            designer,
            info,
            theta,
            s,
            s_in_theta,
            phi,
            estimator,
            feedback,
            step: 0,
            seconds: 0.0,
            counters: Counters::default(),
            dp,
            phases: None,
            first_phi_norms: Vec::new(),
        })
    }

    /// The learner optimizer's diagonal preconditioner on S (`meta.precondition = "adam"`'s P),
    /// `None` for the identity (SGD, or no learner step taken yet).
    pub fn learner_preconditioner(&self) -> Result<Option<Vec<Tensor>>> {
        self.opt_theta.preconditioner(&self.s_in_theta)
    }

    /// A copy of the learner optimizer restricted to S: the same algorithm, config and state
    /// (moments, step count) for S's tensors, so one of its steps on S is the step the
    /// learner's optimizer would take there.
    pub fn learner_optimizer_on_s(&self) -> Result<Box<dyn Optimizer>> {
        let mut opt = optim::build(&self.cfg.learner)?;
        let state = optim::select_state(&self.opt_theta.state(), &self.s_in_theta);
        if !state.is_empty() {
            opt.load_state(&state)?; // copies: the learner's own state is untouched
        }
        Ok(opt)
    }

    /// True on the rank that evaluates, logs and checkpoints (rank 0, or the only process).
    pub fn is_main(&self) -> bool {
        self.dp.as_ref().is_none_or(|dp| dp.rank() == 0)
    }

    /// The task's info.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// θ (trainable learner parameters).
    pub fn theta(&self) -> &TensorMap {
        &self.theta
    }

    /// φ (empty without a designer).
    pub fn phi(&self) -> &TensorMap {
        &self.phi
    }

    /// θ_S.
    pub fn alignment_subset(&self) -> &TensorMap {
        &self.s
    }

    /// The task, for probes and tests.
    pub fn task_mut(&mut self) -> &mut dyn Task {
        self.task.as_mut()
    }

    fn meta_due(&self) -> bool {
        self.estimator.align.is_some()
            && !self.phi.is_empty()
            && is_meta_step(self.step, self.cfg.meta.burn_in, self.cfg.meta.period)
    }

    /// The unlabeled batches of one learner step (one per domain).
    pub fn next_unlabeled(&mut self) -> Result<Vec<Batch>> {
        (0..self.info.domains.len() as u32)
            .map(|domain| Ok(self.task.next_batch(BatchSource::Unlabeled { domain })?))
            .collect()
    }

    /// What the designer sees of each batch (empty maps without a designer), under no_grad.
    pub fn design_inputs(&mut self, batches: &[Batch]) -> Result<Vec<TensorMap>> {
        if self.designer.is_none() {
            return Ok(batches.iter().map(|_| TensorMap::new()).collect());
        }
        tch::no_grad(|| {
            batches
                .iter()
                .map(|b| Ok(self.task.design_inputs(b)?))
                .collect()
        })
    }

    /// The learner's forward of each batch, run once per step with grad on (its design inputs
    /// serve the meta step and the learner step; θ does not change in between). Without a
    /// designer nothing runs here: the loss makes its own forward.
    pub fn forwards(&mut self, batches: &[Batch]) -> Result<Vec<Forward>> {
        if self.designer.is_none() {
            return Ok(batches.iter().map(|_| Forward::default()).collect());
        }
        Ok(batches
            .iter()
            .map(|b| self.task.pretrain_forward(b))
            .collect::<vpt_sdk::Result<_>>()?)
    }

    /// c = detach(designer(inputs)) under no_grad: what the learner step trains on.
    pub fn constructions<'a>(
        &mut self,
        inputs: impl IntoIterator<Item = &'a TensorMap>,
    ) -> Result<Vec<Construction>> {
        tch::no_grad(|| {
            inputs
                .into_iter()
                .map(|x| match self.designer.as_mut() {
                    None => Ok(Construction::baseline()),
                    Some(d) => Ok(d.construct(x)?.detached()),
                })
                .collect()
        })
    }

    /// The learner's constructions of `batches` (design inputs, then the designer, detached).
    pub fn learner_constructions(&mut self, batches: &[Batch]) -> Result<Vec<Construction>> {
        let inputs = self.design_inputs(batches)?;
        self.constructions(&inputs)
    }

    fn mark(&mut self, phase: &str, since: Instant) {
        if let Some(p) = self.phases.as_mut() {
            p.add(phase, since);
        }
    }

    /// One learner step (preceded by a meta step when due). Returns its record.
    pub fn train_step(&mut self) -> Result<Record> {
        let started = Instant::now();
        let seed = step_seed(self.cfg.run.seed, self.step);
        tch::manual_seed(seed);
        // 1. B_u ← next unlabeled batch, and the learner's forward of it: one per step (θ is the
        //    same in the meta and the learner step, so its design inputs serve both)
        let batches = self.next_unlabeled()?;
        let t = Instant::now();
        let forwards = self.forwards(&batches)?;
        self.mark("learner forward", t);

        // 2. meta step: φ moves, θ does not
        let mut meta = match self.meta_due() {
            true => Some(self.meta_step(&batches, &forwards)?),
            false => None,
        };

        // 3. c = detach(designer(inputs(B_u))) with the updated φ; the learner's randomness
        //    does not depend on whether a meta step ran (reseeded).
        tch::manual_seed(seed ^ 0x1EA5);
        let t = Instant::now();
        let mut constructions = self.constructions(forwards.iter().map(|f| &f.design_inputs))?;
        self.mark("designer forward", t);
        if self.oracle_due() {
            // diagnostic `oracle`: the targets are set from g_down (diagnostics.rs)
            let (c, m) = self.oracle_targets(&batches, constructions)?;
            (constructions, meta) = (c, Some(m));
        }

        // 4. θ ← Opt_θ(∇θ L_pre(θ; B_u, c)), the baseline's optimizer and schedule; the loss
        //    reuses the forward (differentiated once: fused kernels allowed)
        let lr = lr_at(self.step, &self.cfg.learner, self.cfg.run.steps);
        let t = Instant::now();
        let refs: Vec<&Batch> = batches.iter().collect();
        let states: Vec<&TensorMap> = forwards.iter().map(|f| &f.state).collect();
        let objective = mean_pretrain_objective(
            self.task.as_mut(),
            &refs,
            &states,
            &constructions,
            Differentiation::Once,
        )?;
        let (loss, side) = (objective.loss, objective.side);
        let loss_value = loss.f_double_value(&[])?;
        self.mark("learner loss", t);
        // A NaN loss gives NaN gradients, which the all-reduce spreads to every rank, so all
        // ranks take the same skip decision.
        let t = Instant::now();
        let theta: Vec<Tensor> = self.theta.tensors().map(Tensor::shallow_clone).collect();
        let mut grads = grad(&loss, &theta, false)?;
        drop((loss, forwards));
        mean_across(self.dp.as_ref(), &mut grads)?;
        self.mark("learner backward", t);
        let t = Instant::now();
        let norm = clip_global_norm(&mut grads, self.cfg.learner.clip)?;
        if norm.is_finite() && (self.dp.is_some() || loss_value.is_finite()) {
            self.opt_theta.step(&self.theta, &grads, lr)?;
            self.counters.nonfinite_in_a_row = 0;
        } else {
            self.skip_learner_step()?;
        }
        drop(grads);
        self.mark("learner optimizer", t);
        let mut metrics = self.designer_metrics(&constructions)?;
        metrics.extend(self.task.after_step(self.step, &side)?);

        self.step += 1;
        self.seconds += started.elapsed().as_secs_f64();
        if let (Some(dp), Some(_)) = (&self.dp, self.cfg.run.wall_clock) {
            self.seconds = dp.mean_scalar(self.seconds)?; // every rank stops at the same step
        }
        Ok(Record::Train(TrainRecord {
            step: self.step,
            seconds: self.seconds,
            lr,
            pretrain_loss: loss_value,
            meta,
            metrics,
        }))
    }

    /// The designer's metrics of the step's constructions, averaged over its batches.
    fn designer_metrics(&self, constructions: &[Construction]) -> Result<Metrics> {
        let Some(d) = self.designer.as_deref() else {
            return Ok(Metrics::new());
        };
        let mut sum = Metrics::new();
        for c in constructions {
            for (k, v) in d.metrics(c)? {
                *sum.entry(k).or_default() += v / constructions.len() as f64;
            }
        }
        Ok(sum)
    }

    /// Runs the meta step of this learner step on its batches and forwards, and counts it.
    fn meta_step(&mut self, batches: &[Batch], forwards: &[Forward]) -> Result<MetaRecord> {
        let designer = self
            .designer
            .as_deref_mut()
            .expect("meta_due implies a designer");
        let precondition = match self.cfg.meta.precondition {
            Precondition::None => None,
            Precondition::Adam => self.opt_theta.preconditioner(&self.s_in_theta)?,
        };
        let out = MetaStep {
            task: self.task.as_mut(),
            designer,
            s: &self.s,
            phi: &self.phi,
            feedback: &self.feedback,
            estimator: self.estimator,
            lambda: self.cfg.meta.lambda,
            domain_matched: self.cfg.meta.domain_matched,
            dp: self.dp.as_ref(),
            batch_fraction: self.cfg.meta.batch_fraction,
            max_seq_len: self.cfg.meta.max_seq_len,
            clip: self.cfg.designer_optim.clip,
            precondition,
            phases: self.phases.as_mut(),
        }
        .run(
            batches,
            forwards,
            self.opt_phi.as_mut(),
            lr_at(self.counters.meta_steps, &self.cfg.designer_optim, None),
        )?;
        self.warn_on_zero_gradient(&out);
        self.counters.meta_steps += 1;
        self.counters.meta_skipped += out.skipped as u64;
        Ok(out)
    }

    /// Warns once, on stderr, when φ's gradient was exactly zero at each of the run's first
    /// meta steps ([`crate::meta::zero_gradient_warning`]; the report repeats it).
    fn warn_on_zero_gradient(&mut self, out: &MetaRecord) {
        let first = self.counters.meta_steps < crate::meta::ZERO_GRADIENT_STEPS as u64;
        if !first || out.skipped || self.estimator.diagnostic == Some(Diagnostic::Frozen) {
            return;
        }
        self.first_phi_norms.push(out.phi_grad_norm);
        if let Some(w) = crate::meta::zero_gradient_warning(&self.first_phi_norms) {
            if self.is_main() {
                eprintln!("warning: {w}");
            }
        }
    }

    /// Whether the diagnostic `oracle` sets this step's targets.
    fn oracle_due(&self) -> bool {
        self.estimator.diagnostic == Some(Diagnostic::Oracle) && self.step >= self.cfg.meta.burn_in
    }

    /// The oracle's constructions (moved along ∂V/∂c from the designer's) and its record.
    fn oracle_targets(
        &mut self,
        batches: &[Batch],
        constructions: Vec<Construction>,
    ) -> Result<(Vec<Construction>, MetaRecord)> {
        let designer = self.designer.as_deref_mut().ok_or_else(|| {
            Error::config("designer", "the oracle starts from a designer's output")
        })?;
        let s: Vec<Tensor> = self.s.tensors().map(Tensor::shallow_clone).collect();
        crate::diagnostics::Oracle {
            task: self.task.as_mut(),
            designer,
            s: &s,
            feedback: &self.feedback,
            dp: self.dp.as_ref(),
        }
        .targets(batches, constructions)
    }

    fn skip_learner_step(&mut self) -> Result<()> {
        self.counters.learner_skipped += 1;
        self.counters.nonfinite_in_a_row += 1;
        if self.counters.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW {
            return Err(Error::NonFinite { what: format!("pretraining loss or gradient ({MAX_NONFINITE_IN_A_ROW} steps in a row; θ left as it was)"), step: self.step });
        }
        Ok(())
    }

    /// Evaluates the task (not charged to the budget) and adds the host counters.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        tch::manual_seed(step_seed(self.cfg.run.seed ^ 0xE7A1, self.step));
        let mut m = self.task.evaluate(self.cfg.run.eval_limit)?;
        m.insert("meta_steps".into(), self.counters.meta_steps as f64);
        m.insert("meta_skipped".into(), self.counters.meta_skipped as f64);
        m.insert(
            "learner_skipped".into(),
            self.counters.learner_skipped as f64,
        );
        Ok(m)
    }

    /// Everything resume needs.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut tensors = TensorMap::new();
        add_prefixed(&mut tensors, "theta", &self.theta);
        add_prefixed(&mut tensors, "phi", &self.phi);
        add_prefixed(&mut tensors, "opt_theta", &self.opt_theta.state());
        add_prefixed(&mut tensors, "opt_phi", &self.opt_phi.state());
        let task_state = self.task.state()?;
        add_prefixed(&mut tensors, "task", &task_state.tensors);
        let designer_state = match &self.designer {
            Some(d) => d.state()?,
            None => Default::default(),
        };
        add_prefixed(&mut tensors, "designer", &designer_state.tensors);
        let config = serde_json::to_value(&self.cfg)
            .map_err(|e| Error::Msg(format!("checkpoint state: the config: {e}")))?;
        let state = checkpoint::State {
            seconds: self.seconds,
            counters: self.counters.clone(),
            task: task_state.json,
            designer: designer_state.json,
            config,
        };
        Ok(Checkpoint {
            step: self.step,
            tensors,
            state,
            source: Default::default(),
        })
    }

    /// Restores a checkpoint into this (freshly built) session; an error names the checkpoint
    /// directory and the file (and, for the task's or designer's state, the field) at fault.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        self.restore_parts(ckpt).map_err(|e| match e {
            Error::Checkpoint { .. } => e,
            e => Error::Checkpoint {
                path: ckpt.source.clone(),
                message: e.to_string(),
            },
        })
    }

    fn restore_parts(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let tensors = |e: Error| Error::Msg(format!("tensors.safetensors: {e}"));
        copy_into(&self.theta, &with_prefix(&ckpt.tensors, "theta"), "theta").map_err(tensors)?;
        copy_into(&self.phi, &with_prefix(&ckpt.tensors, "phi"), "phi").map_err(tensors)?;
        let opt_theta = with_prefix(&ckpt.tensors, "opt_theta");
        if !opt_theta.is_empty() {
            self.opt_theta.load_state(&opt_theta).map_err(tensors)?;
        }
        let opt_phi = with_prefix(&ckpt.tensors, "opt_phi");
        if !opt_phi.is_empty() {
            self.opt_phi.load_state(&opt_phi).map_err(tensors)?;
        }
        self.task
            .load_state(vpt_sdk::State {
                json: ckpt.state.task.clone(),
                tensors: with_prefix(&ckpt.tensors, "task"),
            })
            .map_err(|e| state_error(e, "state.task"))?;
        if let Some(d) = self.designer.as_mut() {
            d.load_state(vpt_sdk::State {
                json: ckpt.state.designer.clone(),
                tensors: with_prefix(&ckpt.tensors, "designer"),
            })
            .map_err(|e| state_error(e, "state.designer"))?;
        }
        self.step = ckpt.step;
        self.seconds = ckpt.state.seconds;
        self.counters = ckpt.state.counters.clone();
        Ok(())
    }
}

/// Maps `feedback` config entries (or all sets) to slots; errors name the set.
fn feedback_slots(cfg: &RunConfig, info: &TaskInfo) -> Result<Vec<FeedbackSlot>> {
    if info.feedback_sets.is_empty() {
        return Err(Error::Msg("the task declares no feedback set".into()));
    }
    if cfg.meta.feedback.is_empty() {
        return Ok(info
            .feedback_sets
            .iter()
            .enumerate()
            .map(|(i, f)| FeedbackSlot {
                set: i as u32,
                weight: 1.0,
                domain: f.domain,
            })
            .collect());
    }
    cfg.meta
        .feedback
        .iter()
        .enumerate()
        .map(|(i, fw)| {
            let idx = info
                .feedback_sets
                .iter()
                .position(|f| f.name == fw.set)
                .ok_or_else(|| {
                    let names: Vec<_> =
                        info.feedback_sets.iter().map(|f| f.name.as_str()).collect();
                    Error::config(
                        format!("meta.feedback[{i}].set"),
                        format!(
                            "no feedback set `{}` (the task has: {})",
                            fw.set,
                            names.join(", ")
                        ),
                    )
                })?;
            Ok(FeedbackSlot {
                set: idx as u32,
                weight: fw.weight,
                domain: info.feedback_sets[idx].domain,
            })
        })
        .collect()
}

fn copy_into(live: &TensorMap, saved: &TensorMap, what: &str) -> Result<()> {
    tch::no_grad(|| {
        for (name, t) in live.iter() {
            let src = saved.get(name).ok_or_else(|| {
                Error::Msg(format!(
                    "checkpoint has no {what} tensor `{name}` (was the architecture changed?)"
                ))
            })?;
            if src.size() != t.size() {
                return Err(Error::Msg(format!(
                    "checkpoint {what} tensor `{name}` has shape {:?}, the model has {:?}",
                    src.size(),
                    t.size()
                )));
            }
            t.shallow_clone()
                .f_copy_(src)
                .op(&format!("restoring {what} tensor `{name}`"))?;
        }
        Ok(())
    })
}

/// A task's or designer's refusal of its saved state, naming `state.json` and the field
/// (under `section`: `state.task`, `state.designer`).
fn state_error(e: vpt_sdk::Error, section: &str) -> Error {
    match e.under(section) {
        vpt_sdk::Error::Config { field, message } => {
            Error::Msg(format!("state.json: `{field}`: {message}"))
        }
        other => Error::Msg(format!("state.json: `{section}`: {other}")),
    }
}

/// A plugin's config error with its field placed under `section` (`task.config`, …).
fn under(e: Error, section: &str) -> Error {
    match e {
        Error::Sdk(e) => Error::Sdk(e.under(section)),
        other => other,
    }
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Learner steps completed.
    pub steps: u64,
    /// Charged seconds.
    pub seconds: f64,
    /// The final evaluation.
    pub metrics: Metrics,
}

/// Runs `session` until its budget is spent (or `halt_after` steps, to simulate an interruption
/// in tests), evaluating and checkpointing on schedule; finishes with an evaluation and a
/// checkpoint. SIGINT/SIGTERM/SIGHUP (single-process runs) stop it after the current step with a
/// checkpoint and [`Error::Interrupted`]. A run resumed after it finished does nothing.
/// Progress goes to stderr as `progress` says.
pub fn run(
    session: &mut Session,
    dir: &RunDir,
    halt_after: Option<u64>,
    progress: &progress::Options,
) -> Result<RunSummary> {
    // plugins that draw pictures of a run (vision's view grids) find its directory here
    std::env::set_var("VPT_RUN_DIR", &dir.path);
    let cfg = session.cfg.run.clone();
    let budget = Budget {
        steps: cfg.steps,
        wall_clock: cfg.wall_clock,
    };
    if session.step > 0 && budget.exhausted(session.step, session.seconds) {
        if let Some(metrics) = dir.finished_at(session.step) {
            eprintln!(
                "{} already finished at step {}; nothing to do (raise run.steps with --set to continue)",
                dir.path.display(),
                session.step
            );
            return Ok(RunSummary {
                steps: session.step,
                seconds: session.seconds,
                metrics,
            });
        }
        if let Some(metrics) = dir.evaluated_at(session.step).filter(|_| session.is_main()) {
            // stopped after its final evaluation and checkpoint, before summary.json: finish
            // writing it, without evaluating (and logging) a second time
            return finish(session, dir, metrics);
        }
    }
    // Under data parallelism every rank must stop at the same step: the default handlers stay.
    if vpt_sdk::data_shard().world == 1 {
        interrupt::install().map_err(|e| Error::Msg(format!("installing signal handlers: {e}")))?;
    }
    let limit = cfg
        .eval_limit
        .map_or("all examples".into(), |n| format!("up to {n} examples"));
    let eval_what = format!("task `{}` ({limit})", session.cfg.task.name);
    let display = Progress::start(progress, budget, session.step, session.seconds, eval_what);
    let main = session.is_main();
    if session.step == 0 && main {
        display.eval_started(0);
        let metrics = session.evaluate()?;
        display.eval_finished();
        dir.log(&Record::Eval(EvalRecord {
            step: 0,
            seconds: 0.0,
            metrics,
        }))?;
    }
    let mut next_eval_seconds = session.seconds + cfg.eval_every_seconds;
    while !budget.exhausted(session.step, session.seconds) {
        let record = session.train_step()?;
        if let Record::Train(TrainRecord {
            pretrain_loss,
            meta,
            ..
        }) = &record
        {
            let value = meta.as_ref().map(|m| m.value);
            display.step(session.step, session.seconds, *pretrain_loss, value);
        }
        dir.log(&record)?;
        let done = budget.exhausted(session.step, session.seconds);
        let eval_due = (cfg.eval_every > 0 && session.step.is_multiple_of(cfg.eval_every))
            || (cfg.eval_every_seconds > 0.0 && session.seconds >= next_eval_seconds);
        if eval_due && !done && main {
            next_eval_seconds = session.seconds + cfg.eval_every_seconds;
            display.eval_started(session.step);
            let metrics = session.evaluate()?;
            display.eval_finished();
            dir.log(&Record::Eval(EvalRecord {
                step: session.step,
                seconds: session.seconds,
                metrics,
            }))?;
        }
        if cfg.checkpoint_every > 0
            && session.step.is_multiple_of(cfg.checkpoint_every)
            && !done
            && main
        {
            checkpoint::save(&dir.path, &session.checkpoint()?, cfg.keep_checkpoints)?;
        }
        if interrupt::requested() && main {
            display.abandon("interrupted");
            checkpoint::save(&dir.path, &session.checkpoint()?, cfg.keep_checkpoints)?;
            return Err(Error::Interrupted {
                step: session.step,
                run_dir: dir.path.clone(),
            });
        }
        if halt_after == Some(session.step) {
            display.abandon("halted (--halt-after)");
            return Ok(RunSummary {
                steps: session.step,
                seconds: session.seconds,
                metrics: Metrics::new(),
            });
        }
    }
    if !main {
        return Ok(RunSummary {
            steps: session.step,
            seconds: session.seconds,
            metrics: Metrics::new(),
        });
    }
    display.eval_started(session.step);
    let metrics = session.evaluate()?;
    display.eval_finished();
    drop(display);
    dir.log(&Record::Eval(EvalRecord {
        step: session.step,
        seconds: session.seconds,
        metrics: metrics.clone(),
    }))?;
    let c = &session.counters;
    if c.meta_steps > 0 && c.meta_skipped == c.meta_steps {
        eprintln!(
            "warning: all {} meta steps were skipped (V or ∇φ not finite): φ never moved, so \
             this run is the baseline",
            c.meta_steps
        );
    }
    checkpoint::save(&dir.path, &session.checkpoint()?, cfg.keep_checkpoints)?;
    finish(session, dir, metrics)
}

/// Warns about a run that never trained, and writes `summary.json` (last: its presence
/// marks the run finished).
fn finish(session: &Session, dir: &RunDir, metrics: Metrics) -> Result<RunSummary> {
    let c = &session.counters;
    if session.step > 0 && c.learner_skipped >= session.step {
        eprintln!(
            "warning: all {} learner steps were skipped (the pretraining loss or its gradient \
             was never finite): θ never moved, so this run's metrics are those of the \
             initial model",
            session.step
        );
    }
    let summary = RunSummary {
        steps: session.step,
        seconds: session.seconds,
        metrics,
    };
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Msg(e.to_string()))?;
    atomic_write(dir.path.join("summary.json"), &json)?;
    Ok(summary)
}
