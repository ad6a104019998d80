//! [`check_hypergradient`]: ∂V/∂φ by double backward against central finite differences.

use super::{abs_max, copy, verdict, Outcome, Report, Verdict, SEED};
use crate::value::{alignment_subset, designer_gradient, feedback_gradient, value, Align};
use crate::{BatchSource, Designer, MetaBatch, Result, Task, TensorMap};
use tch::{Device, Kind, Tensor};

/// At most this many φ coordinates are checked by finite differences.
const MAX_COORDINATES: usize = 16;

/// Checks ∂V/∂φ, with V = g_downᵀ ∇_S L_pre(θ; B_u, c(φ)) and g_down = ∇_S L_down(θ; B_f)
/// detached (the `exact` estimator of the meta step), against central finite differences
/// (V(φ + εe_k) − V(φ − εe_k)) / 2ε on a few coordinates k of φ: for each φ tensor, the one with
/// the largest analytic derivative and one fixed other (at most 16 in all).
///
/// A coordinate passes when |fd − analytic| ≤ `tol` · max(|analytic|, |fd|, ‖∂V/∂φ‖∞). The
/// analytic side is the double backward the host runs, so this tests the whole path through
/// the task's and the designer's graphs. Run the task and designer in f64 for a tight check
/// (ε ≈ 1e-6, tol ≈ 1e-5); in f32 use ε ≈ 1e-3 and tol ≈ 5e-2 at best. Torch's RNG is reseeded
/// before every evaluation of V, so dropout or random masks are the same draws each time.
///
/// Uses one unlabeled batch of domain 0 (V on its meta slice of half the rows, through
/// `pretrain_forward`, `meta_batch` and [`value`](crate::value::value), as the host's meta
/// step) and one batch of feedback set 0.
pub fn check_hypergradient(
    task: &mut dyn Task,
    designer: &mut dyn Designer,
    eps: f64,
    tol: f64,
) -> Report {
    let mut r = Report::new(format!("hypergradient (ε = {eps:e}, tol = {tol:e})"));
    let mut setup = None;
    let ok = r.run("setup", || {
        let phi = designer.parameters()?;
        if phi.is_empty() {
            return Ok(Verdict::Fail(
                "the designer has no parameters φ: nothing to check".into(),
            ));
        }
        let s = alignment_subset(task)?;
        task.prepare_feedback()?;
        let b_u = task.next_batch(BatchSource::Unlabeled { domain: 0 })?;
        let b_f = task.next_batch(BatchSource::Feedback { set: 0 })?;
        tch::manual_seed(SEED);
        let g_down = feedback_gradient(task, &s, &b_f)?;
        let detail = format!(
            "{} φ tensors, |S| = {} tensors, ‖g_down‖ = {:.4e}",
            phi.len(),
            s.len(),
            crate::value::global_norm(&g_down)?
        );
        setup = Some((phi, s, b_u, g_down));
        Ok(Verdict::Pass(detail))
    });
    let Some((phi, s, b_u, g_down)) = setup.filter(|_| ok) else {
        return r;
    };

    // V through the host's path: the learner's forward, its meta slice (half the rows), the
    // designer on the slice's inputs, g_pre of the slice from the forward's state (Twice).
    let rows = (task.info().batch_size / 2).max(1);
    let value = |task: &mut dyn Task, designer: &mut dyn Designer| -> Result<Tensor> {
        tch::manual_seed(SEED);
        let forward = task.pretrain_forward(&b_u)?;
        let (batch, forward) = task.meta_batch(
            &b_u,
            &forward,
            MetaBatch {
                rows,
                max_len: None,
            },
        )?;
        let v = value(
            task,
            designer,
            &s,
            &g_down,
            &[&batch],
            &[&forward],
            Align::Dot,
        )?;
        Ok(v.v)
    };

    let ps: Vec<Tensor> = phi.tensors().map(Tensor::shallow_clone).collect();
    let mut analytic = None;
    let ok = r.run("V and ∂V/∂φ", || {
        let v = value(task, designer)?;
        let vd = v.f_double_value(&[])?;
        if !vd.is_finite() {
            return Ok(Verdict::Fail(format!("V = {vd}")));
        }
        let g = designer_gradient(&v, &phi)?;
        let m = abs_max(&g)?;
        let detail = format!("V = {vd:.6e}, ‖∂V/∂φ‖∞ = {m:.3e}");
        let ok = m > 0.0 && m.is_finite();
        analytic = Some((g, m));
        Ok(verdict(
            ok,
            detail.clone(),
            format!("{detail}: V does not depend on φ (is the construction detached?)"),
        ))
    });
    let Some((g_phi, scale)) = analytic.filter(|_| ok) else {
        return r;
    };

    let coords = match coordinates(&phi, &g_phi) {
        Ok(c) => c,
        Err(e) => {
            r.push("coordinates", Outcome::Fail, format!("error: {e}"));
            return r;
        }
    };
    let names = phi.names();
    for (ti, k, an) in coords {
        let (name, p) = (names[ti], &ps[ti]);
        r.run(&format!("∂V/∂{name}[{k}]"), || {
            let fd =
                central_difference(
                    p,
                    k,
                    eps,
                    || Ok(value(task, designer)?.f_double_value(&[])?),
                )?;
            let err = (fd - an).abs();
            let denom = an.abs().max(fd.abs()).max(scale);
            let detail = format!(
                "analytic {an:.6e}, finite difference {fd:.6e}, error {:.2e}",
                err / denom
            );
            Ok(verdict(err <= tol * denom, detail.clone(), detail))
        });
    }
    r
}

/// Up to two coordinates per φ tensor (its largest |∂V/∂φ| and a fixed other), at most
/// [`MAX_COORDINATES`]: `(tensor index, flat index, analytic derivative)`.
fn coordinates(phi: &TensorMap, g_phi: &[Tensor]) -> Result<Vec<(usize, i64, f64)>> {
    let mut out = Vec::new();
    for (ti, ((_, p), g)) in phi.iter().zip(g_phi).enumerate() {
        let n = p.numel() as i64;
        if n == 0 {
            continue;
        }
        let flat = g
            .f_reshape([-1])?
            .f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?;
        let top = flat.f_abs()?.f_argmax(0, false)?.f_int64_value(&[])?;
        let other = match (n * 5 + 3) / 7 % n {
            // a fixed coordinate away from both ends, not the top one
            k if k == top => (k + 1) % n,
            k => k,
        };
        for k in [top, other] {
            if out.len() < MAX_COORDINATES && !out.iter().any(|&(t, j, _)| t == ti && j == k) {
                out.push((ti, k, flat.f_double_value(&[k])?));
            }
        }
    }
    Ok(out)
}

/// (f(φ + εe_k) − f(φ − εe_k)) / 2ε, perturbing parameter `p` in place and restoring it exactly.
fn central_difference(
    p: &Tensor,
    k: i64,
    eps: f64,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<f64> {
    let mut slot = p.f_view_([-1])?.f_get(k)?; // a view into p
    let orig = copy(&slot)?;
    let mut set = |delta: f64| -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            slot.f_copy_(&orig)?;
            if delta != 0.0 {
                let _ = slot.f_add_scalar_(delta)?;
            }
            Ok(())
        })
    };
    set(eps)?;
    let plus = f();
    set(-eps)?;
    let minus = f();
    set(0.0)?;
    Ok((plus? - minus?) / (2.0 * eps))
}
