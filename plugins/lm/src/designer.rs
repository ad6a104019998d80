//! Designers of top-K soft targets (`lm.soft_targets/v1`): the learned `topk_soft` (a small
//! causal transformer φ, the paper's adaptive top-K targets) and two parameter-free controls,
//! `uniform_topk` and `self_topk`.
//!
//! Every designer reads the task's design inputs — `features` (B,T,d) detached learner hidden
//! states, `cand_ids` (B,T,K) with the true next token at index 0, `cand_logprobs` (B,T,K) the
//! learner's log-probabilities of the candidates, `cand_embeddings` (B,T,K,d) their detached
//! input embeddings (`topk_soft` only), `loss_mask` (B,T) — and returns `cand_ids` unchanged,
//! `probs` (B,T,K) = (1−α)·onehot(0) + α·r with rows summing to 1, and `loss_mask`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{
    BuildContext, Construction, Designer, DesignerFactory, DesignerInfo, Error, Result, State,
    TchContext, TensorMap, KIND_LM_SOFT_TARGETS,
};

/// What a task tells an LM designer about itself (`TaskInfo::designer_context`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmDesignContext {
    /// Width d of `features`.
    pub d_model: i64,
    /// Number of candidates K per position.
    pub k: i64,
    /// Width of `example_features` (B, d+1): the masked mean of `features` and the example's
    /// mean NLL of its true tokens — what modality-agnostic designers (reweighting) read.
    #[serde(default)]
    pub feature_dim: i64,
}

fn parse_context(v: &serde_json::Value) -> Result<LmDesignContext> {
    serde_json::from_value(v.clone()).map_err(|e| {
        Error::config(
            "task.designer_context",
            format!("not an LM design context ({e}): {v}"),
        )
    })
}

fn check_alpha(field: &str, a: f64) -> Result<()> {
    if (0.0..=1.0).contains(&a) {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be in [0, 1], got {a}")))
    }
}

/// q = (1−α)·onehot(index 0) + α·r; `alpha` (B,T), `r` (B,T,K) → (B,T,K).
pub fn mix_with_true(alpha: &Tensor, r: &Tensor) -> Result<Tensor> {
    let k = r.size()[2];
    let onehot = Tensor::f_zeros([k], (r.kind(), r.device()))
        .op("onehot")?
        .f_index_fill_(
            0,
            &Tensor::from_slice(&[0i64])
                .f_to(r.device())
                .op("onehot index")?,
            1.0,
        )
        .op("onehot fill")?; // (K)
    let a = alpha.f_unsqueeze(-1).op("alpha unsqueeze")?; // (B,T,1)
    let keep = a.f_neg().op("1-alpha")?.f_add_scalar(1.0).op("1-alpha")?;
    keep.f_mul(&onehot)
        .op("mix true")?
        .f_add(&a.f_mul(r).op("mix r")?)
        .op("mix")
}

/// The construction: `cand_ids`, `probs`, and the task's `loss_mask` (B,T) when it gave one, so
/// that R counts only the positions that carry a loss.
fn soft_targets(inputs: &TensorMap, probs: Tensor) -> Result<Construction> {
    let mut tensors = TensorMap::new()
        .with("cand_ids", inputs.require("cand_ids")?.shallow_clone())
        .with("probs", probs);
    if let Some(m) = inputs.get("loss_mask") {
        tensors.insert("loss_mask", m.shallow_clone());
    }
    Ok(Construction {
        kind: KIND_LM_SOFT_TARGETS.into(),
        tensors,
    })
}

