//! `DesignerFfi`: the designer vtable as it crosses the boundary, and its producer side.
#![allow(non_local_definitions)] // emitted inside abi_stable's #[sabi_trait] expansion

use super::{borrow_map, guard, hand_over, tensor::*, to_json};
use crate::{Designer, PluginError, State};
use abi_stable::{
    sabi_trait,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};

use super::task::construction_of;
pub use super::task::{ConstructionFfi, StateFfi};

/// An owned construction handed back by a designer.
#[repr(C)]
#[derive(abi_stable::StableAbi)]
pub struct ConstructionHandle {
    /// The construction kind.
    pub kind: RString,
    /// Its tensors, differentiable in φ.
    pub tensors: RVec<NamedTensorHandle>,
}

/// The designer interface across the boundary; mirrors [`Designer`].
///
/// Versioning: methods may only be added after the last one.
#[sabi_trait]
pub trait DesignerFfi: Send {
    /// [`Designer::parameters`].
    fn parameters(&self) -> RResult<RVec<NamedTensorHandle>, PluginError>;
    /// [`Designer::construct`].
    fn construct<'a>(
        &mut self,
        inputs: RSlice<'a, NamedTensorRef<'a>>,
    ) -> RResult<ConstructionHandle, PluginError>;
    /// [`Designer::regularizer`].
    fn regularizer<'a>(
        &mut self,
        construction: ConstructionFfi<'a>,
    ) -> RResult<ROption<TensorHandle>, PluginError>;
    /// [`Designer::state`].
    fn state(&self) -> RResult<StateFfi, PluginError>;
    /// [`Designer::load_state`].
    fn load_state<'a>(
        &mut self,
        json: RStr<'a>,
        tensors: RSlice<'a, NamedTensorRef<'a>>,
    ) -> RResult<(), PluginError>;
    /// [`Designer::metrics`] as a JSON object.
    #[sabi(last_prefix_field)]
    fn metrics<'a>(&self, construction: ConstructionFfi<'a>) -> RResult<RString, PluginError>;
}

/// An owned, type-erased designer from a plugin.
pub type DesignerBox = DesignerFfi_TO<'static, abi_stable::std_types::RBox<()>>;

/// Producer side: a plugin's [`Designer`] behind the FFI vtable, every call guarded.
pub struct DesignerExport {
    plugin: String,
    inner: Box<dyn Designer>,
}

impl DesignerExport {
    /// Wraps `inner`, naming `plugin` in its errors.
    pub fn new(plugin: &str, inner: Box<dyn Designer>) -> Self {
        DesignerExport {
            plugin: plugin.to_string(),
            inner,
        }
    }
    /// Erases it into a [`DesignerBox`].
    pub fn into_box(self) -> DesignerBox {
        DesignerFfi_TO::from_value(self, abi_stable::sabi_trait::TD_Opaque)
    }
}

impl DesignerFfi for DesignerExport {
    fn parameters(&self) -> RResult<RVec<NamedTensorHandle>, PluginError> {
        guard(&self.plugin, "parameters", || {
            Ok(hand_over(self.inner.parameters()?))
        })
    }
    fn construct(
        &mut self,
        inputs: RSlice<'_, NamedTensorRef<'_>>,
    ) -> RResult<ConstructionHandle, PluginError> {
        guard(&self.plugin, "construct", || {
            let c = self.inner.construct(&borrow_map(inputs.as_slice()))?;
            Ok(ConstructionHandle {
                kind: c.kind.into(),
                tensors: hand_over(c.tensors),
            })
        })
    }
    fn regularizer(
        &mut self,
        construction: ConstructionFfi<'_>,
    ) -> RResult<ROption<TensorHandle>, PluginError> {
        guard(&self.plugin, "regularizer", || {
            let c = construction_of(&construction);
            Ok(self.inner.regularizer(&c)?.map(TensorHandle::new).into())
        })
    }
    fn metrics(&self, construction: ConstructionFfi<'_>) -> RResult<RString, PluginError> {
        guard(&self.plugin, "metrics", || {
            to_json(&self.inner.metrics(&construction_of(&construction))?)
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
    fn load_state(
        &mut self,
        json: RStr<'_>,
        tensors: RSlice<'_, NamedTensorRef<'_>>,
    ) -> RResult<(), PluginError> {
        guard(&self.plugin, "load_state", || {
            let json = super::from_json(json.as_str(), "designer state")?;
            self.inner.load_state(State {
                json,
                tensors: borrow_map(tensors.as_slice()),
            })
        })
    }
}
