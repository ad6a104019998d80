//! A Llama / Qwen2-family decoder in tch (RMSNorm, RoPE, GQA, SwiGLU, optional q/k/v bias,
//! tied or untied embeddings, optional LoRA adapters), in candle's file order: [`Config`] first,
//! then private modules (each `new(&Config, nn::Path)` + `forward`), then the public [`Llama`].
//!
//! Reference: HF `transformers/models/llama/modeling_llama.py` and candle
//! `candle-transformers/src/models/{llama,qwen2}.rs`. RoPE uses HF's "rotate half" layout;
//! GGUF checkpoints (whose Q/K rows llama.cpp permuted) are un-permuted by `crate::gguf`.
//!
//! # API
//! - [`Config`] (serde, HF-like field meanings) and [`Config::tiny`] (vocab 300, d 64, 2 layers,
//!   4 heads / 2 KV heads, head dim 16) for tests.
//! - [`Llama::new`]`(&vs.root(), &cfg) -> Llama` and [`Llama::with_scope`]`(&vs.root(), &cfg,
//!   &scope) -> Result<Llama>`; the latter adds LoRA adapters when `scope` is
//!   [`Scope::LoraLastN`]. Both *reuse* variables already in the VarStore (so a store filled by
//!   `gguf::load_gguf` / `hf::load_hf` can be built on), and create the missing ones.
//! - VarStore names are HF names: `model.embed_tokens.weight`,
//!   `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` (`.bias` on q/k/v when `qkv_bias`),
//!   `model.layers.{i}.mlp.{gate,up,down}_proj.weight`, `model.layers.{i}.input_layernorm.weight`,
//!   `model.layers.{i}.post_attention_layernorm.weight`, `model.norm.weight`, `lm_head.weight`
//!   (untied only); LoRA: `model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.weight` (r, in) and
//!   `…lora_B.weight` (out, r), B zero-initialised so the initial function is unchanged.
//! - [`Llama::forward_hidden`]`(ids (B,T) int64, Attention) -> (B,T,d)` after the final norm;
//!   [`Llama::logits`]`(hidden) -> (…, V)`; [`Llama::generate`]`(prompt, max_new, Sampling,
//!   stop) -> new tokens` (KV cache, no grad, stop token not included) and
//!   [`Llama::generate_greedy_batch`] (many left-padded prompts decoded together).
//! - [`Attention::Math`] is explicit matmul + softmax + causal mask and supports double backward
//!   (the meta path needs it); [`Attention::Fused`] uses `scaled_dot_product_attention`.
//! - [`Llama::apply_scope`]`(&vs, &scope) -> Result<Vec<(name, tensor)>>` freezes everything
//!   outside `scope` and returns the trainable tensors sorted by name (the model must be built
//!   at the store's root; LoRA covers attention projections only, not the MLP);
//!   [`Llama::alignment_names`]`(&scope)` lists the names of S for that scope.

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use vpt_sdk::{Error, Result, TchContext};

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

/// Which attention kernel a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// `scaled_dot_product_attention` (fast; CPU has no double backward).
    Fused,
    /// Explicit matmul + softmax + causal mask: safe for `create_graph` double backward.
    Math,
}

/// How [`Llama::generate`] picks the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The arg-max token (first on ties).
    Greedy,
    /// Sample from softmax(logits / t) with a private RNG seeded by `seed` (the shared torch RNG
    /// is not touched).
    Temperature {
        /// Temperature, > 0.
        t: f64,
        /// Seed of the private RNG.
        seed: u64,
    },
}

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
struct LoraSpec {
    rank: i64,
    scale: f64,
}

/// Gets `name` under `p` if the store already holds it (checking its shape), else creates it.
fn param(p: &nn::Path, name: &str, dims: &[i64], init: nn::Init) -> Result<Tensor> {
    if let Some(t) = p.get(name) {
        if t.size() != dims {
            return Err(Error::Tensor {
                name: p.path(name),
                message: format!(
                    "store holds shape {:?}, the config needs {dims:?}",
                    t.size()
                ),
            });
        }
        return Ok(t);
    }
    p.f_var(name, dims, init)
        .op(&format!("create {}", p.path(name)))
}

/// HF's default initialisation for weight matrices.
const INIT_W: nn::Init = nn::Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// A linear layer `y = x Wᵀ + b (+ scale · x Aᵀ Bᵀ)`.
#[derive(Debug)]
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    lora: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    fn new(
        p: nn::Path,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
        lora: Option<LoraSpec>,
    ) -> Result<Self> {
        let w = param(&p, "weight", &[out_dim, in_dim], INIT_W)?;
        let b = if bias {
            Some(param(&p, "bias", &[out_dim], nn::Init::Const(0.0))?)
        } else {
            None
        };
        let lora = match lora {
            None => None,
            Some(LoraSpec { rank, scale }) => {
                let bound = 1.0 / (in_dim as f64).sqrt();
                let a = param(
                    &(&p / "lora_A"),
                    "weight",
                    &[rank, in_dim],
                    nn::Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                )?;
                let b = param(
                    &(&p / "lora_B"),
                    "weight",
                    &[out_dim, rank],
                    nn::Init::Const(0.0),
                )?;
                Some((a, b, scale))
            }
        };
        Ok(Linear { w, b, lora })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.f_linear(&self.w, self.b.as_ref()).op("linear")?;
        match &self.lora {
            None => Ok(y),
            Some((a, b, scale)) => {
                let delta = x
                    .f_linear::<Tensor>(a, None)
                    .op("lora A")?
                    .f_linear::<Tensor>(b, None)
                    .op("lora B")?;
                y.f_add(&delta.f_mul_scalar(*scale)?).op("lora add")
            }
        }
    }
}

