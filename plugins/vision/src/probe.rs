//! Linear heads on frozen features: fitting (Adam on soft cross-entropy, ridge for regression),
//! application to feature maps, and the dense metrics (mIoU, depth RMSE).
//!
//! Features are standardised with statistics of the fitting set; the statistics belong to the
//! head, so a head is a fixed affine map of the features (differentiable in them, not trained
//! by the host).

use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// A fixed linear head `((x − mean)/std) Wᵀ + b` on d-dim features.
#[derive(Debug)]
pub struct LinearHead {
    /// Feature means (d).
    pub mean: Tensor,
    /// Feature standard deviations (d).
    pub std: Tensor,
    /// Weights (out, d).
    pub w: Tensor,
    /// Bias (out).
    pub b: Tensor,
}

impl LinearHead {
    /// Applies the head to rows (…, d) → (…, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.f_sub(&self.mean)?
            .f_div(&self.std)?
            .f_linear(&self.w, Some(&self.b))
            .op("linear head")
    }
    /// Applies the head per pixel of a map (N,d,h,w) → (N,out,h,w).
    pub fn forward_map(&self, x: &Tensor) -> Result<Tensor> {
        // (N,d,h,w) → (N,h,w,d) → (N,h,w,out) → (N,out,h,w)
        self.forward(&x.f_permute([0, 2, 3, 1])?)?
            .f_permute([0, 3, 1, 2])
            .op("head map")
    }
    /// A deep copy (for warm starts).
    pub fn copy(&self) -> LinearHead {
        LinearHead {
            mean: self.mean.copy(),
            std: self.std.copy(),
            w: self.w.copy(),
            b: self.b.copy(),
        }
    }
    /// The head's tensors by name (for state).
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        vec![
            (format!("{prefix}.mean"), self.mean.shallow_clone()),
            (format!("{prefix}.std"), self.std.shallow_clone()),
            (format!("{prefix}.w"), self.w.shallow_clone()),
            (format!("{prefix}.b"), self.b.shallow_clone()),
        ]
    }
    /// Rebuilds a head from [`tensors`](Self::tensors).
    pub fn from_map(m: &vpt_sdk::TensorMap, prefix: &str) -> Result<LinearHead> {
        let g = |n: &str| m.require(&format!("{prefix}.{n}")).map(|t| t.copy());
        Ok(LinearHead {
            mean: g("mean")?,
            std: g("std")?,
            w: g("w")?,
            b: g("b")?,
        })
    }
}

fn standardise(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x.f_mean_dim([0i64].as_slice(), false, x.kind())?;
    let std = x
        .f_std_correction([0i64].as_slice(), 0, false)?
        .f_clamp_min(1e-4)?;
    Ok((mean, std))
}

/// The standardisation of a fit: the warm start's, else that of `rows` (R,d).
fn head_stats(init: Option<&LinearHead>, rows: &Tensor) -> Result<(Tensor, Tensor)> {
    match init {
        Some(h) => Ok((h.mean.copy(), h.std.copy())),
        None => standardise(rows),
    }
}

/// Fits a softmax-regression head on rows `x` (R,d) to soft targets `t` (R,C) with `steps`
/// full-batch Adam steps (lr `lr`, L2 `wd`), optionally warm-started from `init`.
pub fn fit_softmax(
    x: &Tensor,
    t: &Tensor,
    steps: usize,
    lr: f64,
    wd: f64,
    init: Option<&LinearHead>,
) -> Result<LinearHead> {
    let x = x.detach();
    let stats = head_stats(init, &x)?;
    let xs = x.f_sub(&stats.0)?.f_div(&stats.1)?;
    let fit = SoftmaxFit {
        steps,
        step: Step::Adam(lr),
        wd,
    };
    fit.run(&xs, t, stats, init, |w, b| Ok(xs.f_linear(w, Some(b))?))
}

