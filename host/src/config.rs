//! The typed run config: defaults < file < `--set` overrides; validated before any plugin loads,
//! with errors that name the field. Path fields of component configs: [`paths`].

pub mod paths;

pub use crate::optim::OptimConfig;
use crate::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::Path};

/// A whole run: what to train, how to steer it, and the budget.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed, budget, evaluation and checkpoint cadence, device.
    pub run: RunSection,
    /// The task (modality + downstream target) and its plugin.
    pub task: ComponentSection,
    /// The designer φ; absent or `enabled = false` means the baseline construction.
    #[serde(default)]
    pub designer: Option<DesignerSection>,
    /// The value estimator and meta-step cadence.
    #[serde(default)]
    pub meta: MetaConfig,
    /// Opt_θ: identical for every arm.
    #[serde(default)]
    pub learner: OptimConfig,
    /// Opt_φ.
    #[serde(default = "OptimConfig::designer_default")]
    pub designer_optim: OptimConfig,
    /// Extra arms for `vpt compare`: name → overrides.
    #[serde(default)]
    pub arms: BTreeMap<String, ArmConfig>,
    /// Where relative paths in the component configs are taken from (not part of the config).
    #[serde(skip)]
    #[schemars(skip)]
    pub origin: paths::PathOrigin,
}

/// `[run]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Base seed; the torch RNG is reseeded as a pure function of (seed, step).
    #[serde(default)]
    pub seed: u64,
    /// Learner-step budget.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Wall-clock budget in seconds (training and meta time; evaluation is not charged).
    #[serde(default)]
    pub wall_clock: Option<f64>,
    /// Learner steps between evaluations (0: only at the end).
    #[serde(default)]
    pub eval_every: u64,
    /// Seconds of charged time between evaluations under a wall-clock budget (0: off; never
    /// negative).
    #[serde(default)]
    pub eval_every_seconds: f64,
    /// Cap on evaluation examples, passed to the task (at least 1; absent: no cap).
    #[serde(default)]
    pub eval_limit: Option<u64>,
    /// Learner steps between checkpoints (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    /// Checkpoints to keep (the newest ones).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Intra-op threads for libtorch (0: leave libtorch's default; at most 4096).
    #[serde(default)]
    pub threads: i32,
}

/// Largest `run.threads`.
pub const MAX_THREADS: i32 = 4096;

fn default_keep() -> usize {
    2
}
fn default_device() -> String {
    "cpu".into()
}

/// `[task]`: which plugin, which task, and the task's own config table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSection {
    /// Plugin name (its manifest name).
    pub plugin: String,
    /// Component name inside the plugin.
    pub name: String,
    /// The component's config (validated by the plugin against its schema).
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

/// `[designer]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesignerSection {
    /// False turns the designer off (the baseline construction).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Plugin name; defaults to the task's plugin.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Designer name inside the plugin.
    pub name: String,
    /// The designer's config.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}
fn yes() -> bool {
    true
}

/// `[meta]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// Value estimator: `exact`, `cosine`, `random_feedback` or `none` (no meta step); the
    /// diagnostics `frozen` (φ never updated) and `oracle` (targets set from g_down).
    #[serde(default = "default_estimator")]
    pub estimator: String,
    /// r: one meta step every `period` learner steps.
    #[serde(default = "one")]
    pub period: u64,
    /// No meta step before this learner step.
    #[serde(default)]
    pub burn_in: u64,
    /// λ, the weight of the designer's regulariser R(φ, c).
    #[serde(default)]
    pub lambda: f64,
    /// Pair each feedback set with an unlabeled batch of its own domain and average the
    /// alignments (the paper's domain-matched alignment).
    #[serde(default)]
    pub domain_matched: bool,
    /// Feedback sets and weights ω_j; empty means every feedback set of the task, weight 1.
    #[serde(default)]
    pub feedback: Vec<FeedbackWeight>,
    /// Fraction of each unlabeled batch the meta step uses: its first ⌈f·B⌉ examples (the
    /// paper's smaller meta batch). 1 = the whole batch.
    #[serde(default = "unit")]
    pub batch_fraction: f64,
    /// Longest sequence the meta step uses, for tasks with sequences (their first positions;
    /// the paper: 256 against 1,024 for pretraining). 0 = whole sequences.
    #[serde(default)]
    pub max_seq_len: usize,
    /// The metric V aligns the gradients in: `none` (V = g_downᵀ g_pre, the first-order value
    /// of an SGD step) or `adam` (V = g_downᵀ P g_pre with P the learner AdamW's current
    /// diagonal preconditioner 1/(√v̂ + ε): the first-order value of the step AdamW takes).
    #[serde(default)]
    pub precondition: Precondition,
}

