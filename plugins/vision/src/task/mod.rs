//! The `dino_dense` task: DINO continued pretraining of a small ViT on dense Fashion-MNIST
//! scenes; L_down = linear segmentation + depth heads on frozen patch features.
//!
//! Batches carry their crops: `next_batch` draws the multi-crop once (from a SplitMix64 stream
//! keyed by the batch's first scene index), so the designer, the meta step and the learner
//! step all see the same global crops and the loss is a pure function of (batch, construction).
//! Stage 0 (the cached base) is in [`stage0`], the dense heads and evaluation in `dense`.

mod dense;
mod refit;
pub mod stage0;

use crate::augment::{gaussian_blur, multi_crop_with};
use crate::config::DinoDenseConfig;
use crate::designer::{MaskContext, INPUT_GLOBAL, MASK};
use crate::dino::{dino_loss, ema_update, momentum_at, updated_center, zero_center, Model};
use crate::probe::LinearHead;
use crate::scenes::{regions_to_tensor, to_tensors, PartitionSizes, SceneGen, Split, CANVAS};
use crate::supervised::{freeze_outside, SupervisedHeads};
use crate::viewgrid::{keep_by_region, run_file, write_views_png, GRID_EXAMPLES};
use tch::{Device, Kind, Tensor};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{
    kinds, Batch, BatchSource, BuildContext, Construction, Differentiation, Error, ExportRequest,
    FeedbackSetInfo, Forward, KindSpec, Metrics, PretrainLoss, Result, State, Task, TaskFactory,
    TaskInfo, TchContext, TensorMap,
};

/// Name of the feedback set.
pub const FEEDBACK_SET: &str = "fmnist_seg_depth";
/// Stream tag of the crop RNG.
const CROP_STREAM: u64 = 0xC409;
/// Features are extracted in chunks of this many images (memory bound).
const CHUNK: i64 = 64;
/// Batch tensor: the global crops' region indicators (B,V,2,H,W), object and clutter.
const REGION_GLOBAL: &str = "region_global";
/// Prefix of the mask statistics among a learner step's side outputs.
const STAT: &str = "stat.";
/// The view grid of the first masked learner step, in the run directory.
pub const VIEWS_START_PNG: &str = "views-start.png";
/// The view grid of the latest masked step, rewritten at every evaluation (the last is the end).
pub const VIEWS_END_PNG: &str = "views-end.png";

/// The task factory (name `dino_dense`).
pub struct DinoDense;

/// A built `dino_dense` task.
pub struct DinoDenseTask {
    pub(crate) cfg: DinoDenseConfig,
    pub(crate) device: Device,
    pub(crate) seed: u64,
    pub(crate) gen: SceneGen,
    /// θ: the student (backbone + DINO head).
    pub(crate) student: Model,
    /// The EMA teacher (not in θ).
    pub(crate) teacher: Model,
    /// Teacher-output centre (1,K).
    pub(crate) center: Tensor,
    unlabeled_cursor: u64,
    feedback_cursor: u64,
    /// Feedback heads used by `feedback_loss` (refit by `prepare_feedback`).
    seg_head: Option<LinearHead>,
    dep_head: Option<LinearHead>,
    /// Fixed feedback-train scenes: images (N,1,64,64), labels (N,64,64), depth (N,1,64,64).
    fb_train: (Tensor, Tensor, Tensor),
    align: Vec<String>,
    /// The supervised diagnostic's heads (`task.config.diagnostic_supervised`; see supervised.rs).
    supervised: Option<SupervisedHeads>,
    /// Patch features of the feedback-train scenes as of the last refit (only with
    /// `feedback.refit_scenes` below `train_scenes`; see refit.rs).
    fb_maps: Option<Tensor>,
    /// Refits since the feature cache was filled (picks the next window).
    refits: u64,
    /// The latest masked step's first global crops, masks and masked views (3,N,H,W), for the
    /// view grid.
    last_views: Option<Tensor>,
}

