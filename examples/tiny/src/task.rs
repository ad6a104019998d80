//! The `tiny` task: an MLP classifier trained on pretext labels that are wrong in one region.

use schemars::JsonSchema;
use serde::Deserialize;
use tch::{nn, nn::Module, Device, Kind, Tensor};
use vpt_sdk::checks::{check_elements, check_size};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{
    Batch, BatchSource, BuildContext, Construction, Differentiation, Dtype, Error, FeedbackSetInfo,
    Forward, KindSpec, Metrics, PretrainLoss, Result, State, Task, TaskFactory, TaskInfo,
    TchContext, TensorMap, TensorSpec, Values,
};

/// The construction kind this task consumes: `probs` (B,C), a target distribution per example.
pub const KIND_TINY_SOFT_TARGETS: &str = "tiny.soft_targets/v1";

/// [`KIND_TINY_SOFT_TARGETS`] as a spec: the one declaration of its tensors.
pub const TINY_SOFT_TARGETS: KindSpec = KindSpec::new(KIND_TINY_SOFT_TARGETS, TINY_TENSORS);
const TINY_TENSORS: &[TensorSpec] = &[
    TensorSpec::new(
        "probs",
        Dtype::Float,
        "B,C",
        Values::Distribution,
        "the target distribution over the C classes",
    )
    .differentiable(),
    TensorSpec::new(
        "alpha",
        Dtype::Float,
        "B",
        Values::UnitInterval,
        "the designer's gate: how far it moved off the pretext label",
    )
    .optional(),
];

/// Config of the `tiny` task.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TinyConfig {
    /// Input dimension D (1 to 65536).
    #[serde(default = "defaults::dim")]
    pub dim: i64,
    /// Number of classes C (1 to 65536).
    #[serde(default = "defaults::classes")]
    pub classes: i64,
    /// Hidden width of the learner MLP (1 to 65536).
    #[serde(default = "defaults::hidden")]
    pub hidden: i64,
    /// Examples per unlabeled batch (1 to 2^20).
    #[serde(default = "defaults::batch")]
    pub batch_size: i64,
    /// Examples per feedback batch (1 to 2^20).
    #[serde(default = "defaults::batch")]
    pub feedback_batch_size: i64,
    /// Seed of the teacher and the unlabeled stream.
    #[serde(default)]
    pub data_seed: u64,
    /// Seed of the feedback examples (change it to get a different feedback set).
    #[serde(default = "defaults::feedback_seed")]
    pub feedback_seed: u64,
    /// Number of distinct feedback examples (the stream cycles through them; 1 to 2^24).
    #[serde(default = "defaults::feedback_size")]
    pub feedback_size: i64,
    /// Pretext labels are corrupted where x₀ > this threshold.
    #[serde(default)]
    pub corrupt_threshold: f64,
    /// Number of unlabeled domains (feedback set j pairs with domain j; 1 to 1024).
    #[serde(default = "defaults::domains")]
    pub domains: u32,
    /// Alignment subset S: `all` parameters or only the `last` layer.
    #[serde(default = "defaults::alignment")]
    pub alignment: String,
    /// Held-out examples per evaluation split (1 to 2^24).
    #[serde(default = "defaults::eval_size")]
    pub eval_size: i64,
    /// Test hook: panic inside this method (`new`, `pretrain_loss`, `evaluate`, …).
    #[serde(default)]
    pub panic_in: Option<String>,
    /// Test hook: make this loss NaN (`feedback` or `pretrain`) on every `nan_every`-th call.
    #[serde(default)]
    pub nan_in: Option<String>,
    /// Period of `nan_in` (0: never).
    #[serde(default)]
    pub nan_every: u64,
}

