//! View-mask designers (kind `vision.view_mask/v1`): `unet_mask`, a tiny U-Net φ predicting a
//! soft keep-mask per global crop, and `random_mask`, the parameter-free control with random
//! smooth masks of the same keep ratio.
//!
//! The task turns a mask μ into the student's view `μ⊙v + (1−μ)⊙blur(v)`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path, VarStore};
use tch::{Kind, Tensor};
use vpt_sdk::checks::check_size;
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{
    kinds, BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Metrics, Result,
    State, TchContext, TensorMap, KIND_VISION_VIEW_MASK,
};

/// Name of the design input holding the global crops (B,V,C,H,W).
pub const INPUT_GLOBAL: &str = "global";
/// Name of the construction tensor (B,V,1,H,W).
pub const MASK: &str = "mask";

/// The design-input context a vision task publishes (`TaskInfo::designer_context`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaskContext {
    /// Global views per example.
    pub views: i64,
    /// Channels of a view.
    pub channels: i64,
    /// Height of a view.
    pub height: i64,
    /// Width of a view.
    pub width: i64,
}

impl MaskContext {
    fn parse(v: &serde_json::Value) -> Result<MaskContext> {
        serde_json::from_value(v.clone()).map_err(|e| {
            Error::config(
                "task.designer_context",
                format!(
                    "not a vision view-mask context ({e}); pair this designer with a vision task"
                ),
            )
        })
    }
}

fn global_views(inputs: &TensorMap) -> Result<(Tensor, Vec<i64>)> {
    let g = inputs.require(INPUT_GLOBAL)?;
    let s = g.size();
    if s.len() != 5 {
        return Err(Error::Tensor {
            name: INPUT_GLOBAL.into(),
            message: format!("want (B,V,C,H,W), got {s:?}"),
        });
    }
    // (B,V,C,H,W) → (B·V,C,H,W)
    Ok((g.f_reshape([s[0] * s[1], s[2], s[3], s[4]])?, s))
}

/// Keep-ratio penalty `mean_masks (mean μ − κ)²` of masks (…,H,W).
pub fn keep_penalty(mask: &Tensor, kappa: f64) -> Result<Tensor> {
    let s = mask.size();
    let n: i64 = s[..s.len() - 2].iter().product();
    let per = mask
        .f_reshape([n, -1])?
        .f_mean_dim([1i64].as_slice(), false, mask.kind())?;
    per.f_sub_scalar(kappa)?
        .f_square()?
        .f_mean(mask.kind())
        .op("keep penalty")
}

/// Anisotropic total variation: mean |Δ_y μ| + mean |Δ_x μ| of masks (…,H,W).
pub fn total_variation(mask: &Tensor) -> Result<Tensor> {
    let d = mask.dim() as i64;
    let (h, w) = (mask.size()[d as usize - 2], mask.size()[d as usize - 1]);
    let dy = mask
        .f_narrow(d - 2, 1, h - 1)?
        .f_sub(&mask.f_narrow(d - 2, 0, h - 1)?)?
        .f_abs()?
        .f_mean(mask.kind())?;
    let dx = mask
        .f_narrow(d - 1, 1, w - 1)?
        .f_sub(&mask.f_narrow(d - 1, 0, w - 1)?)?
        .f_abs()?
        .f_mean(mask.kind())?;
    dy.f_add(&dx).op("total variation")
}

/// Largest `unet_mask` width (its deepest level has 4 × width channels).
pub const MAX_UNET_WIDTH: i64 = 1 << 8;

/// Config of `unet_mask`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnetMaskConfig {
    /// Channels of the first U-Net level (doubling per level; 1 to 256).
    #[serde(default = "d_width")]
    pub width: i64,
    /// Target keep ratio κ (mean of μ).
    #[serde(default = "d_kappa")]
    pub keep_ratio: f64,
    /// Weight of the keep-ratio penalty (mean μ − κ)².
    #[serde(default = "d_keep_w")]
    pub keep_weight: f64,
    /// Weight of the total-variation penalty.
    #[serde(default = "d_tv_w")]
    pub tv_weight: f64,
    /// Mean keep of the initial masks (default κ). A value other than κ starts φ away from
    /// the keep penalty's minimum, so the regulariser and the feedback both move it.
    #[serde(default)]
    pub init_keep: Option<f64>,
    /// Pixels per mask cell (1 to 64): φ runs on the crop average-pooled by this factor and its logit map
    /// is upsampled bilinearly back (1 = pixel resolution; 2 = a quarter of the U-Net's cost,
    /// still 16 cells per 8 × 8 ViT patch).
    #[serde(default = "d_mask_stride")]
    pub mask_stride: i64,
}
fn d_mask_stride() -> i64 {
    2
}
fn d_width() -> i64 {
    16
}
fn d_kappa() -> f64 {
    0.7
}
fn d_keep_w() -> f64 {
    0.25
}
fn d_tv_w() -> f64 {
    0.01
}