/// Root-mean-square layer norm with a learned gain.
#[derive(Debug)]
struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(cfg: &Config, p: nn::Path) -> Result<Self> {
        Ok(RmsNorm {
            w: param(&p, "weight", &[cfg.hidden_size], nn::Init::Const(1.0))?,
            eps: cfg.rms_eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // (…, d) → mean of squares over d, keepdim
        let ms = x.f_square()?.f_mean_dim(-1, true, None::<Kind>)?;
        let inv = ms.f_add_scalar(self.eps)?.f_rsqrt()?;
        x.f_mul(&inv)?.f_mul(&self.w).op("rms_norm")
    }
}

/// Rotary position embedding tables (HF "rotate half" layout), kept in f64.
#[derive(Debug)]
struct Rotary {
    /// (max_position, head_dim) cosines, f64.
    cos: Tensor,
    /// (max_position, head_dim) sines, f64.
    sin: Tensor,
}

impl Rotary {
    fn new(cfg: &Config, device: Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| cfg.rope_theta.powf(-(2 * i) as f64 / cfg.head_dim as f64))
            .collect();
        let inv = Tensor::from_slice(&inv); // (hd/2,)
        let pos = Tensor::f_arange(cfg.max_position, (Kind::Double, Device::Cpu))?; // (P,)
        let freqs = pos.f_outer(&inv)?; // (P, hd/2)
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?; // (P, hd)
        Ok(Rotary {
            cos: emb.f_cos()?.f_to(device)?,
            sin: emb.f_sin()?.f_to(device)?,
        })
    }

    /// (cos, sin) for positions `offset..offset+t`, shaped (1, 1, t, hd), in `kind`.
    fn tables(&self, offset: i64, t: i64, kind: Kind) -> Result<(Tensor, Tensor)> {
        let max = self.cos.size()[0];
        if offset + t > max {
            return Err(Error::msg(format!(
                "sequence reaches position {} but the model's max_position is {max}",
                offset + t
            )));
        }
        let get = |x: &Tensor| -> Result<Tensor> {
            x.f_narrow(0, offset, t)?
                .f_to_kind(kind)?
                .f_unsqueeze(0)?
                .f_unsqueeze(0)
                .op("rope tables")
        };
        Ok((get(&self.cos)?, get(&self.sin)?))
    }
}

/// Applies RoPE to x (B, H, T, hd) given (1, 1, T, hd) tables.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.size()[3];
    let x1 = x.f_narrow(3, 0, hd / 2)?;
    let x2 = x.f_narrow(3, hd / 2, hd / 2)?;
    let rot = Tensor::f_cat(&[&x2.f_neg()?, &x1], 3)?; // rotate_half(x)
    x.f_mul(cos)?.f_add(&rot.f_mul(sin)?).op("rope")
}

/// The causal structure of one forward call: `t` new queries after `offset` cached positions.
struct Mask {
    /// (t, offset + t) bool, or (B, 1, t, offset + t) with padding; true where a query must NOT
    /// attend.
    blocked: Tensor,
    offset: i64,
    t: i64,
    /// Whether `blocked` also hides padded keys (then the fused kernel needs it explicitly).
    padded: bool,
}

impl Mask {
    fn new(offset: i64, t: i64, device: Device) -> Result<Self> {
        let blocked = Tensor::f_ones([t, offset + t], (Kind::Bool, device))?.f_triu(offset + 1)?;
        Ok(Mask {
            blocked,
            offset,
            t,
            padded: false,
        })
    }

    /// The causal mask that also hides the keys flagged in `key_pad` (B, offset + t) bool. A
    /// padded query still sees itself, so no softmax row is empty (an empty row would give NaN
    /// values that a zero attention weight cannot cancel).
    fn with_padding(offset: i64, t: i64, key_pad: &Tensor) -> Result<Self> {
        let device = key_pad.device();
        let causal = Self::new(offset, t, device)?.blocked; // (t, S)
        let own = Tensor::f_cat(
            &[
                Tensor::f_zeros([t, offset], (Kind::Bool, device))?,
                Tensor::f_eye(t, (Kind::Bool, device))?,
            ],
            1,
        )?; // (t, S): query i's own position offset + i
        let blocked = causal
            .f_logical_or(&key_pad.f_unsqueeze(1)?)? // (B, t, S)
            .f_logical_and(&own.f_logical_not()?)?
            .f_unsqueeze(1)
            .op("padding mask")?; // (B, 1, t, S)
        Ok(Mask {
            blocked,
            offset,
            t,
            padded: true,
        })
    }
}

/// Multi-head self-attention with grouped KV heads and RoPE.
#[derive(Debug)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    nh: i64,
    nkv: i64,
    hd: i64,
}