/// R(φ, c) = mean of (1 − q_true) over the loss-bearing positions (`loss_mask`; every position
/// when the construction has none): the probability mass moved off the true token where it
/// changes the learner's loss. Prompt and padding positions do not count.
pub fn off_target_mass(c: &Construction) -> Result<Tensor> {
    let q0 = c.tensors.require("probs")?.f_select(-1, 0).op("q_true")?; // (B,T)
    let off = q0.f_neg().op("R")?.f_add_scalar(1.0).op("R")?;
    match c.tensors.get("loss_mask") {
        None => off.f_mean(None).op("R mean"),
        Some(m) => {
            let m = m.f_to_kind(off.kind()).op("mask kind")?;
            let count = m
                .f_sum(off.kind())
                .op("mask count")?
                .f_clamp_min(1.0)
                .op("clamp")?;
            off.f_mul(&m)
                .op("R mask")?
                .f_sum(off.kind())
                .op("R sum")?
                .f_div(&count)
                .op("R mean")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Controls

/// Config of `uniform_topk`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UniformTopKConfig {
    /// Fixed mixing weight α in [0, 1]: q = (1−α)·onehot(true) + α·uniform(K).
    #[serde(default = "default_control_alpha")]
    pub alpha: f64,
}

/// Config of `self_topk`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfTopKConfig {
    /// Fixed mixing weight α in [0, 1]: q = (1−α)·onehot(true) + α·p_θ renormalised over the K.
    #[serde(default = "default_control_alpha")]
    pub alpha: f64,
}

fn default_control_alpha() -> f64 {
    0.25
}

/// Control: uniform mass over the K candidates mixed with the one-hot target (no parameters).
pub struct UniformTopK {
    alpha: f64,
}

/// Control: the learner's own renormalised top-K distribution mixed with the one-hot target.
pub struct SelfTopK {
    alpha: f64,
}

impl DesignerFactory for UniformTopK {
    const NAME: &'static str = "uniform_topk";
    const DESCRIPTION: &'static str =
        "control: one-hot mixed with uniform over the K candidates by a fixed alpha";
    const PRODUCES: &'static str = KIND_LM_SOFT_TARGETS;
    type Config = UniformTopKConfig;
    fn build(
        config: Self::Config,
        task_context: &serde_json::Value,
        _: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        parse_context(task_context)?;
        check_alpha("designer.config.alpha", config.alpha)?;
        Ok(Box::new(UniformTopK {
            alpha: config.alpha,
        }))
    }
}

impl DesignerFactory for SelfTopK {
    const NAME: &'static str = "self_topk";
    const DESCRIPTION: &'static str =
        "control: one-hot mixed with the learner's own renormalised top-K by a fixed alpha";
    const PRODUCES: &'static str = KIND_LM_SOFT_TARGETS;
    type Config = SelfTopKConfig;
    fn build(
        config: Self::Config,
        task_context: &serde_json::Value,
        _: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        parse_context(task_context)?;
        check_alpha("designer.config.alpha", config.alpha)?;
        Ok(Box::new(SelfTopK {
            alpha: config.alpha,
        }))
    }
}

fn fixed_alpha(lp: &Tensor, alpha: f64) -> Result<Tensor> {
    let s = lp.size();
    Tensor::f_full([s[0], s[1]], alpha, (lp.kind(), lp.device())).op("alpha")
}

impl Designer for UniformTopK {
    fn info(&self) -> DesignerInfo {
        DesignerInfo {
            produces: KIND_LM_SOFT_TARGETS.into(),
        }
    }
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let lp = inputs.require("cand_logprobs")?;
        let k = lp.size()[2];
        let r = lp
            .f_zeros_like()
            .op("uniform")?
            .f_add_scalar(1.0 / k as f64)
            .op("uniform")?;
        soft_targets(inputs, mix_with_true(&fixed_alpha(lp, self.alpha)?, &r)?)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
}

impl Designer for SelfTopK {
    fn info(&self) -> DesignerInfo {
        DesignerInfo {
            produces: KIND_LM_SOFT_TARGETS.into(),
        }
    }
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let lp = inputs.require("cand_logprobs")?;
        let r = lp.f_softmax(-1, lp.kind()).op("renormalised top-K")?;
        soft_targets(inputs, mix_with_true(&fixed_alpha(lp, self.alpha)?, &r)?)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// topk_soft: the learned designer φ

/// Config of `topk_soft`, the paper's adaptive top-K soft-target designer.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopKSoftConfig {
    /// Transformer blocks of φ.
    #[serde(default = "d_layers")]
    pub layers: usize,
    /// Width of φ's residual stream.
    #[serde(default = "d_width")]
    pub width: i64,
    /// Attention heads (must divide `width`).
    #[serde(default = "d_heads")]
    pub heads: i64,
    /// Upper bound of the per-position gate: α = α_max · sigmoid(·) ∈ [0, α_max].
    #[serde(default = "d_alpha_max")]
    pub alpha_max: f64,
    /// Initial gate logit (bias), so the initial α ≈ α_max · sigmoid(gate_init).
    #[serde(default)]
    pub gate_init: f64,
}

fn d_layers() -> usize {
    6
}
fn d_width() -> i64 {
    256
}
fn d_heads() -> i64 {
    4
}
fn d_alpha_max() -> f64 {
    0.5
}

impl Default for TopKSoftConfig {
    fn default() -> Self {
        TopKSoftConfig {
            layers: d_layers(),
            width: d_width(),
            heads: d_heads(),
            alpha_max: d_alpha_max(),
            gate_init: 0.0,
        }
    }
}

/// A linear map `x Wᵀ + b`.
struct Lin {
    w: Tensor,
    b: Option<Tensor>,
}

impl Lin {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.f_linear(&self.w, self.b.as_ref()).op("designer linear")
    }
}

