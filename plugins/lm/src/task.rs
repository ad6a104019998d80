//! The `causal_lm` task: a Llama-family learner θ continued-pretrained on an unlabeled text
//! stream (GSM8K or other JSONL, generated math, Python-doc general text), with feedback and
//! test sets given as data (`crate::labeled`; L_down = NLL of the response tokens, test sets
//! scored by `crate::scorer`) and top-K soft targets as its construction.
//!
//! Losses: the baseline is one-hot next-token CE; with `lm.soft_targets/v1` it is
//! −Σ_k q_k log p_θ(cand_k) on the K candidates. Both are masked token means per example (B,).
//! The host says how a loss is differentiated: the fused attention kernel everywhere, except
//! on the `Twice` (create_graph) pass through S, which uses math attention and the
//! reformulated loss of [`crate::loss::soft_ce_twice`]. Layers below S are constants for ∇_S:
//! the meta step and L_down run them without grad (or reuse the learner forward's detached
//! input of S), and the head runs only at loss-bearing positions.

use crate::data::{
    self, Codec, Cursor, CursorState, Example, Fields, Packer, Record, Row, SplitMix, TokenDoc,
};
use crate::designer::LmDesignContext;
use crate::eval::{self as ev, PassAt};
use crate::general::{self, GeneralText};
use crate::labeled::{self, JsonlSource, SetKind};
use crate::loss::{soft_ce_logits, soft_ce_twice, LossRows};
use crate::mathgen::MathSplits;
use crate::model::{Attention, Config, Llama, Scope};
use crate::scorer::{Scorer, ScorerConfig};
use crate::tokenizer::Tokenizer;
use crate::{gguf, hf};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};
use vpt_sdk::{
    Batch, BatchSource, BuildContext, Construction, Differentiation, Error, ExportRequest,
    FeedbackSetInfo, Forward, MetaBatch, Metrics, Result, State, Task, TaskFactory, TaskInfo,
    TchContext, TensorMap, KIND_LM_SOFT_TARGETS,
};

impl Codec for Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Tokenizer::encode(self, text, false)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        Tokenizer::decode(self, ids)
    }
    fn eos_id(&self) -> i64 {
        Tokenizer::eos_id(self)
    }
    fn chat_prompt(&self, user: &str) -> String {
        Tokenizer::chat_prompt(self, user)
    }
}

// ---------------------------------------------------------------------------------------------
// Config

/// Where the learner comes from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A GGUF file (weights dequantised to f32; tokenizer from its metadata), e.g.
    /// `{ gguf = "${VPT_SMOLLM2_GGUF}" }`.
    Gguf(String),
    /// An HF directory with `config.json`, `model.safetensors`, `tokenizer.json`.
    Hf(String),
    /// A tiny randomly initialised model (`Config::tiny`, 300-token tokenizer) for tests.
    TinyRandom,
}

/// Config of the `causal_lm` task.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CausalLmConfig {
    /// The learner: `{ gguf = "path" }`, `{ hf = "dir" }` or `"tiny_random"`.
    pub model: ModelSource,
    /// Trainable part of θ: `"all"`, `{ last_n = N }` or
    /// `{ lora_last_n = { layers = N, rank = r, alpha = a } }`.
    #[serde(default = "d_trainable")]
    pub trainable: Scope,
    /// Alignment subset S: the last N layers of the trainable part (their LoRA weights under
    /// LoRA). Default: every trainable layer (all of θ for `"all"`).
    #[serde(default)]
    pub alignment_layers: Option<usize>,
    /// Tokens per unlabeled row (T).
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    /// Rows per unlabeled batch (B).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Candidates per position K for soft targets (the true token + the learner's top K−1).
    #[serde(default = "d_top_k")]
    pub top_k: i64,
    /// Seed of the generated data (problems and splits); the run seed only orders the data.
    #[serde(default)]
    pub data_seed: u64,
    /// The unlabeled stream.
    #[serde(default)]
    pub unlabeled: UnlabeledConfig,
    /// The general text (Python docs): part of the stream and the `general_loss` held-out set.
    #[serde(default)]
    pub general: GeneralConfig,
    /// Feedback sets (labeled, steer φ only). Default: one generated set called `math`.
    #[serde(default = "d_feedback")]
    pub feedback: Vec<FeedbackSetConfig>,
    /// Examples per feedback batch.
    #[serde(default = "d_batch")]
    pub feedback_batch_size: usize,
    /// Longest feedback row in tokens (prompt + answer); longer ones keep their tail.
    #[serde(default = "d_max_len")]
    pub feedback_max_len: usize,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
}

/// The unlabeled stream: a mixture of "math" documents (generated and/or JSONL) and general text.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlabeledConfig {
    /// Include generated word problems with worked solutions (plain text, full loss).
    #[serde(default = "d_true")]
    pub generated_math: bool,
    /// Difficulty levels (1–3) of the generated stream.
    #[serde(default = "d_levels")]
    pub levels: Vec<u8>,
    /// JSONL sources: a path of `{"text"}` / `{"prompt","response"}` records, or a labeled set
    /// `{ path, kind = "jsonl" | "gsm8k_jsonl", fields }` read as `Question: …\nAnswer: ` +
    /// response. The loss is on the response only; any prompt of a feedback or test set is
    /// dropped.
    #[serde(default)]
    pub jsonl: Vec<JsonlSource>,
    /// Probability that a document is drawn from the general text instead (0 disables it).
    #[serde(default = "d_general_fraction")]
    pub general_fraction: f64,
}

/// General text from the Debian `python3.11-doc` reST sources.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneralConfig {
    /// Root of the `*.rst.txt` sources.
    #[serde(default = "d_general_root")]
    pub root: String,
    /// Percent of files (by path hash) held out for `general_loss`.
    #[serde(default = "d_heldout_percent")]
    pub heldout_percent: u64,
    /// Shortest paragraph kept, in characters.
    #[serde(default = "d_min_chars")]
    pub min_chars: usize,
    /// Paragraphs are cut at this many characters.
    #[serde(default = "d_max_chars")]
    pub max_chars: usize,
}

/// One feedback set. Its weight ω_j is a host setting (`[[meta.feedback]]`), not a task one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackSetConfig {
    /// Name used in `[[meta.feedback]]` and in metrics (`feedback_loss/<name>`).
    pub name: String,
    /// Source kind: `generated`, `jsonl` or `gsm8k_jsonl` (the GSM8K preset).
    pub kind: SetKind,
    /// The JSONL file (`jsonl` / `gsm8k_jsonl` only).
    #[serde(default)]
    pub path: Option<String>,
    /// JSON field names (default: `prompt`/`response`/`options`; GSM8K: `question`/`answer`).
    /// The feedback loss is the NLL of the response tokens after the prompt.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Difficulty levels (`generated` only).
    #[serde(default = "d_levels")]
    pub levels: Vec<u8>,
    /// Number of examples used for meta steps (`generated`: how many to generate; JSONL: a cap).
    #[serde(default = "d_feedback_size")]
    pub size: usize,
    /// Examples held out from the meta steps for `evaluate`'s `feedback_loss`.
    #[serde(default = "d_heldout")]
    pub heldout: usize,
}

/// The test set and how it is scored.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSetConfig {
    /// Source kind: `generated`, `jsonl` or `gsm8k_jsonl` (the GSM8K preset).
    #[serde(default = "d_generated")]
    pub kind: SetKind,
    /// The JSONL file (`jsonl` / `gsm8k_jsonl` only).
    #[serde(default)]
    pub path: Option<String>,
    /// JSON field names (default: the kind's).
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Difficulty levels (`generated` only).
    #[serde(default = "d_levels")]
    pub levels: Vec<u8>,
    /// Number of test problems (the file's first `size`).
    #[serde(default = "d_test_size")]
    pub size: usize,
    /// `"exact"`, `{ numeric = { pattern = "…" } }` or `"choice"` (default: GSM8K's numeric
    /// scorer for `generated` / `gsm8k_jsonl`, exact match for `jsonl`). Generating scorers
    /// report `pass@1`, `choice` reports `choice_accuracy`.
    #[serde(default)]
    pub scorer: Option<ScorerConfig>,
}

