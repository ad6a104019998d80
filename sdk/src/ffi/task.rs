//! `TaskFfi`: the task vtable as it crosses the boundary, and its producer-side implementation.
#![allow(non_local_definitions)] // emitted inside abi_stable's #[sabi_trait] expansion

use super::{borrow_map, guard, hand_over, tensor::*, to_json, BatchSourceFfi};
use crate::{
    Batch, Construction, Differentiation, Forward, MetaBatch, PluginError, PretrainLoss, State,
    Task,
};
use abi_stable::{
    sabi_trait,
    std_types::{ROption, RResult, RStr, RString, RVec},
    StableAbi,
};

/// A lent batch.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct BatchFfi<'a> {
    /// Where it came from.
    pub source: BatchSourceFfi,
    /// Its tensors.
    pub tensors: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
}

/// A lent construction (empty kind = baseline).
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ConstructionFfi<'a> {
    /// The construction kind.
    pub kind: RStr<'a>,
    /// Its tensors.
    pub tensors: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
}

/// Owned state: JSON plus tensors.
#[repr(C)]
#[derive(StableAbi)]
pub struct StateFfi {
    /// JSON text of [`State::json`].
    pub json: RString,
    /// [`State::tensors`], handed over.
    pub tensors: RVec<NamedTensorHandle>,
}

/// A forward handed over: [`Forward`]'s two maps.
#[repr(C)]
#[derive(StableAbi)]
pub struct ForwardFfi {
    /// [`Forward::design_inputs`], handed over.
    pub design_inputs: RVec<NamedTensorHandle>,
    /// [`Forward::state`], handed over.
    pub state: RVec<NamedTensorHandle>,
}

/// A [`PretrainLoss`] handed over.
#[repr(C)]
#[derive(StableAbi)]
pub struct PretrainLossFfi {
    /// [`PretrainLoss::per_example`].
    pub per_example: TensorHandle,
    /// [`PretrainLoss::side`], handed over.
    pub side: RVec<NamedTensorHandle>,
}

/// The side outputs of a learner step's losses, lent: one map per batch.
pub type SideRefs<'a> =
    abi_stable::std_types::RSlice<'a, abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>>;

/// A lent forward.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ForwardRefFfi<'a> {
    /// [`Forward::design_inputs`], lent.
    pub design_inputs: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
    /// [`Forward::state`], lent.
    pub state: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
}

/// [`MetaBatch`] across the boundary (`max_len` 0 = whole sequences).
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct MetaBatchFfi {
    /// [`MetaBatch::rows`].
    pub rows: u64,
    /// [`MetaBatch::max_len`], 0 for `None`.
    pub max_len: u64,
}

/// The meta step's slice handed over: the batch's tensors and its forward.
#[repr(C)]
#[derive(StableAbi)]
pub struct MetaSliceFfi {
    /// The sliced batch's tensors (its source is the original's).
    pub batch: RVec<NamedTensorHandle>,
    /// The sliced forward.
    pub forward: ForwardFfi,
}

impl From<MetaBatch> for MetaBatchFfi {
    fn from(m: MetaBatch) -> Self {
        MetaBatchFfi {
            rows: m.rows as u64,
            max_len: m.max_len.unwrap_or(0) as u64,
        }
    }
}

impl From<MetaBatchFfi> for MetaBatch {
    fn from(m: MetaBatchFfi) -> Self {
        MetaBatch {
            rows: m.rows as usize,
            max_len: (m.max_len > 0).then_some(m.max_len as usize),
        }
    }
}

fn forward_over(f: Forward) -> ForwardFfi {
    ForwardFfi {
        design_inputs: hand_over(f.design_inputs),
        state: hand_over(f.state),
    }
}

