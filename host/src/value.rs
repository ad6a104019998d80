//! Alignment math on gradient lists, and the one-step value probe's statistics.

use crate::{error::HostTchContext, Result};
use tch::{Kind, Tensor};

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
    acc.ok_or_else(|| crate::Error::Msg("alignment subset S is empty".into()))
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
    let norm = crate::optim::global_norm(&g)?;
    let r: Vec<Tensor> = g.iter().map(|t| t.randn_like()).collect();
    let rn = crate::optim::global_norm(&r)?;
    Ok(r.into_iter().map(|t| t * (norm / rn.max(1e-30))).collect())
}

/// Pearson correlation of two samples (NaN when either is constant or n < 2).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx.sqrt() * syy.sqrt())
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
        let norm = crate::optim::global_norm(&g).unwrap();
        let r = random_like_with_norm(g.iter().map(|t| t.copy()).collect()).unwrap();
        assert!((crate::optim::global_norm(&r).unwrap() - norm).abs() < 1e-9);
        assert!(cosine(&g, &r).unwrap().double_value(&[]).abs() < 0.5);
    }

    #[test]
    fn pearson_known_values() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1.0], &[1.0]).is_nan());
    }
}
