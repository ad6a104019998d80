//! The `dino_dense` task config (JSON Schema via schemars; every field has a default).

use crate::augment::MultiCropSpec;
use crate::clutter::SceneConfig;
use crate::dino::DinoConfig;
use crate::vit::VitConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vpt_sdk::{InputPath, OutputPath};

/// Multi-crop and view settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    /// Global crops per image (≥ 2; the designer masks these, the teacher sees them clean).
    #[serde(default = "d_globals")]
    pub globals: usize,
    /// Area range of a global crop.
    #[serde(default = "d_gscale")]
    pub global_scale: (f64, f64),
    /// Local crops per image.
    #[serde(default = "d_locals")]
    pub locals: usize,
    /// Side of a local crop (a multiple of vit.patch).
    #[serde(default = "d_lsize")]
    pub local_size: i64,
    /// Area range of a local crop.
    #[serde(default = "d_lscale")]
    pub local_scale: (f64, f64),
    /// Horizontal flip probability.
    #[serde(default = "d_flip")]
    pub flip_p: f64,
    /// Brightness/contrast jitter strength.
    #[serde(default = "d_jitter")]
    pub jitter: f64,
    /// Gaussian blur probability.
    #[serde(default = "d_blur")]
    pub blur_p: f64,
    /// σ of the blur that replaces the masked-out part of a view: μ⊙v + (1−μ)⊙blur(v).
    #[serde(default = "d_mblur")]
    pub mask_blur_sigma: f64,
}
fn d_globals() -> usize {
    2
}
fn d_gscale() -> (f64, f64) {
    (0.4, 1.0)
}
fn d_locals() -> usize {
    4
}
fn d_lsize() -> i64 {
    32
}
fn d_lscale() -> (f64, f64) {
    (0.1, 0.4)
}
fn d_flip() -> f64 {
    0.5
}
fn d_jitter() -> f64 {
    0.4
}
fn d_blur() -> f64 {
    0.3
}
fn d_mblur() -> f64 {
    2.0
}

impl Default for CropConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl CropConfig {
    /// The augmentation spec for global crops of side `image`.
    pub fn spec(&self, image: i64) -> MultiCropSpec {
        MultiCropSpec {
            globals: self.globals,
            global_size: image,
            global_scale: self.global_scale,
            locals: self.locals,
            local_size: self.local_size,
            local_scale: self.local_scale,
            flip_p: self.flip_p,
            jitter: self.jitter,
            blur_p: self.blur_p,
        }
    }
}

/// Feedback (L_down) settings: linear seg/depth heads on frozen patch features.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Scenes per feedback batch (feedback-meta split).
    #[serde(default = "d_fb_batch")]
    pub batch_size: usize,
    /// Feedback-train scenes the heads are fit on (a fixed set).
    #[serde(default = "d_fb_train")]
    pub train_scenes: usize,
    /// Adam steps of a fresh segmentation-head fit.
    #[serde(default = "d_steps")]
    pub head_steps: usize,
    /// Adam steps of a warm-started refit in `prepare_feedback`.
    #[serde(default = "d_warm")]
    pub warm_steps: usize,
    /// How a warm refit steps: `adam` (fresh Adam moments at lr `head_lr`, the earlier
    /// behaviour; its steps keep their size near the optimum, so g_down's direction depends on
    /// the refit's details) or `descent` (gradient descent at step 1/L: smooth in the features).
    #[serde(default)]
    pub warm_fit: WarmFit,
    /// Feedback-train scenes whose features a warm refit recomputes (a window, in turn; the
    /// others keep their features from earlier refits). Unset: all of them, every refit.
    #[serde(default)]
    pub refit_scenes: Option<usize>,
    /// Learning rate of the head fit.
    #[serde(default = "d_hlr")]
    pub head_lr: f64,
    /// Resolution the heads are fit at (features bilinearly upsampled, targets area-averaged).
    #[serde(default = "d_res")]
    pub fit_res: i64,
    /// Ridge penalty of the depth head.
    #[serde(default = "d_ridge")]
    pub ridge: f64,
    /// α_seg: weight of the pixel cross-entropy (11 classes).
    #[serde(default = "d_one")]
    pub alpha_seg: f64,
    /// α_dep: weight of the depth L1.
    #[serde(default = "d_one")]
    pub alpha_depth: f64,
}
fn d_fb_batch() -> usize {
    32
}
fn d_fb_train() -> usize {
    128
}
fn d_steps() -> usize {
    100
}
fn d_warm() -> usize {
    20
}
fn d_hlr() -> f64 {
    0.05
}
fn d_res() -> i64 {
    8
}
fn d_ridge() -> f64 {
    1e-2
}
fn d_one() -> f64 {
    1.0
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// How a warm refit of the segmentation head steps (see [`FeedbackConfig::warm_fit`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WarmFit {
    /// Adam, moments fresh at every refit.
    #[default]
    Adam,
    /// Gradient descent at step 1/L.
    Descent,
}