/// The task interface across the boundary; mirrors [`Task`] method for method. JSON carries
/// the small structured values (info, metrics), tensors carry everything else.
///
/// Versioning: methods may only be added after the last one, and an older host then ignores them.
#[sabi_trait]
pub trait TaskFfi: Send {
    /// [`Task::info`] as JSON.
    fn info(&self) -> RResult<RString, PluginError>;
    /// [`Task::parameters`].
    fn parameters(&self) -> RResult<RVec<NamedTensorHandle>, PluginError>;
    /// [`Task::next_batch`].
    fn next_batch(
        &mut self,
        source: BatchSourceFfi,
    ) -> RResult<RVec<NamedTensorHandle>, PluginError>;
    /// [`Task::design_inputs`].
    fn design_inputs<'a>(
        &mut self,
        batch: BatchFfi<'a>,
    ) -> RResult<RVec<NamedTensorHandle>, PluginError>;
    /// [`Task::pretrain_loss`].
    fn pretrain_loss<'a>(
        &mut self,
        batch: BatchFfi<'a>,
        construction: ConstructionFfi<'a>,
        diff: Differentiation,
    ) -> RResult<TensorHandle, PluginError>;
    /// [`Task::feedback_loss`].
    fn feedback_loss<'a>(&mut self, batch: BatchFfi<'a>) -> RResult<TensorHandle, PluginError>;
    /// [`Task::prepare_feedback`].
    fn prepare_feedback(&mut self) -> RResult<(), PluginError>;
    /// [`Task::after_step`], its metrics as a JSON object.
    fn after_step<'a>(&mut self, step: u64, side: SideRefs<'a>) -> RResult<RString, PluginError>;
    /// [`Task::evaluate`], metrics as a JSON object.
    fn evaluate(&mut self, limit: ROption<u64>) -> RResult<RString, PluginError>;
    /// [`Task::state`].
    fn state(&self) -> RResult<StateFfi, PluginError>;
    /// [`Task::pretrain_forward`].
    fn pretrain_forward<'a>(&mut self, batch: BatchFfi<'a>) -> RResult<ForwardFfi, PluginError>;
    /// [`Task::pretrain_loss_from_forward`].
    fn pretrain_loss_from_forward<'a>(
        &mut self,
        batch: BatchFfi<'a>,
        state: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
        construction: ConstructionFfi<'a>,
        diff: Differentiation,
    ) -> RResult<PretrainLossFfi, PluginError>;
    /// [`Task::meta_batch`].
    fn meta_batch<'a>(
        &mut self,
        batch: BatchFfi<'a>,
        forward: ForwardRefFfi<'a>,
        size: MetaBatchFfi,
    ) -> RResult<MetaSliceFfi, PluginError>;
    /// [`Task::load_state`].
    #[sabi(last_prefix_field)]
    fn load_state<'a>(
        &mut self,
        json: RStr<'a>,
        tensors: abi_stable::std_types::RSlice<'a, NamedTensorRef<'a>>,
    ) -> RResult<(), PluginError>;
    /// [`Task::export`]: the request and the written paths as JSON. A plugin built before this
    /// method existed answers with the default: an error saying it cannot export.
    fn export<'a>(&self, request: RStr<'a>) -> RResult<RString, PluginError> {
        let _ = request;
        RResult::RErr(PluginError {
            kind: crate::ErrorKind::Other,
            message: "this task's plugin was built before `export` existed; rebuild it to export"
                .into(),
            plugin: RString::new(),
            field: RString::new(),
        })
    }
}

/// An owned, type-erased task from a plugin.
pub type TaskBox = TaskFfi_TO<'static, abi_stable::std_types::RBox<()>>;

/// Producer side: a plugin's [`Task`] behind the FFI vtable, every call guarded.
pub struct TaskExport {
    plugin: String,
    inner: Box<dyn Task>,
    consumes: &'static [crate::KindSpec],
}

impl TaskExport {
    /// Wraps `inner`, naming `plugin` in its errors; `consumes` are the kinds it accepts
    /// ([`TaskFactory::CONSUMES`](crate::TaskFactory::CONSUMES)).
    pub fn new(plugin: &str, inner: Box<dyn Task>, consumes: &'static [crate::KindSpec]) -> Self {
        TaskExport {
            plugin: plugin.to_string(),
            inner,
            consumes,
        }
    }
    /// Erases it into a [`TaskBox`].
    pub fn into_box(self) -> TaskBox {
        TaskFfi_TO::from_value(self, abi_stable::sabi_trait::TD_Opaque)
    }
}

/// The construction as a task consuming `consumes` may see it: the baseline, or one of those
/// kinds meeting its spec. This is the one place a construction is checked on its way to a task.
fn accepted(consumes: &[crate::KindSpec], c: &ConstructionFfi<'_>) -> crate::Result<Construction> {
    let c = construction_of(c);
    if c.is_baseline() {
        return Ok(c);
    }
    match consumes.iter().find(|k| k.name == c.kind) {
        Some(spec) => spec.check(&c).map(|()| c),
        None => {
            let names: Vec<&str> = consumes.iter().map(|k| k.name.as_ref()).collect();
            Err(crate::Error::msg(format!(
                "construction kind `{}` is not one this task consumes ([{}], or the baseline)",
                c.kind,
                names.join(", ")
            )))
        }
    }
}

fn batch_of(b: &BatchFfi<'_>) -> Batch {
    Batch {
        source: b.source.into(),
        tensors: borrow_map(b.tensors.as_slice()),
    }
}

/// Takes new references to a lent construction.
pub(crate) fn construction_of(c: &ConstructionFfi<'_>) -> Construction {
    Construction {
        kind: c.kind.to_string(),
        tensors: borrow_map(c.tensors.as_slice()),
    }
}

