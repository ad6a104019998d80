//! The dense feedback heads on frozen patch features (fit, losses, the supervised diagnostic's
//! loss) and the task's evaluation.

use super::{DinoDenseTask, CHUNK};
use crate::config::WarmFit;
use crate::probe::{fit_ridge, fit_softmax, fit_softmax_map, iou_counts, miou, LinearHead, Step};
use crate::scenes::{pixels_to_tensor, to_tensors, Split, CANVAS, SEG_CLASSES};
use crate::supervised::SupervisedHeads;
use tch::{Kind, Tensor};
use vpt_sdk::{Batch, Construction, Error, Metrics, Result, TchContext};

impl DinoDenseTask {
    /// Applies `f` to `images` in chunks of `CHUNK`, without graph, and concatenates.
    fn frozen_chunks(
        &self,
        images: &Tensor,
        what: &str,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        tch::no_grad(|| {
            let n = images.size()[0];
            let mut out = Vec::new();
            let mut i = 0;
            while i < n {
                let k = CHUNK.min(n - i);
                out.push(f(&images.f_narrow(0, i, k)?)?);
                i += k;
            }
            Tensor::f_cat(&out, 0).op(what)
        })
    }

    /// Patch features (N,d,h,w) of images, in chunks, without graph.
    pub(super) fn frozen_patch_maps(&self, images: &Tensor) -> Result<Tensor> {
        self.frozen_chunks(images, "patch maps", |x| {
            self.student.net.backbone.patch_map(x)
        })
    }

    /// CLS features (N,d) of images, in chunks, without graph.
    fn frozen_cls(&self, images: &Tensor) -> Result<Tensor> {
        self.frozen_chunks(images, "cls features", |x| {
            Ok(self.student.net.backbone.forward(x)?.f_select(1, 0)?)
        })
    }

    /// Fits (seg, depth) heads on frozen features of the feedback-train scenes.
    pub(super) fn fit_heads(
        &self,
        warm: Option<&LinearHead>,
        steps: usize,
    ) -> Result<(LinearHead, LinearHead)> {
        let maps = self.frozen_patch_maps(&self.fb_train.0)?; // (N,d,h,w)
        self.fit_heads_on(&maps, warm, steps)
    }

    /// Fits (seg, depth) heads on `maps` (N,d,h,w), the patch features of the feedback-train
    /// scenes in order.
    pub(super) fn fit_heads_on(
        &self,
        maps: &Tensor,
        warm: Option<&LinearHead>,
        steps: usize,
    ) -> Result<(LinearHead, LinearHead)> {
        let f = &self.cfg.feedback;
        let (_, labels, depth) = &self.fb_train;
        let r = f.fit_res;
        let k = CANVAS as i64 / r;
        let d = maps.size()[1];
        // (N,d,h,w) → (N,d,r,r) → (N,r,r,d) → (N·r·r,d)
        let rows = maps
            .f_upsample_bilinear2d([r, r], false, None, None)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([-1, d])?;
        // one-hot (N,64,64,C) → (N,C,64,64) → area mean (N,C,r,r) → (N·r·r,C)
        let soft = labels
            .f_one_hot(SEG_CLASSES)?
            .f_permute([0, 3, 1, 2])?
            .f_to_kind(rows.kind())?
            .f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([-1, SEG_CLASSES])?;
        let dep = depth
            .f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([-1, 1])?;
        // the seg head's logits at (h,w), upsampled: the same fit as on `rows`, (h·w)/r² the matmuls
        // a warm refit steps as `feedback.warm_fit` says; a fresh fit always with Adam
        let step = match (warm, f.warm_fit) {
            (Some(_), WarmFit::Descent) => Step::Descent,
            _ => Step::Adam(f.head_lr),
        };
        let seg = fit_softmax_map(maps, r, &soft, &rows, steps, step, 1e-4, warm)?;
        let dep = fit_ridge(&rows, &dep, f.ridge)?;
        Ok((seg, dep))
    }

    /// Per-example (seg CE, depth L1), each (B,) and averaged over pixels, of heads on scenes,
    /// differentiable in θ when grad mode is on.
    pub(super) fn dense_losses(
        &self,
        images: &Tensor,
        labels: &Tensor,
        depth: &Tensor,
        seg: &LinearHead,
        dep: &LinearHead,
    ) -> Result<(Tensor, Tensor)> {
        let maps = self.student.net.backbone.patch_map(images)?; // (B,d,h,w)
        let c = CANVAS as i64;
        // Linear heads commute with bilinear upsampling: head at (h,w), then upsample to 64×64.
        let logits = seg
            .forward_map(&maps)?
            .f_upsample_bilinear2d([c, c], false, None, None)?; // (B,11,64,64)
        let ce = logits
            .f_cross_entropy_loss(labels, None::<Tensor>, tch::Reduction::None, -100, 0.0)?
            .f_mean_dim([1i64, 2].as_slice(), false, logits.kind())?; // (B,)
        let pd = dep
            .forward_map(&maps)?
            .f_upsample_bilinear2d([c, c], false, None, None)?; // (B,1,64,64)
        let l1 = pd
            .f_sub(depth)?
            .f_abs()?
            .f_mean_dim([1i64, 2, 3].as_slice(), false, pd.kind())?; // (B,)
        Ok((ce, l1))
    }

