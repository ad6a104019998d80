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
use vpt_sdk::checks::{check_elements, check_size};
use vpt_sdk::{Error, InputPath, Result};

/// Where the learner comes from. Relative paths in a config file are taken from its directory.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A GGUF file (weights dequantised to f32; tokenizer from its metadata), e.g.
    /// `{ gguf = "${VPT_SMOLLM2_GGUF}" }`.
    Gguf(InputPath),
    /// An HF directory with `config.json`, `model.safetensors`, `tokenizer.json`.
    Hf(InputPath),
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
    /// Tokens per unlabeled row (T; 2 to 2^17, and batch_size × seq_len ≤ 2^22).
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    /// Rows per unlabeled batch (B; 1 to 2^16).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Candidates per position K for soft targets (the true token + the learner's top K−1;
    /// 2 to the vocabulary size).
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
    /// Examples per feedback batch (1 to 2^16).
    #[serde(default = "d_batch")]
    pub feedback_batch_size: usize,
    /// Longest feedback row in tokens (prompt + answer); longer ones keep their tail (1 to 2^17).
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
    /// JSONL sources (paths relative to the config file's directory): a path of `{"text"}` /
    /// `{"prompt","response"}` records, or a labeled set
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
    pub root: InputPath,
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
    /// The JSONL file (`jsonl` / `gsm8k_jsonl` only; relative to the config file's directory).
    #[serde(default)]
    pub path: Option<InputPath>,
    /// JSON field names (default: `prompt`/`response`/`options`; GSM8K: `question`/`answer`).
    /// The feedback loss is the NLL of the response tokens after the prompt.
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Difficulty levels (`generated` only).
    #[serde(default = "d_levels")]
    pub levels: Vec<u8>,
    /// Number of examples used for meta steps (`generated`: how many to generate; JSONL: a cap;
    /// 1 to 2^24).
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
    /// The JSONL file (`jsonl` / `gsm8k_jsonl` only; relative to the config file's directory).
    #[serde(default)]
    pub path: Option<InputPath>,
    /// JSON field names (default: the kind's).
    #[serde(default)]
    pub fields: Option<Fields>,
    /// Difficulty levels (`generated` only).
    #[serde(default = "d_levels")]
    pub levels: Vec<u8>,
    /// Number of test problems (the file's first `size`; at most 2^24).
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
    /// Longest generated answer in tokens (at most 2^17).
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
fn d_general_root() -> InputPath {
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

/// Largest `seq_len` and `feedback_max_len`, and longest generated answer (`max_new_tokens`).
pub const MAX_SEQ: usize = 1 << 17;
/// Largest batch sizes (`batch_size`, `feedback_batch_size`, `eval.batch_size`) and `top_k`.
pub const MAX_BATCH: usize = 1 << 16;
/// Largest number of examples in a set (`feedback[].size`, `.heldout`, `eval.test.size`).
pub const MAX_SET: usize = 1 << 24;
/// Most tokens in one batch (`batch_size × seq_len`, `feedback_batch_size × feedback_max_len`).
pub const MAX_BATCH_TOKENS: u64 = 1 << 22;
/// Most elements of one batch's logits (`batch_size × seq_len × vocab`): 2^34, 64 GiB as f32.
pub const MAX_LOGITS: u64 = 1 << 34;

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

    /// Bounds every size, naming the field, so that no value reaches an allocation that aborts
    /// (see the `MAX_*` constants: sequences ≤ 2^17 tokens, batches ≤ 2^16 rows and 2^22
    /// tokens, sets ≤ 2^24 examples).
    fn validate_sizes(&self) -> Result<()> {
        let f = |name: &str| format!("task.config.{name}");
        check_size(f("seq_len"), self.seq_len, 2, MAX_SEQ)?;
        check_size(f("batch_size"), self.batch_size, 1, MAX_BATCH)?;
        check_size(
            f("feedback_batch_size"),
            self.feedback_batch_size,
            1,
            MAX_BATCH,
        )?;
        check_size(f("feedback_max_len"), self.feedback_max_len, 1, MAX_SEQ)?;
        check_size(f("top_k"), self.top_k, 2, MAX_BATCH as i64)?;
        check_size(f("feedback_cache_mib"), self.feedback_cache_mib, 0, 1 << 20)?;
        if let Some(n) = self.alignment_layers {
            check_size(f("alignment_layers"), n, 1, MAX_BATCH)?;
        }
        match &self.trainable {
            Scope::LastN(n) => check_size(f("trainable.last_n"), *n, 1, MAX_BATCH)?,
            Scope::LoraLastN { layers, rank, .. } => {
                check_size(f("trainable.lora_last_n.layers"), *layers, 1, MAX_BATCH)?;
                check_size(f("trainable.lora_last_n.rank"), *rank, 1, MAX_BATCH as i64)?;
            }
            Scope::All => {}
        }
        let g = &self.general;
        check_size(f("general.heldout_percent"), g.heldout_percent, 0, 100)?;
        check_size(f("general.max_chars"), g.max_chars, 1, 1 << 24)?;
        check_size(f("general.min_chars"), g.min_chars, 0, g.max_chars)?;
        let e = &self.eval;
        check_size(f("eval.test.size"), e.test.size, 0, MAX_SET)?;
        check_size(f("eval.general_rows"), e.general_rows, 0, 1 << 20)?;
        check_size(f("eval.max_new_tokens"), e.max_new_tokens, 0, MAX_SEQ)?;
        check_size(f("eval.pass_k"), e.pass_k, 0, 1 << 10)?;
        check_size(f("eval.batch_size"), e.batch_size, 1, MAX_BATCH)?;
        check_size(f("eval.bootstrap"), e.bootstrap, 0, 1 << 20)?;
        let tokens = |rows: usize, len: usize| [("rows", rows as u64), ("tokens", len as u64)];
        check_elements(
            f("batch_size"),
            &tokens(self.batch_size, self.seq_len),
            MAX_BATCH_TOKENS,
        )?;
        check_elements(
            f("feedback_batch_size"),
            &tokens(self.feedback_batch_size, self.feedback_max_len),
            MAX_BATCH_TOKENS,
        )?;
        Ok(())
    }

    /// Checks the batch's logits (and the soft targets' candidates) fit [`MAX_LOGITS`] for a
    /// model of `vocab` tokens, and LoRA's rank its width `hidden`.
    pub(super) fn validate_for_model(&self, vocab: i64, hidden: i64) -> Result<()> {
        let f = |name: &str| format!("task.config.{name}");
        let rows = self.batch_size.max(self.feedback_batch_size) as u64;
        let len = self.seq_len.max(self.feedback_max_len) as u64;
        check_elements(
            f("batch_size"),
            &[
                ("rows", rows),
                ("tokens", len),
                ("vocab", vocab.max(0) as u64),
            ],
            MAX_LOGITS,
        )?;
        check_size(f("top_k"), self.top_k, 2, vocab.max(2))?;
        if let Scope::LoraLastN { rank, .. } = &self.trainable {
            check_size(f("trainable.lora_last_n.rank"), *rank, 1, hidden.max(1))?;
        }
        Ok(())
    }

    /// Checks the settings; the error names the `task.config.…` field.
    pub(super) fn validate(&self) -> Result<()> {
        let f = |name: &str| format!("task.config.{name}");
        self.validate_sizes()?;
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
            if !levels_ok(&s.levels) {
                return Err(Error::config(
                    at("levels"),
                    "levels must be a non-empty list of 1, 2, 3",
                ));
            }
            check_size(at("size"), s.size, 1, MAX_SET)?;
            check_size(at("heldout"), s.heldout, 0, MAX_SET)?;
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