/// LayerNorm with gain and bias.
struct Norm {
    g: Tensor,
    b: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.g.size()[0];
        x.f_layer_norm([w], Some(&self.g), Some(&self.b), 1e-5, false)
            .op("designer layer_norm")
    }
}

/// Builds φ's variables from a private seeded RNG (torch's shared RNG is never touched).
struct Init<'a> {
    vs: &'a nn::VarStore,
    rng: SplitMix64,
}

impl Init<'_> {
    fn tensor(&mut self, name: &str, dims: &[i64], std: f64, fill: f64) -> Result<Tensor> {
        let n: i64 = dims.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| (fill + std * self.rng.normal()) as f32)
            .collect();
        let t = Tensor::from_slice(&vals)
            .f_reshape(dims)
            .op("designer init")?;
        // VarStore names are `.`-joined paths: walk to the leaf's parent.
        let mut parts: Vec<&str> = name.split('.').collect();
        let leaf = parts.pop().expect("split yields at least one part");
        let mut path = self.vs.root();
        for part in parts {
            path = &path / part;
        }
        path.f_var_copy(leaf, &t).op("designer var")
    }
    fn lin(&mut self, name: &str, i: i64, o: i64, bias: bool, std: f64) -> Result<Lin> {
        let w = self.tensor(&format!("{name}.weight"), &[o, i], std, 0.0)?;
        let b = if bias {
            Some(self.tensor(&format!("{name}.bias"), &[o], 0.0, 0.0)?)
        } else {
            None
        };
        Ok(Lin { w, b })
    }
    fn norm(&mut self, name: &str, w: i64) -> Result<Norm> {
        Ok(Norm {
            g: self.tensor(&format!("{name}.weight"), &[w], 0.0, 1.0)?,
            b: self.tensor(&format!("{name}.bias"), &[w], 0.0, 0.0)?,
        })
    }
}

/// A pre-norm causal transformer block with explicit matmul + softmax attention (double
/// backward must work through it on CPU).
struct Block {
    ln1: Norm,
    qkv: Lin,
    proj: Lin,
    ln2: Norm,
    fc1: Lin,
    fc2: Lin,
}

impl Block {
    fn forward(&self, x: &Tensor, heads: i64, mask: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let (b, t, w) = (s[0], s[1], s[2]);
        let hd = w / heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?; // (B,T,3w)
        let qkv = qkv
            .f_reshape([b, t, 3, heads, hd])
            .op("qkv split")?
            .f_permute([2, 0, 3, 1, 4])
            .op("qkv perm")?; // (3,B,H,T,hd)
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let att = q
            .f_matmul(&k.f_transpose(-2, -1).op("kT")?)
            .op("qk")?
            .f_div_scalar((hd as f64).sqrt())
            .op("scale")?; // (B,H,T,T)
        let att = att
            .f_add(mask)
            .op("causal mask")?
            .f_softmax(-1, att.kind())
            .op("attn softmax")?;
        let y = att.f_matmul(&v).op("attn v")?; // (B,H,T,hd)
        let y = y
            .f_transpose(1, 2)
            .op("merge heads")?
            .f_reshape([b, t, w])
            .op("merge heads")?; // (B,T,w)
        let x = x.f_add(&self.proj.forward(&y)?).op("residual")?;
        let h = self
            .fc1
            .forward(&self.ln2.forward(&x)?)?
            .f_gelu("none")
            .op("gelu")?;
        x.f_add(&self.fc2.forward(&h)?).op("residual")
    }
}