impl TaskFactory for DinoDense {
    const NAME: &'static str = "dino_dense";
    const DESCRIPTION: &'static str =
        "DINO continued pretraining of a small ViT on dense Fashion-MNIST scenes; feedback = linear seg (11 classes) + depth heads";
    const CONSUMES: &'static [KindSpec] = &[kinds::VISION_VIEW_MASK];
    const EXPORTS: &'static [(&'static str, &'static [&'static str])] =
        &[("safetensors", &["f32", "f16"])];
    const DESIGN_INPUTS: &'static [vpt_sdk::TensorSpec] = &[
        vpt_sdk::TensorSpec::new(
            INPUT_GLOBAL,
            vpt_sdk::Dtype::Float,
            "B,V,C,H,W",
            vpt_sdk::Values::Any,
            "the V global views of each image (augmented, normalised)",
        ),
        vpt_sdk::TensorSpec::new(
            "example_features",
            vpt_sdk::Dtype::Float,
            "B,F",
            vpt_sdk::Values::Any,
            "per example: mean and std of every global view (F = 2V)",
        ),
    ];
    type Config = DinoDenseConfig;

    fn build(config: DinoDenseConfig, ctx: &BuildContext) -> Result<Box<dyn Task>> {
        Ok(Box::new(DinoDenseTask::new(config, ctx)?))
    }
}

fn check(cfg: &DinoDenseConfig) -> Result<()> {
    cfg.vit.validate("task.config.vit")?;
    cfg.validate_sizes()?;
    let bad = |f: &str, m: &str| Err(Error::config(format!("task.config.{f}"), m.to_string()));
    if cfg.batch_size == 0 {
        return bad("batch_size", "must be ≥ 1");
    }
    if cfg.crops.globals < 2 {
        return bad("crops.globals", "DINO needs at least 2 global crops");
    }
    if cfg.crops.local_size % cfg.vit.patch != 0 {
        return bad("crops.local_size", "must be a multiple of vit.patch");
    }
    if cfg.vit.image != CANVAS as i64 || cfg.vit.channels != 1 {
        return bad(
            "vit.image",
            "scenes are 64×64 with 1 channel: keep vit.image = 64 and vit.channels = 1",
        );
    }
    if cfg.align_blocks < 1 || cfg.align_blocks > cfg.vit.depth {
        return bad("align_blocks", "must lie in 1..=vit.depth");
    }
    if cfg.feedback.train_scenes < 8
        || cfg.feedback.fit_res < 1
        || CANVAS as i64 % cfg.feedback.fit_res != 0
    {
        return bad("feedback", "train_scenes ≥ 8 and fit_res must divide 64");
    }
    if cfg.feedback.refit_scenes == Some(0) {
        return bad(
            "feedback.refit_scenes",
            "must be ≥ 1 (or unset: all scenes)",
        );
    }
    Ok(())
}