/// `meta.precondition`: the preconditioner between g_down and g_pre in V (DESIGN §1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precondition {
    /// V = g_downᵀ g_pre.
    #[default]
    None,
    /// V = g_downᵀ P g_pre, P the learner AdamW's bias-corrected 1/(√v̂ + ε) on S.
    Adam,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            estimator: default_estimator(),
            period: 1,
            burn_in: 0,
            lambda: 0.0,
            domain_matched: false,
            feedback: vec![],
            batch_fraction: 1.0,
            max_seq_len: 0,
            precondition: Precondition::None,
        }
    }
}

fn default_estimator() -> String {
    "exact".into()
}
fn one() -> u64 {
    1
}

/// One `[[meta.feedback]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackWeight {
    /// Feedback set name (as the task lists it).
    pub set: String,
    /// ω_j.
    #[serde(default = "unit")]
    pub weight: f64,
}

fn unit() -> f64 {
    1.0
}

/// `[arms.NAME]`: overrides that turn the config into one arm of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// `key.path=value` overrides, applied after the file and before the command line.
    pub set: Vec<String>,
}

/// Overrides of the built-in arms of `vpt compare`.
pub fn builtin_arm(name: &str) -> Option<Vec<String>> {
    match name {
        "baseline" => Some(vec![
            "meta.estimator=none".into(),
            "designer.enabled=false".into(),
        ]),
        "v" => Some(vec![]),
        "random_feedback" => Some(vec!["meta.estimator=random_feedback".into()]),
        // V in the learner's Adam metric (meta.precondition)
        "v_adam" => Some(vec!["meta.precondition=adam".into()]),
        // the cosine estimator, and the diagnostic arms (diagnostics.rs)
        "cosine" | "frozen" | "oracle" => Some(vec![format!("meta.estimator={name}")]),
        _ => None,
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`key.path=value`), expands `${VAR}` in strings,
    /// parses and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut doc: toml::Value = toml::from_str(&text)
            .map_err(|e| Error::config("(file)", format!("{}: {}", path.display(), e.message())))?;
        apply_overrides(&mut doc, overrides)?;
        Self::from_toml(doc)?.read_from(path, overrides)
    }

    /// Parses an already-merged TOML document (its relative paths are taken from the working
    /// directory unless [`read_from`](Self::read_from) says otherwise).
    pub fn from_toml(mut doc: toml::Value) -> Result<RunConfig> {
        let env_led = paths::env_led_fields(&doc);
        expand_env(&mut doc, "")?;
        let mut cfg = Self::from_expanded(doc)?;
        cfg.origin.shell_fields = env_led;
        Ok(cfg)
    }

    /// Parses a run directory's saved config, already resolved when the run started (a `${…}`
    /// left in it is literal and is never expanded a second time), with `overrides` applied:
    /// only the overrides' own values are expanded.
    pub fn from_resolved(mut doc: toml::Value, overrides: &[String]) -> Result<RunConfig> {
        let mut changes = toml::Value::Table(Default::default());
        apply_overrides(&mut changes, overrides)?;
        expand_env(&mut changes, "")?;
        merge(&mut doc, changes);
        Self::from_expanded(doc)
    }

    fn from_expanded(doc: toml::Value) -> Result<RunConfig> {
        let json =
            serde_json::to_value(&doc).map_err(|e| Error::config("(file)", e.to_string()))?;
        let cfg: RunConfig = serde_path_to_error::deserialize(json)
            .map_err(|e| Error::config(e.path().to_string(), e.into_inner().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Notes that this config was read from `file` with the command-line overrides
    /// `cli_overrides`: relative paths written in the file are taken from its directory, those
    /// given on the command line from the working directory ([`paths`]).
    pub fn read_from(mut self, file: &Path, cli_overrides: &[String]) -> Result<RunConfig> {
        self.origin.note_file(file)?;
        self.origin.note_overrides(cli_overrides);
        Ok(self)
    }

    /// Checks ranges and combinations; every error names its field.
    pub fn validate(&self) -> Result<()> {
        let r = &self.run;
        if r.steps.is_none() && r.wall_clock.is_none() {
            return Err(Error::config(
                "run.steps",
                "set a budget: run.steps or run.wall_clock",
            ));
        }
        if r.steps == Some(0) {
            return Err(Error::config("run.steps", "must be at least 1"));
        }
        if let Some(w) = r.wall_clock {
            if !(w > 0.0 && w.is_finite()) {
                return Err(Error::config(
                    "run.wall_clock",
                    "must be a positive number of seconds",
                ));
            }
        }
        check_device(&r.device).map_err(|m| Error::config("run.device", m))?;
        if !(r.eval_every_seconds >= 0.0 && r.eval_every_seconds.is_finite()) {
            return Err(Error::config(
                "run.eval_every_seconds",
                format!(
                    "{} is not a non-negative number of seconds (0 = off)",
                    r.eval_every_seconds
                ),
            ));
        }
        if r.eval_limit == Some(0) {
            return Err(Error::config(
                "run.eval_limit",
                "must be at least 1 (leave it out to evaluate every example)",
            ));
        }
        if !(0..=MAX_THREADS).contains(&r.threads) {
            return Err(Error::config(
                "run.threads",
                format!(
                    "{} is not 0 (libtorch's default) or a thread count up to {MAX_THREADS}",
                    r.threads
                ),
            ));
        }
        if !(self.meta.batch_fraction > 0.0 && self.meta.batch_fraction <= 1.0) {
            return Err(Error::config("meta.batch_fraction", "must be in (0, 1]"));
        }
        if self.meta.precondition == Precondition::Adam && self.learner.optimizer != "adamw" {
            return Err(Error::config(
                "meta.precondition",
                format!(
                    "`adam` needs the learner to step with AdamW (learner.optimizer is `{}`)",
                    self.learner.optimizer
                ),
            ));
        }
        if self.meta.period == 0 {
            return Err(Error::config("meta.period", "must be at least 1"));
        }
        if !(self.meta.lambda >= 0.0 && self.meta.lambda.is_finite()) {
            return Err(Error::config(
                "meta.lambda",
                "must be a non-negative number",
            ));
        }
        crate::estimators::lookup(&self.meta.estimator)
            .map_err(|m| Error::config("meta.estimator", m))?;
        for (i, f) in self.meta.feedback.iter().enumerate() {
            if !(f.weight >= 0.0 && f.weight.is_finite()) {
                return Err(Error::config(
                    format!("meta.feedback[{i}].weight"),
                    "must be a non-negative number",
                ));
            }
        }
        self.learner.validate("learner")?;
        self.designer_optim.validate("designer_optim")?;
        for (name, arm) in &self.arms {
            for (i, s) in arm.set.iter().enumerate() {
                if !s.contains('=') {
                    return Err(Error::config(
                        format!("arms.{name}.set[{i}]"),
                        "expected `key.path=value`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The designer section when the designer is on.
    pub fn active_designer(&self) -> Option<&DesignerSection> {
        self.designer.as_ref().filter(|d| d.enabled)
    }

    /// True when meta steps run (an estimator other than `none` and an active designer).
    pub fn meta_enabled(&self) -> bool {
        self.meta.estimator != "none" && self.active_designer().is_some()
    }
}

/// `cpu`, or `cuda`/`cuda:N` naming a CUDA device this machine has.
fn check_device(device: &str) -> std::result::Result<(), String> {
    let shown = crate::error::clip(device, 40);
    if device == "cpu" {
        return Ok(());
    }
    let index = match device.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| format!("`{shown}` is not `cpu` or `cuda:N`"))?,
        None => return Err(format!("`{shown}` is not `cpu` or `cuda:N`")),
    };
    let count = tch::Cuda::device_count().max(0) as usize;
    if index >= count {
        return Err(format!(
            "`{shown}`: this machine has {count} CUDA device(s){}",
            if count == 0 { "; use `cpu`" } else { "" }
        ));
    }
    Ok(())
}

impl RunConfig {
    /// `run.device` as a tch device (validated by [`RunConfig::validate`]).
    pub fn device(&self) -> tch::Device {
        match self.run.device.strip_prefix("cuda") {
            Some(rest) => tch::Device::Cuda(rest.trim_start_matches(':').parse().unwrap_or(0)),
            None => tch::Device::Cpu,
        }
    }
}

impl OptimConfig {
    fn validate(&self, section: &str) -> Result<()> {
        crate::optim::lookup(&self.optimizer)
            .map_err(|m| Error::config(format!("{section}.optimizer"), m))?;
        let checks: [(&str, bool, &str); 5] = [
            (
                "lr",
                self.lr >= 0.0 && self.lr.is_finite(),
                "must be a non-negative number",
            ),
            (
                "min_lr_ratio",
                (0.0..=1.0).contains(&self.min_lr_ratio),
                "must lie in [0, 1]",
            ),
            (
                "weight_decay",
                self.weight_decay >= 0.0,
                "must be non-negative",
            ),
            ("clip", self.clip >= 0.0, "must be non-negative (0 = off)"),
            (
                "betas",
                self.betas.iter().all(|b| (0.0..1.0).contains(b)),
                "both must lie in [0, 1)",
            ),
        ];
        for (field, ok, msg) in checks {
            if !ok {
                return Err(Error::config(format!("{section}.{field}"), msg));
            }
        }
        Ok(())
    }
}

/// Applies `key.path=value` overrides to a TOML tree. The value is parsed as a TOML value
/// (number, bool, array, inline table, quoted string) and falls back to a bare string.
pub fn apply_overrides(doc: &mut toml::Value, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (key, raw) = o.split_once('=').ok_or_else(|| {
            Error::config(o.clone(), "an override must look like `key.path=value`")
        })?;
        let value = parse_value(key.trim(), raw.trim())?;
        let mut node = &mut *doc;
        let parts: Vec<&str> = key.trim().split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| {
                Error::config(
                    parts[..i].join("."),
                    "is not a table, cannot set a key inside it",
                )
            })?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), value.clone());
                break;
            }
            node = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
        }
    }
    Ok(())
}