/// `topk_soft`: φ scores the K candidates with a small causal transformer over the learner's
/// detached features and the tokens themselves, and gates how far the target moves off the
/// one-hot.
///
/// Input per position: `in_proj(features)` + `tok_proj(e_true)` + `stat_proj([lp_true,
/// lp_best_other, logsumexp_K(lp)])`, where e_k are the learner's input embeddings of the
/// candidates (`cand_embeddings`, k = 0 the true next token). After the blocks, h (B,T,w) gives
/// - a query u = W_s h and per-candidate keys key_k = W_e e_k + slot_k + C [lp_k, lp_k − lp_true]
///   (a learned embedding per slot: 0 = the true token, then the learner's ranks);
///   scores_k = u·key_k / √w and r = softmax(scores);
/// - α = α_max · sigmoid(w_g·h + b_g).
///
/// The output layers W_s and w_g start at zero, so at initialisation r is uniform over the K and
/// α = α_max · sigmoid(gate_init) at every position: V starts from one known soft target,
/// not from a random per-position one. R(φ, c) is the off-target mass ([`off_target_mass`]).
pub struct TopKSoft {
    vs: nn::VarStore,
    cfg: TopKSoftConfig,
    d_model: i64,
    k: i64,
    in_proj: Lin,
    tok_proj: Lin,
    stat_proj: Lin,
    blocks: Vec<Block>,
    ln_f: Norm,
    score: Lin,
    emb_key: Lin,
    slot: Tensor,
    cand: Lin,
    gate: Lin,
}

impl DesignerFactory for TopKSoft {
    const NAME: &'static str = "topk_soft";
    const DESCRIPTION: &'static str =
        "adaptive top-K soft targets: a small causal transformer over the learner's features and the candidates' embeddings scores the K candidates and gates alpha <= alpha_max";
    const PRODUCES: &'static str = KIND_LM_SOFT_TARGETS;
    type Config = TopKSoftConfig;
    fn build(
        config: Self::Config,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        Ok(Box::new(TopKSoft::new(
            config,
            &parse_context(task_context)?,
            ctx,
        )?))
    }
}

/// Checks that input `name` has shape `want` (`-1` matches any size).
fn check_shape(name: &str, t: &Tensor, want: &[i64]) -> Result<()> {
    let got = t.size();
    let ok = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| *w < 0 || g == w);
    if ok {
        Ok(())
    } else {
        Err(Error::Tensor {
            name: name.into(),
            message: format!("expected {want:?} (-1: any), got {got:?}"),
        })
    }
}

