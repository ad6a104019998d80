//! Gradient algebra on lists of tensors (one list: the gradients of one parameter set):
//! [`grad`], [`dot`], [`cosine`], [`global_norm`], [`clip_global_norm`] and the random-feedback
//! control [`random_like_with_norm`].

use crate::{error::HostTchContext, Error, Result};
use tch::{Kind, Tensor};

pub use vpt_sdk::objective::grad;

/// Σ_i ⟨a_i, b_i⟩ over matching tensors (differentiable in both).
pub fn dot(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (x, y) in a.iter().zip(b) {
        let term = (x * y).f_sum(Kind::Double).op("align dot")?;
        acc = Some(match acc {
            Some(s) => s + term,
            None => term,
        });
    }
    acc.ok_or_else(|| Error::Msg("alignment subset S is empty".into()))
}

/// ⟨a, b⟩ / (‖a‖‖b‖) over the concatenation of the lists.
pub fn cosine(a: &[Tensor], b: &[Tensor]) -> Result<Tensor> {
    let num = dot(a, b)?;
    let na = dot(a, a)?.f_sqrt().op("norm")?;
    let nb = dot(b, b)?.f_sqrt().op("norm")?;
    Ok(num / (na * nb + 1e-12))
}

/// Random Gaussian tensors shaped like `g`, scaled so the list has the same global norm
/// (the random-feedback control). Uses the torch RNG, which the host reseeds every step.
pub fn random_like_with_norm(g: Vec<Tensor>) -> Result<Vec<Tensor>> {
    let norm = global_norm(&g)?;
    let r: Vec<Tensor> = g.iter().map(|t| t.randn_like()).collect();
    let rn = global_norm(&r)?;
    Ok(r.into_iter().map(|t| t * (norm / rn.max(1e-30))).collect())
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping. `max_norm <= 0` only measures.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            let _ = g.f_mul_scalar_(scale).op("clip")?;
        }
    }
    Ok(norm)
}

/// Global L2 norm of a list of tensors (one CPU–GPU sync point for the whole list).
pub fn global_norm(ts: &[Tensor]) -> Result<f64> {
    let squares = ts
        .iter()
        .filter(|t| t.numel() > 0)
        .map(|t| {
            t.f_square()?
                .f_sum(Kind::Double)?
                .f_to_device(tch::Device::Cpu)
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .op("norm")?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let sq = Tensor::f_stack(&squares, 0)
        .and_then(|s| s.f_sum(Kind::Double))
        .and_then(|s| s.f_double_value(&[]))
        .op("norm")?;
    Ok(sq.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_cosine() {
        let a = [
            Tensor::from_slice(&[1.0f64, 2.0]),
            Tensor::from_slice(&[3.0f64]),
        ];
        let b = [
            Tensor::from_slice(&[4.0f64, 5.0]),
            Tensor::from_slice(&[6.0f64]),
        ];
        assert_eq!(dot(&a, &b).unwrap().double_value(&[]), 32.0);
        let c = cosine(&a, &a).unwrap().double_value(&[]);
        assert!((c - 1.0).abs() < 1e-12);
    }

    #[test]
    fn random_feedback_keeps_the_norm_but_not_the_direction() {
        tch::manual_seed(0);
        let g = vec![
            Tensor::from_slice(&[3.0f64, 0.0]),
            Tensor::from_slice(&[4.0f64; 50]),
        ];
        let norm = global_norm(&g).unwrap();
        let r = random_like_with_norm(g.iter().map(|t| t.copy()).collect()).unwrap();
        assert!((global_norm(&r).unwrap() - norm).abs() < 1e-9);
        assert!(cosine(&g, &r).unwrap().double_value(&[]).abs() < 0.5);
    }

    #[test]
    fn clipping_caps_the_global_norm() {
        let mut g = vec![Tensor::from_slice(&[3.0f64]), Tensor::from_slice(&[4.0f64])];
        let before = clip_global_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-12);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
    }
}