/// Sets every leaf of `changes` in `doc`, keeping `doc`'s other keys.
fn merge(doc: &mut toml::Value, changes: toml::Value) {
    match (doc, changes) {
        (toml::Value::Table(d), toml::Value::Table(c)) => {
            for (k, v) in c {
                match d.get_mut(&k) {
                    Some(slot) if slot.is_table() && v.is_table() => merge(slot, v),
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, c) => *d = c,
    }
}

/// Converts a JSON document (e.g. a run directory's `config.json`) to TOML, dropping nulls.
pub fn json_to_toml(json: serde_json::Value) -> Result<toml::Value> {
    fn strip(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => m
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip(v)))
                .collect(),
            serde_json::Value::Array(a) => a.into_iter().map(strip).collect(),
            other => other,
        }
    }
    serde_json::from_value(strip(json)).map_err(|e| Error::config("(file)", e.to_string()))
}

/// The TOML value `raw`; a bare word that is not TOML is a string. Something that reads as a
/// number but is not one TOML accepts (`18446744073709551616`, `1e999`) is refused with TOML's
/// own reason, naming `key`, as the same value in the file would be.
fn parse_value(key: &str, raw: &str) -> Result<toml::Value> {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => Ok(t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into()))),
        Err(e) if looks_numeric(raw) => Err(Error::config(
            key,
            format!("`{}`: {}", crate::error::clip(raw, 60), e.message().trim()),
        )),
        Err(_) => Ok(toml::Value::String(raw.to_string())),
    }
}

