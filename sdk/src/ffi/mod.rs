//! The `FFI_*` side of the contract: `#[repr(C)]`, `StableAbi` types that cross the boundary.
//! Host code never reads these directly; it goes through [`crate::foreign`].

pub mod designer;
pub mod module;
pub mod task;
pub mod tensor;

use crate::{BatchSource, Error, PluginError, Result, TensorMap};
use abi_stable::std_types::{RResult, RStr, RVec};
use tensor::{NamedTensorHandle, NamedTensorRef, TensorRef};

/// FFI form of [`BatchSource`]: `feedback == false` means the unlabeled stream of domain `index`.
#[repr(C)]
#[derive(abi_stable::StableAbi, Clone, Copy, Debug)]
pub struct BatchSourceFfi {
    /// True for a feedback set, false for an unlabeled domain.
    pub feedback: bool,
    /// The feedback set or domain index.
    pub index: u32,
}

impl From<BatchSource> for BatchSourceFfi {
    fn from(s: BatchSource) -> Self {
        match s {
            BatchSource::Unlabeled { domain } => BatchSourceFfi {
                feedback: false,
                index: domain,
            },
            BatchSource::Feedback { set } => BatchSourceFfi {
                feedback: true,
                index: set,
            },
        }
    }
}

impl From<BatchSourceFfi> for BatchSource {
    fn from(s: BatchSourceFfi) -> Self {
        if s.feedback {
            BatchSource::Feedback { set: s.index }
        } else {
            BatchSource::Unlabeled { domain: s.index }
        }
    }
}

/// Lends every tensor of `map` (the refs live as long as the returned vector borrows `map`).
pub fn lend(map: &TensorMap) -> RVec<NamedTensorRef<'_>> {
    map.iter()
        .map(|(n, t)| NamedTensorRef {
            name: RStr::from_str(n),
            tensor: TensorRef::new(t),
        })
        .collect()
}

/// Takes new references to lent tensors.
pub fn borrow_map(refs: &[NamedTensorRef<'_>]) -> TensorMap {
    refs.iter()
        .map(|r| (r.name.to_string(), r.tensor.to_tensor()))
        .collect()
}

/// Gives up ownership of every tensor of `map`.
pub fn hand_over(map: TensorMap) -> RVec<NamedTensorHandle> {
    map.into_iter()
        .map(|(n, t)| NamedTensorHandle {
            name: n.into(),
            tensor: tensor::TensorHandle::new(t),
        })
        .collect()
}

/// Takes ownership of handed-over tensors.
pub fn take_over(handles: RVec<NamedTensorHandle>) -> TensorMap {
    handles
        .into_iter()
        .map(|h| (h.name.into_string(), h.tensor.into_tensor()))
        .collect()
}

/// Runs a plugin entry point: catches panics and flattens errors into a [`PluginError`].
/// Every `extern` entry point of a plugin goes through here; none rolls its own.
pub fn guard<T>(plugin: &str, op: &str, f: impl FnOnce() -> Result<T>) -> RResult<T, PluginError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(PluginError::from_error(plugin, &e)),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            RResult::RErr(PluginError {
                kind: crate::ErrorKind::Panic,
                message: format!("panicked in `{op}`: {what}").into(),
                plugin: plugin.into(),
                field: Default::default(),
            })
        }
    }
}

/// Converts a boundary result back into an SDK result (consumer side).
pub fn unwrap_ffi<T>(r: RResult<T, PluginError>) -> Result<T> {
    r.into_result().map_err(Error::Plugin)
}

/// Serialises to JSON, mapping failures to an SDK error.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<abi_stable::std_types::RString> {
    serde_json::to_string(v)
        .map(Into::into)
        .map_err(|e| Error::msg(format!("serialising: {e}")))
}

/// Parses JSON produced by the other side.
pub fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::msg(format!("malformed {what} from plugin: {e}")))
}
