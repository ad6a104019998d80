//! The safe interfaces a plugin implements: [`Task`] (a modality plus its downstream target)
//! and [`Designer`] (φ: turns an unlabeled batch into a prediction problem).
//!
//! Plugins return losses; only the host runs backward and steps optimizers.

use crate::{Batch, BatchSource, Construction, Result, State, TensorMap};
use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::Tensor;

/// Named scalar metrics, e.g. `feedback_loss`, `general_loss`, `pass@1`.
pub type Metrics = BTreeMap<String, f64>;

/// One feedback set of a task (a labeled downstream target).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeedbackSetInfo {
    /// Name used in configs and metrics.
    pub name: String,
    /// Index of the unlabeled domain it pairs with under domain-matched alignment.
    pub domain: u32,
}

/// What a built task tells the host about itself (the kinds it consumes are its factory's
/// [`TaskFactory::CONSUMES`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Names (from [`Task::parameters`]) of the alignment subset S ⊂ θ.
    pub alignment: Vec<String>,
    /// Names of its unlabeled domains (at least one).
    pub domains: Vec<String>,
    /// Its feedback sets (at least one).
    pub feedback_sets: Vec<FeedbackSetInfo>,
    /// What a designer needs to know to be built for this task (feature sizes, K, …).
    pub designer_context: serde_json::Value,
    /// Number of examples per unlabeled batch (the length of `pretrain_loss`'s output).
    pub batch_size: usize,
}

/// What `vpt export` asks of a task: write θ (as trained) in a format other tools read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportRequest {
    /// Format name, e.g. `hf`, `gguf`, `safetensors` (each task lists the ones it writes).
    pub format: String,
    /// Element type of the weights: `f32`, `f16`, `q8_0` (which ones a format takes is the task's to say).
    pub dtype: String,
    /// Also write a trained adapter on its own (e.g. LoRA in PEFT's layout), where there is one.
    pub adapter: bool,
    /// Directory to write into (created if missing).
    pub out_dir: PathBuf,
}

/// Settings every task and designer is built with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildContext {
    /// Seed for the component's own initialisation and data order.
    pub seed: u64,
    /// Device string: `cpu` or `cuda:N`.
    pub device: String,
}

impl BuildContext {
    /// The device as a tch `Device` (unknown strings fall back to CPU).
    pub fn device(&self) -> tch::Device {
        match self.device.strip_prefix("cuda") {
            Some(rest) => tch::Device::Cuda(rest.trim_start_matches(':').parse().unwrap_or(0)),
            None => tch::Device::Cpu,
        }
    }
}

/// How the host will differentiate a loss it asks a task for. The host says it; the task never
/// probes grad mode to guess.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, abi_stable::StableAbi)]
pub enum Differentiation {
    /// One backward pass (the learner step): kernels without a double backward (CPU fused
    /// attention) are fine everywhere.
    Once,
    /// A `create_graph` backward to θ_S, then a second backward through it to the construction
    /// (g_pre in the meta step): the path through S must be twice differentiable. Only ∇_{θ_S}
    /// and its derivative in the construction are taken, so layers below S may be constants.
    Twice,
}

/// The learner's forward pass on one unlabeled batch, run once per learner step and shared by
/// the designer's inputs, the meta step and the learner step ([`Task::pretrain_forward`]).
#[derive(Debug, Default)]
pub struct Forward {
    /// What the designer sees of the batch (as [`Task::design_inputs`]); detached from θ.
    pub design_inputs: TensorMap,
    /// Whatever the task keeps for [`Task::pretrain_loss_from_forward`] (e.g. logits attached
    /// to θ's graph, the detached input of S). Opaque to the host, which only hands it back.
    pub state: TensorMap,
}

/// The loss of one unlabeled batch as [`Task::pretrain_loss_from_forward`] returns it: the
/// per-example values and the step's side outputs.
#[derive(Debug)]
pub struct PretrainLoss {
    /// The self-supervised loss per example, shape (B,).
    pub per_example: Tensor,
    /// Tensors the task wants back after the learner step (e.g. the teacher's outputs for a
    /// centre update): the host hands the learner step's side outputs to
    /// [`Task::after_step`] and drops those of the meta step. Detached; empty for most tasks.
    pub side: TensorMap,
}

impl PretrainLoss {
    /// A loss without side outputs.
    pub fn new(per_example: Tensor) -> Self {
        Self {
            per_example,
            side: TensorMap::new(),
        }
    }
}

/// The size of the meta step's slice of an unlabeled batch (paper: the meta step runs on a
/// smaller batch or on shorter sequences than pretraining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaBatch {
    /// Examples kept: the first `rows` of the batch (at least 1).
    pub rows: usize,
    /// Longest sequence kept, for tasks with sequences (their first `max_len` positions);
    /// `None` keeps whole sequences. Tasks without sequences ignore it.
    pub max_len: Option<usize>,
}