impl TestSetConfig {
    /// The configured scorer, else the kind's default.
    pub fn scorer(&self) -> ScorerConfig {
        self.scorer
            .clone()
            .unwrap_or_else(|| self.kind.default_scorer())
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The pass@k test set.
    #[serde(default)]
    pub test: TestSetConfig,
    /// Held-out general-text rows (of `seq_len` tokens) for `general_loss` / `general_ppl`.
    #[serde(default = "d_general_rows")]
    pub general_rows: usize,
    /// Longest generated answer in tokens.
    #[serde(default = "d_max_new")]
    pub max_new_tokens: usize,
    /// k for pass@k with temperature sampling (0 = off; pass@1 is always greedy).
    #[serde(default)]
    pub pass_k: usize,
    /// Sampling temperature for pass@k.
    #[serde(default = "d_temperature")]
    pub temperature: f64,
    /// Prompts decoded together by greedy evaluation (batched KV-cache decoding).
    #[serde(default = "d_eval_batch")]
    pub batch_size: usize,
    /// Bootstrap resamples for the 95 % intervals (`<metric>.ci_lo` / `.ci_hi`; 0 = none).
    #[serde(default = "d_bootstrap")]
    pub bootstrap: usize,
}

fn d_trainable() -> Scope {
    Scope::LastN(2)
}
fn d_seq_len() -> usize {
    128
}
fn d_batch() -> usize {
    4
}
fn d_top_k() -> i64 {
    64
}
fn d_true() -> bool {
    true
}
fn d_levels() -> Vec<u8> {
    vec![1, 2, 3]
}
fn d_general_fraction() -> f64 {
    0.25
}
fn d_general_root() -> String {
    general::DEFAULT_ROOT.into()
}
fn d_heldout_percent() -> u64 {
    10
}
fn d_min_chars() -> usize {
    200
}
fn d_max_chars() -> usize {
    2000
}
fn d_feedback() -> Vec<FeedbackSetConfig> {
    vec![FeedbackSetConfig {
        name: "math".into(),
        kind: SetKind::Generated,
        path: None,
        fields: None,
        levels: d_levels(),
        size: d_feedback_size(),
        heldout: d_heldout(),
    }]
}
fn d_max_len() -> usize {
    320
}
fn d_feedback_size() -> usize {
    512
}
fn d_heldout() -> usize {
    64
}
fn d_generated() -> SetKind {
    SetKind::Generated
}
fn d_test_size() -> usize {
    64
}
fn d_general_rows() -> usize {
    16
}
fn d_max_new() -> usize {
    160
}
fn d_temperature() -> f64 {
    0.7
}
fn d_eval_batch() -> usize {
    16
}
fn d_bootstrap() -> usize {
    1000
}

impl Default for UnlabeledConfig {
    fn default() -> Self {
        UnlabeledConfig {
            generated_math: true,
            levels: d_levels(),
            jsonl: vec![],
            general_fraction: d_general_fraction(),
        }
    }
}
impl Default for GeneralConfig {
    fn default() -> Self {
        GeneralConfig {
            root: d_general_root(),
            heldout_percent: d_heldout_percent(),
            min_chars: d_min_chars(),
            max_chars: d_max_chars(),
        }
    }
}
impl Default for TestSetConfig {
    fn default() -> Self {
        TestSetConfig {
            kind: SetKind::Generated,
            path: None,
            fields: None,
            levels: d_levels(),
            size: d_test_size(),
            scorer: None,
        }
    }
}
impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            test: TestSetConfig::default(),
            general_rows: d_general_rows(),
            max_new_tokens: d_max_new(),
            pass_k: 0,
            temperature: d_temperature(),
            batch_size: d_eval_batch(),
            bootstrap: d_bootstrap(),
        }
    }
}

impl CausalLmConfig {
    /// A config for the tiny random model (tests): small sets, no general text unless asked.
    pub fn tiny() -> Self {
        let mut c: CausalLmConfig =
            serde_json::from_value(serde_json::json!({"model": "tiny_random"}))
                .expect("defaults parse");
        c.seq_len = 32;
        c.batch_size = 2;
        c.top_k = 8;
        c.feedback_batch_size = 2;
        c.feedback_max_len = 96;
        c.unlabeled.general_fraction = 0.0;
        c.feedback[0].size = 32;
        c.feedback[0].heldout = 4;
        c.eval.test.size = 3;
        c.eval.general_rows = 0;
        c.eval.max_new_tokens = 8;
        c
    }

