//! A Llama / Qwen2-family decoder in tch (RMSNorm, RoPE, GQA, SwiGLU, optional q/k/v bias,
//! tied or untied embeddings, optional LoRA adapters): private modules (each `new(&Config,
//! nn::Path)` + `forward`), then the public [`Llama`] and its forward passes. [`Config`] is in
//! `crate::config`, scopes in `crate::lora`, generation in `crate::generate`.
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

use crate::config::{names_for, Config};
use crate::lora::{layer_of, LoraSpec, Scope};
use tch::{nn, Device, Kind, Tensor};
use vpt_sdk::{Error, Result, TchContext};

pub use vpt_nn::Attention;
use vpt_nn::RmsNorm;

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

/// A linear layer `y = x Wᵀ + b (+ scale · x Aᵀ Bᵀ)`: a [`vpt_nn::Linear`] and an optional LoRA
/// adapter (A, B, scale).
#[derive(Debug)]
struct Linear {
    base: vpt_nn::Linear,
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
        Ok(Linear {
            base: vpt_nn::Linear::from_parts(w, b),
            lora,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.base.forward(x)?;
        match &self.lora {
            None => Ok(y),
            Some((a, b, scale)) => {
                let delta = x.f_linear::<Tensor>(a, None)?.f_linear::<Tensor>(b, None)?;
                Ok(y.f_add(&delta.f_mul_scalar(*scale)?)?)
            }
        }
    }
}

/// The RMSNorm of width d under `p` (gain `weight`, ones when new).
fn rms_norm(cfg: &Config, p: nn::Path) -> Result<RmsNorm> {
    Ok(RmsNorm {
        w: param(&p, "weight", &[cfg.hidden_size], nn::Init::Const(1.0))?,
        eps: cfg.rms_eps,
    })
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
        // The math kernel always applies the mask; the fused one gets the cheapest equivalent.
        let (blocked, causal) = match attn {
            Attention::Math => (Some(&mask.blocked), false),
            Attention::Fused if mask.padded => (Some(&mask.blocked), false),
            Attention::Fused if mask.offset == 0 => (None, true),
            Attention::Fused if mask.t == 1 => (None, false),
            Attention::Fused => (Some(&mask.blocked), false),
        };
        let y = vpt_nn::attention(&q, &k, &v, blocked, causal, scale, attn)?;
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
            attn_norm: rms_norm(cfg, &p / "input_layernorm")?,
            attn: SelfAttention::new(cfg, &p / "self_attn", lora)?,
            mlp_norm: rms_norm(cfg, &p / "post_attention_layernorm")?,
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
        let plan = scope.lora_plan(n)?;
        let lora_from = plan.map(|(from, _)| from);
        let m = vs / "model";
        let embed = param(
            &(&m / "embed_tokens"),
            "weight",
            &[cfg.vocab_size, cfg.hidden_size],
            INIT_W,
        )?;
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let lora = plan.filter(|(from, _)| i >= *from).map(|(_, spec)| spec);
            layers.push(Block::new(cfg, &m / "layers" / i, lora)?);
        }
        let norm = rms_norm(cfg, &m / "norm")?;
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
    pub(crate) fn forward_at(
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
    pub(crate) fn forward_padded(
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

    /// Freezes every variable of `vs` outside `scope` (requires_grad false) and returns the
    /// trainable ones `(name, live tensor)` sorted by name. `vs` must be the store the model was
    /// built in (at its root).
    pub fn apply_scope(&self, vs: &nn::VarStore, scope: &Scope) -> Result<Vec<(String, Tensor)>> {
        scope.check(self.cfg.num_layers, self.lora_from)?;
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, t) in vars {
            let on = scope.contains(&name, self.cfg.num_layers);
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
            .filter(|n| scope.contains(n, self.cfg.num_layers))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