fn check_kappa(k: f64) -> Result<()> {
    if !(0.0 < k && k < 1.0) {
        return Err(Error::config(
            "designer.config.keep_ratio",
            format!("{k} must lie in (0, 1)"),
        ));
    }
    Ok(())
}

struct Conv {
    w: Tensor,
    b: Tensor,
    pad: i64,
}

impl Conv {
    fn new(p: Path, cin: i64, cout: i64, k: i64, std: f64) -> Result<Conv> {
        Ok(Conv {
            w: p.f_var(
                "weight",
                &[cout, cin, k, k],
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            )?,
            b: p.f_var("bias", &[cout], Init::Const(0.0))?,
            pad: k / 2,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.f_conv2d(
            &self.w,
            Some(&self.b),
            [1, 1],
            [self.pad, self.pad],
            [1, 1],
            1,
        )
        .op("unet conv")
    }
}

/// A three-level U-Net: 64 → 32 → 16 → 32 → 64 with skips; outputs a logit map.
struct UNet {
    e1a: Conv,
    e1b: Conv,
    e2: Conv,
    mid: Conv,
    d2: Conv,
    d1: Conv,
    out: Conv,
}

impl UNet {
    fn new(p: Path, cin: i64, c: i64, out_bias: f64) -> Result<UNet> {
        let he = |fan: i64| (2.0 / (fan as f64 * 9.0)).sqrt();
        let net = UNet {
            e1a: Conv::new(&p / "enc1a", cin, c, 3, he(cin))?,
            e1b: Conv::new(&p / "enc1b", c, c, 3, he(c))?,
            e2: Conv::new(&p / "enc2", c, 2 * c, 3, he(c))?,
            mid: Conv::new(&p / "mid", 2 * c, 4 * c, 3, he(2 * c))?,
            d2: Conv::new(&p / "dec2", 6 * c, 2 * c, 3, he(6 * c))?,
            d1: Conv::new(&p / "dec1", 3 * c, c, 3, he(3 * c))?,
            out: Conv::new(&p / "out", c, 1, 1, 0.05)?,
        };
        let _ = tch::no_grad(|| net.out.b.shallow_clone().f_fill_(out_bias))?;
        Ok(net)
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let (h, w) = (s[2], s[3]);
        let e1 = self
            .e1b
            .forward(&self.e1a.forward(x)?.f_relu()?)?
            .f_relu()?; // (N,c,H,W)
        let e2 = self
            .e2
            .forward(&e1.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None)?)?
            .f_relu()?; // (N,2c,H/2,W/2)
        let m = self
            .mid
            .forward(&e2.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None)?)?
            .f_relu()?; // (N,4c,H/4,W/4)
        let u2 = m.f_upsample_bilinear2d([h / 2, w / 2], false, None, None)?;
        let d2 = self.d2.forward(&Tensor::f_cat(&[u2, e2], 1)?)?.f_relu()?; // (N,2c,H/2,W/2)
        let u1 = d2.f_upsample_bilinear2d([h, w], false, None, None)?;
        let d1 = self.d1.forward(&Tensor::f_cat(&[u1, e1], 1)?)?.f_relu()?; // (N,c,H,W)
        self.out.forward(&d1) // (N,1,H,W)
    }
}

/// The learned mask designer φ.
pub struct UnetMask {
    vs: VarStore,
    net: UNet,
    cfg: UnetMaskConfig,
    /// φ₀: φ as built (a pure function of the seed, so a resumed run rebuilds the same φ₀).
    phi0: Vec<(String, Tensor)>,
}

