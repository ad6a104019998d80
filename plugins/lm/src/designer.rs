//! Designers of top-K soft targets (`lm.soft_targets/v1`): the learned `topk_soft` (a small
//! causal transformer φ, the paper's adaptive top-K targets), two parameter-free controls,
//! `uniform_topk` and `self_topk`, and the diagnostic `oracle_corrupt` (α = α_max exactly where
//! the stream's corruption replaced the target; it reads the corruption mask, which no method
//! can).
//!
//! Every designer reads the task's design inputs — `features` (B,T,d) detached learner hidden
//! states, `cand_ids` (B,T,K) with the true next token at index 0, `cand_logprobs` (B,T,K) the
//! learner's log-probabilities of the candidates, `cand_embeddings` (B,T,K,d) their detached
//! input embeddings (`topk_soft` only), `loss_mask` (B,T) — and returns `cand_ids` unchanged,
//! `probs` (B,T,K) = (1−α)·onehot(0) + α·r with rows summing to 1, and `loss_mask`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};
use vpt_nn::{attention, Attention, LayerNorm, Linear};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{
    kinds, BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Metrics, Result,
    State, TchContext, TensorMap, KIND_LM_SOFT_TARGETS,
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
    let onehot = Tensor::f_zeros([k], (r.kind(), r.device()))?.f_index_fill_(
        0,
        &Tensor::from_slice(&[0i64]).f_to(r.device())?,
        1.0,
    )?; // (K)
    let a = alpha.f_unsqueeze(-1)?; // (B,T,1)
    let keep = a.f_neg()?.f_add_scalar(1.0)?;
    keep.f_mul(&onehot)?.f_add(&a.f_mul(r)?).op("mix")
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

/// `alpha_mean`: the mean of the construction's gate `alpha` over the loss-bearing positions.
fn alpha_mean(c: &Construction) -> Result<Metrics> {
    let mean = c.mean_of("alpha", Some("loss_mask"))?;
    Ok(Metrics::from([("alpha_mean".to_string(), mean)]))
}

/// R(φ, c) = mean of (1 − q_true) over the loss-bearing positions (`loss_mask`; every position
/// when the construction has none): the probability mass moved off the true token where it
/// changes the learner's loss. Prompt and padding positions do not count.
pub fn off_target_mass(c: &Construction) -> Result<Tensor> {
    let q0 = c.tensors.require("probs")?.f_select(-1, 0)?; // (B,T)
    let off = q0.f_neg()?.f_add_scalar(1.0)?;
    match c.tensors.get("loss_mask") {
        None => off.f_mean(None).op("R mean"),
        Some(m) => {
            let m = m.f_to_kind(off.kind())?;
            let count = m.f_sum(off.kind())?.f_clamp_min(1.0)?;
            off.f_mul(&m)?.f_sum(off.kind())?.f_div(&count).op("R mean")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Controls and the corruption oracle: a fixed α per position, the moved mass spread over the K

/// Where a fixed-α designer puts the mass it moves off the true token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Uniformly over the K candidates (uniform smoothing).
    Uniform,
    /// Over the K by the learner's own renormalised probabilities (self-distillation).
    #[default]
    Learner,
}

impl Spread {
    /// r (B,T,K) from the learner's candidate log-probabilities (B,T,K).
    fn r(self, lp: &Tensor) -> Result<Tensor> {
        match self {
            Spread::Uniform => {
                let k = lp.size()[2];
                lp.f_zeros_like()?
                    .f_add_scalar(1.0 / k as f64)
                    .op("uniform r")
            }
            Spread::Learner => lp.f_softmax(-1, lp.kind()).op("learner r"),
        }
    }

    /// The construction q = (1−α)·onehot + α·r for α (B,T); `alpha` is kept in it (for the
    /// `alpha_mean` metric and the split metrics) when `keep_alpha`.
    fn construct(
        self,
        inputs: &TensorMap,
        alpha: Tensor,
        keep_alpha: bool,
    ) -> Result<Construction> {
        let r = self.r(inputs.require("cand_logprobs")?)?;
        let mut c = soft_targets(inputs, mix_with_true(&alpha, &r)?)?;
        if keep_alpha {
            c.tensors.insert("alpha", alpha);
        }
        Ok(c)
    }
}

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
    const PRODUCES: KindSpec = kinds::LM_SOFT_TARGETS;
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
    const PRODUCES: KindSpec = kinds::LM_SOFT_TARGETS;
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
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let alpha = fixed_alpha(inputs.require("cand_logprobs")?, self.alpha)?;
        Spread::Uniform.construct(inputs, alpha, false)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
}

impl Designer for SelfTopK {
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let alpha = fixed_alpha(inputs.require("cand_logprobs")?, self.alpha)?;
        Spread::Learner.construct(inputs, alpha, false)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
}

/// Config of `oracle_corrupt`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OracleCorruptConfig {
    /// α on the corrupted positions (0 elsewhere), in [0, 1].
    #[serde(default = "d_alpha_max")]
    pub alpha_max: f64,
    /// Where the moved mass goes: `"learner"` (the learner's renormalised top-K, default) or
    /// `"uniform"`.
    #[serde(default)]
    pub spread: Spread,
}

/// Diagnostic: α = α_max exactly where the stream's corruption replaced the target (it reads
/// the task's `corrupt_mask`), 0 elsewhere. What a designer that found every wrong target
/// could do at most with this α_max.
pub struct OracleCorrupt {
    cfg: OracleCorruptConfig,
}

impl DesignerFactory for OracleCorrupt {
    const NAME: &'static str = "oracle_corrupt";
    const DESCRIPTION: &'static str =
        "diagnostic (reads the corruption mask): alpha = alpha_max exactly on the corrupted targets, the mass spread by the learner's top-K or uniformly";
    const PRODUCES: KindSpec = kinds::LM_SOFT_TARGETS;
    type Config = OracleCorruptConfig;
    fn build(
        config: Self::Config,
        task_context: &serde_json::Value,
        _: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        parse_context(task_context)?;
        check_alpha("designer.config.alpha_max", config.alpha_max)?;
        Ok(Box::new(OracleCorrupt { cfg: config }))
    }
}

impl Designer for OracleCorrupt {
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let lp = inputs.require("cand_logprobs")?;
        let hit = inputs.require("corrupt_mask").map_err(|_| {
            Error::msg(
                "oracle_corrupt needs the design input `corrupt_mask`: set task.config.diagnostic_corrupt_mask = true (causal_lm with unlabeled.corrupt)",
            )
        })?;
        let alpha = hit.f_to_kind(lp.kind())?.f_mul_scalar(self.cfg.alpha_max)?;
        self.cfg.spread.construct(inputs, alpha, true)
    }
    /// `alpha_mean`: the mean α over the loss-bearing positions.
    fn metrics(&self, c: &Construction) -> Result<Metrics> {
        alpha_mean(c)
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
    fn lin(&mut self, name: &str, i: i64, o: i64, bias: bool, std: f64) -> Result<Linear> {
        let w = self.tensor(&format!("{name}.weight"), &[o, i], std, 0.0)?;
        let b = if bias {
            Some(self.tensor(&format!("{name}.bias"), &[o], 0.0, 0.0)?)
        } else {
            None
        };
        Ok(Linear::from_parts(w, b))
    }
    fn norm(&mut self, name: &str, w: i64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.tensor(&format!("{name}.weight"), &[w], 0.0, 1.0)?,
            b: self.tensor(&format!("{name}.bias"), &[w], 0.0, 0.0)?,
            eps: 1e-5,
        })
    }
}