/// A modality and its downstream target: learner θ, data streams, losses, evaluation.
///
/// Invariants the host relies on (and tests): `pretrain_loss` depends on the batch and the
/// construction only; `feedback_loss` never changes θ; parameters are the live leaf tensors
/// (the host updates them in place).
///
/// One learner step of V calls [`pretrain_forward`](Self::pretrain_forward) once (with grad on),
/// builds the construction from its design inputs, and takes the loss from
/// [`pretrain_loss_from_forward`](Self::pretrain_loss_from_forward); the meta step before it
/// reuses the same forward through [`meta_batch`](Self::meta_batch) (θ does not change in
/// between). A task that implements only `design_inputs` and `pretrain_loss` works unchanged
/// through the default methods (at the price of a second forward).
pub trait Task: Send {
    /// Static facts: kinds consumed, the subset S, domains, feedback sets.
    fn info(&self) -> TaskInfo;
    /// θ: the trainable learner parameters, by name (leaf tensors with `requires_grad`).
    fn parameters(&self) -> Result<TensorMap>;
    /// The next batch from `source`.
    fn next_batch(&mut self, source: BatchSource) -> Result<Batch>;
    /// What a designer sees of an unlabeled batch; detached from θ.
    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap>;
    /// The self-supervised loss per example, shape (B,), to be differentiated as `diff` says.
    /// A baseline construction means the task's default recipe. Must be differentiable in θ
    /// (θ_S under [`Differentiation::Twice`]) and in the construction's tensors.
    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor>;
    /// L_down on a feedback batch: a scalar, differentiable in θ_S and differentiated once
    /// (layers below S may be held constant).
    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor>;
    /// The learner's forward on an unlabeled batch, called with grad on: the design inputs
    /// (detached) and the state the loss reuses. Default: [`design_inputs`](Self::design_inputs)
    /// under no_grad and no state.
    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        Ok(Forward {
            design_inputs: tch::no_grad(|| self.design_inputs(batch))?,
            state: TensorMap::new(),
        })
    }
    /// [`pretrain_loss`](Self::pretrain_loss) of a batch whose forward is `state` (from
    /// [`pretrain_forward`](Self::pretrain_forward) of this batch, or from
    /// [`meta_batch`](Self::meta_batch); empty when there was none), with the step's side
    /// outputs. `per_example` must equal `pretrain_loss(batch, construction, diff)`. The host
    /// takes the learner step's loss from here. Default: ignores `state`, no side outputs.
    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<PretrainLoss> {
        let _ = state;
        Ok(PretrainLoss::new(self.pretrain_loss(
            batch,
            construction,
            diff,
        )?))
    }
    /// The meta step's slice of an unlabeled batch and of its forward, `size` large. Default:
    /// the first `size.rows` rows of every tensor (see [`narrow_rows`]).
    fn meta_batch(
        &mut self,
        batch: &Batch,
        forward: &Forward,
        size: MetaBatch,
    ) -> Result<(Batch, Forward)> {
        let rows = size.rows as i64;
        Ok((
            Batch {
                source: batch.source,
                tensors: narrow_rows(&batch.tensors, rows)?,
            },
            Forward {
                design_inputs: narrow_rows(&forward.design_inputs, rows)?,
                state: narrow_rows(&forward.state, rows)?,
            },
        ))
    }
    /// Called before each meta step (e.g. refit probe heads on frozen features).
    fn prepare_feedback(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called after each learner step (e.g. update an EMA teacher) with the side outputs of its
    /// losses ([`PretrainLoss::side`], one map per unlabeled batch in domain order); returns
    /// named scalar metrics of the step (e.g. a teacher's entropy), which land in the step's
    /// record of `metrics.jsonl`. Default: none.
    fn after_step(&mut self, step: u64, side: &[TensorMap]) -> Result<Metrics> {
        let _ = (step, side);
        Ok(Metrics::new())
    }
    /// Held-out metrics; must include `feedback_loss` and `general_loss`. `limit` caps the
    /// number of evaluation examples.
    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics>;
    /// Everything needed to resume exactly (buffers, data cursors; θ itself is saved by the host).
    fn state(&self) -> Result<State>;
    /// Restores what [`state`](Self::state) saved.
    fn load_state(&mut self, state: State) -> Result<()>;
    /// Writes θ as `request` asks (`vpt export`) and returns the files written. Default: an
    /// error saying this task cannot export.
    fn export(&self, request: &ExportRequest) -> Result<Vec<PathBuf>> {
        Err(crate::Error::msg(format!(
            "this task cannot export (asked for format `{}`)",
            request.format
        )))
    }
}

/// The first `rows` rows (dim 0) of every tensor of `map` (all of a tensor with fewer rows;
/// scalars as they are). Views: a graph-attached tensor stays attached.
pub fn narrow_rows(map: &TensorMap, rows: i64) -> Result<TensorMap> {
    map.iter()
        .map(|(n, t)| {
            let t = match t.size().first() {
                Some(&b) if b > rows => t.f_narrow(0, 0, rows.max(1))?,
                _ => t.shallow_clone(),
            };
            Ok((n.to_string(), t))
        })
        .collect()
}