/// Evaluation sizes (each also capped by the host's `eval_limit`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Test scenes for mIoU and depth RMSE.
    #[serde(default = "d_test")]
    pub test_scenes: usize,
    /// Held-out feedback scenes for `feedback_loss`.
    #[serde(default = "d_fb_eval")]
    pub feedback_scenes: usize,
    /// Held-out unlabeled scenes for `general_loss`.
    #[serde(default = "d_gen")]
    pub general_scenes: usize,
    /// Single Fashion-MNIST items (train partition) the classification probe is fit on.
    #[serde(default = "d_ptrain")]
    pub probe_train: usize,
    /// Fashion-MNIST test items the probe is scored on.
    #[serde(default = "d_ptest")]
    pub probe_test: usize,
}
fn d_test() -> usize {
    256
}
fn d_fb_eval() -> usize {
    128
}
fn d_gen() -> usize {
    64
}
fn d_ptrain() -> usize {
    1000
}
fn d_ptest() -> usize {
    500
}

impl Default for EvalConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// Config of the `dino_dense` task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DinoDenseConfig {
    /// Folder with the Fashion-MNIST `*-ubyte.gz` files (Debian package `dataset-fashion-mnist`).
    /// Relative paths in this config are taken from the config file's directory.
    #[serde(default = "d_dir")]
    pub data_dir: InputPath,
    /// Unlabeled scenes per learner batch.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Clutter and perspective in the scenes (all off by default).
    #[serde(default)]
    pub scenes: SceneConfig,
    /// The ViT.
    #[serde(default)]
    pub vit: VitConfig,
    /// DINO head, temperatures, centring, EMA schedule.
    #[serde(default)]
    pub dino: DinoConfig,
    /// Multi-crop augmentations.
    #[serde(default)]
    pub crops: CropConfig,
    /// Number of last ViT blocks in the alignment subset S (plus the final norm).
    #[serde(default = "d_align")]
    pub align_blocks: i64,
    /// Feedback heads and L_down weights.
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// Evaluation sizes.
    #[serde(default)]
    pub eval: EvalConfig,
    /// A stage-0 checkpoint (student, teacher, centre) to start from; overrides `stage0_steps`.
    #[serde(default)]
    pub base_checkpoint: Option<InputPath>,
    /// Stage-0 DINO pretraining steps run at build time when no `base_checkpoint` is given
    /// (0 = start from random init). The result is cached under `cache_dir` by config hash.
    #[serde(default)]
    pub stage0_steps: u64,
    /// Learning rate of the stage-0 AdamW (cosine decay, 10% warmup).
    #[serde(default = "d_s0lr")]
    pub stage0_lr: f64,
    /// Where stage-0 checkpoints are cached (default `$VPT_CACHE/vision` or `~/.cache/vpt/vision`).
    #[serde(default)]
    pub cache_dir: Option<OutputPath>,
    /// Diagnostic, never a method (the headroom study's supervised upper bound; reports label
    /// such runs "(diagnostic)"): the learner fine-tunes the last `align_blocks` blocks and the
    /// linear heads directly on feedback labels instead of the DINO loss (see `supervised.rs`).
    #[serde(default)]
    pub diagnostic_supervised: bool,
}
fn d_dir() -> InputPath {
    crate::data::DEFAULT_DIR.into()
}
fn d_batch() -> usize {
    32
}
fn d_align() -> i64 {
    2
}
fn d_s0lr() -> f64 {
    1e-3
}