impl DesignerFactory for UnetMask {
    const NAME: &'static str = "unet_mask";
    const DESCRIPTION: &'static str =
        "tiny U-Net φ: a soft keep-mask per global crop (view = μ⊙v + (1−μ)⊙blur(v)), keep-ratio + TV regularised";
    const PRODUCES: KindSpec = kinds::VISION_VIEW_MASK;
    type Config = UnetMaskConfig;

    fn build(
        cfg: UnetMaskConfig,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        Ok(Box::new(UnetMask::new(cfg, task_context, ctx)?))
    }
}

impl UnetMask {
    /// Builds φ for a task whose designer context is `task_context`.
    pub fn new(
        cfg: UnetMaskConfig,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<UnetMask> {
        check_kappa(cfg.keep_ratio)?;
        let init = cfg.init_keep.unwrap_or(cfg.keep_ratio);
        if !(0.0 < init && init < 1.0) {
            return Err(Error::config(
                "designer.config.init_keep",
                format!("{init} must lie in (0, 1)"),
            ));
        }
        check_size("designer.config.width", cfg.width, 1, MAX_UNET_WIDTH)?;
        let mc = MaskContext::parse(task_context)?;
        check_size("designer.config.mask_stride", cfg.mask_stride, 1, 64)?;
        let cell = 4 * cfg.mask_stride;
        if mc.height % cell != 0 || mc.width % cell != 0 {
            return Err(Error::config(
                "designer.config.mask_stride",
                format!(
                    "view sides {}×{} must be divisible by 4 × mask_stride = {cell} for the U-Net",
                    mc.height, mc.width
                ),
            ));
        }
        tch::manual_seed(ctx.seed as i64 ^ 0x6d61_736b);
        let vs = VarStore::new(ctx.device());
        let logit = (init / (1.0 - init)).ln();
        let net = UNet::new(vs.root() / "unet", mc.channels, cfg.width, logit)?;
        let mut phi0: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect();
        phi0.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(UnetMask { vs, net, cfg, phi0 })
    }

    /// ‖φ − φ₀‖: how far the designer has moved from its initialisation (all of φ, L2).
    pub fn phi_drift(&self) -> Result<f64> {
        let vars = self.vs.variables();
        let mut sq = 0.0;
        for (n, p0) in &self.phi0 {
            let p = vars
                .get(n)
                .ok_or_else(|| Error::msg(format!("unet_mask: parameter `{n}` vanished")))?;
            sq += tch::no_grad(|| {
                p.f_to_kind(Kind::Double)?
                    .f_sub(&p0.f_to_kind(Kind::Double)?)?
                    .f_square()?
                    .f_sum(Kind::Double)?
                    .f_double_value(&[])
            })?;
        }
        Ok(sq.sqrt())
    }

    /// Converts φ to `kind` (tests use `Kind::Double` for finite differences).
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
    }
}

impl Designer for UnetMask {
    fn parameters(&self) -> Result<TensorMap> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v.into_iter().collect())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let (x, s) = global_views(inputs)?;
        let x = x.f_to_kind(self.vs.kind())?;
        let (h, w, k) = (s[3], s[4], self.cfg.mask_stride);
        let logit = if k == 1 {
            self.net.forward(&x)? // (B·V,1,H,W)
        } else {
            let small = x.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None)?;
            self.net
                .forward(&small)? // (B·V,1,H/k,W/k)
                .f_upsample_bilinear2d([h, w], false, None, None)?
        };
        let mu = logit.f_sigmoid()?; // (B·V,1,H,W)
        let mask = mu.f_reshape([s[0], s[1], 1, s[3], s[4]])?; // (B,V,1,H,W)
        Ok(Construction {
            kind: KIND_VISION_VIEW_MASK.into(),
            tensors: TensorMap::new().with(MASK, mask),
        })
    }
    /// `keep_mean`: the mean of the step's masks (the fraction of each view kept);
    /// `phi_drift`: ‖φ − φ₀‖.
    fn metrics(&self, c: &Construction) -> Result<Metrics> {
        Ok(Metrics::from([
            ("keep_mean".to_string(), c.mean_of(MASK, None)?),
            ("phi_drift".to_string(), self.phi_drift()?),
        ]))
    }
    fn regularizer(&mut self, c: &Construction) -> Result<Option<Tensor>> {
        let m = c.tensors.require(MASK)?;
        let r = keep_penalty(m, self.cfg.keep_ratio)?
            .f_mul_scalar(self.cfg.keep_weight)?
            .f_add(&total_variation(m)?.f_mul_scalar(self.cfg.tv_weight)?)?;
        Ok(Some(r))
    }
}

