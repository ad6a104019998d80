//! The designer at work, visible: the learner step's loss returns, per position, the
//! off-target mass 1 − q_true and (when the construction has one) the gate α, with the batch's
//! loss mask, source tags and corruption mask, as detached side outputs; after the step they
//! become metrics averaged over the loss-bearing positions, split by stream source
//! (`offtarget/math`, `alpha/code`, …) and, with corruption on, by corrupted vs clean positions
//! (`alpha/corrupt`, `alpha/clean`), with the step's token shares (`tokens/math`, …) and how
//! many targets were corrupted (`corrupted_tokens`, `corrupted_fraction`).

use crate::pack::Source;
use tch::{Kind, Tensor};
use vpt_sdk::{Batch, Construction, Metrics, Result, TensorMap};

/// The side outputs of one batch's learner loss, from its construction's weights `q` (B,T,K)
/// (detached; nothing of the designer's for the baseline).
pub(super) fn side_outputs(
    batch: &Batch,
    construction: &Construction,
    q: &Tensor,
) -> Result<TensorMap> {
    let mut side = TensorMap::new();
    for name in ["mask", "source", "corrupt"] {
        if let Some(t) = batch.tensors.get(name) {
            side.insert(name, t.f_detach()?);
        }
    }
    if !construction.is_baseline() {
        let off = q.f_detach()?.f_select(-1, 0)?.f_neg()?.f_add_scalar(1.0)?;
        side.insert("offtarget", off);
        if let Some(a) = construction.tensors.get("alpha") {
            side.insert("alpha", a.f_detach()?);
        }
    }
    Ok(side)
}

/// Flattened concatenation of tensor `name` over the batches' side outputs (f64), if every
/// batch has it.
fn gather(side: &[TensorMap], name: &str) -> Result<Option<Tensor>> {
    let parts: Option<Vec<Tensor>> = side
        .iter()
        .map(|m| m.get(name).map(|t| t.flatten(0, -1).to_kind(Kind::Double)))
        .collect();
    match parts {
        Some(p) if !p.is_empty() => Ok(Some(Tensor::f_cat(&p, 0)?)),
        _ => Ok(None),
    }
}

/// Sum of `x` over positions with weight `w` and the weight's sum.
fn weighted(x: &Tensor, w: &Tensor) -> Result<(f64, f64)> {
    let s = x.f_mul(w)?.f_sum(Kind::Double)?.f_double_value(&[])?;
    Ok((s, w.f_sum(Kind::Double)?.f_double_value(&[])?))
}

/// The step metrics of the learner step's side outputs. `sources`: the stream's sources (the
/// split metrics of a source with no loss-bearing token in the step are left out);
/// `corrupt_on`: the stream corrupts targets (adds the corrupt / clean split and the counts).
pub(super) fn step_metrics(
    side: &[TensorMap],
    sources: &[Source],
    corrupt_on: bool,
) -> Result<Metrics> {
    let mut m = Metrics::new();
    let Some(mask) = gather(side, "mask")? else {
        return Ok(m);
    };
    let mask = mask.f_ne(0)?.f_to_kind(Kind::Double)?;
    let total = mask.f_sum(Kind::Double)?.f_double_value(&[])?;
    let source = gather(side, "source")?;
    let corrupt = gather(side, "corrupt")?;
    // the position sets: one per source, then corrupt / clean
    let mut sets: Vec<(String, Tensor)> = Vec::new();
    if let Some(src) = &source {
        for s in sources {
            let w = src.f_eq(*s as i64)?.f_to_kind(Kind::Double)?.f_mul(&mask)?;
            sets.push((s.name().to_string(), w));
        }
    }
    if let (true, Some(c)) = (corrupt_on, &corrupt) {
        let hit = c.f_mul(&mask)?;
        let n = hit.f_sum(Kind::Double)?.f_double_value(&[])?;
        m.insert("corrupted_tokens".into(), n);
        m.insert("corrupted_fraction".into(), n / total.max(1.0));
        let clean = mask.f_sub(&hit)?;
        sets.push(("corrupt".into(), hit));
        sets.push(("clean".into(), clean));
    }
    for (name, w) in &sets {
        if sources.iter().any(|s| s.name() == name) {
            let n = w.f_sum(Kind::Double)?.f_double_value(&[])?;
            m.insert(format!("tokens/{name}"), n / total.max(1.0));
        }
    }
    for value in ["offtarget", "alpha"] {
        let Some(x) = gather(side, value)? else {
            continue;
        };
        for (name, w) in &sets {
            let (s, n) = weighted(&x, w)?;
            if n > 0.0 {
                m.insert(format!("{value}/{name}"), s / n);
            }
        }
    }
    Ok(m)
}