/// Largest `dim`, `classes` and `hidden`.
pub const MAX_WIDTH: i64 = 1 << 16;
/// Largest `batch_size` and `feedback_batch_size`.
pub const MAX_BATCH: i64 = 1 << 20;
/// Largest `feedback_size` and `eval_size`.
pub const MAX_SET: i64 = 1 << 24;
/// Largest `domains`.
pub const MAX_DOMAINS: u32 = 1 << 10;
/// Largest tensor the sizes may ask for together (weights, a batch's activations, a feedback
/// pool or evaluation split), in elements: 2^30, 4 GiB of f32.
pub const MAX_ELEMENTS: u64 = 1 << 30;

impl TinyConfig {
    /// Checks ranges; every error names its field. Sizes are bounded (`dim`, `classes`,
    /// `hidden` ≤ 65536; batch sizes ≤ 2^20; `feedback_size`, `eval_size` ≤ 2^24; `domains` ≤
    /// 1024; no tensor above 2^30 elements) so that no value reaches an allocation that aborts.
    pub fn validate(&self) -> Result<()> {
        if !["all", "last"].contains(&self.alignment.as_str()) {
            return Err(Error::config("alignment", "must be `all` or `last`"));
        }
        check_size("domains", self.domains, 1, MAX_DOMAINS)?;
        let sizes = [
            ("dim", self.dim, MAX_WIDTH),
            ("classes", self.classes, MAX_WIDTH),
            ("hidden", self.hidden, MAX_WIDTH),
            ("batch_size", self.batch_size, MAX_BATCH),
            ("feedback_batch_size", self.feedback_batch_size, MAX_BATCH),
            ("feedback_size", self.feedback_size, MAX_SET),
            ("eval_size", self.eval_size, MAX_SET),
        ];
        for (field, v, max) in sizes {
            check_size(field, v, 1, max)?;
        }
        // Each size is bounded, but products of them are the tensors: bound those too.
        let [d, c, h] = [self.dim, self.classes, self.hidden].map(|v| v as u64);
        let batch = self.batch_size.max(self.feedback_batch_size) as u64;
        let rows = self.feedback_size.max(self.eval_size) as u64;
        check_elements(
            "hidden",
            &[("hidden", h), ("dim + classes", d + c)],
            MAX_ELEMENTS,
        )?;
        check_elements(
            "batch_size",
            &[("batch", batch), ("dim + hidden + classes", d + h + c)],
            MAX_ELEMENTS,
        )?;
        check_elements(
            "feedback_size",
            &[("examples", rows), ("dim + hidden", d + h)],
            MAX_ELEMENTS,
        )?;
        if !self.corrupt_threshold.is_finite() {
            return Err(Error::config(
                "corrupt_threshold",
                "must be a finite number",
            ));
        }
        Ok(())
    }
}

mod defaults {
    pub fn dim() -> i64 {
        16
    }
    pub fn classes() -> i64 {
        4
    }
    pub fn hidden() -> i64 {
        32
    }
    pub fn batch() -> i64 {
        64
    }
    pub fn feedback_seed() -> u64 {
        1
    }
    pub fn feedback_size() -> i64 {
        256
    }
    pub fn domains() -> u32 {
        1
    }
    pub fn alignment() -> String {
        "all".into()
    }
    pub fn eval_size() -> i64 {
        1024
    }
}

/// Registers the `tiny` task.
pub struct TinyTaskFactory;

impl TaskFactory for TinyTaskFactory {
    const NAME: &'static str = "tiny";
    const DESCRIPTION: &'static str =
        "MLP on pretext labels corrupted in one region; clean feedback";
    const CONSUMES: &'static [KindSpec] = &[TINY_SOFT_TARGETS];
    const DESIGN_INPUTS: &'static [TensorSpec] = &[
        TensorSpec::new("x", Dtype::Float, "B,D", Values::Any, "the example's input"),
        TensorSpec::new(
            "pretext_onehot",
            Dtype::Float,
            "B,C",
            Values::Distribution,
            "its (possibly wrong) pretext label, one-hot",
        ),
        TensorSpec::new(
            "example_features",
            Dtype::Float,
            "B,F",
            Values::Any,
            "x ⊕ pretext_onehot (F = D + C)",
        ),
    ];
    const DATA_PARALLEL: bool = true;
    type Config = TinyConfig;
    fn build(config: TinyConfig, ctx: &BuildContext) -> Result<Box<dyn Task>> {
        Ok(Box::new(TinyTask::new(config, ctx)?))
    }
}