/// Config of `random_mask`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomMaskConfig {
    /// Keep ratio κ (mean of each mask).
    #[serde(default = "d_kappa")]
    pub keep_ratio: f64,
    /// Side of the noise grid that is upsampled (smaller = smoother blobs; 2 to 1024).
    #[serde(default = "d_grid")]
    pub grid: i64,
    /// Softness of the mask edge, in standard deviations of the smooth noise.
    #[serde(default = "d_soft")]
    pub softness: f64,
    /// Ignored: accepted so that an arm can swap `designer.name` from `unet_mask` alone.
    #[serde(default)]
    pub width: Option<i64>,
    /// Ignored (no parameters, so no regulariser); accepted like `width`.
    #[serde(default)]
    pub keep_weight: Option<f64>,
    /// Ignored (no parameters, so no regulariser); accepted like `width`.
    #[serde(default)]
    pub tv_weight: Option<f64>,
    /// Ignored (no parameters to initialise); accepted like `width`.
    #[serde(default)]
    pub init_keep: Option<f64>,
    /// Ignored (the noise grid sets the resolution); accepted like `width`.
    #[serde(default)]
    pub mask_stride: Option<i64>,
}
fn d_grid() -> i64 {
    8
}
fn d_soft() -> f64 {
    0.1
}

/// The control: random smooth masks with keep ratio κ, no parameters.
pub struct RandomMask {
    cfg: RandomMaskConfig,
    seed: u64,
    calls: u64,
}

impl DesignerFactory for RandomMask {
    const NAME: &'static str = "random_mask";
    const DESCRIPTION: &'static str =
        "control: random smooth soft masks with the same keep ratio κ (no parameters)";
    const PRODUCES: KindSpec = kinds::VISION_VIEW_MASK;
    type Config = RandomMaskConfig;

    fn build(
        cfg: RandomMaskConfig,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        check_kappa(cfg.keep_ratio)?;
        check_size("designer.config.grid", cfg.grid, 2, 1 << 10)?;
        MaskContext::parse(task_context)?;
        Ok(Box::new(RandomMask {
            cfg,
            seed: ctx.seed,
            calls: 0,
        }))
    }
}

/// Random smooth masks (N,1,H,W) with per-mask mean ≈ κ, from `rng`.
pub fn random_smooth_masks(
    rng: &mut SplitMix64,
    n: i64,
    h: i64,
    w: i64,
    cfg: &RandomMaskConfig,
    kind: Kind,
    device: tch::Device,
) -> Result<Tensor> {
    let g = cfg.grid;
    let noise: Vec<f32> = (0..n * g * g).map(|_| rng.normal() as f32).collect();
    let z = Tensor::f_from_slice(&noise)?
        .f_view([n, 1, g, g])?
        .f_to_kind(kind)?
        .f_to(device)?;
    let z = z
        .f_upsample_bicubic2d([h, w], false, None, None)?
        .f_reshape([n, h * w])?; // (N,HW)
                                 // Threshold each mask at its (1−κ) quantile so that a fraction κ of pixels is kept.
    let (sorted, _) = z.f_sort(1, false)?;
    let idx = (((1.0 - cfg.keep_ratio) * (h * w) as f64).floor() as i64).clamp(0, h * w - 1);
    let thr = sorted.f_narrow(1, idx, 1)?; // (N,1)
    let scale = z
        .f_std_correction([1i64].as_slice(), 0, true)?
        .f_mul_scalar(cfg.softness)?
        .f_clamp_min(1e-6)?;
    z.f_sub(&thr)?
        .f_div(&scale)?
        .f_sigmoid()?
        .f_reshape([n, 1, h, w])
        .op("random mask")
}

