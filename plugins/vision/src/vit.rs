//! A small Vision Transformer (ViT) for 1-channel images. Attention is explicit matmul+softmax:
//! CPU `scaled_dot_product_attention` has no double backward, and the meta step differentiates
//! ∇_θ L_pre again with respect to φ.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;
use vpt_sdk::{Result, TchContext};

/// Architecture of the ViT.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Patch side in pixels (64×64 global crops → (64/patch)² tokens).
    #[serde(default = "d_patch")]
    pub patch: i64,
    /// Side of the full-size (global) input; fixes the learned position grid.
    #[serde(default = "d_image")]
    pub image: i64,
    /// Image channels.
    #[serde(default = "d_channels")]
    pub channels: i64,
    /// Token width d.
    #[serde(default = "d_dim")]
    pub dim: i64,
    /// Number of transformer blocks.
    #[serde(default = "d_depth")]
    pub depth: i64,
    /// Attention heads (dim must be divisible by heads).
    #[serde(default = "d_heads")]
    pub heads: i64,
    /// MLP hidden width as a multiple of dim.
    #[serde(default = "d_mlp")]
    pub mlp_ratio: i64,
}
fn d_patch() -> i64 {
    8
}
fn d_image() -> i64 {
    64
}
fn d_channels() -> i64 {
    1
}
fn d_dim() -> i64 {
    96
}
fn d_depth() -> i64 {
    4
}
fn d_heads() -> i64 {
    4
}
fn d_mlp() -> i64 {
    2
}

impl Default for VitConfig {
    fn default() -> Self {
        VitConfig {
            patch: d_patch(),
            image: d_image(),
            channels: d_channels(),
            dim: d_dim(),
            depth: d_depth(),
            heads: d_heads(),
            mlp_ratio: d_mlp(),
        }
    }
}

impl VitConfig {
    /// Checks sizes (`image`, `patch` ≤ 1024; `channels` ≤ 64; `dim` ≤ 8192; `depth` ≤ 256;
    /// `mlp_ratio` ≤ 64; at most 2^30 weights) and divisibility, naming the field.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        use vpt_sdk::checks::{check_elements, check_size};
        let bad = |f: &str, m: String| Err(vpt_sdk::Error::config(format!("{prefix}.{f}"), m));
        let field = |f: &str| format!("{prefix}.{f}");
        check_size(field("image"), self.image, 1, 1 << 10)?;
        check_size(field("patch"), self.patch, 1, 1 << 10)?;
        check_size(field("channels"), self.channels, 1, 64)?;
        check_size(field("dim"), self.dim, 1, 1 << 13)?;
        check_size(field("depth"), self.depth, 1, 1 << 8)?;
        check_size(field("heads"), self.heads, 1, self.dim)?;
        check_size(field("mlp_ratio"), self.mlp_ratio, 1, 64)?;
        let [depth, dim, ratio] = [self.depth, self.dim, self.mlp_ratio].map(|v| v as u64);
        check_elements(
            field("dim"),
            &[
                ("depth", depth),
                ("4 + 2·mlp_ratio", 4 + 2 * ratio),
                ("dim²", dim * dim),
            ],
            1 << 30,
        )?;
        if self.patch <= 0 || self.image % self.patch != 0 {
            return bad(
                "patch",
                format!("patch {} must divide image {}", self.patch, self.image),
            );
        }
        if self.heads <= 0 || self.dim % self.heads != 0 {
            return bad(
                "heads",
                format!("heads {} must divide dim {}", self.heads, self.dim),
            );
        }
        Ok(())
    }
    /// Side of the position grid.
    pub fn grid(&self) -> i64 {
        self.image / self.patch
    }
}

pub use vpt_nn::{LayerNorm, Linear};

/// The ViT's layer norm of width `dim` under `p` (ε = 1e-6).
fn layer_norm(p: Path, dim: i64) -> Result<LayerNorm> {
    LayerNorm::new(&p, dim, 1e-6)
}

/// Multi-head self-attention with explicit matmul+softmax (double-backward safe on CPU).
#[derive(Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let (n, t, d) = (s[0], s[1], s[2]);
        let hd = d / self.heads;
        // (N,T,3d) → (N,T,3,h,hd) → (3,N,h,T,hd)
        let qkv = self
            .qkv
            .forward(x)?
            .f_view([n, t, 3, self.heads, hd])?
            .f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (
            qkv.f_select(0, 0)?,
            qkv.f_select(0, 1)?,
            qkv.f_select(0, 2)?,
        );
        let scale = 1.0 / (hd as f64).sqrt();
        let att = vpt_nn::attention(&q, &k, &v, None, false, scale, vpt_nn::Attention::Math)?;
        // (N,h,T,hd) → (N,T,h,hd) → (N,T,d)
        let out = att.f_transpose(1, 2)?.f_reshape([n, t, d])?;
        self.proj.forward(&out)
    }
}