impl SelfAttention {
    fn new(cfg: &Config, p: nn::Path, lora: Option<LoraSpec>) -> Result<Self> {
        let (d, nh, nkv, hd) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        Ok(SelfAttention {
            q: Linear::new(&p / "q_proj", d, nh * hd, cfg.qkv_bias, lora)?,
            k: Linear::new(&p / "k_proj", d, nkv * hd, cfg.qkv_bias, lora)?,
            v: Linear::new(&p / "v_proj", d, nkv * hd, cfg.qkv_bias, lora)?,
            o: Linear::new(&p / "o_proj", nh * hd, d, false, lora)?,
            nh,
            nkv,
            hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Mask,
        attn: Attention,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads = |lin: &Linear, n: i64| -> Result<Tensor> {
            // (B, T, n*hd) → (B, n, T, hd)
            lin.forward(x)?
                .f_view([b, t, n, self.hd])?
                .f_transpose(1, 2)
                .op("split heads")
        };
        let q = apply_rope(&heads(&self.q, self.nh)?, &rope.0, &rope.1)?;
        let mut k = apply_rope(&heads(&self.k, self.nkv)?, &rope.0, &rope.1)?;
        let mut v = heads(&self.v, self.nkv)?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::f_cat(&[pk, &k], 2)?; // (B, nkv, offset+T, hd)
                v = Tensor::f_cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        let scale = 1.0 / (self.hd as f64).sqrt();
        let y = match attn {
            Attention::Math => {
                // Repeat each KV head for its group of query heads: (B, nkv, S, hd) → (B, nh, S, hd).
                let rep = self.nh / self.nkv;
                let k = k.f_repeat_interleave_self_int(rep, 1, None)?;
                let v = v.f_repeat_interleave_self_int(rep, 1, None)?;
                let scores = q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?; // (B, nh, T, S)
                let scores = scores.f_masked_fill(&mask.blocked, f64::NEG_INFINITY)?;
                scores
                    .f_softmax(-1, None::<Kind>)?
                    .f_matmul(&v)
                    .op("math attention")?
            }
            Attention::Fused => {
                let (m, causal) = if mask.padded {
                    (Some(mask.blocked.f_logical_not()?), false)
                } else if mask.offset == 0 {
                    (None, true)
                } else if mask.t == 1 {
                    (None, false)
                } else {
                    (Some(mask.blocked.f_logical_not()?), false)
                };
                Tensor::f_scaled_dot_product_attention(&q, &k, &v, m, 0.0, causal, scale, true)
                    .op("fused attention")?
            }
        };
        // (B, nh, T, hd) → (B, T, nh*hd)
        let y = y
            .f_transpose(1, 2)?
            .f_contiguous()?
            .f_view([b, t, self.nh * self.hd])?;
        self.o.forward(&y)
    }
}

/// SwiGLU feed-forward: down(silu(gate(x)) · up(x)).
#[derive(Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn new(cfg: &Config, p: nn::Path) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate: Linear::new(&p / "gate_proj", d, f, false, None)?,
            up: Linear::new(&p / "up_proj", d, f, false, None)?,
            down: Linear::new(&p / "down_proj", f, d, false, None)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?.f_silu()?;
        self.down.forward(&g.f_mul(&self.up.forward(x)?)?)
    }
}

/// One pre-norm decoder block.
#[derive(Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(cfg: &Config, p: nn::Path, lora: Option<LoraSpec>) -> Result<Self> {
        Ok(Block {
            attn_norm: RmsNorm::new(cfg, &p / "input_layernorm")?,
            attn: SelfAttention::new(cfg, &p / "self_attn", lora)?,
            mlp_norm: RmsNorm::new(cfg, &p / "post_attention_layernorm")?,
            mlp: Mlp::new(cfg, &p / "mlp")?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Mask,
        attn: Attention,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let h =
            x.f_add(
                &self
                    .attn
                    .forward(&self.attn_norm.forward(x)?, rope, mask, attn, cache)?,
            )?;
        h.f_add(&self.mlp.forward(&self.mlp_norm.forward(&h)?)?)
            .op("block residual")
    }
}

/// The decoder-only language model.
#[derive(Debug)]
pub struct Llama {
    cfg: Config,
    embed: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Tensor>,
    rope: Rotary,
    device: Device,
    /// Names of every parameter this model uses (HF names, LoRA included), sorted.
    names: Vec<String>,
    /// First layer index carrying LoRA adapters, if any.
    lora_from: Option<usize>,
}