/// Stream ids keep the generators of different splits apart.
const UNLABELED: u64 = 1 << 40;
const FEEDBACK: u64 = 2 << 40;
const EVAL_FEEDBACK: u64 = 3 << 40;
const EVAL_GENERAL: u64 = 4 << 40;
const TEACHER: u64 = 5 << 40;

/// The task itself.
pub struct TinyTask {
    cfg: TinyConfig,
    device: Device,
    vs: nn::VarStore,
    fc1: nn::Linear,
    fc2: nn::Linear,
    teacher: Tensor,
    unlabeled_cursor: Vec<u64>,
    feedback_cursor: Vec<u64>,
    feedback_in_pretrain: u64,
    loss_calls: u64,
    /// Learner forwards run on unlabeled batches (saved in `state()`, for tests that count
    /// forwards per learner step).
    unlabeled_forwards: u64,
}

impl TinyTask {
    /// Builds the learner (f64) and the teacher from the config.
    pub fn new(cfg: TinyConfig, ctx: &BuildContext) -> Result<Self> {
        if cfg.panic_in.as_deref() == Some("new") {
            panic!("tiny: panic_in = new");
        }
        cfg.validate()?;
        let device = ctx.device();
        tch::manual_seed(ctx.seed as i64);
        let mut vs = nn::VarStore::new(device);
        let fc1 = nn::linear(vs.root() / "fc1", cfg.dim, cfg.hidden, Default::default());
        let fc2 = nn::linear(
            vs.root() / "fc2",
            cfg.hidden,
            cfg.classes,
            Default::default(),
        );
        vs.double();
        let teacher = gaussian(cfg.data_seed, TEACHER, &[cfg.dim, cfg.classes], device);
        let domains = cfg.domains as usize;
        Ok(TinyTask {
            cfg,
            device,
            vs,
            fc1,
            fc2,
            teacher,
            unlabeled_cursor: vec![0; domains],
            feedback_cursor: vec![0; domains],
            feedback_in_pretrain: 0,
            loss_calls: 0,
            unlabeled_forwards: 0,
        })
    }

    fn check_panic(&self, method: &str) {
        if self.cfg.panic_in.as_deref() == Some(method) {
            panic!("tiny: panic_in = {method}");
        }
    }

    /// This rank's rows of a global batch (all of it when not data-parallel).
    fn shard(&self, t: Tensor) -> Result<Tensor> {
        let rows = vpt_sdk::data_shard().rows(t.size()[0]);
        t.f_narrow(0, rows.start, rows.end - rows.start).op("shard")
    }

    fn shard_len(&self, n: i64) -> i64 {
        let rows = vpt_sdk::data_shard().rows(n);
        rows.end - rows.start
    }

    /// Applies the `nan_in` test hook to a loss of kind `which`.
    fn maybe_nan(&mut self, which: &str, loss: Tensor) -> Tensor {
        if self.cfg.nan_in.as_deref() != Some(which) || self.cfg.nan_every == 0 {
            return loss;
        }
        self.loss_calls += 1;
        if self.loss_calls.is_multiple_of(self.cfg.nan_every) {
            loss * f64::NAN
        } else {
            loss
        }
    }