/// [`fit_softmax`] on the rows of feature maps `maps` (N,d,h,w) bilinearly upsampled to
/// (`res`,`res`), without upsampling the features: a linear head commutes with bilinear
/// upsampling (per-channel weights summing to 1), so the logits are computed at (h,w) and
/// upsampled — the same objective at (h·w)/res² of the matmul cost. `t` (N·res·res, C) is in
/// the row order of the upsampled maps (n, y, x); `stats_rows` (the upsampled rows) give the
/// standardisation when there is no `init`.
#[allow(clippy::too_many_arguments)]
pub fn fit_softmax_map(
    maps: &Tensor,
    res: i64,
    t: &Tensor,
    stats_rows: &Tensor,
    steps: usize,
    step: Step,
    wd: f64,
    init: Option<&LinearHead>,
) -> Result<LinearHead> {
    let stats = head_stats(init, &stats_rows.detach())?;
    let xs = maps
        .detach()
        .f_permute([0, 2, 3, 1])?
        .f_sub(&stats.0)?
        .f_div(&stats.1)?; // (N,h,w,d)
    let fit = SoftmaxFit { steps, step, wd };
    fit.run(&xs, t, stats, init, |w, b| {
        let c = w.size()[0];
        Ok(xs
            .f_linear(w, Some(b))? // (N,h,w,C)
            .f_permute([0, 3, 1, 2])?
            .f_upsample_bilinear2d([res, res], false, None, None)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([-1, c])?)
    })
}

/// How a softmax head's fit steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Adam with this learning rate (moments fresh at every fit). Near the optimum its steps
    /// keep their size (about lr per weight, the sign of a vanishing gradient), so a warm
    /// refit lands wherever those signs send it.
    Adam(f64),
    /// Plain gradient descent with step 1/L, L = λ_max of the standardised features' second
    /// moment + 2·wd (a bound on the loss's curvature): its steps shrink with the gradient, so
    /// a warm refit moves the head smoothly towards the optimum for the current features.
    Descent,
}

/// Full-batch fit of the soft cross-entropy of a linear head (+ L2 on the weights).
struct SoftmaxFit {
    steps: usize,
    step: Step,
    wd: f64,
}