impl TopKSoft {
    /// Builds φ (f32, its own VarStore on `ctx.device`, initialised from `ctx.seed`).
    pub fn new(cfg: TopKSoftConfig, tc: &LmDesignContext, ctx: &BuildContext) -> Result<Self> {
        check_alpha("designer.config.alpha_max", cfg.alpha_max)?;
        if cfg.width <= 0 || cfg.heads <= 0 || cfg.width % cfg.heads != 0 {
            return Err(Error::config(
                "designer.config.heads",
                format!("must divide width {}, got {}", cfg.width, cfg.heads),
            ));
        }
        if tc.k < 2 || tc.d_model <= 0 {
            return Err(Error::config(
                "task.config.top_k",
                format!("K must be ≥ 2 (got {}) and d > 0", tc.k),
            ));
        }
        let vs = nn::VarStore::new(ctx.device());
        let (w, d) = (cfg.width, tc.d_model);
        let std = 0.02;
        let out_std = 0.02 / (2.0 * cfg.layers.max(1) as f64).sqrt();
        let in_std = 1.0 / (d as f64).sqrt();
        let mut init = Init {
            vs: &vs,
            rng: SplitMix64::stream(ctx.seed, 0xD35_1637),
        };
        let in_proj = init.lin("in_proj", d, w, true, in_std)?;
        let tok_proj = init.lin("tok_proj", d, w, false, in_std)?;
        let stat_proj = init.lin("stat_proj", 3, w, true, std)?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            blocks.push(Block {
                ln1: init.norm(&format!("blocks.{i}.ln1"), w)?,
                qkv: init.lin(&format!("blocks.{i}.qkv"), w, 3 * w, true, std)?,
                proj: init.lin(&format!("blocks.{i}.proj"), w, w, true, out_std)?,
                ln2: init.norm(&format!("blocks.{i}.ln2"), w)?,
                fc1: init.lin(&format!("blocks.{i}.fc1"), w, 4 * w, true, std)?,
                fc2: init.lin(&format!("blocks.{i}.fc2"), 4 * w, w, true, out_std)?,
            });
        }
        let ln_f = init.norm("ln_f", w)?;
        // Output layers start at zero: r uniform, α = α_max·sigmoid(gate_init).
        let score = init.lin("score", w, w, false, 0.0)?;
        let emb_key = init.lin("emb_key", d, w, false, in_std)?;
        let slot = init.tensor("slot", &[tc.k, w], std, 0.0)?;
        let cand = init.lin("cand", 2, w, false, std)?;
        let mut gate = init.lin("gate", w, 1, true, 0.0)?;
        if let Some(b) = gate.b.as_mut() {
            let _ = tch::no_grad(|| b.f_fill_(cfg.gate_init)).op("gate init")?;
        }
        Ok(TopKSoft {
            vs,
            cfg,
            d_model: d,
            k: tc.k,
            in_proj,
            tok_proj,
            stat_proj,
            blocks,
            ln_f,
            score,
            emb_key,
            slot,
            cand,
            gate,
        })
    }

    /// Converts φ to f64 (finite-difference tests).
    pub fn to_double(&mut self) {
        self.vs.double();
    }

    /// r (B,T,K) and α (B,T) for `features` (B,T,d), `cand_logprobs` (B,T,K) and
    /// `cand_embeddings` (B,T,K,d).
    pub fn scores_and_gate(
        &self,
        features: &Tensor,
        lp: &Tensor,
        emb: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let kind = self.slot.kind();
        let (f, lp, emb) = (
            features.f_to_kind(kind).op("features kind")?,
            lp.f_to_kind(kind).op("lp kind")?,
            emb.f_to_kind(kind).op("embeddings kind")?,
        );
        check_shape("features", &f, &[-1, -1, self.d_model])?;
        let (b, t) = (f.size()[0], f.size()[1]);
        check_shape("cand_logprobs", &lp, &[b, t, self.k])?;
        check_shape("cand_embeddings", &emb, &[b, t, self.k, self.d_model])?;
        let w = self.cfg.width;
        let lp_true = lp.f_narrow(-1, 0, 1).op("lp_true")?; // (B,T,1)
        let best_other = lp
            .f_narrow(-1, 1, self.k - 1)
            .op("others")?
            .f_amax(-1i64, true)
            .op("best other")?; // (B,T,1)
        let lse = lp.f_logsumexp([-1], true).op("mass")?; // (B,T,1)
        let stats = Tensor::f_cat(&[&lp_true, &best_other, &lse], -1).op("stats")?; // (B,T,3)
        let e_true = emb.f_select(2, 0).op("e_true")?; // (B,T,d)
        let mut x = self
            .in_proj
            .forward(&f)?
            .f_add(&self.tok_proj.forward(&e_true)?)
            .op("token sum")?
            .f_add(&self.stat_proj.forward(&stats)?)
            .op("input sum")?; // (B,T,w)
                               // Causal additive mask (T,T): a large negative instead of −inf keeps softmax NaN-free.
        let mask = Tensor::f_ones([t, t], (kind, f.device()))
            .op("mask")?
            .f_triu(1)
            .op("triu")?
            .f_mul_scalar(-1e9)
            .op("mask")?;
        for blk in &self.blocks {
            x = blk.forward(&x, self.cfg.heads, &mask)?;
        }
        let h = self.ln_f.forward(&x)?; // (B,T,w)
        let u = self.score.forward(&h)?; // (B,T,w)
                                         // u·W_e e_k = (u W_e)·e_k: project the query to d once instead of the B·T·K keys to w
        let ue = u.f_matmul(&self.emb_key.w).op("query to d")?; // (B,T,d)
        let emb_scores = emb
            .f_matmul(&ue.f_unsqueeze(-1).op("ue")?)
            .op("embedding scores")?
            .f_squeeze_dim(-1)
            .op("squeeze")?; // (B,T,K)
        let slot_scores = u
            .f_matmul(&self.slot.f_tr().op("slotT")?)
            .op("slot scores")?; // (B,T,K)
        let rel = lp.f_sub(&lp_true).op("rel lp")?;
        let cf = Tensor::f_stack(&[&lp, &rel], -1).op("cand feats")?; // (B,T,K,2)
        let coef = u
            .f_matmul(&self.cand.w)
            .op("cand coef")?
            .f_unsqueeze(-1)
            .op("coef")?; // (B,T,2,1)
        let cand_scores = cf
            .f_matmul(&coef)
            .op("cand")?
            .f_squeeze_dim(-1)
            .op("cand squeeze")?; // (B,T,K)
        let scores = emb_scores
            .f_add(&slot_scores)
            .op("scores")?
            .f_add(&cand_scores)
            .op("scores")?
            .f_div_scalar((w as f64).sqrt())
            .op("scale")?;
        let r = scores.f_softmax(-1, kind).op("r")?;
        let alpha = self
            .gate
            .forward(&h)?
            .f_squeeze_dim(-1)
            .op("gate")?
            .f_sigmoid()
            .op("sigmoid")?
            .f_mul_scalar(self.cfg.alpha_max)
            .op("alpha")?; // (B,T)
        Ok((r, alpha))
    }
}