impl DinoDenseTask {
    /// Builds the task: data, student and teacher (from `base_checkpoint`, a cached stage 0, or
    /// random init), and the fixed feedback-train set.
    pub fn new(cfg: DinoDenseConfig, ctx: &BuildContext) -> Result<Self> {
        check(&cfg)?;
        let device = ctx.device();
        let data = crate::data::load(&cfg.data_dir)?;
        let gen = SceneGen::new(data, ctx.seed, PartitionSizes::default())?
            .with_scenes(cfg.scenes.clone())?;
        tch::manual_seed(ctx.seed as i64);
        let student = Model::new(device, &cfg.vit, &cfg.dino)?;
        let mut teacher = Model::new(device, &cfg.vit, &cfg.dino)?;
        teacher.vs.copy(&student.vs).op("teacher init")?;
        teacher.vs.freeze();
        let fb: Vec<_> = (0..cfg.feedback.train_scenes as u64)
            .map(|i| gen.scene(Split::FeedbackTrain, i))
            .collect();
        let fb_train = to_tensors(&fb, device)?;
        let align = student
            .net
            .backbone
            .alignment_prefixes(cfg.align_blocks)
            .into_iter()
            .map(|p| format!("backbone.{p}"))
            .collect::<Vec<_>>();
        let align: Vec<String> = student
            .named()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| align.iter().any(|p| n.starts_with(p)))
            .collect();
        let center = zero_center(cfg.dino.out_dim, Kind::Float, device)?;
        let mut task = DinoDenseTask {
            cfg,
            device,
            seed: ctx.seed,
            gen,
            student,
            teacher,
            center,
            unlabeled_cursor: 0,
            feedback_cursor: 0,
            seg_head: None,
            dep_head: None,
            fb_train,
            align,
            supervised: None,
            fb_maps: None,
            refits: 0,
            last_views: None,
        };
        stage0::prepare_base(&mut task)?;
        if task.cfg.diagnostic_supervised {
            let (seg, dep) = task.fit_heads(None, task.cfg.feedback.head_steps)?;
            freeze_outside(&task.student, &task.align);
            task.supervised = Some(SupervisedHeads::new(&seg, &dep));
            eprintln!(
                "[vpt-vision] DIAGNOSTIC (supervised upper bound, not a method): the learner \
                 fine-tunes the last {} blocks + linear heads on feedback labels, not DINO",
                task.cfg.align_blocks
            );
        }
        Ok(task)
    }

    /// An unlabeled batch of `n` scenes of `split` starting at scene `start`, with its crops.
    pub(crate) fn unlabeled_batch(&self, split: Split, start: u64, n: usize) -> Result<TensorMap> {
        let scenes: Vec<_> = (start..start + n as u64)
            .map(|i| self.gen.scene(split, i))
            .collect();
        let (images, _, _) = to_tensors(&scenes, self.device)?;
        let regions = regions_to_tensor(&scenes, self.device)?;
        let mut rng = SplitMix64::stream_keyed(
            self.seed ^ (split as u64) << 56,
            CROP_STREAM ^ start,
            0xD1B5_4A32_D192_ED03,
        );
        let spec = self.cfg.crops.spec(self.cfg.vit.image);
        let (global, local, region) = multi_crop_with(&images, Some(&regions), &mut rng, &spec)?;
        let region = region.ok_or_else(|| Error::msg("multi_crop_with lost the region crops"))?;
        let index = Tensor::f_arange_start(
            start as i64,
            (start + n as u64) as i64,
            (Kind::Int64, self.device),
        )?;
        Ok(TensorMap::new()
            .with("images", images)
            .with(INPUT_GLOBAL, global)
            .with("local", local)
            .with(REGION_GLOBAL, region)
            .with("index", index))
    }

    /// μ⊙v + (1−μ)⊙blur(v) for global crops (B,V,C,H,W) and masks (B,V,1,H,W); blur(v) is data
    /// only (no θ, no φ).
    fn masked_views(&self, global: &Tensor, m: &Tensor) -> Result<Tensor> {
        let gs = global.size();
        let flat = global.f_reshape([gs[0] * gs[1], gs[2], gs[3], gs[4]])?;
        let blurred =
            gaussian_blur(&flat, self.cfg.crops.mask_blur_sigma)?.f_reshape(gs.as_slice())?;
        let m = m.f_to_kind(global.kind())?;
        m.f_mul(global)?
            .f_add(&m.f_neg()?.f_add_scalar(1.0)?.f_mul(&blurred)?)
            .op("masked views")
    }

    /// Keeps the first crops, masks and masked views of a masked step for the view grid, and
    /// writes the start grid on the first one (when the host named a run directory and the
    /// file is not there yet, e.g. after a resume).
    fn capture_views(&mut self, global: &Tensor, mask: &Tensor) -> Result<()> {
        let views = tch::no_grad(|| -> Result<Tensor> {
            let n = global.size()[0].min(GRID_EXAMPLES);
            let g = global.f_narrow(0, 0, n)?.f_detach()?;
            let m = mask.f_narrow(0, 0, n)?.f_detach()?;
            let v = self.masked_views(&g, &m)?;
            // view 0, channel 0 of each: (N,H,W) × 3
            let pick = |t: &Tensor| -> Result<Tensor> {
                Ok(t.f_select(1, 0)?.f_select(1, 0)?.f_to_kind(Kind::Float)?)
            };
            Tensor::f_stack(&[pick(&g)?, pick(&m)?, pick(&v)?], 0).op("view grid")
        })?;
        let first = self.last_views.is_none();
        self.last_views = Some(views);
        if first {
            if let Some(p) = run_file(VIEWS_START_PNG).filter(|p| !p.exists()) {
                self.write_views(&p)?;
            }
        }
        Ok(())
    }

    /// Writes the latest captured view grid to `path` (nothing when no masked step ran yet).
    pub(crate) fn write_views(&self, path: &std::path::Path) -> Result<()> {
        match &self.last_views {
            Some(v) => write_views_png(path, v),
            None => Ok(()),
        }
    }

    /// DINO loss per example (B,) of the student on (optionally masked) views against the
    /// teacher, plus the teacher logits (for the centre).
    pub(crate) fn dino(
        &self,
        t: &TensorMap,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.dino_with_teacher(t, mask, None)
    }

    /// The teacher's logits of each clean global view (no graph: an EMA, not θ).
    fn teacher_logits(&self, t: &TensorMap) -> Result<Vec<Tensor>> {
        tch::no_grad(|| self.teacher.net.view_logits(t.require(INPUT_GLOBAL)?))
    }

    /// [`dino`](Self::dino) with the teacher's outputs given (from the learner's forward of
    /// this batch) instead of recomputed.
    pub(crate) fn dino_with_teacher(
        &self,
        t: &TensorMap,
        mask: Option<&Tensor>,
        teacher: Option<Vec<Tensor>>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let global = t.require(INPUT_GLOBAL)?;
        let local = t.require("local")?;
        let student_global = match mask {
            None => global.shallow_clone(),
            Some(m) => {
                let gs = global.size();
                if m.size() != [gs[0], gs[1], 1, gs[3], gs[4]] {
                    return Err(Error::Tensor {
                        name: MASK.into(),
                        message: format!(
                            "want (B,V,1,H,W) = ({},{},1,{},{}), got {:?}",
                            gs[0],
                            gs[1],
                            gs[3],
                            gs[4],
                            m.size()
                        ),
                    });
                }
                self.masked_views(global, m)?
            }
        };
        let mut student = self.student.net.view_logits(&student_global)?;
        student.extend(self.student.net.view_logits(local)?);
        // The teacher sees the clean global crops; no graph (it is an EMA, not θ).
        let teacher = match teacher {
            Some(t) => t,
            None => self.teacher_logits(t)?,
        };
        let d = &self.cfg.dino;
        let loss = dino_loss(
            &student,
            &teacher,
            &self.center.f_to_kind(global.kind())?,
            d.student_temp,
            d.teacher_temp,
        )?;
        Ok((loss, teacher))
    }

    /// EMA teacher update with momentum m(step), and the centre update from the step's
    /// teacher logits (one tensor per global crop).
    pub(crate) fn ema_step(
        &mut self,
        step: u64,
        schedule_steps: u64,
        teacher: &[Tensor],
    ) -> Result<()> {
        let d = &self.cfg.dino;
        let m = momentum_at(step, d.momentum_start, d.momentum_end, schedule_steps);
        ema_update(&self.teacher.named(), &self.student.named(), m)?;
        if !teacher.is_empty() {
            self.center =
                tch::no_grad(|| updated_center(&self.center, teacher, d.center_momentum))?
                    .f_to_kind(Kind::Float)?;
        }
        Ok(())
    }

    /// Converts θ, the teacher, the centre and the cached feedback-train tensors to `kind`
    /// (tests use `Kind::Double` for finite differences). Batches must be converted by the caller.
    pub fn set_kind(&mut self, kind: Kind) -> Result<()> {
        self.student.vs.set_kind(kind);
        self.teacher.vs.set_kind(kind);
        self.center = self.center.f_to_kind(kind)?;
        let (i, l, d) = &self.fb_train;
        self.fb_train = (i.f_to_kind(kind)?, l.shallow_clone(), d.f_to_kind(kind)?);
        if let Some(m) = &self.fb_maps {
            self.fb_maps = Some(m.f_to_kind(kind)?);
        }
        Ok(())
    }
}