    fn validate(&self) -> Result<()> {
        let f = |name: &str| format!("task.config.{name}");
        if self.seq_len < 2 || self.batch_size == 0 || self.feedback_batch_size == 0 {
            return Err(Error::config(
                f("seq_len"),
                "seq_len ≥ 2, batch_size ≥ 1 and feedback_batch_size ≥ 1",
            ));
        }
        if self.top_k < 2 {
            return Err(Error::config(
                f("top_k"),
                format!("must be ≥ 2, got {}", self.top_k),
            ));
        }
        if !(0.0..=1.0).contains(&self.unlabeled.general_fraction) {
            return Err(Error::config(
                f("unlabeled.general_fraction"),
                "must be in [0, 1]",
            ));
        }
        if !self.unlabeled.generated_math
            && self.unlabeled.jsonl.is_empty()
            && self.unlabeled.general_fraction < 1.0
        {
            return Err(Error::config(
                f("unlabeled"),
                "no math source: enable generated_math, list jsonl files, or set general_fraction = 1",
            ));
        }
        let levels_ok =
            |l: &[u8]| !l.is_empty() && l.iter().all(|x| crate::mathgen::LEVELS.contains(x));
        if !levels_ok(&self.unlabeled.levels) || !levels_ok(&self.eval.test.levels) {
            return Err(Error::config(
                f("levels"),
                "levels must be a non-empty list of 1, 2, 3",
            ));
        }
        if self.feedback.is_empty() {
            return Err(Error::config(
                f("feedback"),
                "needs at least one feedback set",
            ));
        }
        for (i, s) in self.feedback.iter().enumerate() {
            let at = |k: &str| f(&format!("feedback[{i}].{k}"));
            if self.feedback[..i].iter().any(|o| o.name == s.name) {
                return Err(Error::config(
                    at("name"),
                    format!("duplicate feedback set name `{}`", s.name),
                ));
            }
            if (s.kind != SetKind::Generated) != s.path.is_some() {
                return Err(Error::config(
                    at("path"),
                    "give `path` exactly when kind is \"jsonl\" or \"gsm8k_jsonl\"",
                ));
            }
            if !levels_ok(&s.levels) || s.size == 0 {
                return Err(Error::config(
                    at("levels"),
                    "levels must be a non-empty list of 1, 2, 3 and size ≥ 1",
                ));
            }
        }
        if (self.eval.test.kind != SetKind::Generated) != self.eval.test.path.is_some() {
            return Err(Error::config(
                f("eval.test.path"),
                "give `path` exactly when kind is \"jsonl\" or \"gsm8k_jsonl\"",
            ));
        }
        if self.eval.test.kind == SetKind::Generated
            && matches!(self.eval.test.scorer, Some(ScorerConfig::Choice))
        {
            return Err(Error::config(
                f("eval.test.scorer"),
                "generated problems have no options; `choice` needs a JSONL set with options",
            ));
        }
        if self.eval.batch_size == 0 {
            return Err(Error::config(f("eval.batch_size"), "must be ≥ 1"));
        }
        if self.eval.pass_k > 0 && (self.eval.temperature.is_nan() || self.eval.temperature <= 0.0)
        {
            return Err(Error::config(
                f("eval.temperature"),
                "must be > 0 when pass_k > 0",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Data streams

/// One feedback set, split into the part the meta steps see and a held-out part.
struct FeedbackSet {
    name: String,
    train: Vec<Example>,
    heldout: Vec<Example>,
    cursor: Cursor,
}

/// The unlabeled stream: generated math (counter), JSONL records (cursor), general paragraphs
/// (cursor), mixed by a counter-based coin, packed into rows.
struct Stream {
    math: Option<MathSplits>,
    math_next: u64,
    jsonl: Vec<Record>,
    jsonl_cursor: Option<Cursor>,
    general: Vec<String>,
    general_cursor: Option<Cursor>,
    general_fraction: f64,
    draws: u64,
    seed: u64,
    packer: Packer,
}

/// Saved state of the stream and the feedback cursors.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    math_next: u64,
    jsonl: Option<CursorState>,
    general: Option<CursorState>,
    draws: u64,
    buffer: TokenDoc,
    feedback: Vec<CursorState>,
}

impl Stream {
    fn next_record(&mut self) -> Record {
        let mut coin = SplitMix::new(self.seed ^ 0x5EED_0001, self.draws);
        self.draws += 1;
        let general = self.general_cursor.is_some() && coin.uniform() < self.general_fraction;
        if general {
            let c = self.general_cursor.as_mut().expect("checked above");
            return Record::Text(self.general[c.next_index()].clone());
        }
        let use_jsonl = match (&self.math, &self.jsonl_cursor) {
            (Some(_), Some(_)) => coin.uniform() < 0.5,
            (None, Some(_)) => true,
            _ => false,
        };
        if use_jsonl {
            let c = self.jsonl_cursor.as_mut().expect("checked above");
            return self.jsonl[c.next_index()].clone();
        }
        match &self.math {
            Some(m) => {
                self.math_next += 1;
                Record::Text(m.train(self.math_next - 1).to_text())
            }
            // Validation guarantees general_fraction = 1 here.
            None => Record::Text(
                self.general[self
                    .general_cursor
                    .as_mut()
                    .expect("general on")
                    .next_index()]
                .clone(),
            ),
        }
    }

    fn next_rows(&mut self, codec: &dyn Codec, n: usize) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            match self.packer.pop_row() {
                Some(r) => rows.push(r),
                None => {
                    let rec = self.next_record();
                    self.packer.push(&data::tokenize_record(codec, &rec)?);
                }
            }
        }
        Ok(rows)
    }
}

// ---------------------------------------------------------------------------------------------
// The task

/// The `causal_lm` task.
pub struct CausalLm {
    cfg: CausalLmConfig,
    vs: nn::VarStore,
    model: Llama,
    codec: Box<dyn Codec>,
    trainable: Vec<(String, Tensor)>,
    alignment: Vec<String>,
    /// The first block of S when S lies in blocks only (the blocks below are constants for
    /// ∇_S); `None` when S reaches the embedding.
    s_start: Option<usize>,
    /// Whether the output embedding is in S (its gradient is wanted on the `Twice` pass).
    head_in_s: bool,
    stream: Stream,
    feedback: Vec<FeedbackSet>,
    test: Vec<Example>,
    scorer: Scorer,
    general_eval: Vec<Row>,
    device: Device,
    seed: u64,
}

impl TaskFactory for CausalLm {
    const NAME: &'static str = "causal_lm";
    const DESCRIPTION: &'static str =
        "causal LM continued pretraining (GSM8K / JSONL / generated math + Python docs) with feedback and test sets as data and top-K soft targets";
    const CONSUMES: &'static [&'static str] = &[KIND_LM_SOFT_TARGETS];
    type Config = CausalLmConfig;
    fn build(config: Self::Config, ctx: &BuildContext) -> Result<Box<dyn Task>> {
        Ok(Box::new(CausalLm::new(config, ctx)?))
    }
}

/// Reads a labeled JSONL set (`kind` ≠ generated) named by config `field`.
fn read_path(
    field: &str,
    kind: SetKind,
    path: &Option<String>,
    fields: Option<&Fields>,
    scorer: Option<&Scorer>,
) -> Result<Vec<Example>> {
    let p = path
        .as_deref()
        .ok_or_else(|| Error::config(format!("{field}.path"), "missing path"))?;
    labeled::read_set(kind, p, fields, scorer)
}

/// Loads θ and its tokenizer.
fn load_model(
    src: &ModelSource,
    scope: &Scope,
    device: Device,
    seed: u64,
) -> Result<(nn::VarStore, Llama, Tokenizer)> {
    let (cfg, vs, tok): (Config, nn::VarStore, Tokenizer) = match src {
        ModelSource::Gguf(p) => gguf::load_gguf(p, device)?,
        ModelSource::Hf(d) => hf::load_hf(d, device)?,
        ModelSource::TinyRandom => {
            // The tiny model's init is a pure function of the run seed.
            tch::manual_seed(seed as i64);
            (Config::tiny(), nn::VarStore::new(device), Tokenizer::tiny())
        }
    };
    let model = Llama::with_scope(&vs.root(), &cfg, scope)?;
    Ok((vs, model, tok))
}

impl CausalLm {
    /// Builds the task (loads θ, generates / reads every data set).
    pub fn new(cfg: CausalLmConfig, ctx: &BuildContext) -> Result<Self> {
        cfg.validate()?;
        let device = ctx.device();
        let (vs, model, tok) = load_model(&cfg.model, &cfg.trainable, device, ctx.seed)?;
        let trainable = model.apply_scope(&vs, &cfg.trainable)?;
        let layers = model.config().num_layers;
        let alignment_scope = match (&cfg.trainable, cfg.alignment_layers) {
            (s, None) => s.clone(),
            (Scope::All, Some(n)) | (Scope::LastN(_), Some(n)) => Scope::LastN(n),
            (Scope::LoraLastN { rank, alpha, .. }, Some(n)) => Scope::LoraLastN {
                layers: n,
                rank: *rank,
                alpha: *alpha,
            },
        };
        let trainable_layers = match &cfg.trainable {
            Scope::All => layers,
            Scope::LastN(n) | Scope::LoraLastN { layers: n, .. } => *n,
        };
        if cfg
            .alignment_layers
            .is_some_and(|n| n == 0 || n > trainable_layers)
        {
            return Err(Error::config(
                "task.config.alignment_layers",
                format!("must be in 1..={trainable_layers} (the trainable layers)"),
            ));
        }
        let alignment: Vec<String> = model
            .alignment_names(&alignment_scope)
            .into_iter()
            .filter(|n| trainable.iter().any(|(t, _)| t == n))
            .collect();
        if alignment.is_empty() {
            return Err(Error::config(
                "task.config.alignment_layers",
                "selects no trainable parameter",
            ));
        }
        let codec: Box<dyn Codec> = Box::new(tok);

        // Held-out generated sets first, so the stream can exclude them.
        let test_gen = MathSplits::new(cfg.data_seed, &cfg.eval.test.levels, 0, cfg.eval.test.size);
        let scorer = Scorer::new(&cfg.eval.test.scorer(), "task.config.eval.test.scorer")?;
        let test = match cfg.eval.test.kind {
            SetKind::Generated => test_gen.test.iter().map(|p| p.to_example()).collect(),
            kind => {
                let t = &cfg.eval.test;
                let mut v = read_path(
                    "task.config.eval.test",
                    kind,
                    &t.path,
                    t.fields.as_ref(),
                    Some(&scorer),
                )?;
                v.truncate(t.size);
                v
            }
        };
        let mut generated = vec![test_gen];
        let mut feedback = Vec::new();
        for (j, s) in cfg.feedback.iter().enumerate() {
            let all: Vec<Example> = match s.kind {
                SetKind::Generated => {
                    let seed = cfg.data_seed ^ data::fnv1a(s.name.as_bytes());
                    let m = MathSplits::new(seed, &s.levels, s.size + s.heldout, 0);
                    let v = m
                        .feedback
                        .iter()
                        .filter(|p| !generated[0].is_held_out(&p.question))
                        .map(|p| p.to_example())
                        .collect();
                    generated.push(m);
                    v
                }
                kind => read_path(
                    &format!("task.config.feedback[{j}]"),
                    kind,
                    &s.path,
                    s.fields.as_ref(),
                    None,
                )?,
            };
            // Held-out examples are a seeded sample; the rest (capped at `size`) feed the meta steps.
            let mut order = Cursor::new(cfg.data_seed ^ 0xFEED ^ j as u64, all.len());
            let idx: Vec<usize> = (0..all.len()).map(|_| order.next_index()).collect();
            let heldout: Vec<Example> = idx
                .iter()
                .take(s.heldout)
                .map(|&i| all[i].clone())
                .collect();
            let train: Vec<Example> = idx
                .iter()
                .skip(s.heldout)
                .take(s.size)
                .map(|&i| all[i].clone())
                .collect();
            if train.is_empty() {
                return Err(Error::config(
                    format!("task.config.feedback[{j}]"),
                    format!(
                        "set `{}` has {} examples, none left after holding out {}",
                        s.name,
                        all.len(),
                        s.heldout
                    ),
                ));
            }
            let cursor = Cursor::new(ctx.seed ^ data::fnv1a(s.name.as_bytes()), train.len());
            feedback.push(FeedbackSet {
                name: s.name.clone(),
                train,
                heldout,
                cursor,
            });
        }

        let general_needed = cfg.unlabeled.general_fraction > 0.0 || cfg.eval.general_rows > 0;
        let gen_text = if general_needed {
            let g = &cfg.general;
            general::load(
                Path::new(&g.root),
                g.heldout_percent,
                g.min_chars,
                g.max_chars,
            )?
        } else {
            GeneralText::default()
        };
        // No prompt of a feedback or test set may reach the learner through the stream.
        let held: HashSet<String> = feedback
            .iter()
            .flat_map(|f| f.train.iter().chain(&f.heldout))
            .chain(&test)
            .map(|e| e.prompt.clone())
            .collect();
        let math = cfg.unlabeled.generated_math.then(|| {
            let mut m = MathSplits::new(cfg.data_seed ^ 0x57AE, &cfg.unlabeled.levels, 0, 0);
            for g in &generated {
                m.exclude(g);
            }
            m.exclude_questions(&held);
            m
        });
        let mut jsonl = Vec::new();
        for (i, src) in cfg.unlabeled.jsonl.iter().enumerate() {
            let field = format!("task.config.unlabeled.jsonl[{i}]");
            let (records, _dropped) = labeled::read_stream_source(src, &held, &field)?;
            if records.is_empty() {
                return Err(Error::config(
                    field,
                    "no record left after removing the feedback and test prompts",
                ));
            }
            jsonl.extend(records);
        }
        let general_eval = if cfg.eval.general_rows > 0 {
            let mut p = Packer::new(cfg.seq_len);
            let mut rows = Vec::new();
            for para in &gen_text.heldout {
                p.push(&data::tokenize_record(
                    codec.as_ref(),
                    &Record::Text(para.clone()),
                )?);
                while let Some(r) = p.pop_row() {
                    rows.push(r);
                }
                if rows.len() >= cfg.eval.general_rows {
                    break;
                }
            }
            rows.truncate(cfg.eval.general_rows);
            rows
        } else {
            Vec::new()
        };
        let stream = Stream {
            math,
            math_next: 0,
            jsonl_cursor: (!jsonl.is_empty()).then(|| Cursor::new(ctx.seed ^ 0x15_0E, jsonl.len())),
            jsonl,
            general_cursor: (cfg.unlabeled.general_fraction > 0.0 && !gen_text.train.is_empty())
                .then(|| Cursor::new(ctx.seed ^ 0x6E_E7, gen_text.train.len())),
            general: gen_text.train,
            general_fraction: cfg.unlabeled.general_fraction,
            draws: 0,
            seed: ctx.seed,
            packer: Packer::new(cfg.seq_len),
        };
        let s_start = model.first_block_of(&alignment);
        let head = if model.config().tie_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let head_in_s = alignment.iter().any(|n| n == head);
        Ok(CausalLm {
            cfg,
            vs,
            model,
            codec,
            trainable,
            alignment,
            s_start,
            head_in_s,
            stream,
            feedback,
            test,
            scorer,
            general_eval,
            device,
            seed: ctx.seed,
        })
    }

