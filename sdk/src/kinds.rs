//! Typed construction kinds: each kind is declared once, as a [`KindSpec`] (its tensors' names,
//! dtypes, shapes and value constraints), and checked once where a designer's construction
//! crosses to a task (the export glue, [`KindSpec::check`]) and by the testing harness.
//!
//! Tasks list the kinds they consume ([`TaskFactory::CONSUMES`](crate::TaskFactory::CONSUMES))
//! and designers the kind they produce
//! ([`DesignerFactory::PRODUCES`](crate::DesignerFactory::PRODUCES)) as specs; the manifest
//! carries them, so the host, `vpt plugins inspect` and the harness read the same declaration.

use crate::{Construction, Error, Result, KIND_EXAMPLE_WEIGHTS, KIND_LM_SOFT_TARGETS};
use crate::{TensorMap, KIND_VISION_VIEW_MASK};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use tch::{Kind, Tensor};

/// How far a distribution's sum, a weight mean or a bound may miss (float32 rounding).
pub const TOLERANCE: f64 = 1e-3;

/// Element type of a declared tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// Any floating type (f32, f64, …): the task's precision decides.
    Float,
    /// 64-bit integers (indices, token ids).
    Int64,
}

/// What the values of a declared tensor must satisfy (floating tensors are also finite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// No constraint beyond finiteness.
    Any,
    /// Every value in [0, 1] (masks, gates).
    UnitInterval,
    /// Rows along the last dimension are distributions: ≥ 0, summing to 1.
    Distribution,
    /// Non-negative with mean 1 (per-example weights).
    MeanOne,
}

/// One tensor of a kind or of a task's design inputs: name, dtype, symbolic shape, constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Its name in the tensor map.
    pub name: Cow<'static, str>,
    /// Element type.
    pub dtype: Dtype,
    /// Comma-separated dimensions: symbols (`B`, `T`, `K`; one symbol is one size throughout a
    /// construction) or literal sizes (`1`). The rank is the number of dimensions.
    pub shape: Cow<'static, str>,
    /// Value constraint.
    pub values: Values,
    /// False for a tensor that may be absent.
    pub required: bool,
    /// True for a construction tensor that must depend on φ (differentiable in the designer's
    /// parameters: the meta step's ∇φ flows through it); `check_invariants` fails a designer
    /// whose tensor is detached. False for tensors copied from the design inputs and for
    /// diagnostics; meaningless for design inputs.
    #[serde(default)]
    pub differentiable: bool,
    /// What it means, in one line.
    pub meaning: Cow<'static, str>,
}

impl TensorSpec {
    /// A required tensor (const, for declarations).
    pub const fn new(
        name: &'static str,
        dtype: Dtype,
        shape: &'static str,
        values: Values,
        meaning: &'static str,
    ) -> Self {
        TensorSpec {
            name: Cow::Borrowed(name),
            dtype,
            shape: Cow::Borrowed(shape),
            values,
            required: true,
            differentiable: false,
            meaning: Cow::Borrowed(meaning),
        }
    }
    /// The same tensor, allowed to be absent.
    pub const fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    /// The same tensor, required to depend on φ (the `differentiable` field).
    pub const fn differentiable(mut self) -> Self {
        self.differentiable = true;
        self
    }
    /// Its dimensions.
    pub fn dims(&self) -> Vec<&str> {
        self.shape.split(',').map(str::trim).collect()
    }
}

impl std::fmt::Display for TensorSpec {
    /// One line: `name  dtype (shape)  values[, optional]  — meaning`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtype = match self.dtype {
            Dtype::Float => "float",
            Dtype::Int64 => "int64",
        };
        let values = match self.values {
            Values::Any => "",
            Values::UnitInterval => " in [0,1]",
            Values::Distribution => " rows sum to 1",
            Values::MeanOne => " ≥0, mean 1",
        };
        let optional = if self.required { "" } else { ", optional" };
        let phi = if self.differentiable {
            ", differentiable in φ"
        } else {
            ""
        };
        write!(
            f,
            "{:<18} {dtype} ({}){values}{optional}{phi} — {}",
            self.name, self.shape, self.meaning
        )
    }
}

/// A construction kind: its name and its tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSpec {
    /// The kind's name, e.g. [`KIND_LM_SOFT_TARGETS`].
    pub name: Cow<'static, str>,
    /// Its tensors (no others are allowed).
    pub tensors: Cow<'static, [TensorSpec]>,
}

impl KindSpec {
    /// A kind (const, for declarations).
    pub const fn new(name: &'static str, tensors: &'static [TensorSpec]) -> Self {
        KindSpec {
            name: Cow::Borrowed(name),
            tensors: Cow::Borrowed(tensors),
        }
    }
    /// Checks `c` against this spec: its kind, that every required tensor is there and no
    /// undeclared one, dtypes, ranks, one size per shape symbol, and value constraints.
    pub fn check(&self, c: &Construction) -> Result<()> {
        if c.kind != self.name {
            return Err(Error::msg(format!(
                "construction of kind `{}` checked as `{}`",
                c.kind, self.name
            )));
        }
        check_tensors(&self.tensors, &c.tensors)
            .map_err(|e| Error::msg(format!("construction `{}`: {e}", self.name)))
    }
}

