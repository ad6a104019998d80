//! [`ForeignDesigner`]: a plugin's designer, used by the host through the safe [`Designer`] trait.

use crate::{
    ffi::{designer::*, from_json, lend, take_over, unwrap_ffi},
    Construction, Designer, Metrics, Result, State, TensorMap,
};
use abi_stable::std_types::RStr;
use tch::Tensor;

/// A designer living in a plugin.
pub struct ForeignDesigner {
    inner: DesignerBox,
}

impl ForeignDesigner {
    /// Wraps a designer handed over by a plugin.
    pub fn new(inner: DesignerBox) -> Result<Self> {
        Ok(ForeignDesigner { inner })
    }
}

impl Designer for ForeignDesigner {
    fn parameters(&self) -> Result<TensorMap> {
        Ok(take_over(unwrap_ffi(self.inner.parameters())?))
    }
    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let refs = lend(inputs);
        let c = unwrap_ffi(self.inner.construct(refs.as_rslice()))?;
        Ok(Construction {
            kind: c.kind.into_string(),
            tensors: take_over(c.tensors),
        })
    }
    fn regularizer(&mut self, construction: &Construction) -> Result<Option<Tensor>> {
        let refs = lend(&construction.tensors);
        let c = ConstructionFfi {
            kind: RStr::from_str(&construction.kind),
            tensors: refs.as_rslice(),
        };
        Ok(unwrap_ffi(self.inner.regularizer(c))?
            .into_option()
            .map(|h| h.into_tensor()))
    }
    fn metrics(&self, construction: &Construction) -> Result<Metrics> {
        let refs = lend(&construction.tensors);
        let c = ConstructionFfi {
            kind: RStr::from_str(&construction.kind),
            tensors: refs.as_rslice(),
        };
        super::task::metrics_from_json(unwrap_ffi(self.inner.metrics(c))?.as_str())
    }
    fn state(&self) -> Result<State> {
        let s = unwrap_ffi(self.inner.state())?;
        Ok(State {
            json: from_json(s.json.as_str(), "designer state")?,
            tensors: take_over(s.tensors),
        })
    }
    fn load_state(&mut self, state: State) -> Result<()> {
        let json = crate::ffi::to_json(&state.json)?;
        let refs = lend(&state.tensors);
        unwrap_ffi(self.inner.load_state(json.as_rstr(), refs.as_rslice()))
    }
}