    /// Converts θ to `kind` (f64 for finite-difference tests).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }

    /// The loaded model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Final hidden states (B,T,d) of ids (B,T) as a pass differentiated `diff` needs them:
    /// fused attention for `Once`; for `Twice`, the blocks below S without grad (fused) and S
    /// with math attention (CPU fused attention has no double backward).
    fn hidden_for(&self, ids: &Tensor, diff: Differentiation) -> Result<Tensor> {
        match (diff, self.s_start) {
            (Differentiation::Once, _) => self.model.forward_hidden(ids, Attention::Fused),
            (Differentiation::Twice, Some(start)) => {
                let s_in =
                    tch::no_grad(|| self.model.forward_prefix(ids, start, Attention::Fused))?;
                self.model.forward_from(&s_in, start, Attention::Math)
            }
            (Differentiation::Twice, None) => self.model.forward_hidden(ids, Attention::Math),
        }
    }

    /// Per-example soft CE (B,) from final hidden states (B,T,d): the head only at the
    /// loss-bearing positions, in the form `diff` needs.
    fn soft_ce_hidden(
        &self,
        hidden: &Tensor,
        mask: &Tensor,
        cand: &Tensor,
        q: &Tensor,
        diff: Differentiation,
    ) -> Result<Tensor> {
        let rows = LossRows::new(mask)?;
        let (h, cand, q) = (rows.select(hidden)?, rows.select(cand)?, rows.select(q)?); // (N,…)
        let per = match diff {
            Differentiation::Once => soft_ce_logits(&self.model.logits(&h)?, &cand, &q)?,
            Differentiation::Twice => {
                soft_ce_twice(&h, self.model.head_weight(), &cand, &q, self.head_in_s)?
            }
        };
        rows.per_example(&per)
    }

    /// The candidates and weights of a construction, checked against the batch: (B,T,K) each;
    /// the baseline is the true token with weight 1.
    fn targets_of(&self, batch: &Batch, construction: &Construction) -> Result<(Tensor, Tensor)> {
        let targets = batch.tensors.require("targets")?;
        if construction.is_baseline() {
            // One-hot CE is the soft CE with the true token as the only candidate.
            let cand = targets.f_unsqueeze(-1).op("targets")?; // (B,T,1)
            let q = Tensor::f_ones(cand.size(), (Kind::Float, self.device)).op("one-hot")?;
            return Ok((cand, q));
        }
        if construction.kind != KIND_LM_SOFT_TARGETS {
            return Err(Error::msg(format!(
                "causal_lm consumes {KIND_LM_SOFT_TARGETS}, got `{}`",
                construction.kind
            )));
        }
        let cand = construction.tensors.require("cand_ids")?;
        let q = construction.tensors.require("probs")?;
        let (bt, cs, qs) = (targets.size(), cand.size(), q.size());
        if cs.len() != 3 || cs[..2] != bt[..] || qs != cs {
            return Err(Error::Tensor {
                name: "probs".into(),
                message: format!(
                    "cand_ids {cs:?} and probs {qs:?} must both be (B,T,K) with (B,T) = {bt:?}"
                ),
            });
        }
        Ok((cand.shallow_clone(), q.shallow_clone()))
    }

    /// What the designer sees, from the final hidden states (B,T,d) and logits (B,T,V) of a
    /// forward (both detached; run under no_grad).
    fn design_inputs_of(
        &self,
        batch: &Batch,
        hidden: &Tensor,
        logits: &Tensor,
    ) -> Result<TensorMap> {
        let (targets, mask) = (
            batch.tensors.require("targets")?,
            batch.tensors.require("mask")?,
        );
        let true_idx = targets.f_unsqueeze(-1).op("targets")?; // (B,T,1)
                                                               // The learner's top K−1 among the tokens other than the true one: the true token's
                                                               // logit is pushed below every other before topk (no vocabulary-sized copy).
        let (_, top) = logits.f_topk(self.cfg.top_k, -1, true, true).op("topk")?; // (B,T,K): the top K, which may include the true token
        let is_true = top.f_eq_tensor(&true_idx).op("true among top")?; // (B,T,K)
                                                                        // Keep the first K−1 that are not the true token: stable sort of (is_true) moves the
                                                                        // true token (if present) to the end.
        let order = is_true
            .f_to_kind(Kind::Int64)?
            .f_argsort_stable(true, -1, false)
            .op("order")?;
        let others = top
            .f_gather(-1, &order, false)?
            .f_narrow(-1, 0, self.cfg.top_k - 1)?; // (B,T,K−1)
        let cand = Tensor::f_cat(&[&true_idx, &others], -1).op("candidates")?; // (B,T,K)
        let lse = logits.f_logsumexp(-1i64, true).op("logsumexp")?; // (B,T,1)
        let cand_lp = logits
            .f_gather(-1, &cand, false)
            .op("candidate log p")?
            .f_sub(&lse)?;
        // Per-example summary for modality-agnostic designers: masked mean of the hidden
        // states (B,d) ⊕ mean NLL of the true tokens (B,1).
        let m = mask.f_to_kind(hidden.kind())?; // (B,T)
        let count = m
            .f_sum_dim_intlist(1, true, hidden.kind())?
            .f_clamp_min(1.0)?; // (B,1)
        let pooled =
            (hidden * m.f_unsqueeze(-1)?).f_sum_dim_intlist(1, false, hidden.kind())? / &count;
        let nll =
            (-cand_lp.f_select(-1, 0)? * &m).f_sum_dim_intlist(1, true, hidden.kind())? / &count;
        let example_features = Tensor::f_cat(&[pooled, nll], 1).op("example features")?; // (B,d+1)
        let cand_embeddings = self.model.embed_tokens(&cand)?.detach(); // (B,T,K,d)
        Ok(TensorMap::new()
            .with("example_features", example_features)
            .with("features", hidden.detach())
            .with("cand_ids", cand)
            .with("cand_logprobs", cand_lp)
            .with("loss_mask", mask.shallow_clone())
            // token identity: the learner's input embeddings of the candidates, detached
            .with("cand_embeddings", cand_embeddings))
    }