impl Task for DinoDenseTask {
    fn info(&self) -> TaskInfo {
        let ctx = MaskContext {
            views: self.cfg.crops.globals as i64,
            channels: 1,
            height: self.cfg.vit.image,
            width: self.cfg.vit.image,
        };
        TaskInfo {
            alignment: self.align.clone(),
            domains: vec!["fmnist_scenes".into()],
            feedback_sets: vec![FeedbackSetInfo {
                name: FEEDBACK_SET.into(),
                domain: 0,
            }],
            designer_context: {
                let mut v = serde_json::to_value(ctx).unwrap_or_default();
                v["feature_dim"] = serde_json::json!(2 * self.cfg.crops.globals as i64);
                v
            },
            batch_size: self.cfg.batch_size,
        }
    }

    /// θ: the student; under the supervised diagnostic only S and the two heads.
    fn parameters(&self) -> Result<TensorMap> {
        let heads = self.supervised.iter().flat_map(SupervisedHeads::named);
        Ok(self
            .student
            .named()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .chain(heads)
            .collect())
    }

    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        let tensors = match source {
            BatchSource::Unlabeled { domain: 0 } => {
                let t = self.unlabeled_batch(
                    Split::Unlabeled,
                    self.unlabeled_cursor,
                    self.cfg.batch_size,
                )?;
                self.unlabeled_cursor += self.cfg.batch_size as u64;
                t
            }
            BatchSource::Feedback { set: 0 } => {
                let n = self.cfg.feedback.batch_size;
                let (images, labels, depth) =
                    self.feedback_scenes(Split::FeedbackMeta, self.feedback_cursor, n)?;
                self.feedback_cursor += n as u64;
                TensorMap::new()
                    .with("images", images)
                    .with("labels", labels)
                    .with("depth", depth)
            }
            other => {
                return Err(Error::msg(format!(
                    "dino_dense has one domain and one feedback set; got {other:?}"
                )))
            }
        };
        Ok(Batch { source, tensors })
    }

    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        let global = batch.tensors.require(INPUT_GLOBAL)?.detach(); // (B,V,C,H,W)
                                                                    // Per-example summary for modality-agnostic designers: mean and std of every view.
        let flat = global.f_flatten(2, -1)?; // (B,V,C·H·W)
        let mean = flat.f_mean_dim(-1, false, Kind::Float)?; // (B,V)
        let std = flat.f_std_dim(-1, true, false)?; // (B,V)
        let example_features = Tensor::f_cat(&[mean, std], 1)?; // (B,2V)
        Ok(TensorMap::new()
            .with(INPUT_GLOBAL, global)
            .with("example_features", example_features))
    }

    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        c: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        Ok(self
            .pretrain_loss_from_forward(batch, &TensorMap::new(), c, diff)?
            .per_example)
    }

    /// The part of the learner step that does not depend on the construction: the teacher's
    /// outputs (reused by the meta step and the learner step), and the design inputs.
    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        if self.supervised.is_some() {
            // the supervised diagnostic has no teacher in its loss
            return Ok(Forward {
                design_inputs: self.design_inputs(batch)?,
                state: TensorMap::new(),
            });
        }
        let teacher = self.teacher_logits(&batch.tensors)?;
        let state = teacher
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("teacher.{i}"), t))
            .collect();
        Ok(Forward {
            design_inputs: self.design_inputs(batch)?,
            state,
        })
    }

    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        c: &Construction,
        _diff: Differentiation,
    ) -> Result<PretrainLoss> {
        if !matches!(batch.source, BatchSource::Unlabeled { .. }) {
            return Err(Error::msg(
                "pretrain_loss: got a feedback batch; feedback never enters a learner batch",
            ));
        }
        if let Some(heads) = &self.supervised {
            return Ok(PretrainLoss::new(self.supervised_loss(batch, c, heads)?));
        }
        // The baseline, or a view mask (the SDK glue checked it against its spec).
        let mask = c.tensors.get(MASK);
        let teacher = (0..self.cfg.crops.globals)
            .map(|i| {
                state
                    .get(&format!("teacher.{i}"))
                    .map(Tensor::shallow_clone)
            })
            .collect::<Option<Vec<_>>>();
        // the teacher's logits go to after_step (centre update) as side outputs
        let (loss, teacher) = self.dino_with_teacher(&batch.tensors, mask, teacher)?;
        let mut side: TensorMap = teacher
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("teacher.{i}"), t.detach()))
            .collect();
        // what the designer keeps, by region (for after_step's metrics), and the view grid
        if let Some(m) = mask {
            if let Some(region) = batch.tensors.get(REGION_GLOBAL) {
                for (k, v) in keep_by_region(m, region)? {
                    side.insert(format!("{STAT}{k}"), v);
                }
            }
            self.capture_views(batch.tensors.require(INPUT_GLOBAL)?, m)?;
        }
        Ok(PretrainLoss {
            per_example: loss,
            side,
        })
    }

    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        if !matches!(batch.source, BatchSource::Feedback { .. }) {
            return Err(Error::msg("feedback_loss: got an unlabeled batch"));
        }
        if self.seg_head.is_none() {
            self.prepare_feedback()?;
        }
        let (seg, dep) = match (&self.seg_head, &self.dep_head) {
            (Some(s), Some(d)) => (s, d),
            _ => return Err(Error::msg("feedback heads missing after prepare_feedback")),
        };
        let t = &batch.tensors;
        let (ce, l1) = self.dense_losses(
            t.require("images")?,
            t.require("labels")?,
            t.require("depth")?,
            seg,
            dep,
        )?;
        self.dense_objective(&ce, &l1)?
            .f_mean(ce.kind())
            .op("feedback loss")
    }

    fn prepare_feedback(&mut self) -> Result<()> {
        let f = &self.cfg.feedback;
        let steps = if self.seg_head.is_some() {
            f.warm_steps
        } else {
            f.head_steps
        };
        let warm = self.seg_head.take();
        let (seg, dep) = self.refit_heads(warm.as_ref(), steps)?;
        self.seg_head = Some(seg);
        self.dep_head = Some(dep);
        Ok(())
    }

    fn after_step(&mut self, step: u64, side: &[TensorMap]) -> Result<Metrics> {
        if self.supervised.is_some() {
            return Ok(Metrics::new()); // no DINO, no teacher to update
        }
        let teacher = match side {
            [one] => teacher_outputs(one, self.cfg.crops.globals)?,
            _ => {
                return Err(Error::msg(format!(
                    "after_step: {} side maps, expected 1",
                    side.len()
                )))
            }
        };
        let steps = self.cfg.dino.momentum_steps;
        self.ema_step(step, steps, &teacher)?;
        // the mask statistics of the step's construction (none for the baseline)
        let mut m = Metrics::new();
        for (k, v) in side[0].iter() {
            if let Some(name) = k.strip_prefix(STAT) {
                m.insert(name.to_string(), v.f_double_value(&[])?);
            }
        }
        Ok(m)
    }

    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics> {
        if let Some(p) = run_file(VIEWS_END_PNG) {
            self.write_views(&p)?;
        }
        self.evaluate_inner(limit)
    }

    fn export(&self, request: &ExportRequest) -> Result<Vec<std::path::PathBuf>> {
        crate::export::export(&self.cfg.vit, &self.student.vs, request)
    }

    fn state(&self) -> Result<State> {
        let mut tensors = TensorMap::new();
        for (n, t) in self.teacher.named() {
            tensors.insert(format!("teacher.{n}"), t.copy());
        }
        tensors.insert("center", self.center.copy());
        if let (Some(s), Some(d)) = (&self.seg_head, &self.dep_head) {
            for (n, t) in s
                .tensors("seg_head")
                .into_iter()
                .chain(d.tensors("dep_head"))
            {
                tensors.insert(n, t.copy());
            }
        }
        if let Some(m) = &self.fb_maps {
            tensors.insert("fb_maps", m.copy());
        }
        let json = serde_json::json!({
            "unlabeled_cursor": self.unlabeled_cursor,
            "feedback_cursor": self.feedback_cursor,
            "seed": self.seed,
            "heads": self.seg_head.is_some(),
            "refits": self.refits,
        });
        Ok(State { json, tensors })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let j = &state.json;
        let u = |k: &str| {
            j.get(k)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| Error::msg(format!("dino_dense state: missing `{k}`")))
        };
        if u("seed")? != self.seed {
            return Err(Error::msg(format!(
                "dino_dense state was saved with seed {} but this run has seed {}",
                u("seed")?,
                self.seed
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (n, t) in self.teacher.named() {
                let src = state.tensors.require(&format!("teacher.{n}"))?;
                t.shallow_clone().f_copy_(src).op("load teacher")?;
            }
            Ok(())
        })?;
        self.center = state.tensors.require("center")?.copy();
        if j.get("heads").and_then(|v| v.as_bool()) == Some(true) {
            self.seg_head = Some(LinearHead::from_map(&state.tensors, "seg_head")?);
            self.dep_head = Some(LinearHead::from_map(&state.tensors, "dep_head")?);
        } else {
            self.seg_head = None;
            self.dep_head = None;
        }
        self.fb_maps = state.tensors.get("fb_maps").map(Tensor::copy);
        self.refits = j.get("refits").and_then(|v| v.as_u64()).unwrap_or(0);
        self.unlabeled_cursor = u("unlabeled_cursor")?;
        self.feedback_cursor = u("feedback_cursor")?;
        Ok(())
    }
}

/// The teacher logits `teacher.0 … teacher.{globals−1}` of a learner step's side outputs.
fn teacher_outputs(side: &TensorMap, globals: usize) -> Result<Vec<Tensor>> {
    (0..globals)
        .map(|i| Ok(side.require(&format!("teacher.{i}"))?.shallow_clone()))
        .collect()
}
