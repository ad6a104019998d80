//! Training scopes: which parameters are trainable ([`Scope`]), the LoRA adapter settings of one
//! linear layer, and the name rules that select a scope's parameters (HF names,
//! `model.layers.{i}.…`, adapters `….lora_A.weight` / `….lora_B.weight`).

use serde::{Deserialize, Serialize};
use vpt_sdk::{Error, Result};

/// Which parameters are trainable (and which form the alignment subset S).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// Every parameter.
    All,
    /// Only the weights of the last N decoder blocks.
    LastN(usize),
    /// LoRA adapters on q/k/v/o of the last `layers` blocks; base weights frozen.
    LoraLastN {
        /// How many of the last blocks get adapters.
        layers: usize,
        /// Adapter rank r.
        rank: i64,
        /// LoRA α; the update is scaled by α / r.
        alpha: f64,
    },
}

/// LoRA settings for one linear layer: (rank, scale = α / r).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoraSpec {
    pub(crate) rank: i64,
    pub(crate) scale: f64,
}

impl Scope {
    /// The first adapted block and the adapter settings of a model of `n` blocks built for this
    /// scope (`None` unless [`Scope::LoraLastN`]); the error names the scope field.
    pub(crate) fn lora_plan(&self, n: usize) -> Result<Option<(usize, LoraSpec)>> {
        let Scope::LoraLastN {
            layers,
            rank,
            alpha,
        } = self
        else {
            return Ok(None);
        };
        if *layers == 0 || *layers > n {
            return Err(Error::config(
                "scope.layers",
                format!("must be in 1..={n}, got {layers}"),
            ));
        }
        if *rank <= 0 {
            return Err(Error::config(
                "scope.rank",
                format!("must be positive, got {rank}"),
            ));
        }
        let spec = LoraSpec {
            rank: *rank,
            scale: alpha / *rank as f64,
        };
        Ok(Some((n - layers, spec)))
    }

    /// Whether the parameter `name` (relative to the model root) of a model of `n` blocks is in
    /// this scope.
    pub(crate) fn contains(&self, name: &str, n: usize) -> bool {
        match self {
            Scope::All => true,
            Scope::LastN(k) => !is_lora(name) && layer_of(name).is_some_and(|i| i + k >= n),
            Scope::LoraLastN { layers, .. } => {
                is_lora(name) && layer_of(name).is_some_and(|i| i + layers >= n)
            }
        }
    }

    /// Checks this scope fits a model of `n` blocks with adapters from block `lora_from` on.
    pub(crate) fn check(&self, n: usize, lora_from: Option<usize>) -> Result<()> {
        match self {
            Scope::All => Ok(()),
            Scope::LastN(k) if *k == 0 || *k > n => {
                Err(Error::config("scope.last_n", format!("must be in 1..={n}, got {k}")))
            }
            Scope::LastN(_) => Ok(()),
            Scope::LoraLastN { layers, .. } => match lora_from {
                Some(f) if n - layers >= f && *layers > 0 => Ok(()),
                Some(f) => Err(Error::config(
                    "scope.layers",
                    format!("the model has LoRA adapters on the last {} layers, scope asks for {layers}", n - f),
                )),
                None => Err(Error::config(
                    "scope",
                    "lora_last_n needs a model built with Llama::with_scope(.., &Scope::LoraLastN{..})",
                )),
            },
        }
    }
}

/// Index of the block a parameter name belongs to (`model.layers.{i}.…`).
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Whether `name` is a LoRA adapter weight.
pub(crate) fn is_lora(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}