/// A pre-norm transformer block.
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(p: Path, c: &VitConfig) -> Result<Self> {
        let d = c.dim;
        Ok(Block {
            norm1: layer_norm(&p / "norm1", d)?,
            attn: Attention {
                qkv: Linear::new(&p / "attn" / "qkv", d, 3 * d, true)?,
                proj: Linear::new(&p / "attn" / "proj", d, d, true)?,
                heads: c.heads,
            },
            norm2: layer_norm(&p / "norm2", d)?,
            fc1: Linear::new(&p / "mlp" / "fc1", d, c.mlp_ratio * d, true)?,
            fc2: Linear::new(&p / "mlp" / "fc2", c.mlp_ratio * d, d, true)?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.f_add(&self.attn.forward(&self.norm1.forward(x)?)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?.f_gelu("none")?;
        Ok(x.f_add(&self.fc2.forward(&h)?)?)
    }
}

/// The ViT: patch embedding (a linear map of flattened patches), CLS token, learned positions
/// (bilinearly resized for smaller crops), blocks, final norm.
#[derive(Debug)]
pub struct Vit {
    /// Its architecture.
    pub config: VitConfig,
    patch_embed: Linear,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl Vit {
    /// Builds the ViT under `p` (names `patch_embed.*`, `cls_token`, `pos_embed`, `blocks.i.*`, `norm.*`).
    pub fn new(p: Path, config: &VitConfig) -> Result<Self> {
        config.validate("vit")?;
        let (d, g, pp) = (config.dim, config.grid(), config.patch);
        Ok(Vit {
            patch_embed: Linear::new(&p / "patch_embed", config.channels * pp * pp, d, true)?,
            cls: p.f_var(
                "cls_token",
                &[1, 1, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            pos: p.f_var(
                "pos_embed",
                &[1, 1 + g * g, d],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            blocks: (0..config.depth)
                .map(|i| Block::new(&p / "blocks" / i, config))
                .collect::<Result<_>>()?,
            norm: layer_norm(&p / "norm", d)?,
            config: config.clone(),
        })
    }

    /// Position embeddings for an `h`×`w` token grid: (1, 1+h·w, d).
    fn positions(&self, h: i64, w: i64) -> Result<Tensor> {
        let g = self.config.grid();
        if h == g && w == g {
            return Ok(self.pos.shallow_clone());
        }
        let d = self.config.dim;
        let cls = self.pos.f_narrow(1, 0, 1)?;
        // (1,g²,d) → (1,g,g,d) → (1,d,g,g) → resize → (1,d,h,w) → (1,h·w,d)
        let grid = self
            .pos
            .f_narrow(1, 1, g * g)?
            .f_reshape([1, g, g, d])?
            .f_permute([0, 3, 1, 2])?;
        let grid = grid.f_upsample_bilinear2d([h, w], false, None, None)?;
        let grid = grid.f_permute([0, 2, 3, 1])?.f_reshape([1, h * w, d])?;
        Tensor::f_cat(&[cls, grid], 1).op("positions")
    }

    /// Token features after the final norm: (N, 1+T, d) for images (N,C,H,W); token 0 is CLS.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let (n, c, hh, ww) = (s[0], s[1], s[2], s[3]);
        let p = self.config.patch;
        let (h, w) = (hh / p, ww / p);
        // (N,C,H,W) → (N,C,h,p,w,p) → (N,h,w,C,p,p) → (N,h·w,C·p·p)
        let patches = x
            .f_reshape([n, c, h, p, w, p])?
            .f_permute([0, 2, 4, 1, 3, 5])?
            .f_reshape([n, h * w, c * p * p])?;
        let tokens = self.patch_embed.forward(&patches)?;
        let cls = self.cls.f_expand([n, 1, self.config.dim], false)?;
        let mut x = Tensor::f_cat(&[cls, tokens], 1)?.f_add(&self.positions(h, w)?)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        self.norm.forward(&x)
    }

    /// Patch features as a map (N, d, h, w) (CLS dropped).
    pub fn patch_map(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let p = self.config.patch;
        let (h, w) = (s[2] / p, s[3] / p);
        let f = self.forward(x)?;
        let n = s[0];
        // (N,1+hw,d) → (N,hw,d) → (N,d,hw) → (N,d,h,w)
        f.f_narrow(1, 1, h * w)?
            .f_transpose(1, 2)?
            .f_reshape([n, self.config.dim, h, w])
            .op("patch map")
    }

    /// Parameter-name prefixes of the last `k` blocks and the final norm (the alignment subset S).
    pub fn alignment_prefixes(&self, k: i64) -> Vec<String> {
        let depth = self.config.depth;
        let mut v: Vec<String> = (depth - k.min(depth)..depth)
            .map(|i| format!("blocks.{i}."))
            .collect();
        v.push("norm.".into());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn shapes_and_position_resizing() {
        let vs = VarStore::new(Device::Cpu);
        let c = VitConfig {
            dim: 16,
            depth: 2,
            heads: 2,
            ..Default::default()
        };
        let vit = Vit::new(vs.root(), &c).unwrap();
        let x = Tensor::rand([2, 1, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(vit.forward(&x).unwrap().size(), [2, 65, 16]);
        let small = Tensor::rand([3, 1, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(vit.forward(&small).unwrap().size(), [3, 17, 16]);
        assert_eq!(vit.patch_map(&x).unwrap().size(), [2, 16, 8, 8]);
        assert_eq!(
            vit.alignment_prefixes(1),
            vec!["blocks.1.".to_string(), "norm.".to_string()]
        );
        let bad = VitConfig { heads: 5, ..c };
        assert!(bad
            .validate("vit")
            .unwrap_err()
            .to_string()
            .contains("vit.heads"));
    }
}