/// Whether `raw` is spelled like a number: an optional sign, a digit, then only digits and
/// `_ . e E + -`.
fn looks_numeric(raw: &str) -> bool {
    let body = raw.strip_prefix(['+', '-']).unwrap_or(raw);
    body.starts_with(|c: char| c.is_ascii_digit())
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || "_.eE+-".contains(c))
}

/// Walks the document once: replaces `${VAR}` in every string with the environment variable's
/// value (one pass: a value that itself contains `${…}` is inserted as is, never expanded
/// again), and refuses non-finite numbers (`nan`, `inf`), naming the field. `path` is the
/// dotted path of `v`.
fn expand_env(v: &mut toml::Value, path: &str) -> Result<()> {
    let field = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        toml::Value::String(s) => {
            *s = expand_str(s).map_err(|m| Error::config(path, m))?;
            Ok(())
        }
        toml::Value::Float(f) if !f.is_finite() => Err(Error::config(
            path,
            format!("{f} is not a finite number (NaN and infinities are not accepted)"),
        )),
        toml::Value::Array(a) => a
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| expand_env(v, &format!("{path}[{i}]"))),
        toml::Value::Table(t) => t.iter_mut().try_for_each(|(k, v)| expand_env(v, &field(k))),
        _ => Ok(()),
    }
}