    fn feedback_rows(&self, examples: &[Example]) -> Result<Vec<Row>> {
        examples
            .iter()
            .map(|ex| data::example_row(self.codec.as_ref(), ex, self.cfg.feedback_max_len))
            .collect()
    }

    /// Inserts `name` = the mean of group means of `groups` (NaN without data) and, when
    /// bootstrapping is on and there is data, its 95 % interval as `name.ci_lo` / `name.ci_hi`
    /// (seeded by the run seed).
    fn insert_with_ci(&self, m: &mut Metrics, name: &str, groups: &[Vec<f64>]) {
        m.insert(name.into(), ev::mean_of_means(groups));
        if self.cfg.eval.bootstrap > 0 && groups.iter().any(|g| !g.is_empty()) {
            // One seed for every metric: sets of equal size share resamples, so one set's
            // interval equals the aggregate's.
            let (lo, hi) = ev::bootstrap_ci(groups, self.seed, self.cfg.eval.bootstrap);
            m.insert(format!("{name}.ci_lo"), lo);
            m.insert(format!("{name}.ci_hi"), hi);
        }
    }
}

fn expect_source(batch: &Batch, unlabeled: bool, what: &str) -> Result<()> {
    match (batch.source, unlabeled) {
        (BatchSource::Unlabeled { .. }, true) | (BatchSource::Feedback { .. }, false) => Ok(()),
        (s, _) => Err(Error::msg(format!("{what}: got a batch from {s:?}"))),
    }
}

impl Task for CausalLm {
    fn info(&self) -> TaskInfo {
        let ctx = LmDesignContext {
            d_model: self.model.config().hidden_size,
            k: self.cfg.top_k,
            feature_dim: self.model.config().hidden_size + 1,
        };
        TaskInfo {
            consumes: vec![KIND_LM_SOFT_TARGETS.into()],
            alignment: self.alignment.clone(),
            domains: vec!["text".into()],
            feedback_sets: self
                .feedback
                .iter()
                .map(|f| FeedbackSetInfo {
                    name: f.name.clone(),
                    domain: 0,
                })
                .collect(),
            designer_context: serde_json::to_value(ctx).expect("context serialises"),
            batch_size: self.cfg.batch_size,
        }
    }