    fn logits(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).tanh())
    }

    /// Inputs of domain `domain`: N(0, I) shifted by `domain` along axis 1.
    fn inputs(&self, seed: u64, stream: u64, n: i64, domain: u32) -> Result<Tensor> {
        let x = gaussian(seed, stream, &[n, self.cfg.dim], self.device);
        let shift = Tensor::zeros([self.cfg.dim], (Kind::Double, self.device));
        let _ = shift
            .f_narrow(0, 1.min(self.cfg.dim - 1), 1)?
            .f_fill_(domain as f64)?;
        Ok(x + shift)
    }

    fn true_labels(&self, x: &Tensor) -> Result<Tensor> {
        x.f_matmul(&self.teacher)?
            .f_argmax(-1, false)
            .op("teacher labels")
    }

    fn pretext_labels(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.true_labels(x)?;
        let corrupt = x.f_select(1, 0)?.f_gt(self.cfg.corrupt_threshold)?;
        let shifted = (&y + 1).f_remainder(self.cfg.classes)?;
        y.f_where_self(&corrupt.f_logical_not()?, &shifted)
            .op("pretext labels")
    }

    /// The `i`-th feedback batch of set `set`: cycles through `feedback_size` fixed examples.
    fn feedback_examples(
        &self,
        seed: u64,
        stream: u64,
        set: u32,
        start: i64,
        n: i64,
    ) -> Result<(Tensor, Tensor)> {
        let pool = self.inputs(seed, stream + set as u64, self.cfg.feedback_size, set)?;
        let idx = Tensor::arange_start(start, start + n, (Kind::Int64, self.device))
            .remainder(self.cfg.feedback_size);
        let x = pool.f_index_select(0, &idx)?;
        let y = self.true_labels(&x)?;
        Ok((x, y))
    }

    /// Refuses anything but a clean unlabeled batch (counting the attempts).
    fn check_unlabeled(&mut self, batch: &Batch) -> Result<()> {
        let origin = batch.tensors.require("origin")?;
        if !matches!(batch.source, BatchSource::Unlabeled { .. })
            || origin.f_sum(Kind::Int64)?.int64_value(&[]) != 0
        {
            self.feedback_in_pretrain += 1;
            return Err(Error::msg("a feedback example reached pretrain_loss"));
        }
        Ok(())
    }

    /// The learner's logits of an unlabeled batch (one counted forward).
    fn unlabeled_logits(&mut self, batch: &Batch) -> Result<Tensor> {
        self.unlabeled_forwards += 1;
        Ok(self.logits(batch.tensors.require("x")?))
    }

    fn soft_target_ce(&self, x: &Tensor, q: &Tensor) -> Result<Tensor> {
        let logp = self.logits(x).f_log_softmax(-1, Kind::Double)?;
        Ok(-(q * logp).f_sum_dim_intlist(-1, false, Kind::Double)?)
    }
}

/// Mean cross-entropy of `logits` (B,C) against class ids `y` (B,).
fn mean_ce(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let logp = logits.f_log_softmax(-1, Kind::Double)?;
    let picked = logp.f_gather(1, &y.f_unsqueeze(1)?, false)?;
    (-picked).f_mean(Kind::Double).op("cross-entropy")
}

/// N(0,1) tensor of `shape` as a pure function of (seed, stream).
pub fn gaussian(seed: u64, stream: u64, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut rng = SplitMix64::stream(seed, stream);
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_slice(&v).reshape(shape).to_device(device)
}

impl Task for TinyTask {
    fn info(&self) -> TaskInfo {
        let params: Vec<String> = {
            let mut v: Vec<String> = self.vs.variables().into_keys().collect();
            v.sort();
            v
        };
        let alignment = match self.cfg.alignment.as_str() {
            "last" => params
                .into_iter()
                .filter(|n| n.starts_with("fc2."))
                .collect(),
            _ => params,
        };
        TaskInfo {
            alignment,
            domains: (0..self.cfg.domains)
                .map(|d| format!("domain{d}"))
                .collect(),
            feedback_sets: (0..self.cfg.domains)
                .map(|d| FeedbackSetInfo {
                    name: format!("clean{d}"),
                    domain: d,
                })
                .collect(),
            designer_context: serde_json::json!({
                "dim": self.cfg.dim,
                "classes": self.cfg.classes,
                "feature_dim": self.cfg.dim + self.cfg.classes,
            }),
            batch_size: self.cfg.batch_size as usize,
        }
    }