/// Largest tensor a batch may ask for (views × tokens × width, attention maps), in elements:
/// 2^32, 16 GiB of f32.
pub const MAX_ACTIVATIONS: u64 = 1 << 32;

impl DinoDenseConfig {
    /// Bounds every size, naming the `task.config.…` field, so that no value reaches an
    /// allocation that aborts: batches ≤ 2^14 scenes, crops ≤ 16 global and 64 local, the DINO
    /// head ≤ 2^17 prototypes and 2^14 hidden units, scene counts ≤ 2^20, fit steps ≤ 2^20, and
    /// one batch's activations ≤ [`MAX_ACTIVATIONS`] elements. The ViT is checked by
    /// [`VitConfig::validate`].
    pub fn validate_sizes(&self) -> vpt_sdk::Result<()> {
        use vpt_sdk::checks::{check_elements, check_size};
        let f = |name: &str| format!("task.config.{name}");
        check_size(f("batch_size"), self.batch_size, 1, 1 << 14)?;
        check_size(f("crops.globals"), self.crops.globals, 2, 16)?;
        check_size(f("crops.locals"), self.crops.locals, 0, 64)?;
        check_size(f("crops.local_size"), self.crops.local_size, 1, 1 << 10)?;
        let d = &self.dino;
        check_size(f("dino.out_dim"), d.out_dim, 1, 1 << 17)?;
        check_size(f("dino.hidden"), d.hidden, 1, 1 << 14)?;
        check_size(f("dino.bottleneck"), d.bottleneck, 1, 1 << 13)?;
        let head = [
            ("bottleneck", d.bottleneck as u64),
            ("out_dim", d.out_dim as u64),
        ];
        check_elements(f("dino.out_dim"), &head, 1 << 30)?;
        let fb = &self.feedback;
        check_size(f("feedback.batch_size"), fb.batch_size, 1, 1 << 14)?;
        check_size(f("feedback.train_scenes"), fb.train_scenes, 8, 1 << 20)?;
        check_size(f("feedback.head_steps"), fb.head_steps, 0, 1 << 20)?;
        check_size(f("feedback.warm_steps"), fb.warm_steps, 0, 1 << 20)?;
        let e = &self.eval;
        for (name, v) in [
            ("eval.test_scenes", e.test_scenes),
            ("eval.feedback_scenes", e.feedback_scenes),
            ("eval.general_scenes", e.general_scenes),
            ("eval.probe_train", e.probe_train),
            ("eval.probe_test", e.probe_test),
        ] {
            check_size(f(name), v, 0, 1 << 20)?;
        }
        let views = (self.crops.globals + self.crops.locals) as u64;
        let side = self.vit.image.max(self.crops.local_size) / self.vit.patch.max(1);
        let tokens = (side * side + 1) as u64;
        let rows = self.batch_size.max(fb.batch_size) as u64;
        let dim = self.vit.dim as u64;
        check_elements(
            f("batch_size"),
            &[
                ("scenes", rows),
                ("views", views),
                ("tokens", tokens),
                ("mlp width", dim * self.vit.mlp_ratio as u64),
            ],
            MAX_ACTIVATIONS,
        )?;
        check_elements(
            f("batch_size"),
            &[
                ("scenes", rows),
                ("views", views),
                ("heads", self.vit.heads as u64),
                ("tokens²", tokens * tokens),
            ],
            MAX_ACTIVATIONS,
        )?;
        check_elements(
            f("dino.out_dim"),
            &[
                ("scenes", rows),
                ("views", views),
                ("out_dim", d.out_dim as u64),
            ],
            MAX_ACTIVATIONS,
        )?;
        Ok(())
    }
}

impl Default for DinoDenseConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}