impl Designer for TopKSoft {
    fn info(&self) -> DesignerInfo {
        DesignerInfo {
            produces: KIND_LM_SOFT_TARGETS.into(),
        }
    }
    fn parameters(&self) -> Result<TensorMap> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(vars.into_iter().collect())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let (r, alpha) = self.scores_and_gate(
            inputs.require("features")?,
            inputs.require("cand_logprobs")?,
            inputs.require("cand_embeddings")?,
        )?;
        soft_targets(inputs, mix_with_true(&alpha, &r)?)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn inputs(b: i64, t: i64, d: i64, k: i64) -> TensorMap {
        tch::manual_seed(0);
        let lp = Tensor::randn([b, t, 300], (Kind::Float, tch::Device::Cpu))
            .log_softmax(-1, Kind::Float)
            .narrow(-1, 0, k);
        TensorMap::new()
            .with(
                "features",
                Tensor::randn([b, t, d], (Kind::Float, tch::Device::Cpu)),
            )
            .with(
                "cand_ids",
                Tensor::arange(k, (Kind::Int64, tch::Device::Cpu))
                    .expand([b, t, k], false)
                    .contiguous(),
            )
            .with("cand_logprobs", lp)
            .with(
                "loss_mask",
                Tensor::ones([b, t], (Kind::Float, tch::Device::Cpu)),
            )
            .with(
                "cand_embeddings",
                Tensor::randn([b, t, k, d], (Kind::Float, tch::Device::Cpu)),
            )
    }

    fn ctx() -> BuildContext {
        BuildContext {
            seed: 1,
            device: "cpu".into(),
        }
    }