/// Index of the block a parameter name belongs to (`model.layers.{i}.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Whether `name` is a LoRA adapter weight.
fn is_lora(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

impl Llama {
    /// Builds the model under `vs` (HF names, see the module doc), reusing variables the store
    /// already holds. Panics only if the store holds a variable of the wrong shape; use
    /// [`Llama::with_scope`] for the fallible form.
    pub fn new(vs: &nn::Path, cfg: &Config) -> Self {
        match Self::with_scope(vs, cfg, &Scope::All) {
            Ok(m) => m,
            Err(e) => panic!("Llama::new: {e}"),
        }
    }

    /// Builds the model; with [`Scope::LoraLastN`] also creates zero-initialised LoRA adapters on
    /// q/k/v/o of the last `layers` blocks.
    pub fn with_scope(vs: &nn::Path, cfg: &Config, scope: &Scope) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.num_layers;
        let lora_from = match scope {
            Scope::LoraLastN {
                layers,
                rank,
                alpha,
            } => {
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
                let _ = alpha;
                Some(n - layers)
            }
            _ => None,
        };
        let lora_spec = match scope {
            Scope::LoraLastN { rank, alpha, .. } => Some(LoraSpec {
                rank: *rank,
                scale: alpha / *rank as f64,
            }),
            _ => None,
        };
        let m = vs / "model";
        let embed = param(
            &(&m / "embed_tokens"),
            "weight",
            &[cfg.vocab_size, cfg.hidden_size],
            INIT_W,
        )?;
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let lora = lora_from.filter(|&f| i >= f).and(lora_spec);
            layers.push(Block::new(cfg, &m / "layers" / i, lora)?);
        }
        let norm = RmsNorm::new(cfg, &m / "norm")?;
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(param(
                &(vs / "lm_head"),
                "weight",
                &[cfg.vocab_size, cfg.hidden_size],
                INIT_W,
            )?)
        };
        let names = names_for(cfg, lora_from);
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rope: Rotary::new(cfg, vs.device())?,
            device: vs.device(),
            names,
            lora_from,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// All parameter names the model uses (relative to the path it was built under), sorted.
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// Hidden states after the final norm: ids (B, T) int64 → (B, T, d).
    pub fn forward_hidden(&self, ids: &Tensor, attn: Attention) -> Result<Tensor> {
        self.forward_at(ids, attn, None, 0)
    }

    /// Input embeddings of token ids: (…) int64 → (…, d).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        Tensor::f_embedding(&self.embed, ids, -1, false, false).op("embed_tokens")
    }

    /// The input of block `split` and the hidden states after the final norm, both (B, T, d),
    /// from one forward of ids (B, T).
    pub fn forward_split(
        &self,
        ids: &Tensor,
        attn: Attention,
        split: usize,
    ) -> Result<(Tensor, Tensor)> {
        let x = self.embed_ids(ids)?;
        let s_in = self.run_blocks(x, 0..split, attn)?;
        let h = self.run_blocks(s_in.shallow_clone(), split..self.layers.len(), attn)?;
        Ok((s_in, self.norm.forward(&h)?))
    }

    /// The input of block `upto` (the embeddings for 0): ids (B, T) → (B, T, d).
    pub fn forward_prefix(&self, ids: &Tensor, upto: usize, attn: Attention) -> Result<Tensor> {
        self.run_blocks(self.embed_ids(ids)?, 0..upto, attn)
    }

    /// Blocks `start..` and the final norm, from the input of block `start` (B, T, d).
    pub fn forward_from(&self, h: &Tensor, start: usize, attn: Attention) -> Result<Tensor> {
        let h = self.run_blocks(h.shallow_clone(), start..self.layers.len(), attn)?;
        self.norm.forward(&h)
    }

    /// The output embedding (V, d): `lm_head`, or the input embedding when tied.
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The first block holding any of `names` when every one of them lies in a block (the
    /// blocks below are then constants for ∇ on `names`); `None` otherwise.
    pub fn first_block_of(&self, names: &[String]) -> Option<usize> {
        names
            .iter()
            .map(|n| layer_of(n))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }

    /// Logits of hidden states: (…, d) → (…, V).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        hidden
            .f_linear::<Tensor>(self.head_weight(), None)
            .op("lm_head")
    }

    fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        if size.len() != 2 {
            return Err(Error::Tensor {
                name: "ids".into(),
                message: format!("expected (B, T), got {size:?}"),
            });
        }
        self.embed_tokens(ids) // (B, T, d)
    }

    /// Blocks `range` at positions `0..T` of h (B, T, d).
    fn run_blocks(
        &self,
        mut h: Tensor,
        range: std::ops::Range<usize>,
        attn: Attention,
    ) -> Result<Tensor> {
        if range.is_empty() {
            return Ok(h);
        }
        let t = h.size()[1];
        let rope = self.rope.tables(0, t, h.kind())?;
        let mask = Mask::new(0, t, self.device)?;
        for layer in &self.layers[range] {
            h = layer.forward(&h, &rope, &mask, attn, None)?;
        }
        Ok(h)
    }

    /// Forward of `t` new tokens at positions `offset..offset+t`, appending to `cache` if given.
    fn forward_at(
        &self,
        ids: &Tensor,
        attn: Attention,
        cache: Option<&mut Vec<Option<(Tensor, Tensor)>>>,
        offset: i64,
    ) -> Result<Tensor> {
        self.forward_padded(ids, attn, cache, offset, None)
    }

    /// [`forward_at`](Self::forward_at) that also hides the keys flagged in `key_pad`
    /// (B, offset + t) bool (left padding of a batch of prompts).
    fn forward_padded(
        &self,
        ids: &Tensor,
        attn: Attention,
        mut cache: Option<&mut Vec<Option<(Tensor, Tensor)>>>,
        offset: i64,
        key_pad: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = self.embed_ids(ids)?; // (B, T, d)
        let t = x.size()[1];
        let rope = self.rope.tables(offset, t, x.kind())?;
        let mask = match key_pad {
            None => Mask::new(offset, t, self.device)?,
            Some(p) => Mask::with_padding(offset, t, p)?,
        };
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c[i]);
            h = layer.forward(&h, &rope, &mask, attn, slot)?;
        }
        self.norm.forward(&h)
    }

    /// Generates up to `max_new` tokens after `prompt` (no grad, KV cache, fused attention) and
    /// returns only the new tokens. Stops before emitting any token in `stop`, or when the
    /// sequence would pass `max_position`.
    pub fn generate(
        &self,
        prompt: &[i64],
        max_new: usize,
        sampling: Sampling,
        stop: &[i64],
    ) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::msg("generate: empty prompt"));
        }
        if let Sampling::Temperature { t, .. } = sampling {
            if !(t > 0.0 && t.is_finite()) {
                return Err(Error::config(
                    "sampling.t",
                    format!("temperature must be positive, got {t}"),
                ));
            }
        }
        let mut rng = match sampling {
            Sampling::Temperature { seed, .. } => SplitMix64(seed),
            Sampling::Greedy => SplitMix64(0),
        };
        tch::no_grad(|| {
            let mut cache: Vec<Option<(Tensor, Tensor)>> =
                (0..self.layers.len()).map(|_| None).collect();
            let mut input = prompt.to_vec();
            let mut pos = 0i64;
            let mut out = Vec::new();
            while out.len() < max_new && pos + input.len() as i64 <= self.cfg.max_position {
                let t = input.len() as i64;
                let ids = Tensor::from_slice(&input)
                    .f_view([1, t])?
                    .f_to(self.device)?;
                let h = self.forward_at(&ids, Attention::Fused, Some(&mut cache), pos)?; // (1, t, d)
                pos += t;
                let last = self.logits(&h.f_narrow(1, t - 1, 1)?)?; // (1, 1, V)
                let logits = Vec::<f64>::try_from(
                    &last
                        .f_view([-1])?
                        .f_to_kind(Kind::Double)?
                        .f_to(Device::Cpu)?,
                )
                .op("logits to host")?;
                let next = match sampling {
                    Sampling::Greedy => argmax(&logits),
                    Sampling::Temperature { t, .. } => sample(&logits, t, rng.next_f64()),
                };
                if stop.contains(&next) {
                    break;
                }
                out.push(next);
                input = vec![next];
            }
            Ok(out)
        })
    }

    /// Greedy continuations of several prompts decoded together (no grad, KV cache, fused
    /// attention): prompts are left-padded to a common length and the padding is masked; RoPE
    /// scores depend only on relative positions, so each row decodes as it would alone (up to
    /// float rounding). Returns each prompt's new tokens; a row stops before emitting any token in
    /// `stop`, all rows stop at `max_new` or when the batch would pass `max_position`.
    pub fn generate_greedy_batch(
        &self,
        prompts: &[Vec<i64>],
        max_new: usize,
        stop: &[i64],
    ) -> Result<Vec<Vec<i64>>> {
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::msg(format!(
                "generate_greedy_batch: prompt {i} is empty"
            )));
        }
        let b = prompts.len();
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
        if b == 0 || max_new == 0 {
            return Ok(out);
        }
        let filler = stop.first().copied().unwrap_or(0);
        let mut ids = Vec::with_capacity(b * len);
        let mut pad = Vec::with_capacity(b * len);
        for p in prompts {
            let n = len - p.len();
            ids.extend(std::iter::repeat_n(filler, n).chain(p.iter().copied()));
            pad.extend((0..len).map(|j| j < n));
        }
        let (b, len) = (b as i64, len as i64);
        tch::no_grad(|| {
            let mut cache: Vec<Option<(Tensor, Tensor)>> =
                (0..self.layers.len()).map(|_| None).collect();
            let mut key_pad = Tensor::from_slice(&pad)
                .f_view([b, len])?
                .f_to(self.device)?; // (B, S) true = padding
            let mut input = Tensor::from_slice(&ids)
                .f_view([b, len])?
                .f_to(self.device)?;
            let mut pos = 0i64;
            let mut done = vec![false; b as usize];
            loop {
                let t = input.size()[1];
                if pos + t > self.cfg.max_position {
                    break;
                }
                let h = self.forward_padded(
                    &input,
                    Attention::Fused,
                    Some(&mut cache),
                    pos,
                    Some(&key_pad),
                )?; // (B, t, d)
                pos += t;
                let last = self.logits(&h.f_narrow(1, t - 1, 1)?)?; // (B, 1, V)
                                                                    // One device→host copy per step: the arg-max of each row.
                let next = Vec::<i64>::try_from(
                    &last.f_argmax(-1, false)?.f_view([-1])?.f_to(Device::Cpu)?,
                )
                .op("next tokens to host")?;
                for (i, &tok) in next.iter().enumerate() {
                    if done[i] {
                        continue;
                    }
                    if stop.contains(&tok) {
                        done[i] = true;
                    } else {
                        out[i].push(tok);
                        done[i] = out[i].len() >= max_new;
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
                let fed: Vec<i64> = next
                    .iter()
                    .zip(&done)
                    .map(|(&tok, &d)| if d { filler } else { tok })
                    .collect();
                input = Tensor::from_slice(&fed).f_view([b, 1])?.f_to(self.device)?;
                key_pad = Tensor::f_cat(
                    &[key_pad, Tensor::f_zeros([b, 1], (Kind::Bool, self.device))?],
                    1,
                )?;
            }
            Ok(out)
        })
    }

    /// Whether the parameter `name` (relative to the model root) is in `scope`.
    fn in_scope(&self, name: &str, scope: &Scope) -> bool {
        let n = self.cfg.num_layers;
        match scope {
            Scope::All => true,
            Scope::LastN(k) => !is_lora(name) && layer_of(name).is_some_and(|i| i + k >= n),
            Scope::LoraLastN { layers, .. } => {
                is_lora(name) && layer_of(name).is_some_and(|i| i + layers >= n)
            }
        }
    }

    /// Checks `scope` fits this model (layer counts, LoRA adapters present).
    fn check_scope(&self, scope: &Scope) -> Result<()> {
        let n = self.cfg.num_layers;
        match scope {
            Scope::All => Ok(()),
            Scope::LastN(k) if *k == 0 || *k > n => {
                Err(Error::config("scope.last_n", format!("must be in 1..={n}, got {k}")))
            }
            Scope::LastN(_) => Ok(()),
            Scope::LoraLastN { layers, .. } => match self.lora_from {
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

    /// Freezes every variable of `vs` outside `scope` (requires_grad false) and returns the
    /// trainable ones `(name, live tensor)` sorted by name. `vs` must be the store the model was
    /// built in (at its root).
    pub fn apply_scope(&self, vs: &nn::VarStore, scope: &Scope) -> Result<Vec<(String, Tensor)>> {
        self.check_scope(scope)?;
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, t) in vars {
            let on = self.in_scope(&name, scope);
            let _ = t.set_requires_grad(on);
            if on {
                out.push((name, t));
            }
        }
        if out.is_empty() {
            return Err(Error::config(
                "scope",
                "selects no parameter of this VarStore",
            ));
        }
        Ok(out)
    }

    /// Names of the alignment subset S for `scope`: every parameter for `All`, the last N blocks'
    /// weights for `LastN`, their LoRA weights for `LoraLastN`. Sorted.
    pub fn alignment_names(&self, scope: &Scope) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| self.in_scope(n, scope))
            .cloned()
            .collect()
    }
}

