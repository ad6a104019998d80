//! [`ForeignTask`]: a plugin's task, used by the host through the safe [`Task`] trait.

use crate::{
    ffi::{from_json, lend, take_over, task::*, unwrap_ffi, BatchSourceFfi},
    Batch, BatchSource, Construction, Differentiation, ExportRequest, Forward, MetaBatch, Metrics,
    PretrainLoss, Result, State, Task, TaskInfo, TensorMap,
};
use abi_stable::std_types::{ROption, RStr};
use tch::Tensor;

/// A task living in a plugin. It keeps its [`TaskInfo`] from build time (it never changes).
pub struct ForeignTask {
    inner: TaskBox,
    info: TaskInfo,
}

impl ForeignTask {
    /// Wraps a task handed over by a plugin and reads its info once.
    pub fn new(inner: TaskBox) -> Result<Self> {
        let info = from_json(unwrap_ffi(inner.info())?.as_str(), "task info")?;
        Ok(ForeignTask { inner, info })
    }
}

fn construction_ffi<'a>(
    construction: &'a Construction,
    crefs: &'a abi_stable::std_types::RVec<crate::ffi::tensor::NamedTensorRef<'a>>,
) -> ConstructionFfi<'a> {
    ConstructionFfi {
        kind: RStr::from_str(&construction.kind),
        tensors: crefs.as_rslice(),
    }
}

/// Metrics as they crossed: JSON has no NaN, so a NaN metric crosses as `null` and comes back
/// as NaN.
pub(crate) fn metrics_from_json(json: &str) -> Result<Metrics> {
    let m: std::collections::BTreeMap<String, Option<f64>> = from_json(json, "metrics")?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

fn forward_of(f: ForwardFfi) -> Forward {
    Forward {
        design_inputs: take_over(f.design_inputs),
        state: take_over(f.state),
    }
}

fn with_batch<T>(batch: &Batch, f: impl FnOnce(BatchFfi<'_>) -> T) -> T {
    let refs = lend(&batch.tensors);
    f(BatchFfi {
        source: BatchSourceFfi::from(batch.source),
        tensors: refs.as_rslice(),
    })
}

impl Task for ForeignTask {
    fn info(&self) -> TaskInfo {
        self.info.clone()
    }
    fn parameters(&self) -> Result<TensorMap> {
        Ok(take_over(unwrap_ffi(self.inner.parameters())?))
    }
    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        let tensors = take_over(unwrap_ffi(self.inner.next_batch(source.into()))?);
        Ok(Batch { source, tensors })
    }
    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        let out = with_batch(batch, |b| self.inner.design_inputs(b));
        Ok(take_over(unwrap_ffi(out)?))
    }
    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        let crefs = lend(&construction.tensors);
        let c = construction_ffi(construction, &crefs);
        let out = with_batch(batch, |b| self.inner.pretrain_loss(b, c, diff));
        Ok(unwrap_ffi(out)?.into_tensor())
    }
    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        let out = with_batch(batch, |b| self.inner.pretrain_forward(b));
        Ok(forward_of(unwrap_ffi(out)?))
    }
    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<PretrainLoss> {
        let (crefs, srefs) = (lend(&construction.tensors), lend(state));
        let c = construction_ffi(construction, &crefs);
        let out = with_batch(batch, |b| {
            self.inner
                .pretrain_loss_from_forward(b, srefs.as_rslice(), c, diff)
        });
        let out = unwrap_ffi(out)?;
        Ok(PretrainLoss {
            per_example: out.per_example.into_tensor(),
            side: take_over(out.side),
        })
    }
    fn meta_batch(
        &mut self,
        batch: &Batch,
        forward: &Forward,
        size: MetaBatch,
    ) -> Result<(Batch, Forward)> {
        let (irefs, srefs) = (lend(&forward.design_inputs), lend(&forward.state));
        let f = ForwardRefFfi {
            design_inputs: irefs.as_rslice(),
            state: srefs.as_rslice(),
        };
        let out = with_batch(batch, |b| self.inner.meta_batch(b, f, size.into()));
        let slice = unwrap_ffi(out)?;
        Ok((
            Batch {
                source: batch.source,
                tensors: take_over(slice.batch),
            },
            forward_of(slice.forward),
        ))
    }
    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        let out = with_batch(batch, |b| self.inner.feedback_loss(b));
        Ok(unwrap_ffi(out)?.into_tensor())
    }
    fn prepare_feedback(&mut self) -> Result<()> {
        unwrap_ffi(self.inner.prepare_feedback())
    }
    fn after_step(&mut self, step: u64, side: &[TensorMap]) -> Result<Metrics> {
        let refs: Vec<_> = side.iter().map(lend).collect();
        let slices: Vec<_> = refs.iter().map(|r| r.as_rslice()).collect();
        let out = self.inner.after_step(step, slices.as_slice().into());
        metrics_from_json(unwrap_ffi(out)?.as_str())
    }
    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics> {
        metrics_from_json(unwrap_ffi(self.inner.evaluate(ROption::from(limit)))?.as_str())
    }
    fn state(&self) -> Result<State> {
        let s = unwrap_ffi(self.inner.state())?;
        Ok(State {
            json: from_json(s.json.as_str(), "task state")?,
            tensors: take_over(s.tensors),
        })
    }
    fn load_state(&mut self, state: State) -> Result<()> {
        let json = crate::ffi::to_json(&state.json)?;
        let refs = lend(&state.tensors);
        unwrap_ffi(self.inner.load_state(json.as_rstr(), refs.as_rslice()))
    }
    fn export(&self, request: &ExportRequest) -> Result<Vec<std::path::PathBuf>> {
        let json = crate::ffi::to_json(request)?;
        let out = unwrap_ffi(self.inner.export(json.as_rstr()))?;
        from_json(out.as_str(), "exported files")
    }
}