/// φ: decides how each unlabeled batch becomes a prediction problem.
///
/// The kind it produces is its factory's [`DesignerFactory::PRODUCES`].
pub trait Designer: Send {
    /// φ by name (leaf tensors with `requires_grad`); empty for fixed designers (controls).
    fn parameters(&self) -> Result<TensorMap>;
    /// Builds a construction from the task's design inputs, differentiable in φ.
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction>;
    /// Named scalar metrics of a construction it made (e.g. its mean gate), reported for each
    /// learner step's construction in `metrics.jsonl` (averaged over the step's batches).
    /// Default: none.
    fn metrics(&self, _construction: &Construction) -> Result<Metrics> {
        Ok(Metrics::new())
    }
    /// R(φ, c): a scalar regulariser, or `None`.
    fn regularizer(&mut self, _construction: &Construction) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// State beyond φ (φ itself is saved by the host).
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }
    /// Restores what [`state`](Self::state) saved.
    fn load_state(&mut self, _state: State) -> Result<()> {
        Ok(())
    }
}

/// A task type a plugin exports: a name, a typed config (its schema is shown by `vpt schema`),
/// and a constructor.
pub trait TaskFactory {
    /// Name used in configs (`task.name`).
    const NAME: &'static str;
    /// One line for `vpt plugins list`.
    const DESCRIPTION: &'static str;
    /// The construction kinds its `pretrain_loss` accepts besides the baseline, declared once
    /// (e.g. `&[vpt_sdk::kinds::LM_SOFT_TARGETS]`): the manifest lists them, and the export
    /// glue refuses any other kind and checks each construction against its spec before the
    /// task sees it.
    const CONSUMES: &'static [crate::KindSpec];
    /// Its design inputs (what [`Task::design_inputs`] returns): names, dtypes, symbolic shapes
    /// and meaning, shown by `vpt plugins inspect` and checked by the testing harness.
    const DESIGN_INPUTS: &'static [crate::TensorSpec] = &[];
    /// True when the task shards its batches by [`data_shard`] (rank r of W takes its slice
    /// of every global batch); the host refuses data-parallel runs of tasks that do not.
    const DATA_PARALLEL: bool = false;
    /// The formats [`Task::export`] writes, each with the element types it takes
    /// (e.g. `&[("safetensors", &["f32", "f16"])]`): the manifest lists them, so the host
    /// refuses a bad `vpt export --format` / `--dtype` before building the task. Empty: not
    /// declared (the task's `export` checks the request itself).
    const EXPORTS: &'static [(&'static str, &'static [&'static str])] = &[];
    /// Its config; `#[serde(deny_unknown_fields)]` is expected.
    type Config: DeserializeOwned + JsonSchema;
    /// Builds the task.
    fn build(config: Self::Config, ctx: &BuildContext) -> Result<Box<dyn Task>>;
}

/// A designer type a plugin exports.
pub trait DesignerFactory {
    /// Name used in configs (`designer.name`).
    const NAME: &'static str;
    /// One line for `vpt plugins list`.
    const DESCRIPTION: &'static str;
    /// The construction kind it produces, declared once (e.g. `vpt_sdk::kinds::EXAMPLE_WEIGHTS`).
    const PRODUCES: crate::KindSpec;
    /// For a designer whose config chooses the kind it produces (e.g. one written in Python):
    /// the name of that config field, a string naming the kind. The host then reads the kind
    /// from the designer's config, and [`PRODUCES`](Self::PRODUCES) only names the field in
    /// listings (its tensors are not shown). `None` (the default): the kind is `PRODUCES`.
    const KIND_FROM_CONFIG: Option<&'static str> = None;
    /// Its config; `#[serde(deny_unknown_fields)]` is expected.
    type Config: DeserializeOwned + JsonSchema;
    /// Builds the designer for a task whose [`TaskInfo::designer_context`] is `task_context`.
    fn build(
        config: Self::Config,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>>;
}

/// This process's place in a data-parallel run: rank `rank` of `world` (0 of 1 when alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataShard {
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
}

impl DataShard {
    /// The rows of a global batch of `n` examples this rank owns (contiguous, equal sizes when
    /// `world` divides `n`).
    pub fn rows(&self, n: i64) -> std::ops::Range<i64> {
        let (r, w) = (self.rank as i64, self.world.max(1) as i64);
        (n * r / w)..(n * (r + 1) / w)
    }
}

/// Reads the torchrun contract (`RANK`, `WORLD_SIZE`) that the host runs under; plugins call
/// this to shard their batches (environment variables are shared across the dlopen boundary).
pub fn data_shard() -> DataShard {
    let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let world = get("WORLD_SIZE").unwrap_or(1).max(1);
    DataShard {
        rank: get("RANK").unwrap_or(0).min(world - 1),
        world,
    }
}