    pub(super) fn feedback_scenes(
        &self,
        split: Split,
        start: u64,
        n: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let scenes: Vec<_> = (start..start + n as u64)
            .map(|i| self.gen.scene(split, i))
            .collect();
        to_tensors(&scenes, self.device)
    }

    /// α_seg·CE + α_dep·L1, per example.
    pub(super) fn dense_objective(&self, ce: &Tensor, l1: &Tensor) -> Result<Tensor> {
        let f = &self.cfg.feedback;
        ce.f_mul_scalar(f.alpha_seg)?
            .f_add(&l1.f_mul_scalar(f.alpha_depth)?)
            .op("dense objective")
    }

    /// The supervised diagnostic's learner loss (B,): the dense loss of the trainable heads on
    /// the labelled feedback-meta scenes with the unlabeled batch's indices (its images and
    /// the construction are not used; only the baseline construction is accepted).
    pub(super) fn supervised_loss(
        &self,
        batch: &Batch,
        c: &Construction,
        heads: &SupervisedHeads,
    ) -> Result<Tensor> {
        if !c.is_baseline() {
            return Err(Error::config(
                "task.config.diagnostic_supervised",
                format!(
                    "the supervised diagnostic trains on labels and ignores constructions; run \
                     it without a designer (got construction kind `{}`)",
                    c.kind
                ),
            ));
        }
        let index = batch.tensors.require("index")?;
        let n = index.size()[0] as usize;
        let start = index.f_int64_value(&[0])? as u64;
        let (images, labels, depth) = self.feedback_scenes(Split::FeedbackMeta, start, n)?;
        let images = images.f_to_kind(heads.seg.w.kind())?;
        let depth = depth.f_to_kind(heads.seg.w.kind())?;
        let (ce, l1) = self.dense_losses(&images, &labels, &depth, &heads.seg, &heads.dep)?;
        self.dense_objective(&ce, &l1)
    }

    /// With clutter on: the accuracy of a linear probe that reads each scene's clutter pattern
    /// off its mean patch feature (fit on the feedback-train scenes, scored on the test scenes
    /// whose patch maps are `test_maps`, in order from scene 0). Chance is 1/clutter_patterns.
    fn clutter_probe(&self, test_maps: &Tensor) -> Result<Option<f64>> {
        if self.cfg.scenes.clutter <= 0.0 {
            return Ok(None);
        }
        let ids = |split: Split, n: i64| -> Result<Tensor> {
            let v: Vec<i64> = (0..n as u64)
                .map(|i| self.gen.scene(split, i).clutter.map_or(0, i64::from))
                .collect();
            Tensor::f_from_slice(&v)?
                .f_to(self.device)
                .op("clutter ids")
        };
        let pool = |maps: &Tensor| maps.f_mean_dim([2i64, 3].as_slice(), false, maps.kind());
        let xtr = pool(&self.frozen_patch_maps(&self.fb_train.0)?)?;
        let xte = pool(test_maps)?;
        let k = self.cfg.scenes.clutter_patterns as i64;
        let ytr = ids(Split::FeedbackTrain, xtr.size()[0])?;
        let yte = ids(Split::Test, xte.size()[0])?;
        Ok(Some(self.linear_probe_accuracy(&xtr, &ytr, &xte, &yte, k)?))
    }

    /// Accuracy on (`xte`, `yte`) of a softmax probe over `classes` fit on (`xtr`, `ytr`) with
    /// the feedback heads' optimiser settings (twice their steps).
    fn linear_probe_accuracy(
        &self,
        xtr: &Tensor,
        ytr: &Tensor,
        xte: &Tensor,
        yte: &Tensor,
        classes: i64,
    ) -> Result<f64> {
        let f = &self.cfg.feedback;
        let probe = fit_softmax(
            xtr,
            &ytr.f_one_hot(classes)?.f_to_kind(xtr.kind())?,
            2 * f.head_steps,
            f.head_lr,
            1e-4,
            None,
        )?;
        Ok(probe
            .forward(xte)?
            .f_argmax(-1, false)?
            .f_eq_tensor(yte)?
            .f_to_kind(Kind::Double)?
            .f_mean(Kind::Double)?
            .f_double_value(&[])?)
    }