    fn check_rows(c: &Construction, alpha_max: f64) {
        assert_eq!(c.kind, KIND_LM_SOFT_TARGETS);
        let q = c.tensors.require("probs").unwrap();
        assert_eq!(q.size(), vec![2, 5, 8]);
        let sums = q.sum_dim_intlist(-1i64, false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
        assert!(q.min().double_value(&[]) >= 0.0);
        let q0_min = q.select(-1, 0).min().double_value(&[]);
        assert!(q0_min >= 1.0 - alpha_max - 1e-6, "true-token mass {q0_min}");
        assert_eq!(c.tensors.require("cand_ids").unwrap().size(), vec![2, 5, 8]);
    }

    #[test]
    fn topk_soft_rows_are_distributions_within_the_gate() {
        let tc = LmDesignContext {
            d_model: 16,
            k: 8,
            feature_dim: 17,
        };
        let cfg = TopKSoftConfig {
            layers: 2,
            width: 32,
            heads: 4,
            alpha_max: 0.3,
            gate_init: 3.0,
        };
        let mut d = TopKSoft::new(cfg, &tc, &ctx()).unwrap();
        let inp = inputs(2, 5, 16, 8);
        let c = d.construct(&inp).unwrap();
        check_rows(&c, 0.3);
        let (_, alpha) = d
            .scores_and_gate(
                inp.require("features").unwrap(),
                inp.require("cand_logprobs").unwrap(),
                inp.require("cand_embeddings").unwrap(),
            )
            .unwrap();
        let (lo, hi) = (alpha.min().double_value(&[]), alpha.max().double_value(&[]));
        assert!(lo >= 0.0 && hi <= 0.3 && hi > 0.25, "alpha in [{lo}, {hi}]");
        // R is differentiable in φ.
        let r = d.regularizer(&c).unwrap().unwrap();
        let params = d.parameters().unwrap();
        let g = Tensor::run_backward(&[r], &params.tensors().collect::<Vec<_>>(), false, false);
        assert!(g
            .iter()
            .any(|g| g.abs().sum(Kind::Double).double_value(&[]) > 0.0));
        assert!(params.names().contains(&"blocks.1.qkv.weight"));
        // Causal: changing the last position's features leaves earlier positions unchanged.
        let mut inp2 = inputs(2, 5, 16, 8);
        let f = inp2.require("features").unwrap().copy();
        let _ = f.narrow(1, 4, 1).fill_(3.0);
        inp2.insert("features", f);
        let c2 = d.construct(&inp2).unwrap();
        let (a, b) = (
            c.tensors.require("probs").unwrap().narrow(1, 0, 4),
            c2.tensors.require("probs").unwrap().narrow(1, 0, 4),
        );
        assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        // Deterministic by seed, distinct across seeds.
        let d2 = TopKSoft::new(
            TopKSoftConfig {
                layers: 2,
                width: 32,
                heads: 4,
                ..Default::default()
            },
            &tc,
            &ctx(),
        )
        .unwrap();
        let d3 = TopKSoft::new(
            TopKSoftConfig {
                layers: 2,
                width: 32,
                heads: 4,
                ..Default::default()
            },
            &tc,
            &BuildContext {
                seed: 2,
                device: "cpu".into(),
            },
        )
        .unwrap();
        let w = |d: &TopKSoft| d.parameters().unwrap().require("slot").unwrap().copy();
        assert!(w(&d).equal(&w(&d2)));
        assert!(!w(&d).equal(&w(&d3)));
    }

    fn small(gate_init: f64) -> TopKSoft {
        let tc = LmDesignContext {
            d_model: 16,
            k: 8,
            feature_dim: 17,
        };
        let cfg = TopKSoftConfig {
            layers: 1,
            width: 32,
            heads: 4,
            alpha_max: 0.5,
            gate_init,
        };
        TopKSoft::new(cfg, &tc, &ctx()).unwrap()
    }

    #[test]
    fn topk_soft_starts_uniform_at_the_gate_init() {
        let mut d = small(-1.0);
        let c = d.construct(&inputs(2, 5, 16, 8)).unwrap();
        let q = c.tensors.require("probs").unwrap();
        let alpha = 0.5 / (1.0 + 1f64.exp()); // α_max · sigmoid(−1)
        let want_true = 1.0 - alpha + alpha / 8.0;
        let q0 = q.select(-1, 0);
        assert!((q0 - want_true).abs().max().double_value(&[]) < 1e-6);
        let others = q.narrow(-1, 1, 7);
        assert!((others - alpha / 8.0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn topk_soft_reads_candidate_embeddings() {
        let d = small(0.0);
        // Leave the zero start: give the query layer weights, as a meta step would.
        tch::no_grad(|| {
            d.score
                .w
                .shallow_clone()
                .copy_(&(d.score.w.randn_like() * 0.5));
        });
        let inp = inputs(2, 5, 16, 8);
        let (f, lp, e) = (
            inp.require("features").unwrap(),
            inp.require("cand_logprobs").unwrap(),
            inp.require("cand_embeddings").unwrap(),
        );
        let (r, _) = d.scores_and_gate(f, lp, e).unwrap();
        // Another embedding for candidate 3 at (0, 2) changes r there and nowhere else.
        let e2 = e.copy();
        e2.get(0)
            .get(2)
            .get(3)
            .copy_(&(e.get(0).get(2).get(3) * -3.0 + 1.0));
        let (r2, _) = d.scores_and_gate(f, lp, &e2).unwrap();
        let diff = (&r2 - &r).abs();
        assert!(diff.get(0).get(2).max().double_value(&[]) > 1e-4);
        let _ = diff.get(0).get(2).zero_();
        assert!(diff.max().double_value(&[]) < 1e-7);
        // A wrong shape is refused by name.
        let bad = e.narrow(-1, 0, 4);
        let err = d.scores_and_gate(f, lp, &bad).unwrap_err().to_string();
        assert!(err.contains("cand_embeddings"), "{err}");
    }

    #[test]
    fn off_target_mass_counts_only_loss_positions() {
        let mut u = UniformTopK::build(
            UniformTopKConfig { alpha: 0.4 },
            &serde_json::json!({"d_model": 16, "k": 8}),
            &ctx(),
        )
        .unwrap();
        let mut inp = inputs(2, 5, 16, 8);
        let c = u.construct(&inp).unwrap();
        let full = off_target_mass(&c).unwrap().double_value(&[]);
        assert!((full - 0.35).abs() < 1e-6, "{full}"); // α·(1 − 1/K)
                                                       // Prompt/padding positions carry a one-hot target here: they must not dilute R.
        let mask = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
            .reshape([2, 5]);
        inp.insert("loss_mask", mask.shallow_clone());
        let c = u.construct(&inp).unwrap();
        let mut c2 = Construction {
            kind: c.kind.clone(),
            tensors: c.tensors.detached(),
        };
        let q = c2.tensors.require("probs").unwrap().copy();
        let onehot = Tensor::zeros([8], (Kind::Float, tch::Device::Cpu)).index_fill(
            0,
            &Tensor::from_slice(&[0i64]),
            1.0,
        );
        let m = mask.unsqueeze(-1);
        let q = &q * &m + onehot * (1.0 - &m);
        c2.tensors.insert("probs", q);
        let masked = off_target_mass(&c2).unwrap().double_value(&[]);
        assert!((masked - 0.35).abs() < 1e-6, "{masked}");
        c2.tensors.remove("loss_mask");
        let unmasked = off_target_mass(&c2).unwrap().double_value(&[]);
        assert!((unmasked - 0.35 * 3.0 / 10.0).abs() < 1e-6, "{unmasked}");
    }

    #[test]
    fn controls_mix_fixed_alpha() {
        let tc = serde_json::json!({"d_model": 16, "k": 8});
        let inp = inputs(2, 5, 16, 8);
        let mut u = UniformTopK::build(UniformTopKConfig { alpha: 0.4 }, &tc, &ctx()).unwrap();
        let c = u.construct(&inp).unwrap();
        check_rows(&c, 0.4);
        let q = c.tensors.require("probs").unwrap();
        assert!((q.double_value(&[0, 0, 0]) - (0.6 + 0.05)).abs() < 1e-6);
        assert!((q.double_value(&[1, 3, 5]) - 0.05).abs() < 1e-6);
        let mut s = SelfTopK::build(SelfTopKConfig { alpha: 0.4 }, &tc, &ctx()).unwrap();
        let c = s.construct(&inp).unwrap();
        check_rows(&c, 0.4);
        let lp = inp.require("cand_logprobs").unwrap();
        let r = lp.softmax(-1, Kind::Float);
        let q = c.tensors.require("probs").unwrap();
        assert!((q.double_value(&[1, 2, 3]) - 0.4 * r.double_value(&[1, 2, 3])).abs() < 1e-6);
        assert!(u.parameters().unwrap().is_empty() && s.parameters().unwrap().is_empty());
        let r = s.regularizer(&c).unwrap().unwrap().double_value(&[]);
        let expect = (q.select(-1, 0).neg() + 1.0)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!((r - expect).abs() < 1e-6);
        assert!(UniformTopK::build(UniformTopKConfig { alpha: 1.5 }, &tc, &ctx()).is_err());
        assert!(UniformTopK::build(
            UniformTopKConfig { alpha: 0.1 },
            &serde_json::json!({}),
            &ctx()
        )
        .is_err());
    }
}
