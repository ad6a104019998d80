//! The `causal_lm` task's configuration: the model source, the unlabeled stream, feedback and
//! test sets, evaluation settings, their defaults and validation (errors name the field).

use crate::corrupt::CorruptConfig;
use crate::data::Fields;
use crate::general::{self};
use crate::labeled::{JsonlSource, SetKind};
use crate::scorer::ScorerConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vpt_llama::Scope;
use vpt_sdk::{Error, Result};

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
    /// The Python source code: part of the stream (`unlabeled.code_fraction`) and the
    /// `code_loss` held-out set (`eval.code_rows`).
    #[serde(default)]
    pub code: CodeConfig,
    /// Feedback sets (labeled, steer φ only). Default: one generated set called `math`.
    #[serde(default = "d_feedback")]
    pub feedback: Vec<FeedbackSetConfig>,
    /// Examples per feedback batch.
    #[serde(default = "d_batch")]
    pub feedback_batch_size: usize,
    /// Longest feedback row in tokens (prompt + answer); longer ones keep their tail.
    #[serde(default = "d_max_len")]
    pub feedback_max_len: usize,
    /// MiB of feedback examples' S inputs kept for g_down when no parameter below S is trainable
    /// (0: off); see [`crate::prefix_cache`].
    #[serde(default = "d_feedback_cache_mib")]
    pub feedback_cache_mib: usize,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
    /// Diagnostic: hand designers the corruption mask (`corrupt_mask`, for `oracle_corrupt`).
    /// Reports mark such runs *(diagnostic)*; needs `unlabeled.corrupt`.
    #[serde(default)]
    pub diagnostic_corrupt_mask: bool,
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
    /// Probability that a document is drawn from the Python source code instead (0, the
    /// default, disables it); the math sources get 1 − general_fraction − code_fraction.
    #[serde(default)]
    pub code_fraction: f64,
    /// Wrong targets: `{ fraction, among = "all" | "numbers", seed, sources }` replaces a seeded
    /// fraction of the loss-bearing targets (see [`crate::corrupt`]). Off by default.
    #[serde(default)]
    pub corrupt: Option<CorruptConfig>,
}

/// Python source code (by default the python3.11 standard library), cut into chunks.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeConfig {
    /// Root of the `*.py` files (searched recursively).
    #[serde(default = "d_code_root")]
    pub root: String,
    /// Percent of files (by path hash) held out for `code_loss`.
    #[serde(default = "d_heldout_percent")]
    pub heldout_percent: u64,
    /// Shortest chunk kept, in characters.
    #[serde(default = "d_min_chars")]
    pub min_chars: usize,
    /// Chunks are closed before this many characters.
    #[serde(default = "d_max_chars")]
    pub max_chars: usize,
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
    /// Held-out code rows (of `seq_len` tokens) for `code_loss` (0, the default: none).
    #[serde(default)]
    pub code_rows: usize,
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
pub(super) fn d_levels() -> Vec<u8> {
    vec![1, 2, 3]
}
fn d_general_fraction() -> f64 {
    0.25
}
fn d_general_root() -> String {
    general::DEFAULT_ROOT.into()
}
fn d_code_root() -> String {
    crate::code::DEFAULT_ROOT.into()
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
fn d_feedback_cache_mib() -> usize {
    256
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
            code_fraction: 0.0,
            corrupt: None,
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
impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            root: d_code_root(),
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
            code_rows: 0,
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

    /// Checks the settings; the error names the `task.config.…` field.
    pub(super) fn validate(&self) -> Result<()> {
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
        let u = &self.unlabeled;
        if !(0.0..=1.0).contains(&u.code_fraction) || u.general_fraction + u.code_fraction > 1.0 {
            return Err(Error::config(
                f("unlabeled.code_fraction"),
                "must be in [0, 1], with general_fraction + code_fraction ≤ 1",
            ));
        }
        if !u.generated_math && u.jsonl.is_empty() && u.general_fraction + u.code_fraction < 1.0 {
            return Err(Error::config(
                f("unlabeled"),
                "no math source: enable generated_math, list jsonl files, or set general_fraction + code_fraction = 1",
            ));
        }
        if self.diagnostic_corrupt_mask && u.corrupt.is_none() {
            return Err(Error::config(
                f("diagnostic_corrupt_mask"),
                "needs unlabeled.corrupt (there is no corruption mask without it)",
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