/// A pre-norm causal transformer block with explicit matmul + softmax attention (double
/// backward must work through it on CPU).
struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, x: &Tensor, heads: i64) -> Result<Tensor> {
        let s = x.size();
        let (b, t, w) = (s[0], s[1], s[2]);
        let hd = w / heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?; // (B,T,3w)
        let qkv = qkv
            .f_reshape([b, t, 3, heads, hd])?
            .f_permute([2, 0, 3, 1, 4])?; // (3,B,H,T,hd)
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let scale = 1.0 / (hd as f64).sqrt();
        let y = attention(&q, &k, &v, None, true, scale, Attention::Math)?; // (B,H,T,hd)
        let y = y.f_transpose(1, 2)?.f_reshape([b, t, w])?; // (B,T,w)
        let x = x.f_add(&self.proj.forward(&y)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?.f_gelu("none")?;
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
    in_proj: Linear,
    tok_proj: Linear,
    stat_proj: Linear,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    score: Linear,
    emb_key: Linear,
    slot: Tensor,
    cand: Linear,
    gate: Linear,
}

impl DesignerFactory for TopKSoft {
    const NAME: &'static str = "topk_soft";
    const DESCRIPTION: &'static str =
        "adaptive top-K soft targets: a small causal transformer over the learner's features and the candidates' embeddings scores the K candidates and gates alpha <= alpha_max";
    const PRODUCES: KindSpec = kinds::LM_SOFT_TARGETS;
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
            features.f_to_kind(kind)?,
            lp.f_to_kind(kind)?,
            emb.f_to_kind(kind)?,
        );
        check_shape("features", &f, &[-1, -1, self.d_model])?;
        let (b, t) = (f.size()[0], f.size()[1]);
        check_shape("cand_logprobs", &lp, &[b, t, self.k])?;
        check_shape("cand_embeddings", &emb, &[b, t, self.k, self.d_model])?;
        let w = self.cfg.width;
        let lp_true = lp.f_narrow(-1, 0, 1)?; // (B,T,1)
        let best_other = lp.f_narrow(-1, 1, self.k - 1)?.f_amax(-1i64, true)?; // (B,T,1)
        let lse = lp.f_logsumexp([-1], true)?; // (B,T,1)
        let stats = Tensor::f_cat(&[&lp_true, &best_other, &lse], -1)?; // (B,T,3)
        let e_true = emb.f_select(2, 0)?; // (B,T,d)
        let mut x = self
            .in_proj
            .forward(&f)?
            .f_add(&self.tok_proj.forward(&e_true)?)?
            .f_add(&self.stat_proj.forward(&stats)?)?; // (B,T,w)
        for blk in &self.blocks {
            x = blk.forward(&x, self.cfg.heads)?;
        }
        let h = self.ln_f.forward(&x)?; // (B,T,w)
        let u = self.score.forward(&h)?; // (B,T,w)
                                         // u·W_e e_k = (u W_e)·e_k: project the query to d once instead of the B·T·K keys to w
        let ue = u.f_matmul(&self.emb_key.w)?; // (B,T,d)
        let emb_scores = emb.f_matmul(&ue.f_unsqueeze(-1)?)?.f_squeeze_dim(-1)?; // (B,T,K)
        let slot_scores = u.f_matmul(&self.slot.f_tr()?)?; // (B,T,K)
        let rel = lp.f_sub(&lp_true)?;
        let cf = Tensor::f_stack(&[&lp, &rel], -1)?; // (B,T,K,2)
        let coef = u.f_matmul(&self.cand.w)?.f_unsqueeze(-1)?; // (B,T,2,1)
        let cand_scores = cf.f_matmul(&coef)?.f_squeeze_dim(-1)?; // (B,T,K)
        let scores = emb_scores
            .f_add(&slot_scores)?
            .f_add(&cand_scores)?
            .f_div_scalar((w as f64).sqrt())?;
        let r = scores.f_softmax(-1, kind)?;
        let alpha = self
            .gate
            .forward(&h)?
            .f_squeeze_dim(-1)?
            .f_sigmoid()?
            .f_mul_scalar(self.cfg.alpha_max)?; // (B,T)
        Ok((r, alpha))
    }
}

impl Designer for TopKSoft {
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
        let mut c = soft_targets(inputs, mix_with_true(&alpha, &r)?)?;
        c.tensors.insert("alpha", alpha);
        Ok(c)
    }
    /// `alpha_mean`: the mean gate α over the loss-bearing positions.
    fn metrics(&self, c: &Construction) -> Result<Metrics> {
        alpha_mean(c)
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        off_target_mass(c).map(Some)
    }
    fn state(&self) -> Result<State> {
        Ok(State::default())
    }
}

#[cfg(test)]
mod tests;
