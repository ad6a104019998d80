//! The Llama architecture hyper-parameters ([`Config`], HF `config.json` meanings) and the
//! parameter names a configuration implies.

use serde::{Deserialize, Serialize};
use vpt_sdk::{Error, Result};

/// Architecture hyper-parameters (HF `config.json` meanings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Number of token ids (rows of the embedding).
    pub vocab_size: i64,
    /// Model width d.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: i64,
    /// Number of key/value heads (GQA when fewer than `num_heads`; must divide it).
    pub num_kv_heads: i64,
    /// Width of one head (even, for RoPE).
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// Whether the output projection is the embedding matrix.
    pub tie_embeddings: bool,
    /// Whether q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Longest sequence (positions) the RoPE tables cover.
    pub max_position: i64,
}

impl Config {
    /// A small random configuration for tests: vocab 300, d 64, MLP 128, 2 layers, 4 query heads,
    /// 2 KV heads, head dim 16, tied embeddings, max 256 positions.
    pub fn tiny() -> Config {
        Config {
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_embeddings: true,
            qkv_bias: false,
            max_position: 256,
        }
    }

    /// Checks the fields are consistent; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers as i64),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position", self.max_position),
        ];
        for (field, v) in positive {
            if v <= 0 {
                return Err(Error::config(field, format!("must be positive, got {v}")));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::config(
                "num_kv_heads",
                format!(
                    "{} does not divide num_heads {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::config(
                "head_dim",
                format!("must be even for RoPE, got {}", self.head_dim),
            ));
        }
        if self.rms_eps.is_nan()
            || self.rms_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
        {
            return Err(Error::config("rms_eps/rope_theta", "must be positive"));
        }
        Ok(())
    }

    /// HF names of every base-model parameter (no LoRA), sorted; loaders check completeness
    /// against this list.
    pub fn parameter_names(&self) -> Vec<String> {
        names_for(self, None)
    }

    /// Total parameter count of the base model (no LoRA).
    pub fn num_parameters(&self) -> i64 {
        let (d, h, kv, hd) = (
            self.hidden_size,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        );
        let attn = d * h * hd * 2
            + d * kv * hd * 2
            + if self.qkv_bias {
                h * hd + 2 * kv * hd
            } else {
                0
            };
        let mlp = 3 * d * self.intermediate_size;
        let layer = attn + mlp + 2 * d;
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + layer * self.num_layers as i64 + d + head
    }
}

/// Parameter names of a model with `cfg` and LoRA adapters from block `lora_from` on, sorted.
pub(crate) fn names_for(cfg: &Config, lora_from: Option<usize>) -> Vec<String> {
    let mut v = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ];
    if !cfg.tie_embeddings {
        v.push("lm_head.weight".into());
    }
    for i in 0..cfg.num_layers {
        let l = format!("model.layers.{i}");
        v.push(format!("{l}.input_layernorm.weight"));
        v.push(format!("{l}.post_attention_layernorm.weight"));
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push(format!("{l}.self_attn.{proj}.weight"));
            if cfg.qkv_bias && proj != "o_proj" {
                v.push(format!("{l}.self_attn.{proj}.bias"));
            }
            if lora_from.is_some_and(|f| i >= f) {
                v.push(format!("{l}.self_attn.{proj}.lora_A.weight"));
                v.push(format!("{l}.self_attn.{proj}.lora_B.weight"));
            }
        }
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            v.push(format!("{l}.mlp.{proj}.weight"));
        }
    }
    v.sort();
    v
}