impl Designer for RandomMask {
    fn parameters(&self) -> Result<TensorMap> {
        Ok(TensorMap::new())
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let (x, s) = global_views(inputs)?;
        let mut rng =
            SplitMix64::stream_keyed(self.seed, 0x7261_6e64 ^ self.calls, 0xD1B5_4A32_D192_ED03);
        self.calls += 1;
        let m = random_smooth_masks(
            &mut rng,
            s[0] * s[1],
            s[3],
            s[4],
            &self.cfg,
            x.kind(),
            x.device(),
        )?;
        let mask = m.f_reshape([s[0], s[1], 1, s[3], s[4]])?; // (B,V,1,H,W)
        Ok(Construction {
            kind: KIND_VISION_VIEW_MASK.into(),
            tensors: TensorMap::new().with(MASK, mask),
        })
    }
    fn state(&self) -> Result<State> {
        Ok(State {
            json: serde_json::json!({ "calls": self.calls }),
            tensors: TensorMap::new(),
        })
    }
    fn load_state(&mut self, state: State) -> Result<()> {
        self.calls = state
            .json
            .get("calls")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::msg("random_mask state: missing `calls`"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn ctx() -> (serde_json::Value, BuildContext) {
        (
            serde_json::json!({"views": 2, "channels": 1, "height": 32, "width": 32}),
            BuildContext {
                seed: 3,
                device: "cpu".into(),
            },
        )
    }

    fn inputs() -> TensorMap {
        tch::manual_seed(1);
        TensorMap::new().with(
            INPUT_GLOBAL,
            Tensor::rand([3, 2, 1, 32, 32], (Kind::Float, Device::Cpu)),
        )
    }

    #[test]
    fn unet_init_keep_starts_away_from_the_keep_minimum() {
        let (tc, bc) = ctx();
        let cfg: UnetMaskConfig = serde_json::from_str(r#"{"init_keep": 0.9}"#).unwrap();
        let mut d = UnetMask::build(cfg, &tc, &bc).unwrap();
        let c = d.construct(&inputs()).unwrap();
        let m = c.tensors.require(MASK).unwrap();
        assert!((m.mean(Kind::Float).double_value(&[]) - 0.9).abs() < 0.1);
        let r = d.regularizer(&c).unwrap().unwrap().double_value(&[]);
        assert!(r > 0.25 * 0.01, "regulariser {r} should be off its minimum");
        let bad: UnetMaskConfig = serde_json::from_str(r#"{"init_keep": 1.0}"#).unwrap();
        let err = UnetMask::build(bad, &tc, &bc).err().unwrap().to_string();
        assert!(err.contains("init_keep"), "{err}");
    }

    /// ‖φ − φ₀‖ is 0 as built and the norm of the change after φ moves.
    #[test]
    fn phi_drift_measures_the_distance_from_the_initial_phi() {
        let (tc, bc) = ctx();
        let cfg: UnetMaskConfig = serde_json::from_str("{}").unwrap();
        let d = UnetMask::new(cfg, &tc, &bc).unwrap();
        assert_eq!(d.phi_drift().unwrap(), 0.0);
        let p = d.parameters().unwrap();
        let (_, w) = p.iter().next().unwrap();
        let n = w.numel() as f64;
        tch::no_grad(|| {
            let _ = w.shallow_clone().f_add_scalar_(0.5).unwrap();
        });
        assert!((d.phi_drift().unwrap() - 0.5 * n.sqrt()).abs() < 1e-4);
        let c = UnetMask::new(serde_json::from_str("{}").unwrap(), &tc, &bc)
            .unwrap()
            .construct(&inputs())
            .unwrap();
        let m = d.metrics(&c).unwrap();
        assert!(m.contains_key("keep_mean") && m["phi_drift"] > 0.0);
    }

    #[test]
    fn unet_masks_have_the_right_shape_range_and_gradient() {
        let (tc, bc) = ctx();
        let cfg: UnetMaskConfig = serde_json::from_str("{}").unwrap();
        let mut d = UnetMask::build(cfg, &tc, &bc).unwrap();
        let c = d.construct(&inputs()).unwrap();
        assert_eq!(c.kind, KIND_VISION_VIEW_MASK);
        let m = c.tensors.require(MASK).unwrap();
        assert_eq!(m.size(), [3, 2, 1, 32, 32]);
        assert!(m.min().double_value(&[]) >= 0.0 && m.max().double_value(&[]) <= 1.0);
        // Initialised near κ everywhere.
        assert!((m.mean(Kind::Float).double_value(&[]) - 0.7).abs() < 0.1);
        let r = d.regularizer(&c).unwrap().unwrap();
        let params: Vec<Tensor> = d
            .parameters()
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert!(params.len() >= 14);
        let g = Tensor::run_backward(&[(m * m).sum(Kind::Float) + r], &params, false, false);
        assert!(g.iter().all(|g| g.isfinite().all().int64_value(&[]) == 1));
        assert!(g
            .iter()
            .any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
    }

    /// With mask_stride k the mask keeps the crop's size and differs from the stride-1 mask of
    /// the same φ; a stride that does not divide the crop is refused naming the field.
    #[test]
    fn unet_mask_stride_keeps_the_crop_size_and_is_validated() {
        let (tc, bc) = ctx();
        let build = |json: &str| {
            let cfg: UnetMaskConfig = serde_json::from_str(json).unwrap();
            UnetMask::build(cfg, &tc, &bc)
        };
        let x = inputs();
        let m1 = build(r#"{"mask_stride": 1}"#)
            .unwrap()
            .construct(&x)
            .unwrap();
        let m2 = build(r#"{"mask_stride": 2}"#)
            .unwrap()
            .construct(&x)
            .unwrap();
        let (m1, m2) = (
            m1.tensors.require(MASK).unwrap(),
            m2.tensors.require(MASK).unwrap(),
        );
        assert_eq!(m2.size(), m1.size());
        assert!(
            !m1.allclose(m2, 1e-6, 1e-6, false),
            "same φ, different resolution"
        );
        for bad in [r#"{"mask_stride": 0}"#, r#"{"mask_stride": 3}"#] {
            let err = build(bad).err().unwrap().to_string();
            assert!(err.contains("designer.config.mask_stride"), "{err}");
        }
    }

    #[test]
    fn regularisers_vanish_where_they_should() {
        let k = Tensor::full([2, 2, 1, 8, 8], 0.3, (Kind::Double, Device::Cpu));
        assert!(keep_penalty(&k, 0.3).unwrap().double_value(&[]).abs() < 1e-15);
        assert!((keep_penalty(&k, 0.5).unwrap().double_value(&[]) - 0.04).abs() < 1e-12);
        assert_eq!(total_variation(&k).unwrap().double_value(&[]), 0.0);
        let stripes = Tensor::from_slice(&[0.0f64, 1.0, 0.0, 1.0])
            .view([1, 1, 1, 4])
            .expand([1, 1, 4, 4], false);
        // Δx = 1 everywhere along x, Δy = 0.
        assert!((total_variation(&stripes).unwrap().double_value(&[]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn random_masks_match_keep_ratio_and_are_reproducible() {
        let (tc, bc) = ctx();
        let cfg: RandomMaskConfig = serde_json::from_str(r#"{"keep_ratio": 0.6}"#).unwrap();
        let mut d = RandomMask::build(cfg.clone(), &tc, &bc).unwrap();
        assert!(d.parameters().unwrap().is_empty());
        let a = d
            .construct(&inputs())
            .unwrap()
            .tensors
            .remove(MASK)
            .unwrap();
        let b = d
            .construct(&inputs())
            .unwrap()
            .tensors
            .remove(MASK)
            .unwrap();
        assert_eq!(a.size(), [3, 2, 1, 32, 32]);
        assert!(!a.equal(&b));
        let per = a
            .reshape([6, -1])
            .mean_dim([1i64].as_slice(), false, Kind::Float);
        assert!((per - 0.6).abs().max().double_value(&[]) < 0.05);
        let mut e = RandomMask::build(cfg, &tc, &bc).unwrap();
        assert!(e
            .construct(&inputs())
            .unwrap()
            .tensors
            .remove(MASK)
            .unwrap()
            .equal(&a));
        e.load_state(State {
            json: serde_json::json!({"calls": 1}),
            tensors: TensorMap::new(),
        })
        .unwrap();
        assert!(e
            .construct(&inputs())
            .unwrap()
            .tensors
            .remove(MASK)
            .unwrap()
            .equal(&b));
        let bad: RandomMaskConfig = serde_json::from_str(r#"{"keep_ratio": 1.5}"#).unwrap();
        assert!(RandomMask::build(bad, &tc, &bc)
            .err()
            .unwrap()
            .to_string()
            .contains("keep_ratio"));
    }
}