/// Checks `map` against `specs` (see [`KindSpec::check`]); the error names the tensor.
pub fn check_tensors(specs: &[TensorSpec], map: &TensorMap) -> Result<()> {
    for name in map.names() {
        if !specs.iter().any(|s| s.name == name) {
            let declared: Vec<&str> = specs.iter().map(|s| s.name.as_ref()).collect();
            return Err(tensor_error(
                name,
                format!("not declared (declared: {})", declared.join(", ")),
            ));
        }
    }
    let mut sizes: Vec<(&str, i64, &str)> = Vec::new(); // (symbol, size, first tensor)
    for spec in specs.iter() {
        let Some(t) = map.get(&spec.name) else {
            if spec.required {
                return Err(tensor_error(&spec.name, "missing".into()));
            }
            continue;
        };
        let (dims, size) = (spec.dims(), t.size());
        let dtype_ok = match spec.dtype {
            Dtype::Float => t.is_floating_point(),
            Dtype::Int64 => t.kind() == Kind::Int64,
        };
        if !dtype_ok || dims.len() != size.len() {
            return Err(tensor_error(
                &spec.name,
                format!(
                    "{:?} {size:?}, expected {:?} ({})",
                    t.kind(),
                    spec.dtype,
                    spec.shape
                ),
            ));
        }
        for (d, &n) in dims.iter().zip(&size) {
            let expected = match d.parse::<i64>() {
                Ok(lit) => Some((lit, "its declaration")),
                Err(_) => sizes
                    .iter()
                    .find(|(s, _, _)| s == d)
                    .map(|&(_, n, first)| (n, first)),
            };
            match expected {
                Some((want, from)) if want != n => {
                    return Err(tensor_error(
                        &spec.name,
                        format!("dimension `{d}` is {n}, but {want} in {from} (shape {size:?}, expected ({}))", spec.shape),
                    ))
                }
                Some(_) => {}
                None => sizes.push((d, n, spec.name.as_ref())),
            }
        }
        if t.is_floating_point() {
            check_values(spec, t).map_err(|m| tensor_error(&spec.name, m))?;
        }
    }
    Ok(())
}

fn tensor_error(name: &str, message: String) -> Error {
    Error::Tensor {
        name: name.into(),
        message,
    }
}

