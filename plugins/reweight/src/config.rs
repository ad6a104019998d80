//! The `reweight` designer's config (its JSON Schema is shown by `vpt schema reweight`).

use schemars::JsonSchema;
use serde::Deserialize;
use vpt_sdk::checks::{check_elements, check_size};
use vpt_sdk::{Error, Result};

/// Config of the `reweight` designer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReweightConfig {
    /// Hidden widths of the scoring MLP φ (empty: a linear score; at most 64 layers, each 1 to
    /// 65536 wide).
    #[serde(default = "defaults::hidden")]
    pub hidden: Vec<i64>,
    /// Activation between hidden layers.
    #[serde(default)]
    pub activation: Activation,
    /// How scores become weights: `softmax` (w = B·softmax(s/T)) or `sigmoid`
    /// (w = σ(s/T) / mean σ(s/T)). Both give weights ≥ 0 with mean 1.
    #[serde(default)]
    pub normalization: Normalization,
    /// Temperature T of the normalisation: higher keeps the weights closer to uniform.
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// Standardise each feature over the batch (zero mean, unit variance) before scoring.
    #[serde(default = "defaults::standardize")]
    pub standardize: bool,
    /// The design input to score (B, F); tasks provide `example_features` by convention.
    #[serde(default = "defaults::input")]
    pub input: String,
    /// R(φ, c), scaled by `meta.lambda`: `kl` = KL(w/B ‖ uniform) = log B − H(w/B) (the
    /// negative entropy up to a constant: discourages concentrating on few examples);
    /// `reverse_kl` = KL(uniform ‖ w/B) = −mean log w (keeps every example's weight away from 0).
    #[serde(default)]
    pub regularizer: Regularizer,
    /// Precision of φ: `float32`, or `float64` (use with an f64 task for tight finite-difference
    /// checks of the hypergradient).
    #[serde(default)]
    pub dtype: Precision,
}

/// Activation of the hidden layers.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// tanh (smooth; the default).
    #[default]
    Tanh,
    /// ReLU.
    Relu,
}

/// How scores become weights.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// w = B·softmax(s/T): the examples compete for a fixed total weight B.
    #[default]
    Softmax,
    /// w = σ(s/T) / mean σ(s/T): each example is gated independently, then renormalised.
    Sigmoid,
}

/// The regulariser R(φ, c).
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Regularizer {
    /// KL(w/B ‖ uniform) = mean(w log w).
    #[default]
    Kl,
    /// KL(uniform ‖ w/B) = −mean(log w).
    ReverseKl,
}

/// Precision of φ.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32.
    #[default]
    Float32,
    /// f64.
    Float64,
}

mod defaults {
    pub fn hidden() -> Vec<i64> {
        vec![32]
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn standardize() -> bool {
        true
    }
    pub fn input() -> String {
        "example_features".into()
    }
}

/// Most hidden layers of φ.
pub const MAX_LAYERS: usize = 64;
/// Widest hidden layer of φ.
pub const MAX_WIDTH: i64 = 1 << 16;
/// Most weights in one layer of φ (2^28, 1 GiB of f32).
pub const MAX_WEIGHTS: u64 = 1 << 28;

impl ReweightConfig {
    /// Checks value ranges the types cannot express, naming the field: at most 64 hidden
    /// layers, each 1 to 65536 wide, with at most 2^28 weights between two of them.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config(
                "temperature",
                format!("must be a positive number, got {}", self.temperature),
            ));
        }
        check_size("hidden.len()", self.hidden.len(), 0, MAX_LAYERS)?;
        for (i, w) in self.hidden.iter().enumerate() {
            check_size(format!("hidden[{i}]"), *w, 1, MAX_WIDTH)?;
        }
        for (i, pair) in self.hidden.windows(2).enumerate() {
            let (a, b) = (format!("hidden[{i}]"), format!("hidden[{}]", i + 1));
            let factors = [(a.as_str(), pair[0] as u64), (b.as_str(), pair[1] as u64)];
            check_elements(b.clone(), &factors, MAX_WEIGHTS)?;
        }
        if self.input.is_empty() {
            return Err(Error::config("input", "must name a design input"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpt_sdk::parse_config;

    #[test]
    fn defaults_and_errors_name_the_field() {
        let c: ReweightConfig = parse_config(&serde_json::json!({})).unwrap();
        assert_eq!(c.hidden, vec![32]);
        assert_eq!(c.normalization, Normalization::Softmax);
        c.validate().unwrap();
        let e =
            parse_config::<ReweightConfig>(&serde_json::json!({"temprature": 2.0})).unwrap_err();
        assert!(e.to_string().contains("temprature"), "{e}");
        let e = parse_config::<ReweightConfig>(&serde_json::json!({"normalization": "relu"}))
            .unwrap_err();
        assert!(e.to_string().contains("normalization"), "{e}");
        let c: ReweightConfig = parse_config(&serde_json::json!({"temperature": 0.0})).unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
        let c: ReweightConfig = parse_config(&serde_json::json!({"hidden": [8, 0]})).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("hidden[1]"));
    }
}