/// `s` with each `${VAR}` replaced, left to right, in one pass.
fn expand_str(s: &str) -> std::result::Result<String, String> {
    let shown = || crate::error::clip(s, 200);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{}`", shown()))?;
        let var = &after[..end];
        let val = std::env::var(var).map_err(|_| {
            format!(
                "`{}` uses ${{{}}}, which is not set in the environment",
                shown(),
                crate::error::clip(var, 80)
            )
        })?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, overrides: &[&str]) -> Result<RunConfig> {
        let mut doc: toml::Value = toml::from_str(text).unwrap();
        apply_overrides(
            &mut doc,
            &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        RunConfig::from_toml(doc)
    }

    const MINIMAL: &str = "[run]\nsteps = 10\n[task]\nplugin = \"tiny\"\nname = \"tiny\"\n";

    #[test]
    fn defaults_file_then_overrides() {
        let c = parse(
            MINIMAL,
            &["meta.period=4", "task.config.dim=8", "run.device=cpu"],
        )
        .unwrap();
        assert_eq!(c.meta.period, 4);
        assert_eq!(c.task.config["dim"], 8);
        assert_eq!(c.learner.optimizer, "adamw");
        assert_eq!(c.designer_optim.lr, 1e-3);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(MINIMAL, &["meta.period=0"]).unwrap_err().to_string();
        assert!(e.contains("meta.period"), "{e}");
        let e = parse(MINIMAL, &["meta.perod=3"]).unwrap_err().to_string();
        assert!(e.contains("meta") && e.contains("perod"), "{e}");
        let e = parse(MINIMAL, &["learner.lr=\"fast\""])
            .unwrap_err()
            .to_string();
        assert!(e.contains("learner.lr"), "{e}");
        let e = parse(MINIMAL, &["meta.estimator=psychic"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("meta.estimator") && e.contains("exact"), "{e}");
        let e = parse("[run]\n[task]\nplugin=\"t\"\nname=\"t\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.steps"), "{e}");
    }

    #[test]
    fn env_vars_expand_and_missing_ones_are_named() {
        std::env::set_var("VPT_TEST_MODEL_PATH", "/m.gguf");
        let c = parse(MINIMAL, &["task.config.model=\"${VPT_TEST_MODEL_PATH}\""]).unwrap();
        assert_eq!(c.task.config["model"], "/m.gguf");
        let e = parse(MINIMAL, &["task.config.model=\"${VPT_SURELY_UNSET_VAR}\""])
            .unwrap_err()
            .to_string();
        assert!(e.contains("VPT_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn env_expansion_is_one_pass_and_non_finite_numbers_are_named() {
        std::env::set_var("VPT_TEST_SELF_REF", "a${VPT_TEST_SELF_REF}b");
        let c = parse(MINIMAL, &["task.config.p=\"x${VPT_TEST_SELF_REF}\""]).unwrap();
        assert_eq!(c.task.config["p"], "xa${VPT_TEST_SELF_REF}b");
        let e = parse(MINIMAL, &["learner.lr=nan"]).unwrap_err().to_string();
        assert!(e.contains("`learner.lr`") && e.contains("NaN"), "{e}");
        let e = parse(MINIMAL, &["task.config.w=[1.0, inf]"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`task.config.w[1]`"), "{e}");
    }

    #[test]
    fn device_must_be_cpu_or_an_existing_cuda_device() {
        for bad in ["gpu", "cuda:x", "cuda:-1", "cuda:99"] {
            let e = parse(MINIMAL, &[&format!("run.device=\"{bad}\"")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("`run.device`"), "{bad}: {e}");
        }
    }

    #[test]
    fn out_of_range_run_values_are_named() {
        for (set, field) in [
            ("run.threads=-3", "`run.threads`"),
            ("run.threads=100000", "`run.threads`"),
            ("run.eval_every_seconds=-1", "`run.eval_every_seconds`"),
            ("run.eval_limit=0", "`run.eval_limit`"),
            ("run.steps=18446744073709551616", "`run.steps`"),
        ] {
            let e = parse(MINIMAL, &[set]).unwrap_err().to_string();
            assert!(
                e.contains(field) && !e.contains("invalid type"),
                "{set}: {e}"
            );
        }
        let c = parse(
            MINIMAL,
            &["task.config.name=3rd", "task.config.d=2024-01-02"],
        )
        .unwrap();
        assert_eq!(c.task.config["name"], "3rd");
    }

    #[test]
    fn builtin_arms() {
        let c = parse(MINIMAL, &["designer.name=x"]).unwrap();
        assert!(c.meta_enabled());
        let mut doc: toml::Value = toml::from_str(MINIMAL).unwrap();
        let mut ov = vec!["designer.name=x".to_string()];
        ov.extend(builtin_arm("baseline").unwrap());
        apply_overrides(&mut doc, &ov).unwrap();
        assert!(!RunConfig::from_toml(doc).unwrap().meta_enabled());
    }
}