/// `Err(what is wrong)` when `t` breaks `spec.values` or is not finite.
fn check_values(spec: &TensorSpec, t: &Tensor) -> std::result::Result<(), String> {
    let scalar =
        |r: std::result::Result<Tensor, tch::TchError>| -> std::result::Result<f64, String> {
            r.and_then(|x| x.f_to_kind(Kind::Double)?.f_double_value(&[]))
                .map_err(|e| e.to_string())
        };
    if t.numel() == 0 {
        return Ok(());
    }
    let t = t.detach();
    let finite = scalar(t.f_isfinite().and_then(|f| f.f_all()))?;
    if finite != 1.0 {
        return Err("has non-finite values".into());
    }
    let (min, max) = (scalar(t.f_min())?, scalar(t.f_max())?);
    let tol = TOLERANCE;
    match spec.values {
        Values::Any => Ok(()),
        Values::UnitInterval if min < -tol || max > 1.0 + tol => Err(format!(
            "values must lie in [0, 1]; they span [{min:.4}, {max:.4}]"
        )),
        Values::UnitInterval => Ok(()),
        Values::Distribution => {
            let sums = t
                .f_sum_dim_intlist(-1, false, Kind::Double)
                .map_err(|e| e.to_string())?;
            let (lo, hi) = (scalar(sums.f_min())?, scalar(sums.f_max())?);
            if min < -tol || (lo - 1.0).abs() > tol || (hi - 1.0).abs() > tol {
                Err(format!(
                    "rows along the last dimension must be distributions (≥ 0, summing to 1 ± {tol}); values span [{min:.4}, {max:.4}], row sums [{lo:.4}, {hi:.4}]"
                ))
            } else {
                Ok(())
            }
        }
        Values::MeanOne => {
            let mean = scalar(t.f_mean(Kind::Double))?;
            if min < 0.0 || (mean - 1.0).abs() > tol {
                Err(format!(
                    "must be ≥ 0 with mean 1 (± {tol}); min {min:.4}, mean {mean:.6}"
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// [`KIND_LM_SOFT_TARGETS`]: top-K soft targets of the language modality.
pub const LM_SOFT_TARGETS: KindSpec = KindSpec::new(KIND_LM_SOFT_TARGETS, LM_SOFT_TARGETS_TENSORS);
const LM_SOFT_TARGETS_TENSORS: &[TensorSpec] = &[
    TensorSpec::new(
        "cand_ids",
        Dtype::Int64,
        "B,T,K",
        Values::Any,
        "token ids of the K candidates at each position (the true token first)",
    ),
    TensorSpec::new(
        "probs",
        Dtype::Float,
        "B,T,K",
        Values::Distribution,
        "the target distribution over the K candidates",
    )
    .differentiable(),
    TensorSpec::new(
        "loss_mask",
        Dtype::Float,
        "B,T",
        Values::UnitInterval,
        "1 where a position carries a loss (copied from the design inputs)",
    )
    .optional(),
    TensorSpec::new(
        "alpha",
        Dtype::Float,
        "B,T",
        Values::UnitInterval,
        "the designer's gate: the mass it moved off the true token",
    )
    .optional(),
];

/// [`KIND_VISION_VIEW_MASK`]: per-view soft masks of the vision modality.
pub const VISION_VIEW_MASK: KindSpec =
    KindSpec::new(KIND_VISION_VIEW_MASK, VISION_VIEW_MASK_TENSORS);
const VISION_VIEW_MASK_TENSORS: &[TensorSpec] = &[TensorSpec::new(
    "mask",
    Dtype::Float,
    "B,V,1,H,W",
    Values::UnitInterval,
    "soft keep-mask of each student view (1 keeps a pixel)",
)
.differentiable()];

/// [`KIND_EXAMPLE_WEIGHTS`]: per-example loss weights, applied by the host to any task.
pub const EXAMPLE_WEIGHTS: KindSpec = KindSpec::new(KIND_EXAMPLE_WEIGHTS, EXAMPLE_WEIGHTS_TENSORS);
const EXAMPLE_WEIGHTS_TENSORS: &[TensorSpec] = &[TensorSpec::new(
    "weights",
    Dtype::Float,
    "B",
    Values::MeanOne,
    "weight of each example's loss (≥ 0, mean 1)",
)
.differentiable()];

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn soft(probs: Tensor) -> Construction {
        let ids = Tensor::zeros([2, 3, 4], (Kind::Int64, Device::Cpu));
        Construction {
            kind: KIND_LM_SOFT_TARGETS.into(),
            tensors: TensorMap::new().with("cand_ids", ids).with("probs", probs),
        }
    }

    #[test]
    fn distributions_pass_and_rows_summing_to_three_are_refused() {
        let q = Tensor::ones([2, 3, 4], (Kind::Float, Device::Cpu)) / 4.0;
        LM_SOFT_TARGETS.check(&soft(q.shallow_clone())).unwrap();
        let e = LM_SOFT_TARGETS
            .check(&soft(q * 3.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`probs`") && e.contains("row sums [3.0000, 3.0000]"),
            "{e}"
        );
    }

    #[test]
    fn shapes_dtypes_names_and_bounds_are_checked() {
        let q = || Tensor::ones([2, 3, 4], (Kind::Float, Device::Cpu)) / 4.0;
        let e = |c: &Construction| LM_SOFT_TARGETS.check(c).unwrap_err().to_string();
        let bad_t = soft(Tensor::ones([2, 5, 4], (Kind::Float, Device::Cpu)) / 4.0);
        assert!(
            e(&bad_t).contains("dimension `T` is 5, but 3 in cand_ids"),
            "{}",
            e(&bad_t)
        );
        let mut c = soft(q());
        c.tensors.insert("probs", q().to_kind(Kind::Int64));
        assert!(e(&c).contains("expected Float"), "{}", e(&c));
        let c = soft(q()).tensors.with("extra", q());
        let c = Construction {
            kind: KIND_LM_SOFT_TARGETS.into(),
            tensors: c,
        };
        assert!(e(&c).contains("`extra`: not declared"), "{}", e(&c));
        let mut c = soft(q());
        c.tensors.remove("cand_ids");
        assert!(e(&c).contains("`cand_ids`: missing"), "{}", e(&c));
        let c = soft(q()).tensors.with(
            "alpha",
            Tensor::ones([2, 3], (Kind::Float, Device::Cpu)) * 1.5,
        );
        let c = Construction {
            kind: KIND_LM_SOFT_TARGETS.into(),
            tensors: c,
        };
        assert!(e(&c).contains("[0, 1]"), "{}", e(&c));
        let w = |v: &[f64]| Construction {
            kind: KIND_EXAMPLE_WEIGHTS.into(),
            tensors: TensorMap::new().with("weights", Tensor::from_slice(v)),
        };
        EXAMPLE_WEIGHTS.check(&w(&[0.5, 1.5])).unwrap();
        assert!(EXAMPLE_WEIGHTS.check(&w(&[1.0, 2.0])).is_err());
        assert!(EXAMPLE_WEIGHTS.check(&w(&[-0.5, 2.5])).is_err());
    }
}
