//! # vpt-sdk: the only contract between the vpt host and its plugins
//!
//! A plugin is a `cdylib` built against this crate alone. It implements [`Task`] (a modality
//! and its downstream target) and/or [`Designer`] (φ, which decides how an unlabeled batch
//! becomes a prediction problem), registers them with [`export_plugin!`], and is loaded by an
//! unchanged `vpt` binary at run time.
//!
//! ## Ownership of tensors
//! Host and plugins share one libtorch in one process, so tensors, autograd graphs, grad mode
//! and the RNG are shared. Tensors cross as pointers:
//! - in: a borrowed [`TensorRef`](ffi::tensor::TensorRef), lent for one call; the callee takes
//!   its own reference and never frees the lent one;
//! - out: an owned [`TensorHandle`](ffi::tensor::TensorHandle); the receiver takes ownership.
//!
//! Each side frees only what it owns. Plugins only build losses and constructions; the host
//! runs every backward pass (including `create_graph` double backward) and every optimizer.
//!
//! ## Errors and panics
//! A panic must never unwind across `extern "C"`: every entry point runs inside
//! [`ffi::guard`], which catches panics and flattens errors into a [`PluginError`]. Inside a
//! plugin, prefer tch's fallible `f_*` calls and `?` ([`TchContext::op`] adds context).
//!
//! ## ABI versioning
//! - The root module is an abi_stable prefix type tagged with [`TORCH_TAG`]; abi_stable also
//!   checks [`SDK_VERSION`] semver-compatibility (0.x: the minor must match).
//! - Before that check the host reads the plain-C `vpt_plugin_abi` symbol ([`abi_stamp`]) and
//!   refuses a mismatched SDK or libtorch in one line.
//! - Methods and root-module fields are only ever appended. A host with more fields than a
//!   plugin refuses that plugin (abi_stable #118): bump the SDK minor when appending.
//!
//! What forces a plugin rebuild: a new SDK minor version, another tch/libtorch. What does not:
//! any change to the host.
//!
//! ## Features
//! - `testing`: the `testing` module, the contract harness (`check_invariants`, `check_hypergradient`),
//!   for plugins' tests; enable it from dev-dependencies.
#![warn(missing_docs)]

pub mod checks;
pub mod construction;
pub mod error;
pub mod export;
pub mod ffi;
pub mod foreign;
pub mod kinds;
pub mod objective;
pub mod paths;
pub mod registry;
pub mod rng;
pub mod tensor_file;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod traits;
pub mod value;

pub use construction::*;
pub use error::{Error, ErrorKind, PluginError, Result, TchContext};
pub use kinds::{Dtype, KindSpec, TensorSpec, Values};
pub use paths::{InputPath, OutputPath};
pub use registry::{
    parse_config, ComponentManifest, DesignerEntry, ExportSpec, Manifest, Registry, TaskEntry,
};
pub use traits::*;

pub use abi_stable;
pub use schemars;
pub use serde_json;
pub use tch;

/// This SDK's version; plugins must match its major.minor (0.x) to load.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The libtorch build every artifact in a process must share.
pub const TORCH_TAG: &str = "tch=0.24.0;libtorch=2.11.0";

/// The plain-C ABI stamp of a plugin named `plugin`:
/// `vpt-sdk=<SDK_VERSION>;tch=0.24.0;libtorch=2.11.0;plugin=<name>`.
pub fn abi_stamp(plugin: &str) -> String {
    format!("vpt-sdk={SDK_VERSION};{TORCH_TAG};plugin={plugin}")
}

/// A parsed [`abi_stamp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiStamp {
    /// SDK version the plugin was built with.
    pub sdk: String,
    /// Its libtorch tag (`tch=…;libtorch=…`).
    pub torch: String,
    /// The plugin's name.
    pub plugin: String,
}

impl AbiStamp {
    /// Parses a stamp; `None` when it is not one.
    pub fn parse(s: &str) -> Option<AbiStamp> {
        let mut sdk = None;
        let (mut tch, mut lt, mut plugin) = (None, None, None);
        for kv in s.split(';') {
            let (k, v) = kv.split_once('=')?;
            match k {
                "vpt-sdk" => sdk = Some(v.to_string()),
                "tch" => tch = Some(v.to_string()),
                "libtorch" => lt = Some(v.to_string()),
                "plugin" => plugin = Some(v.to_string()),
                _ => {}
            }
        }
        Some(AbiStamp {
            sdk: sdk?,
            torch: format!("tch={};libtorch={}", tch?, lt?),
            plugin: plugin?,
        })
    }

    /// Why this stamp cannot load into this SDK, or `None` when it can.
    pub fn incompatibility(&self) -> Option<String> {
        let major_minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
        if major_minor(&self.sdk) != major_minor(SDK_VERSION) {
            return Some(format!(
                "built against vpt-sdk {} but this host uses vpt-sdk {SDK_VERSION}; rebuild the plugin against vpt-sdk {SDK_VERSION}",
                self.sdk
            ));
        }
        if self.torch != TORCH_TAG {
            return Some(format!(
                "built against {} but this host uses {TORCH_TAG}; rebuild the plugin with the same tch/libtorch",
                self.torch
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_detects_mismatch() {
        let s = AbiStamp::parse(&abi_stamp("lm")).unwrap();
        assert_eq!(s.plugin, "lm");
        assert!(s.incompatibility().is_none());
        let old = AbiStamp::parse("vpt-sdk=0.0.3;tch=0.24.0;libtorch=2.11.0;plugin=x").unwrap();
        assert!(old.incompatibility().unwrap().contains("vpt-sdk 0.0.3"));
        let torch = AbiStamp::parse(&format!(
            "vpt-sdk={SDK_VERSION};tch=0.20.0;libtorch=2.7.0;plugin=x"
        ))
        .unwrap();
        assert!(torch.incompatibility().unwrap().contains("libtorch=2.7.0"));
        assert!(AbiStamp::parse("hello").is_none());
    }
}