    fn parameters(&self) -> Result<TensorMap> {
        Ok(self
            .trainable
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect())
    }

    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        let rows = match source {
            BatchSource::Unlabeled { domain: 0 } => self
                .stream
                .next_rows(self.codec.as_ref(), self.cfg.batch_size)?,
            BatchSource::Feedback { set } => {
                let fs = self.feedback.get_mut(set as usize).ok_or_else(|| {
                    Error::msg(format!(
                        "no feedback set {set} (have {})",
                        self.cfg.feedback.len()
                    ))
                })?;
                let picks: Vec<Example> = (0..self.cfg.feedback_batch_size)
                    .map(|_| fs.train[fs.cursor.next_index()].clone())
                    .collect();
                data::pad_rows(self.feedback_rows(&picks)?, self.codec.eos_id())
            }
            s => {
                return Err(Error::msg(format!(
                    "causal_lm has one unlabeled domain; got {s:?}"
                )))
            }
        };
        Ok(Batch {
            source,
            tensors: data::rows_to_tensors(&rows, self.device)?,
        })
    }

    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        expect_source(batch, true, "design_inputs")?;
        let ids = batch.tensors.require("ids")?;
        tch::no_grad(|| {
            let hidden = self.model.forward_hidden(ids, Attention::Fused)?; // (B,T,d)
            let logits = self.model.logits(&hidden)?; // (B,T,V)
            self.design_inputs_of(batch, &hidden, &logits)
        })
    }

    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        expect_source(batch, true, "pretrain_forward")?;
        let ids = batch.tensors.require("ids")?;
        // Differentiated once by the learner step: fused attention. The input of S, detached,
        // lets the meta step's Twice pass start at S (θ does not change in between).
        let split = self.s_start.unwrap_or(0);
        let (s_in, hidden) = self.model.forward_split(ids, Attention::Fused, split)?;
        let logits = self.model.logits(&hidden)?; // (B,T,V), attached
        let design_inputs = tch::no_grad(|| {
            self.design_inputs_of(batch, &hidden.f_detach()?, &logits.f_detach()?)
        })?;
        let mut state = TensorMap::new().with("logits", logits);
        if self.s_start.is_some() {
            state.insert("s_input", s_in.f_detach()?);
        }
        Ok(Forward {
            design_inputs,
            state,
        })
    }

    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        expect_source(batch, true, "pretrain_loss")?;
        let (cand, q) = self.targets_of(batch, construction)?;
        let hidden = self.hidden_for(batch.tensors.require("ids")?, diff)?;
        self.soft_ce_hidden(&hidden, batch.tensors.require("mask")?, &cand, &q, diff)
    }

    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        expect_source(batch, true, "pretrain_loss")?;
        let (cand, q) = self.targets_of(batch, construction)?;
        let mask = batch.tensors.require("mask")?;
        match (
            diff,
            state.get("logits"),
            state.get("s_input"),
            self.s_start,
        ) {
            // the learner step: the forward's own logits
            (Differentiation::Once, Some(logits), _, _) => {
                let per_pos = soft_ce_logits(logits, &cand, &q)?; // (B,T)
                let rows = LossRows::new(mask)?;
                rows.per_example(&rows.select(&per_pos.f_unsqueeze(-1)?)?.f_squeeze_dim(-1)?)
            }
            // the meta step: S from its detached input, math attention, no vocabulary graph
            (Differentiation::Twice, _, Some(s_in), Some(start)) => {
                let hidden = self.model.forward_from(s_in, start, Attention::Math)?;
                self.soft_ce_hidden(&hidden, mask, &cand, &q, diff)
            }
            _ => self.pretrain_loss(batch, construction, diff),
        }
    }

    fn meta_batch(
        &mut self,
        batch: &Batch,
        forward: &Forward,
        size: MetaBatch,
    ) -> Result<(Batch, Forward)> {
        // Every tensor is (B, …); those with a time axis are (B, T, …). Causal attention makes
        // the first positions of the forward's tensors exactly those of a shorter sequence.
        let t = batch.tensors.require("ids")?.size()[1];
        let len = size.max_len.map_or(t, |l| (l as i64).clamp(2, t));
        let cut = |map: &TensorMap, timed: &[&str]| -> Result<TensorMap> {
            let mut out = vpt_sdk::narrow_rows(map, size.rows as i64)?;
            for name in timed {
                if let Some(x) = out.remove(name) {
                    out.insert(*name, x.f_narrow(1, 0, len).op("meta positions")?);
                }
            }
            Ok(out)
        };
        let sliced = Batch {
            source: batch.source,
            tensors: cut(&batch.tensors, &["ids", "targets", "mask"])?,
        };
        let inputs = ["features", "cand_ids", "cand_logprobs", "loss_mask"];
        Ok((
            sliced,
            Forward {
                design_inputs: cut(&forward.design_inputs, &inputs)?,
                state: cut(&forward.state, &["logits", "s_input"])?,
            },
        ))
    }

    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        expect_source(batch, false, "feedback_loss")?;
        let (ids, targets, mask) = (
            batch.tensors.require("ids")?,
            batch.tensors.require("targets")?,
            batch.tensors.require("mask")?,
        );
        // L_down is differentiated once, on S only: the blocks below S without grad, the
        // fused kernel everywhere, the head only at the answer tokens.
        let hidden = match self.s_start {
            Some(start) => {
                let s_in =
                    tch::no_grad(|| self.model.forward_prefix(ids, start, Attention::Fused))?;
                self.model.forward_from(&s_in, start, Attention::Fused)?
            }
            None => self.model.forward_hidden(ids, Attention::Fused)?,
        };
        let rows = LossRows::new(mask)?;
        let logits = self.model.logits(&rows.select(&hidden)?)?; // (N,V)
        let lp = logits
            .f_log_softmax(-1, logits.kind())
            .op("log_softmax")?
            .f_gather(-1, &rows.select(&targets.f_unsqueeze(-1)?)?, false)
            .op("gather")?; // (N,1)
        lp.f_mean(lp.kind())?.f_neg().op("mean NLL")
    }

    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics> {
        let cap = |n: usize| limit.map_or(n, |l| n.min(l as usize));
        let eos = self.codec.eos_id();
        let mut m = Metrics::new();
        // Feedback NLL: per held-out example, the token mean over its response; a set's value is
        // the mean over its examples (paper eq. 38), `feedback_loss` the mean over sets.
        let mut groups = Vec::new();
        for fs in &self.feedback {
            let rows = self.feedback_rows(&fs.heldout[..cap(fs.heldout.len())])?;
            if rows.is_empty() {
                continue;
            }
            let nll = ev::row_nlls(&self.model, &rows, self.cfg.feedback_batch_size, eos)?;
            self.insert_with_ci(
                &mut m,
                &format!("feedback_loss/{}", fs.name),
                std::slice::from_ref(&nll),
            );
            groups.push(nll);
        }
        self.insert_with_ci(&mut m, "feedback_loss", &groups);
        let n_gen = cap(self.general_eval.len());
        let general = ev::row_nlls(
            &self.model,
            &self.general_eval[..n_gen],
            self.cfg.batch_size,
            eos,
        )?;
        self.insert_with_ci(&mut m, "general_loss", &[general]);
        for suffix in ["", ".ci_lo", ".ci_hi"] {
            if let Some(v) = m.get(&format!("general_loss{suffix}")).copied() {
                m.insert(format!("general_ppl{suffix}"), v.exp());
            }
        }
        let test = &self.test[..cap(self.test.len())];
        if !test.is_empty() {
            let e = &self.cfg.eval;
            let codec = self.codec.as_ref();
            let (name, scores) = if self.scorer.generates() {
                let s = ev::generation_scores(
                    &self.model,
                    codec,
                    test,
                    &self.scorer,
                    e.max_new_tokens,
                    e.batch_size,
                )?;
                ("pass@1", s)
            } else {
                let s = ev::choice_scores(
                    &self.model,
                    codec,
                    test,
                    self.cfg.feedback_max_len,
                    e.batch_size,
                )?;
                ("choice_accuracy", s)
            };
            self.insert_with_ci(&mut m, name, &[scores]);
            if e.pass_k > 0 && self.scorer.generates() {
                let settings = PassAt {
                    max_new_tokens: e.max_new_tokens,
                    k: e.pass_k,
                    temperature: e.temperature,
                    seed: self.seed,
                };
                let s = tch::no_grad(|| {
                    ev::pass_at_k(&self.model, codec, test, &self.scorer, settings)
                })?;
                self.insert_with_ci(&mut m, &format!("pass@{}", e.pass_k), &[s]);
            }
        }
        Ok(m)
    }

    fn state(&self) -> Result<State> {
        let s = SavedState {
            math_next: self.stream.math_next,
            jsonl: self.stream.jsonl_cursor.as_ref().map(Cursor::state),
            general: self.stream.general_cursor.as_ref().map(Cursor::state),
            draws: self.stream.draws,
            buffer: self.stream.packer.buf.clone(),
            feedback: self.feedback.iter().map(|f| f.cursor.state()).collect(),
        };
        Ok(State {
            json: serde_json::to_value(s).map_err(|e| Error::msg(format!("task state: {e}")))?,
            tensors: TensorMap::new(),
        })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let s: SavedState = serde_json::from_value(state.json)
            .map_err(|e| Error::msg(format!("causal_lm state does not match this version: {e}")))?;
        if s.feedback.len() != self.feedback.len() {
            return Err(Error::msg(format!(
                "causal_lm state has {} feedback cursors, the config has {} sets",
                s.feedback.len(),
                self.feedback.len()
            )));
        }
        self.stream.math_next = s.math_next;
        self.stream.draws = s.draws;
        self.stream.packer.buf = s.buffer;
        if let (Some(c), Some(st)) = (self.stream.jsonl_cursor.as_mut(), s.jsonl) {
            c.restore(st);
        }
        if let (Some(c), Some(st)) = (self.stream.general_cursor.as_mut(), s.general) {
            c.restore(st);
        }
        for (f, st) in self.feedback.iter_mut().zip(s.feedback) {
            f.cursor.restore(st);
        }
        Ok(())
    }

    fn export(&self, request: &ExportRequest) -> Result<Vec<std::path::PathBuf>> {
        crate::export::export(
            &self.cfg.model,
            &self.cfg.trainable,
            self.model.config(),
            &self.vs,
            request,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::designer::{TopKSoft, TopKSoftConfig};
    use vpt_sdk::Designer;

    fn ctx() -> BuildContext {
        BuildContext {
            seed: 3,
            device: "cpu".into(),
        }
    }

    fn tiny_task() -> CausalLm {
        tch::set_num_threads(2);
        CausalLm::new(CausalLmConfig::tiny(), &ctx()).unwrap()
    }

    const U: BatchSource = BatchSource::Unlabeled { domain: 0 };
    const F: BatchSource = BatchSource::Feedback { set: 0 };

    fn onehot_soft(inputs: &TensorMap) -> Construction {
        let cand = inputs.require("cand_ids").unwrap();
        let q = cand.zeros_like().to_kind(Kind::Float);
        let _ = q.narrow(-1, 0, 1).fill_(1.0);
        Construction {
            kind: KIND_LM_SOFT_TARGETS.into(),
            tensors: TensorMap::new()
                .with("cand_ids", cand.copy())
                .with("probs", q),
        }
    }

    #[test]
    fn builds_through_the_registry_and_rejects_bad_config() {
        let reg = crate::vpt_registry();
        let t = reg.task("causal_lm").unwrap().build(&serde_json::json!({"model": "tiny_random", "seq_len": 16, "unlabeled": {"general_fraction": 0.0}, "eval": {"general_rows": 0}}), &ctx()).unwrap();
        let info = t.info();
        assert_eq!(info.consumes, vec![KIND_LM_SOFT_TARGETS.to_string()]);
        assert_eq!(info.feedback_sets[0].name, "math");
        assert_eq!(info.designer_context["k"], 64);
        // Default trainable = last 2 layers of the 2-layer tiny model; S = the same.
        assert!(info
            .alignment
            .iter()
            .all(|n| n.starts_with("model.layers.")));
        let err = reg
            .task("causal_lm")
            .unwrap()
            .build(
                &serde_json::json!({"model": "tiny_random", "seq_lenn": 3}),
                &ctx(),
            )
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("seq_lenn"), "{err}");
        let err = reg
            .task("causal_lm")
            .unwrap()
            .build(&serde_json::json!({"model": "tiny_random", "feedback": [{"name": "g", "kind": "gsm8k_jsonl"}]}), &ctx())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("feedback[0].path"), "{err}");
        let m = reg.manifest();
        assert_eq!(m.designers.len(), 3);
        assert!(m.tasks[0].schema.to_string().contains("alignment_layers"));
    }

    #[test]
    fn example_configs_parse() {
        let reg = crate::vpt_registry();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
        for name in [
            "lm-smollm2.toml",
            "lm-gsm8k.toml",
            "lm-gsm8k-cpu.toml",
            "lm-two-feedback.toml",
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            let v: serde_json::Value = toml::from_str(&text).unwrap();
            let cfg: CausalLmConfig = vpt_sdk::parse_config(&v["task"]["config"])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.model, ModelSource::Gguf("${VPT_SMOLLM2_GGUF}".into()));
            let d = &v["designer"];
            assert_eq!(d["name"], "topk_soft");
            let _: crate::designer::TopKSoftConfig = vpt_sdk::parse_config(&d["config"]).unwrap();
            assert!(reg.designer(d["name"].as_str().unwrap()).is_ok());
            let sets: Vec<&str> = cfg.feedback.iter().map(|f| f.name.as_str()).collect();
            if let Some(w) = v["meta"]["feedback"].as_array() {
                assert!(
                    w.iter().all(|f| sets.contains(&f["set"].as_str().unwrap())),
                    "{name}: weights name a missing set"
                );
            }
        }
    }

    #[test]
    fn batches_inputs_and_losses_have_the_right_shapes() {
        let mut t = tiny_task();
        let b = t.next_batch(U).unwrap();
        assert_eq!(b.tensors.require("ids").unwrap().size(), vec![2, 32]);
        let inputs = t.design_inputs(&b).unwrap();
        let cand = inputs.require("cand_ids").unwrap();
        assert_eq!(cand.size(), vec![2, 32, 8]);
        assert!(cand
            .select(-1, 0)
            .equal(b.tensors.require("targets").unwrap()));
        // The true token is not repeated among the other candidates.
        let dup = cand
            .narrow(-1, 1, 7)
            .eq_tensor(&cand.narrow(-1, 0, 1))
            .any()
            .int64_value(&[]);
        assert_eq!(dup, 0);
        assert!(
            inputs
                .require("cand_logprobs")
                .unwrap()
                .max()
                .double_value(&[])
                <= 0.0
        );
        assert_eq!(inputs.require("features").unwrap().size(), vec![2, 32, 64]);
        assert!(!inputs.require("features").unwrap().requires_grad());
        let base = t
            .pretrain_loss(&b, &Construction::baseline(), Differentiation::Once)
            .unwrap();
        assert_eq!(base.size(), vec![2]);
        assert!(base.requires_grad());
        // Soft targets with α = 0 (one-hot on the true candidate) equal the baseline CE.
        let soft = t
            .pretrain_loss(&b, &onehot_soft(&inputs), Differentiation::Once)
            .unwrap();
        assert!(
            (&soft - &base).abs().max().double_value(&[]) < 1e-5,
            "{soft:?} vs {base:?}"
        );
        // Random-init CE is near log V.
        assert!((base.mean(Kind::Double).double_value(&[]) - (300f64).ln()).abs() < 1.0);
        let fb = t.next_batch(F).unwrap();
        let l = t.feedback_loss(&fb).unwrap();
        assert_eq!(l.size(), Vec::<i64>::new());
        assert!(
            t.pretrain_loss(&fb, &Construction::baseline(), Differentiation::Once)
                .is_err(),
            "feedback batches never reach L_pre"
        );
        assert!(t.feedback_loss(&b).is_err());
    }

    #[test]
    fn resume_replays_the_same_batches() {
        let mut a = tiny_task();
        for _ in 0..3 {
            a.next_batch(U).unwrap();
            a.next_batch(F).unwrap();
        }
        let saved = a.state().unwrap();
        let next: Vec<Tensor> = (0..4)
            .flat_map(|_| [a.next_batch(U).unwrap(), a.next_batch(F).unwrap()])
            .map(|b| b.tensors.require("ids").unwrap().copy())
            .collect();
        let mut b = tiny_task();
        b.load_state(State {
            json: saved.json,
            tensors: TensorMap::new(),
        })
        .unwrap();
        let again: Vec<Tensor> = (0..4)
            .flat_map(|_| [b.next_batch(U).unwrap(), b.next_batch(F).unwrap()])
            .map(|b| b.tensors.require("ids").unwrap().copy())
            .collect();
        for (x, y) in next.iter().zip(&again) {
            assert!(x.equal(y));
        }
        // A fresh task (no restore) is at the start, so it differs.
        let mut c = tiny_task();
        assert!(!c
            .next_batch(U)
            .unwrap()
            .tensors
            .require("ids")
            .unwrap()
            .equal(&next[0]));
    }

    #[test]
    fn evaluate_reports_the_required_metrics() {
        let mut t = tiny_task();
        let m = t.evaluate(Some(2)).unwrap();
        for k in [
            "feedback_loss",
            "feedback_loss/math",
            "general_loss",
            "pass@1",
        ] {
            assert!(m.contains_key(k), "{m:?}");
        }
        assert!(m["feedback_loss"].is_finite() && m["feedback_loss"] > 0.0);
        assert!((0.0..=1.0).contains(&m["pass@1"]));
    }

    fn gsm8k(name: &str) -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k/").to_string() + name
    }

    fn gsm8k_set(name: &str, size: usize, heldout: usize) -> FeedbackSetConfig {
        FeedbackSetConfig {
            name: "gsm8k".into(),
            kind: SetKind::Gsm8kJsonl,
            path: Some(gsm8k(name)),
            fields: None,
            levels: d_levels(),
            size,
            heldout,
        }
    }

    /// The real-data layout of the LM configs: stream = GSM8K train minus the feedback split,
    /// feedback = 1,024 train examples (256 held out), test = GSM8K test; pairwise disjoint.
    #[test]
    fn gsm8k_stream_feedback_and_test_are_disjoint() {
        let mut cfg = CausalLmConfig::tiny();
        cfg.unlabeled.generated_math = false;
        cfg.unlabeled.jsonl = vec![JsonlSource::Labeled(labeled::LabeledSource {
            path: gsm8k("train.jsonl"),
            kind: SetKind::Gsm8kJsonl,
            fields: None,
        })];
        cfg.feedback = vec![gsm8k_set("train.jsonl", 768, 256)];
        cfg.eval.test = TestSetConfig {
            kind: SetKind::Gsm8kJsonl,
            path: Some(gsm8k("test.jsonl")),
            size: 1319,
            ..TestSetConfig::default()
        };
        let mut t = CausalLm::new(cfg, &ctx()).unwrap();
        let fb = &t.feedback[0];
        assert_eq!((fb.train.len(), fb.heldout.len()), (768, 256));
        let feedback: HashSet<String> = fb
            .train
            .iter()
            .chain(&fb.heldout)
            .map(|e| labeled::stream_prompt(&e.prompt))
            .collect();
        assert_eq!(feedback.len(), 1024);
        let stream: HashSet<String> = t
            .stream
            .jsonl
            .iter()
            .map(|r| match r {
                Record::PromptResponse { prompt, .. } => prompt.clone(),
                Record::Text(_) => panic!("GSM8K records carry a prompt"),
            })
            .collect();
        let test: HashSet<String> = t
            .test
            .iter()
            .map(|e| labeled::stream_prompt(&e.prompt))
            .collect();
        assert_eq!((stream.len(), test.len()), (7473 - 1024, 1319));
        assert!(stream.is_disjoint(&feedback) && stream.is_disjoint(&test));
        assert!(feedback.is_disjoint(&test));
        // Every train problem is in exactly one of stream and feedback.
        let train =
            labeled::read_set(SetKind::Gsm8kJsonl, &gsm8k("train.jsonl"), None, None).unwrap();
        for e in &train {
            let p = labeled::stream_prompt(&e.prompt);
            assert!(stream.contains(&p) != feedback.contains(&p));
        }
        // The stream's loss is on the solution only: the prompt tokens carry no loss.
        let frac = (0..20)
            .map(|_| {
                let b = t.next_batch(U).unwrap();
                b.tensors
                    .require("mask")
                    .unwrap()
                    .mean(Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            / 20.0;
        assert!(frac > 0.2 && frac < 0.95, "loss fraction {frac}");
    }

    /// A downstream task as data: a JSONL feedback set with its own field names and a
    /// multiple-choice test set, evaluated with intervals, no code.
    #[test]
    fn jsonl_sets_with_scorers_evaluate_with_intervals() {
        let dir = std::env::temp_dir().join(format!("vpt-lm-task-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fb_path = dir.join("fb.jsonl");
        let lines: String = (0..12)
            .map(|i| format!("{{\"q\": \"say {i}\", \"a\": \"{i}\"}}\n"))
            .collect();
        std::fs::write(&fb_path, lines).unwrap();
        let choice = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/arith-choice/test.jsonl"
        );
        let mut cfg = CausalLmConfig::tiny();
        cfg.feedback = vec![FeedbackSetConfig {
            name: "echo".into(),
            kind: SetKind::Jsonl,
            path: Some(fb_path.display().to_string()),
            fields: Some(Fields {
                prompt: "q".into(),
                response: "a".into(),
                options: "o".into(),
            }),
            levels: d_levels(),
            size: 8,
            heldout: 4,
        }];
        cfg.eval.test = TestSetConfig {
            kind: SetKind::Jsonl,
            path: Some(choice.into()),
            size: 6,
            scorer: Some(ScorerConfig::Choice),
            ..TestSetConfig::default()
        };
        let mut t = CausalLm::new(cfg.clone(), &ctx()).unwrap();
        let m = t.evaluate(None).unwrap();
        for k in [
            "feedback_loss",
            "feedback_loss.ci_lo",
            "feedback_loss/echo.ci_hi",
            "choice_accuracy",
            "choice_accuracy.ci_lo",
        ] {
            assert!(m.contains_key(k), "{k} missing: {m:?}");
        }
        assert!(!m.contains_key("pass@1"));
        assert!(m["feedback_loss.ci_lo"] <= m["feedback_loss"]);
        assert!(m["feedback_loss"] <= m["feedback_loss.ci_hi"]);
        for k in ["", ".ci_lo", ".ci_hi"] {
            assert_eq!(
                m[&format!("feedback_loss{k}")],
                m[&format!("feedback_loss/echo{k}")]
            );
        }
        // Deterministic, intervals included (no general rows here: no general_loss interval).
        assert!(!m.contains_key("general_loss.ci_lo"));
        assert_eq!(format!("{:?}", t.evaluate(None).unwrap()), format!("{m:?}"));
        // The feedback loss is on the response tokens only: the one-digit answer + EOS.
        let fb = t.next_batch(F).unwrap();
        let per_row = fb
            .tensors
            .require("mask")
            .unwrap()
            .sum_dim_intlist(-1, false, Kind::Float);
        assert!(per_row.le(3.0).all().int64_value(&[]) == 1, "{per_row:?}");
        // Bad data and bad scorers are named.
        let mut bad = cfg.clone();
        bad.eval.test.scorer = Some(ScorerConfig::Numeric {
            pattern: "(".into(),
            fallback_last_number: true,
        });
        let err = CausalLm::new(bad, &ctx()).err().unwrap().to_string();
        assert!(err.contains("eval.test.scorer.numeric.pattern"), "{err}");
        let mut bad = cfg;
        bad.eval.test.path = Some(fb_path.display().to_string());
        let err = CausalLm::new(bad, &ctx()).err().unwrap().to_string();
        assert!(err.contains("fb.jsonl:1:"), "{err}");
    }

    /// V(φ) = g_down · g_pre(φ) on S, with g_pre built with create_graph.
    fn value(
        task: &mut CausalLm,
        d: &mut TopKSoft,
        b: &Batch,
        inputs: &TensorMap,
        g_down: &[Tensor],
        s: &[Tensor],
    ) -> (Tensor, Vec<Tensor>) {
        let c = d.construct(inputs).unwrap();
        let l = task
            .pretrain_loss(b, &c, Differentiation::Twice)
            .unwrap()
            .mean(Kind::Double);
        let g_pre = Tensor::run_backward(&[l], s, true, true);
        let v = g_down
            .iter()
            .zip(&g_pre)
            .map(|(a, b)| (a * b).sum(Kind::Double))
            .fold(Tensor::from(0.0f64), |x, y| x + y);
        (v, g_pre)
    }

    #[test]
    fn hypergradient_matches_finite_differences() {
        let mut t = tiny_task();
        t.set_kind(Kind::Double);
        let info = t.info();
        let tc: LmDesignContext = serde_json::from_value(info.designer_context.clone()).unwrap();
        let cfg = TopKSoftConfig {
            layers: 1,
            width: 16,
            heads: 2,
            alpha_max: 0.5,
            gate_init: 0.0,
        };
        let mut d = TopKSoft::new(cfg, &tc, &ctx()).unwrap();
        d.to_double();
        let params = t.parameters().unwrap();
        let s: Vec<Tensor> = params
            .select(&info.alignment)
            .unwrap()
            .tensors()
            .map(|x| x.shallow_clone())
            .collect();
        let fb = t.next_batch(F).unwrap();
        let l_down = t.feedback_loss(&fb).unwrap();
        let g_down: Vec<Tensor> = Tensor::run_backward(&[l_down], &s, false, false)
            .into_iter()
            .map(|g| g.detach())
            .collect();
        let b = t.next_batch(U).unwrap();
        let inputs = t.design_inputs(&b).unwrap();
        let phi = d.parameters().unwrap();
        let phi_t: Vec<Tensor> = phi.tensors().map(|x| x.shallow_clone()).collect();
        let (v, _) = value(&mut t, &mut d, &b, &inputs, &g_down, &s);
        let grads = Tensor::run_backward(&[&v], &phi_t, false, false);
        let total: f64 = grads
            .iter()
            .map(|g| g.abs().sum(Kind::Double).double_value(&[]))
            .sum();
        assert!(total > 0.0 && total.is_finite(), "hypergradient {total}");
        // Directional finite difference along a random direction in φ.
        tch::manual_seed(5);
        let dirs: Vec<Tensor> = phi_t.iter().map(|p| p.randn_like()).collect();
        let analytic: f64 = grads
            .iter()
            .zip(&dirs)
            .map(|(g, u)| (g * u).sum(Kind::Double).double_value(&[]))
            .sum();
        let eps = 1e-5;
        let mut shifted = |sign: f64| {
            tch::no_grad(|| {
                for (p, u) in phi_t.iter().zip(&dirs) {
                    let _ = p.shallow_clone().g_add_(&(u * (sign * eps)));
                }
            });
            let (v, _) = value(&mut t, &mut d, &b, &inputs, &g_down, &s);
            tch::no_grad(|| {
                for (p, u) in phi_t.iter().zip(&dirs) {
                    let _ = p.shallow_clone().g_sub_(&(u * (sign * eps)));
                }
            });
            v.double_value(&[])
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-12);
        assert!(
            rel < 1e-4,
            "analytic {analytic} vs numeric {numeric} (rel {rel})"
        );
    }

    /// The SDK harness on the tiny LM in f64, S = the last block only (a real prefix below S):
    /// the forward path (`pretrain_forward`, `meta_batch`, `pretrain_loss_from_forward`) gives
    /// the losses of `pretrain_loss` in both differentiation modes, and ∂V/∂φ through it
    /// matches finite differences.
    #[test]
    fn the_sdk_harness_passes_through_the_shared_forward_and_the_meta_slice() {
        let mut cfg = CausalLmConfig::tiny();
        cfg.alignment_layers = Some(1);
        tch::set_num_threads(2);
        let mut t = CausalLm::new(cfg, &ctx()).unwrap();
        assert_eq!(t.s_start, Some(1));
        t.set_kind(Kind::Double);
        let tc: LmDesignContext = serde_json::from_value(t.info().designer_context).unwrap();
        let dcfg = TopKSoftConfig {
            layers: 1,
            width: 16,
            heads: 2,
            alpha_max: 0.5,
            gate_init: 0.0,
        };
        let mut d = TopKSoft::new(dcfg, &tc, &ctx()).unwrap();
        d.to_double();
        let opts = vpt_sdk::testing::InvariantOptions {
            evaluate: false,
            eval_limit: None,
        };
        vpt_sdk::testing::check_invariants(&mut t, Some(&mut d), &opts).assert_passed();
        vpt_sdk::testing::check_hypergradient(&mut t, &mut d, 1e-6, 1e-5).assert_passed();
    }
}