    pub(super) fn evaluate_inner(&mut self, limit: Option<u64>) -> Result<Metrics> {
        let cap = |n: usize| limit.map_or(n, |l| n.min(l as usize)).max(1);
        let e = self.cfg.eval.clone();
        let f = self.cfg.feedback.clone();
        let mut m = Metrics::new();
        // Fresh heads on frozen features (feedback-train split).
        let (seg, dep) = self.fit_heads(None, f.head_steps)?;
        // Dense metrics on the test split.
        let (img, lab, depth) = self.feedback_scenes(Split::Test, 0, cap(e.test_scenes))?;
        let maps = self.frozen_patch_maps(&img)?;
        let c = CANVAS as i64;
        let (mut inter, mut union) = (
            vec![0.0; SEG_CLASSES as usize],
            vec![0.0; SEG_CLASSES as usize],
        );
        let (mut se, mut npx) = (0.0, 0.0);
        let n = maps.size()[0];
        let mut i = 0;
        while i < n {
            let k = CHUNK.min(n - i);
            let mp = maps.f_narrow(0, i, k)?;
            let pred = seg
                .forward_map(&mp)?
                .f_upsample_bilinear2d([c, c], false, None, None)?
                .f_argmax(1, false)?;
            let (a, b) = iou_counts(&pred, &lab.f_narrow(0, i, k)?, SEG_CLASSES)?;
            inter.iter_mut().zip(&a).for_each(|(x, y)| *x += y);
            union.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            let pd = dep
                .forward_map(&mp)?
                .f_upsample_bilinear2d([c, c], false, None, None)?;
            let err = pd.f_sub(&depth.f_narrow(0, i, k)?)?;
            se += err.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            npx += err.numel() as f64;
            i += k;
        }
        m.insert("miou".into(), miou(&inter, &union));
        m.insert("depth_rmse".into(), (se / npx).sqrt());
        if let Some(acc) = self.clutter_probe(&maps)? {
            m.insert("clutter_probe_acc".into(), acc);
        }
        // Shared feedback_loss on the held-out feedback split, with the same fresh heads.
        let (fi, fl, fd) = self.feedback_scenes(Split::FeedbackEval, 0, cap(e.feedback_scenes))?;
        let (ce, l1) = tch::no_grad(|| self.dense_losses(&fi, &fl, &fd, &seg, &dep))?;
        let mean = |t: Tensor| t.f_mean(Kind::Double)?.f_double_value(&[]);
        let (ce, l1) = (mean(ce)?, mean(l1)?);
        m.insert("seg_ce".into(), ce);
        m.insert("depth_l1".into(), l1);
        m.insert(
            "feedback_loss".into(),
            f.alpha_seg * ce + f.alpha_depth * l1,
        );
        // general_loss: DINO loss (baseline views) on held-out unlabeled scenes.
        let gn = cap(e.general_scenes);
        let mut tot = 0.0;
        let mut start = 0;
        while start < gn {
            let k = (CHUNK as usize).min(gn - start);
            let t = self.unlabeled_batch(Split::GeneralEval, start as u64, k)?;
            let (l, _) = tch::no_grad(|| self.dino(&t, None))?;
            tot += l.f_sum(Kind::Double)?.f_double_value(&[])?;
            start += k;
        }
        m.insert("general_loss".into(), tot / gn as f64);
        // Linear-probe classification on single items: fit on the unlabeled partition's items.
        let src = self.gen.sources(Split::Unlabeled);
        let ntr = e.probe_train.min(src.len());
        let (trp, trl): (Vec<_>, Vec<_>) = src[..ntr]
            .iter()
            .map(|&s| self.gen.single(Split::Unlabeled, s))
            .unzip();
        let nte = cap(e.probe_test);
        let (tep, tel): (Vec<_>, Vec<_>) =
            (0..nte).map(|s| self.gen.single(Split::Test, s)).unzip();
        let xtr = self.frozen_cls(&pixels_to_tensor(&trp, self.device)?)?;
        let xte = self.frozen_cls(&pixels_to_tensor(&tep, self.device)?)?;
        let ytr = Tensor::f_from_slice(&trl.iter().map(|&l| l as i64).collect::<Vec<_>>())?
            .f_to(self.device)?;
        let yte = Tensor::f_from_slice(&tel.iter().map(|&l| l as i64).collect::<Vec<_>>())?
            .f_to(self.device)?;
        let acc = self.linear_probe_accuracy(&xtr, &ytr, &xte, &yte, 10)?;
        m.insert("probe_acc".into(), acc);
        Ok(m)
    }
}