/// Parameter names of a model with `cfg` and LoRA adapters from block `lora_from` on, sorted.
fn names_for(cfg: &Config, lora_from: Option<usize>) -> Vec<String> {
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

/// Index of the largest value (first on ties).
fn argmax(v: &[f64]) -> i64 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as i64
}

/// Draws from softmax(logits / t) with the uniform number `u` in [0, 1).
fn sample(logits: &[f64], t: f64, u: f64) -> i64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|l| ((l - m) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    for (i, x) in w.iter().enumerate() {
        acc += x / total;
        if u < acc {
            return i as i64;
        }
    }
    argmax(logits)
}

/// A tiny deterministic RNG (SplitMix64) for sampling without touching torch's global RNG.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(kind: Kind) -> (nn::VarStore, Llama) {
        tch::set_num_threads(2);
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let m = Llama::new(&vs.root(), &Config::tiny());
        if kind == Kind::Double {
            vs.double();
        }
        (vs, m)
    }

    fn ids(b: i64, t: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randint(300, [b, t], (Kind::Int64, Device::Cpu))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn names_match_store_and_count() {
        let (vs, m) = tiny(Kind::Float);
        let mut store: Vec<String> = vs.variables().into_keys().collect();
        store.sort();
        assert_eq!(store, m.parameter_names());
        let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(n, Config::tiny().num_parameters());
        assert!(store.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()));
        assert!(vs.root().get("model").is_none());
    }

    #[test]
    fn rope_preserves_norm_and_is_relative() {
        let cfg = Config::tiny();
        let rope = Rotary::new(&cfg, Device::Cpu).unwrap();
        tch::manual_seed(1);
        let x = Tensor::randn([1, 1, 1, 16], (Kind::Double, Device::Cpu));
        let y = Tensor::randn([1, 1, 1, 16], (Kind::Double, Device::Cpu));
        let at = |v: &Tensor, p: i64| {
            let (c, s) = rope.tables(p, 1, Kind::Double).unwrap();
            apply_rope(v, &c, &s).unwrap()
        };
        for p in [0, 3, 100] {
            let n0 = x.norm().double_value(&[]);
            let n1 = at(&x, p).norm().double_value(&[]);
            assert!((n0 - n1).abs() < 1e-12, "norm changed at {p}: {n0} vs {n1}");
        }
        let dot = |m: i64, n: i64| (at(&x, m) * at(&y, n)).sum(Kind::Double).double_value(&[]);
        for (m, n, s) in [(5, 2, 7), (0, 9, 40), (30, 30, 3)] {
            let (a, b) = (dot(m, n), dot(m + s, n + s));
            assert!((a - b).abs() < 1e-10, "q·k not relative: {a} vs {b}");
        }
        // and it does depend on the offset
        assert!((dot(5, 2) - dot(5, 3)).abs() > 1e-6);
        // Position 0 is the identity.
        assert!(max_diff(&at(&x, 0), &x) < 1e-15);
    }

    #[test]
    fn math_and_fused_attention_agree() {
        let (_vs, m) = tiny(Kind::Float);
        let x = ids(3, 17, 2);
        let a = m.forward_hidden(&x, Attention::Math).unwrap();
        let b = m.forward_hidden(&x, Attention::Fused).unwrap();
        assert_eq!(a.size(), vec![3, 17, 64]);
        assert!(
            max_diff(&a, &b) < 1e-5,
            "math vs fused {}",
            max_diff(&a, &b)
        );
        let l = m.logits(&a).unwrap();
        assert_eq!(l.size(), vec![3, 17, 300]);
    }

    #[test]
    fn causal_prefix_is_independent_of_suffix() {
        let (_vs, m) = tiny(Kind::Double);
        let x = ids(1, 12, 3);
        let y = Tensor::cat(&[x.narrow(1, 0, 6), ids(1, 6, 4)], 1);
        for attn in [Attention::Math, Attention::Fused] {
            let a = m.forward_hidden(&x, attn).unwrap().narrow(1, 0, 6);
            let b = m.forward_hidden(&y, attn).unwrap().narrow(1, 0, 6);
            assert!(max_diff(&a, &b) < 1e-12);
        }
        let a = m
            .forward_hidden(&x, Attention::Math)
            .unwrap()
            .narrow(1, 6, 6);
        let b = m
            .forward_hidden(&y, Attention::Math)
            .unwrap()
            .narrow(1, 6, 6);
        assert!(max_diff(&a, &b) > 1e-6);
    }

    #[test]
    fn kv_cache_matches_full_forward() {
        let (_vs, m) = tiny(Kind::Double);
        let x = ids(1, 10, 5);
        let full = m.forward_hidden(&x, Attention::Math).unwrap();
        for attn in [Attention::Math, Attention::Fused] {
            let mut cache: Vec<Option<(Tensor, Tensor)>> = vec![None, None];
            let a = m
                .forward_at(&x.narrow(1, 0, 4), attn, Some(&mut cache), 0)
                .unwrap();
            let b = m
                .forward_at(&x.narrow(1, 4, 3), attn, Some(&mut cache), 4)
                .unwrap();
            let c = m
                .forward_at(&x.narrow(1, 7, 1), attn, Some(&mut cache), 7)
                .unwrap();
            let d = m
                .forward_at(&x.narrow(1, 8, 2), attn, Some(&mut cache), 8)
                .unwrap();
            let inc = Tensor::cat(&[a, b, c, d], 1);
            assert!(
                max_diff(&full, &inc) < 1e-10,
                "{attn:?}: {}",
                max_diff(&full, &inc)
            );
        }
    }

    #[test]
    fn generate_greedy_matches_argmax_of_full_forward() {
        let (_vs, m) = tiny(Kind::Float);
        let prompt = [5i64, 17, 42, 7];
        let out = m.generate(&prompt, 6, Sampling::Greedy, &[]).unwrap();
        assert_eq!(out.len(), 6);
        let mut seq = prompt.to_vec();
        for &tok in &out {
            let h = m
                .forward_hidden(&Tensor::from_slice(&seq).view([1, -1]), Attention::Math)
                .unwrap();
            let last = m.logits(&h).unwrap().get(0).get(seq.len() as i64 - 1);
            assert_eq!(last.argmax(0, false).int64_value(&[]), tok);
            seq.push(tok);
        }
        // A stop token ends generation before its first occurrence is emitted.
        let first = out.iter().position(|&t| t == out[5]).unwrap();
        let stopped = m.generate(&prompt, 6, Sampling::Greedy, &[out[5]]).unwrap();
        assert_eq!(stopped, out[..first].to_vec());
        let s1 = m
            .generate(&prompt, 5, Sampling::Temperature { t: 1.0, seed: 9 }, &[])
            .unwrap();
        let s2 = m
            .generate(&prompt, 5, Sampling::Temperature { t: 1.0, seed: 9 }, &[])
            .unwrap();
        assert_eq!(s1, s2);
        assert!(m
            .generate(&prompt, 5, Sampling::Temperature { t: 0.0, seed: 9 }, &[])
            .is_err());
    }

    #[test]
    fn batched_greedy_matches_one_prompt_at_a_time() {
        let (_vs, m) = tiny(Kind::Double);
        let prompts: Vec<Vec<i64>> = vec![
            vec![5, 17, 42, 7],
            vec![9],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            vec![200, 100],
        ];
        let alone: Vec<Vec<i64>> = prompts
            .iter()
            .map(|p| m.generate(p, 7, Sampling::Greedy, &[]).unwrap())
            .collect();
        let batch = m.generate_greedy_batch(&prompts, 7, &[]).unwrap();
        assert_eq!(batch, alone);
        // Stops are per row: stopping row 0 at its 3rd token leaves the others unchanged.
        let stop = alone[0][2];
        let batch = m.generate_greedy_batch(&prompts, 7, &[stop]).unwrap();
        for (p, got) in prompts.iter().zip(&batch) {
            assert_eq!(got, &m.generate(p, 7, Sampling::Greedy, &[stop]).unwrap());
        }
        assert!(batch[0].len() <= 2);
        assert!(m.generate_greedy_batch(&[vec![]], 3, &[]).is_err());
    }

    #[test]
    fn lora_starts_as_identity_and_scopes_select_the_right_tensors() {
        tch::set_num_threads(2);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config::tiny();
        let scope = Scope::LoraLastN {
            layers: 1,
            rank: 4,
            alpha: 8.0,
        };
        let lora = Llama::with_scope(&vs.root(), &cfg, &scope).unwrap();
        // A plain model on the same store reuses the base weights.
        let base = Llama::new(&vs.root(), &cfg);
        let x = ids(2, 9, 6);
        let h0 = base.forward_hidden(&x, Attention::Math).unwrap();
        let h1 = lora.forward_hidden(&x, Attention::Math).unwrap();
        assert!(max_diff(&h0, &h1) < 1e-7);

        let trainable = lora.apply_scope(&vs, &scope).unwrap();
        assert_eq!(trainable.len(), 8); // q,k,v,o × (A, B) in layer 1
        assert!(trainable
            .iter()
            .all(|(n, t)| n.starts_with("model.layers.1.") && is_lora(n) && t.requires_grad()));
        let all = vs.variables();
        assert!(!all["model.embed_tokens.weight"].requires_grad());
        assert_eq!(
            lora.alignment_names(&scope),
            trainable.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
        );

        // Moving B changes the function.
        tch::no_grad(|| {
            let _ = all["model.layers.1.self_attn.v_proj.lora_B.weight"]
                .shallow_clone()
                .fill_(0.1);
        });
        let h2 = lora.forward_hidden(&x, Attention::Math).unwrap();
        assert!(max_diff(&h0, &h2) > 1e-4);

        let last = lora.apply_scope(&vs, &Scope::LastN(1)).unwrap();
        assert_eq!(last.len(), 9); // 2 norms + 4 attn + 3 mlp weights
        assert!(last
            .iter()
            .all(|(n, _)| n.starts_with("model.layers.1.") && !is_lora(n)));
        assert!(!all["model.layers.1.self_attn.v_proj.lora_B.weight"].requires_grad());
        assert!(lora.apply_scope(&vs, &Scope::LastN(3)).is_err());
        assert!(base.apply_scope(&vs, &scope).is_err());
        assert_eq!(lora.apply_scope(&vs, &Scope::All).unwrap().len(), all.len());
    }

    /// w·H·u through Attention::Math by autograd (double backward) vs central differences of
    /// the first-order directional derivative ∇L·u.
    #[test]
    fn second_derivative_through_math_attention_matches_finite_differences() {
        let (vs, m) = tiny(Kind::Double);
        let x = ids(2, 8, 7);
        let params: Vec<Tensor> = {
            let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.into_iter().map(|p| p.1).collect()
        };
        tch::manual_seed(8);
        let u: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
        let w: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
        let loss = || {
            let h = m.forward_hidden(&x, Attention::Math).unwrap();
            let logits = m.logits(&h).unwrap().narrow(1, 0, 7).reshape([-1, 300]);
            logits
                .log_softmax(-1, Kind::Double)
                .nll_loss(&x.narrow(1, 1, 7).reshape([-1]))
        };
        let dir = |create: bool| {
            let g = Tensor::run_backward(&[loss()], &params, create, create);
            g.iter()
                .zip(&u)
                .map(|(g, u)| (g * u).sum(Kind::Double))
                .fold(Tensor::from(0.0f64), |a, b| a + b)
        };
        let d = dir(true);
        let hv = Tensor::run_backward(&[d], &params, false, false);
        let exact: f64 = hv
            .iter()
            .zip(&w)
            .map(|(h, w)| (h * w).sum(Kind::Double).double_value(&[]))
            .sum();
        let eps = 1e-6;
        let shift = |s: f64| {
            tch::no_grad(|| {
                for (p, w) in params.iter().zip(&w) {
                    let _ = p.shallow_clone().g_add_(&(w * s));
                }
            })
        };
        shift(eps);
        let plus = dir(false).double_value(&[]);
        shift(-2.0 * eps);
        let minus = dir(false).double_value(&[]);
        shift(eps);
        let fd = (plus - minus) / (2.0 * eps);
        eprintln!("w·H·u: autograd {exact:.9}, central differences {fd:.9}");
        assert!(exact.abs() > 1e-3, "degenerate check: {exact}");
        assert!(
            (exact - fd).abs() < 1e-6 * exact.abs().max(1.0),
            "autograd {exact} vs fd {fd}"
        );
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = Config::tiny();
        c.num_kv_heads = 3;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_kv_heads"));
        let mut c = Config::tiny();
        c.head_dim = 15;
        assert!(c.validate().unwrap_err().to_string().contains("head_dim"));
        let json = serde_json::to_string(&Config::tiny()).unwrap();
        assert_eq!(
            serde_json::from_str::<Config>(&json).unwrap(),
            Config::tiny()
        );
    }

    #[test]
    fn untied_qkv_bias_model_builds_and_runs() {
        tch::set_num_threads(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config {
            tie_embeddings: false,
            qkv_bias: true,
            ..Config::tiny()
        };
        let m = Llama::new(&vs.root(), &cfg);
        assert_eq!(vs.variables().len(), m.parameter_names().len());
        assert!(vs.variables().contains_key("lm_head.weight"));
        assert!(vs
            .variables()
            .contains_key("model.layers.0.self_attn.q_proj.bias"));
        let h = m.forward_hidden(&ids(1, 5, 1), Attention::Fused).unwrap();
        assert_eq!(m.logits(&h).unwrap().size(), vec![1, 5, 300]);
    }
}