impl SoftmaxFit {
    /// Fits W (C,d), b (C) on standardised features `xs` (…,d) whose logits rows (R,C),
    /// aligned with `t`, are `logits(W, b)`.
    fn run(
        &self,
        xs: &Tensor,
        t: &Tensor,
        (mean, std): (Tensor, Tensor),
        init: Option<&LinearHead>,
        logits: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<LinearHead> {
        let t = t.detach();
        let (d, c) = (*xs.size().last().unwrap_or(&0), t.size()[1]);
        let opts = (xs.kind(), xs.device());
        let (w0, b0) = match init {
            Some(h) => (h.w.copy(), h.b.copy()),
            None => (Tensor::f_zeros([c, d], opts)?, Tensor::f_zeros([c], opts)?),
        };
        let params = [w0.f_set_requires_grad(true)?, b0.f_set_requires_grad(true)?];
        let mut m: Vec<Tensor> = params
            .iter()
            .map(|p| p.f_zeros_like())
            .collect::<std::result::Result<_, _>>()?;
        let mut v: Vec<Tensor> = params
            .iter()
            .map(|p| p.f_zeros_like())
            .collect::<std::result::Result<_, _>>()?;
        let (b1, b2) = (0.9f64, 0.999f64);
        let rows = t.size()[0] as f64;
        let descent_lr = match self.step {
            Step::Descent => {
                let x = xs.f_reshape([-1, d])?;
                let m2 = x
                    .f_transpose(0, 1)?
                    .f_matmul(&x)?
                    .f_div_scalar(x.size()[0] as f64)?
                    .f_to_kind(tch::Kind::Double)?;
                let top = m2.f_linalg_eigvalsh("L")?.f_max()?.f_double_value(&[])?;
                Some(1.0 / (top + 2.0 * self.wd).max(1e-6))
            }
            Step::Adam(_) => None,
        };
        tch::with_grad(|| -> Result<()> {
            for step in 1..=self.steps {
                let logp = logits(&params[0], &params[1])?.f_log_softmax(-1, xs.kind())?;
                let ce = t
                    .f_mul(&logp)?
                    .f_sum(xs.kind())?
                    .f_neg()?
                    .f_div_scalar(rows)?;
                let l2 = params[0]
                    .f_square()?
                    .f_sum(xs.kind())?
                    .f_mul_scalar(self.wd)?;
                let loss = ce.f_add(&l2)?;
                let grads =
                    Tensor::f_run_backward(&[loss], &params, false, false).op("probe fit")?;
                tch::no_grad(|| -> Result<()> {
                    if let Some(lr) = descent_lr {
                        for (p, g) in params.iter().zip(&grads) {
                            let _ = p.shallow_clone().f_sub_(&g.f_mul_scalar(lr)?)?;
                        }
                        return Ok(());
                    }
                    let lr = match self.step {
                        Step::Adam(lr) => lr,
                        Step::Descent => 0.0,
                    };
                    for i in 0..2 {
                        m[i] = m[i]
                            .f_mul_scalar(b1)?
                            .f_add(&grads[i].f_mul_scalar(1.0 - b1)?)?;
                        v[i] = v[i]
                            .f_mul_scalar(b2)?
                            .f_add(&grads[i].f_square()?.f_mul_scalar(1.0 - b2)?)?;
                        let mh = m[i].f_div_scalar(1.0 - b1.powi(step as i32))?;
                        let vh = v[i].f_div_scalar(1.0 - b2.powi(step as i32))?;
                        let upd = mh
                            .f_div(&vh.f_sqrt()?.f_add_scalar(1e-8)?)?
                            .f_mul_scalar(lr)?;
                        let mut p = params[i].shallow_clone();
                        let _ = p.f_sub_(&upd)?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(LinearHead {
            mean,
            std,
            w: params[0].detach(),
            b: params[1].detach(),
        })
    }
}

/// Ridge regression of `y` (R,o) on rows `x` (R,d) (standardised, unpenalised bias).
pub fn fit_ridge(x: &Tensor, y: &Tensor, lambda: f64) -> Result<LinearHead> {
    let (x, y) = (x.detach(), y.detach());
    let (mean, std) = standardise(&x)?;
    let xs = x.f_sub(&mean)?.f_div(&std)?;
    let ym = y.f_mean_dim([0i64].as_slice(), false, y.kind())?;
    let yc = y.f_sub(&ym)?;
    let d = xs.size()[1];
    let r = xs.size()[0] as f64;
    // (XᵀX/R + λI) w = Xᵀy/R ; standardised X has zero mean so the bias is mean(y).
    let a = xs
        .f_transpose(0, 1)?
        .f_matmul(&xs)?
        .f_div_scalar(r)?
        .f_add(&Tensor::f_eye(d, (x.kind(), x.device()))?.f_mul_scalar(lambda)?)?;
    let rhs = xs.f_transpose(0, 1)?.f_matmul(&yc)?.f_div_scalar(r)?;
    let w = Tensor::f_linalg_solve(&a, &rhs, true).op("ridge solve")?; // (d,o)
    Ok(LinearHead {
        mean,
        std,
        w: w.f_transpose(0, 1)?.f_contiguous()?,
        b: ym,
    })
}

/// Per-class intersection and union counts over a batch: predictions and labels (N,H,W) i64.
pub fn iou_counts(pred: &Tensor, labels: &Tensor, classes: i64) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = pred.f_flatten(0, -1)?;
    let l = labels.f_flatten(0, -1)?;
    // bincount of label·C + pred → (C,C) confusion (rows: truth).
    let conf = l
        .f_mul_scalar(classes)?
        .f_add(&p)?
        .f_bincount(None::<Tensor>, classes * classes)?;
    let conf: Vec<f64> =
        Vec::<f64>::try_from(&conf.f_to_kind(Kind::Double)?.f_to(tch::Device::Cpu)?)
            .op("confusion")?;
    let c = classes as usize;
    let mut inter = vec![0.0; c];
    let mut union = vec![0.0; c];
    for k in 0..c {
        let tp = conf[k * c + k];
        let row: f64 = (0..c).map(|j| conf[k * c + j]).sum();
        let col: f64 = (0..c).map(|i| conf[i * c + k]).sum();
        inter[k] = tp;
        union[k] = row + col - tp;
    }
    Ok((inter, union))
}

/// Mean IoU over classes with a non-empty union.
pub fn miou(inter: &[f64], union: &[f64]) -> f64 {
    let v: Vec<f64> = inter
        .iter()
        .zip(union)
        .filter(|(_, u)| **u > 0.0)
        .map(|(i, u)| i / u)
        .collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn fitting_on_maps_equals_fitting_on_their_upsampled_rows() {
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let (n, d, h, res, c) = (3, 5, 4, 8, 4);
        let maps = Tensor::randn([n, d, h, h], opts);
        let rows = maps
            .upsample_bilinear2d([res, res], false, None, None)
            .permute([0, 2, 3, 1])
            .reshape([-1, d]);
        let t = Tensor::randn([n * res * res, c], opts).softmax(-1, Kind::Double);
        let a = fit_softmax(&rows, &t, 15, 0.05, 1e-3, None).unwrap();
        let b = fit_softmax_map(&maps, res, &t, &rows, 15, Step::Adam(0.05), 1e-3, None).unwrap();
        let warm_a = fit_softmax(&rows, &t, 5, 0.05, 1e-3, Some(&a)).unwrap();
        let warm_b =
            fit_softmax_map(&maps, res, &t, &rows, 5, Step::Adam(0.05), 1e-3, Some(&b)).unwrap();
        for (x, y) in [(&a, &b), (&warm_a, &warm_b)] {
            let dw = (&x.w - &y.w).abs().max().double_value(&[]);
            let db = (&x.b - &y.b).abs().max().double_value(&[]);
            assert!(dw < 1e-10 && db < 1e-10, "w {dw}, b {db}");
            assert!(x.w.abs().max().double_value(&[]) > 1e-3, "the fit moved");
        }
    }

    /// A warm refit by descent lowers the loss and moves the head in proportion to a change of
    /// the features; a fresh-moment Adam refit moves it by about lr per weight whatever the
    /// change (so its result is set by the signs of vanishing gradients).
    #[test]
    fn descent_refit_is_smooth_in_the_features() {
        tch::manual_seed(4);
        let opts = (Kind::Double, Device::Cpu);
        let (n, d, h, c) = (6, 5, 4, 3);
        let maps = Tensor::randn([n, d, h, h], opts);
        let rows = maps.permute([0, 2, 3, 1]).reshape([-1, d]);
        let t = rows
            .matmul(&Tensor::randn([d, c], opts))
            .softmax(-1, Kind::Double);
        let fresh =
            fit_softmax_map(&maps, h, &t, &rows, 200, Step::Adam(0.05), 1e-3, None).unwrap();
        let loss = |hd: &LinearHead| {
            let lp = hd.forward(&rows).unwrap().log_softmax(-1, Kind::Double);
            -(&t * lp).sum(Kind::Double).double_value(&[]) / rows.size()[0] as f64
        };
        let eps = 1e-7;
        let nudged = &maps + Tensor::randn([n, d, h, h], opts) * eps;
        let refit = |m: &Tensor, step: Step| {
            fit_softmax_map(m, h, &t, &rows, 20, step, 1e-3, Some(&fresh)).unwrap()
        };
        let moved = |a: &LinearHead, b: &LinearHead| (&a.w - &b.w).abs().max().double_value(&[]);
        let (g0, g1) = (refit(&maps, Step::Descent), refit(&nudged, Step::Descent));
        assert!(loss(&g0) <= loss(&fresh) + 1e-12);
        assert!(
            moved(&g0, &g1) < 1e3 * eps,
            "descent moved {}",
            moved(&g0, &g1)
        );
        let a0 = refit(&maps, Step::Adam(0.05));
        assert!(
            moved(&a0, &fresh) > 0.01,
            "Adam's warm steps keep their size"
        );
        assert!(moved(&g0, &fresh) < moved(&a0, &fresh));
    }

    #[test]
    fn softmax_probe_separates_separable_data() {
        tch::manual_seed(0);
        let x = Tensor::randn([200, 3], (Kind::Float, Device::Cpu));
        let y = x.select(1, 0).gt(0.0).to_kind(Kind::Int64);
        let t = y.one_hot(2).to_kind(Kind::Float);
        let h = fit_softmax(&x, &t, 100, 0.1, 0.0, None).unwrap();
        let acc = h
            .forward(&x)
            .unwrap()
            .argmax(-1, false)
            .eq_tensor(&y)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        assert!(acc.double_value(&[]) > 0.95);
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_iou_counts() {
        tch::manual_seed(1);
        let x = Tensor::randn([500, 4], (Kind::Double, Device::Cpu));
        let y = x.matmul(&Tensor::from_slice(&[1.0f64, -2.0, 0.5, 0.0]).view([4, 1])) + 3.0;
        let h = fit_ridge(&x, &y, 1e-9).unwrap();
        assert!((h.forward(&x).unwrap() - &y).abs().max().double_value(&[]) < 1e-6);
        let pred = Tensor::from_slice(&[0i64, 1, 1, 2]);
        let lab = Tensor::from_slice(&[0i64, 1, 2, 2]);
        let (i, u) = iou_counts(&pred, &lab, 3).unwrap();
        assert_eq!(i, vec![1.0, 1.0, 1.0]);
        assert_eq!(u, vec![1.0, 2.0, 2.0]);
        assert!((miou(&i, &u) - (1.0 + 0.5 + 0.5) / 3.0).abs() < 1e-12);
    }
}