impl TaskFfi for TaskExport {
    fn info(&self) -> RResult<RString, PluginError> {
        guard(&self.plugin, "info", || to_json(&self.inner.info()))
    }
    fn parameters(&self) -> RResult<RVec<NamedTensorHandle>, PluginError> {
        guard(&self.plugin, "parameters", || {
            Ok(hand_over(self.inner.parameters()?))
        })
    }
    fn next_batch(
        &mut self,
        source: BatchSourceFfi,
    ) -> RResult<RVec<NamedTensorHandle>, PluginError> {
        guard(&self.plugin, "next_batch", || {
            Ok(hand_over(self.inner.next_batch(source.into())?.tensors))
        })
    }
    fn design_inputs(
        &mut self,
        batch: BatchFfi<'_>,
    ) -> RResult<RVec<NamedTensorHandle>, PluginError> {
        guard(&self.plugin, "design_inputs", || {
            Ok(hand_over(self.inner.design_inputs(&batch_of(&batch))?))
        })
    }
    fn pretrain_loss(
        &mut self,
        batch: BatchFfi<'_>,
        construction: ConstructionFfi<'_>,
        diff: Differentiation,
    ) -> RResult<TensorHandle, PluginError> {
        let consumes = self.consumes;
        guard(&self.plugin, "pretrain_loss", || {
            let c = accepted(consumes, &construction)?;
            Ok(TensorHandle::new(self.inner.pretrain_loss(
                &batch_of(&batch),
                &c,
                diff,
            )?))
        })
    }
    fn feedback_loss(&mut self, batch: BatchFfi<'_>) -> RResult<TensorHandle, PluginError> {
        guard(&self.plugin, "feedback_loss", || {
            Ok(TensorHandle::new(
                self.inner.feedback_loss(&batch_of(&batch))?,
            ))
        })
    }
    fn prepare_feedback(&mut self) -> RResult<(), PluginError> {
        guard(&self.plugin, "prepare_feedback", || {
            self.inner.prepare_feedback()
        })
    }
    fn after_step(&mut self, step: u64, side: SideRefs<'_>) -> RResult<RString, PluginError> {
        guard(&self.plugin, "after_step", || {
            let side: Vec<_> = side.iter().map(|m| borrow_map(m.as_slice())).collect();
            to_json(&self.inner.after_step(step, &side)?)
        })
    }
    fn evaluate(&mut self, limit: ROption<u64>) -> RResult<RString, PluginError> {
        guard(&self.plugin, "evaluate", || {
            to_json(&self.inner.evaluate(limit.into_option())?)
        })
    }
    fn state(&self) -> RResult<StateFfi, PluginError> {
        guard(&self.plugin, "state", || {
            let s = self.inner.state()?;
            Ok(StateFfi {
                json: to_json(&s.json)?,
                tensors: hand_over(s.tensors),
            })
        })
    }
    fn pretrain_forward(&mut self, batch: BatchFfi<'_>) -> RResult<ForwardFfi, PluginError> {
        guard(&self.plugin, "pretrain_forward", || {
            Ok(forward_over(
                self.inner.pretrain_forward(&batch_of(&batch))?,
            ))
        })
    }
    fn pretrain_loss_from_forward(
        &mut self,
        batch: BatchFfi<'_>,
        state: abi_stable::std_types::RSlice<'_, NamedTensorRef<'_>>,
        construction: ConstructionFfi<'_>,
        diff: Differentiation,
    ) -> RResult<PretrainLossFfi, PluginError> {
        let consumes = self.consumes;
        guard(&self.plugin, "pretrain_loss_from_forward", || {
            let (state, c) = (
                borrow_map(state.as_slice()),
                accepted(consumes, &construction)?,
            );
            let PretrainLoss { per_example, side } =
                self.inner
                    .pretrain_loss_from_forward(&batch_of(&batch), &state, &c, diff)?;
            Ok(PretrainLossFfi {
                per_example: TensorHandle::new(per_example),
                side: hand_over(side),
            })
        })
    }
    fn meta_batch(
        &mut self,
        batch: BatchFfi<'_>,
        forward: ForwardRefFfi<'_>,
        size: MetaBatchFfi,
    ) -> RResult<MetaSliceFfi, PluginError> {
        guard(&self.plugin, "meta_batch", || {
            let f = Forward {
                design_inputs: borrow_map(forward.design_inputs.as_slice()),
                state: borrow_map(forward.state.as_slice()),
            };
            let (b, f) = self.inner.meta_batch(&batch_of(&batch), &f, size.into())?;
            Ok(MetaSliceFfi {
                batch: hand_over(b.tensors),
                forward: forward_over(f),
            })
        })
    }
    fn load_state(
        &mut self,
        json: RStr<'_>,
        tensors: abi_stable::std_types::RSlice<'_, NamedTensorRef<'_>>,
    ) -> RResult<(), PluginError> {
        guard(&self.plugin, "load_state", || {
            let json = super::from_json(json.as_str(), "task state")?;
            self.inner.load_state(State {
                json,
                tensors: borrow_map(tensors.as_slice()),
            })
        })
    }
    fn export(&self, request: RStr<'_>) -> RResult<RString, PluginError> {
        guard(&self.plugin, "export", || {
            let request = super::from_json(request.as_str(), "export request")?;
            to_json(&self.inner.export(&request)?)
        })
    }
}