    fn parameters(&self) -> Result<TensorMap> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vars.into_iter().collect())
    }

    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        let origin = |n: i64, v: i64| Tensor::full([n], v, (Kind::Int64, self.device));
        let tensors = match source {
            BatchSource::Unlabeled { domain } => {
                let d = domain as usize;
                let cursor = *self
                    .unlabeled_cursor
                    .get(d)
                    .ok_or_else(|| Error::msg(format!("no domain {domain}")))?;
                self.unlabeled_cursor[d] += 1;
                let stream = UNLABELED + (d as u64) * (1 << 32) + cursor;
                let x = self.shard(self.inputs(
                    self.cfg.data_seed,
                    stream,
                    self.cfg.batch_size,
                    domain,
                )?)?;
                let y = self.pretext_labels(&x)?;
                TensorMap::new()
                    .with("x", x)
                    .with("y_pretext", y)
                    .with("origin", origin(self.shard_len(self.cfg.batch_size), 0))
            }
            BatchSource::Feedback { set } => {
                let s = set as usize;
                let cursor = *self
                    .feedback_cursor
                    .get(s)
                    .ok_or_else(|| Error::msg(format!("no feedback set {set}")))?;
                self.feedback_cursor[s] += 1;
                let n = self.cfg.feedback_batch_size;
                let (x, y) = self.feedback_examples(
                    self.cfg.feedback_seed,
                    FEEDBACK,
                    set,
                    cursor as i64 * n,
                    n,
                )?;
                let (x, y) = (self.shard(x)?, self.shard(y)?);
                TensorMap::new()
                    .with("x", x)
                    .with("y", y)
                    .with("origin", origin(self.shard_len(n), 1))
            }
        };
        Ok(Batch { source, tensors })
    }

    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        let x = batch.tensors.require("x")?.detach();
        let y = batch.tensors.require("y_pretext")?;
        let onehot = y.f_one_hot(self.cfg.classes)?.f_to_kind(Kind::Double)?;
        let features = Tensor::f_cat(&[&x, &onehot], 1)?;
        Ok(TensorMap::new()
            .with("x", x)
            .with("pretext_onehot", onehot)
            .with("example_features", features))
    }

    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        Ok(self
            .pretrain_loss_from_forward(batch, &TensorMap::new(), construction, diff)?
            .per_example)
    }

    /// One forward of the MLP: its logits (attached, kept as the state) and the design inputs.
    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        self.check_unlabeled(batch)?;
        let logits = self.unlabeled_logits(batch)?;
        Ok(Forward {
            design_inputs: self.design_inputs(batch)?,
            state: TensorMap::new().with("logits", logits),
        })
    }

    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        construction: &Construction,
        _diff: Differentiation,
    ) -> Result<PretrainLoss> {
        self.check_panic("pretrain_loss");
        self.check_unlabeled(batch)?;
        let q = if construction.is_baseline() {
            batch
                .tensors
                .require("y_pretext")?
                .f_one_hot(self.cfg.classes)?
                .f_to_kind(Kind::Double)?
        } else {
            // A `tiny.soft_targets/v1` construction, checked against its spec by the SDK glue.
            construction.tensors.require("probs")?.shallow_clone()
        };
        // The logits graph is twice differentiable: the forward's serves both passes.
        let logits = match state.get("logits") {
            Some(l) => l.shallow_clone(),
            None => self.unlabeled_logits(batch)?,
        };
        let logp = logits.f_log_softmax(-1, Kind::Double)?;
        // side output for after_step: the entropy of the learner's prediction per example
        let entropy = -(logp.f_exp()? * &logp)
            .f_sum_dim_intlist(-1, false, Kind::Double)?
            .f_detach()?;
        let loss = -(q * logp).f_sum_dim_intlist(-1, false, Kind::Double)?;
        Ok(PretrainLoss {
            per_example: self.maybe_nan("pretrain", loss),
            side: TensorMap::new().with("entropy", entropy),
        })
    }

    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        let x = batch.tensors.require("x")?;
        let y = batch.tensors.require("y")?;
        let loss = mean_ce(&self.logits(x), y)?;
        Ok(self.maybe_nan("feedback", loss))
    }

    /// Reports `pred_entropy`: the mean entropy of the learner's predictions in the step's
    /// batches (the losses' side outputs).
    fn after_step(&mut self, _step: u64, side: &[TensorMap]) -> Result<Metrics> {
        self.check_panic("after_step");
        let mut total = 0.0;
        for m in side {
            total += m
                .require("entropy")?
                .f_mean(Kind::Double)?
                .f_double_value(&[])?;
        }
        let mut metrics = Metrics::new();
        if !side.is_empty() {
            metrics.insert("pred_entropy".into(), total / side.len() as f64);
        }
        Ok(metrics)
    }

    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics> {
        self.check_panic("evaluate");
        let n = limit.map_or(self.cfg.eval_size, |l| (l as i64).min(self.cfg.eval_size));
        tch::no_grad(|| {
            let mut m = Metrics::new();
            let (mut fb, mut acc, mut acc_corrupt, mut general) = (0.0, 0.0, 0.0, 0.0);
            for d in 0..self.cfg.domains {
                let x = self.inputs(self.cfg.feedback_seed, EVAL_FEEDBACK + d as u64, n, d)?;
                let y = self.true_labels(&x)?;
                let logits = self.logits(&x);
                fb += mean_ce(&logits, &y)?.double_value(&[]);
                let hit = logits
                    .f_argmax(-1, false)?
                    .f_eq_tensor(&y)?
                    .f_to_kind(Kind::Double)?;
                acc += hit.f_mean(Kind::Double)?.double_value(&[]);
                let region = x
                    .f_select(1, 0)?
                    .f_gt(self.cfg.corrupt_threshold)?
                    .f_to_kind(Kind::Double)?;
                acc_corrupt += (&hit * &region).f_sum(Kind::Double)?.double_value(&[])
                    / region.f_sum(Kind::Double)?.double_value(&[]).max(1.0);
                let xg = self.inputs(self.cfg.data_seed, EVAL_GENERAL + d as u64, n, d)?;
                let q = self
                    .pretext_labels(&xg)?
                    .f_one_hot(self.cfg.classes)?
                    .f_to_kind(Kind::Double)?;
                general += self
                    .soft_target_ce(&xg, &q)?
                    .f_mean(Kind::Double)?
                    .double_value(&[]);
            }
            let k = self.cfg.domains as f64;
            m.insert("feedback_loss".into(), fb / k);
            m.insert("general_loss".into(), general / k);
            m.insert("accuracy".into(), acc / k);
            m.insert("corrupt_region_accuracy".into(), acc_corrupt / k);
            Ok(m)
        })
    }

    fn state(&self) -> Result<State> {
        Ok(State {
            json: serde_json::json!({
                "unlabeled_cursor": self.unlabeled_cursor,
                "feedback_cursor": self.feedback_cursor,
                "feedback_in_pretrain": self.feedback_in_pretrain,
                "loss_calls": self.loss_calls,
                "unlabeled_forwards": self.unlabeled_forwards,
            }),
            tensors: TensorMap::new(),
        })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let get = |k: &str| -> Result<Vec<u64>> {
            serde_json::from_value(state.json.get(k).cloned().unwrap_or_default())
                .map_err(|e| Error::msg(format!("tiny state `{k}`: {e}")))
        };
        for (k, want) in [
            ("unlabeled_cursor", self.unlabeled_cursor.len()),
            ("feedback_cursor", self.feedback_cursor.len()),
        ] {
            let got = get(k)?.len();
            if got != want {
                return Err(Error::config(
                    k,
                    format!("has {got} cursors, the task has {want} domains"),
                ));
            }
        }
        self.unlabeled_cursor = get("unlabeled_cursor")?;
        self.feedback_cursor = get("feedback_cursor")?;
        let counter = |k: &str| state.json.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        self.feedback_in_pretrain = counter("feedback_in_pretrain");
        self.loss_calls = counter("loss_calls");
        self.unlabeled_forwards = counter("unlabeled_forwards");
        Ok(())
    }
}
