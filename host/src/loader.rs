//! Plugin loading: find plugin files ([`SearchPath`]), probe their plain-C ABI stamp
//! ([`probe`]), load their abi_stable root module ([`load`]), keep a registry of loaded plugins
//! ([`Plugins`]), and the `vpt plugins …` / `vpt schema` command bodies ([`commands`]).
//!
//! Plugins are never unloaded (DESIGN §3): their code may still be referenced by tensors,
//! vtables and panic hooks long after the last handle is gone.

pub mod commands;
mod elf;
mod probe;
mod registry;
mod search;

pub use commands::{cmd_plugins_inspect, cmd_plugins_list, cmd_schema};
pub use probe::{probe, read_stamp};
pub use registry::{Listing, Plugins};
pub use search::{
    installed_plugin_dir, user_plugin_dir, Origin, SearchEntry, SearchPath, PLUGIN_PATH_VAR,
};

use crate::{Error, Result};
use abi_stable::library::LibraryError;
use std::path::{Path, PathBuf};
use vpt_sdk::{
    foreign::{ForeignDesigner, ForeignTask, PluginLibrary},
    AbiStamp, BuildContext, ComponentManifest, Manifest,
};

/// A loaded plugin: its file, ABI stamp, manifest (read once at load) and root module.
/// Cloning is cheap and shares the module (the library stays loaded for the process).
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its plain-C ABI stamp.
    pub stamp: AbiStamp,
    /// Its tasks and designers, with their config schemas.
    pub manifest: Manifest,
    library: PluginLibrary,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("plugin", &self.manifest.plugin)
            .field("version", &self.manifest.version)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name (`task.plugin` / `designer.plugin` in configs).
    pub fn name(&self) -> &str {
        &self.manifest.plugin
    }

    /// The manifest entry of task `name`, if the plugin has one.
    pub fn task_manifest(&self, name: &str) -> Option<&ComponentManifest> {
        self.manifest.task(name)
    }

    /// The manifest entry of designer `name`, if the plugin has one.
    pub fn designer_manifest(&self, name: &str) -> Option<&ComponentManifest> {
        self.manifest.designer(name)
    }

    /// Builds task `name` from its JSON config. Errors (a bad config, a panic inside the plugin)
    /// come back as [`Error::Sdk`] wrapping the plugin's [`vpt_sdk::PluginError`].
    pub fn new_task(
        &self,
        name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<ForeignTask> {
        Ok(self.library.new_task(name, config, ctx)?)
    }

    /// Builds designer `name` from its JSON config, for a task whose designer context
    /// ([`vpt_sdk::TaskInfo::designer_context`]) is `task_context`.
    pub fn new_designer(
        &self,
        name: &str,
        config: &serde_json::Value,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<ForeignDesigner> {
        Ok(self.library.new_designer(name, config, task_context, ctx)?)
    }
}

/// Loads the plugin at `path`: [`probe`] (refuses another SDK or libtorch in one paragraph),
/// then abi_stable's version and layout checks (a mismatch is summarised in
/// [`Error::PluginAbi`], the full report kept in its `details`), then reads the manifest once.
pub fn load(path: &Path) -> Result<LoadedPlugin> {
    let stamp = probe(path)?;
    let library =
        PluginLibrary::open(path).map_err(|e| summarise_library_error(path, &stamp, e))?;
    let manifest = library.manifest().map_err(|e| Error::Load {
        path: path.into(),
        message: e.to_string(),
    })?;
    if manifest.plugin != stamp.plugin {
        return Err(Error::Load {
            path: path.into(),
            message: format!(
                "its ABI stamp names plugin `{}` but its manifest names `{}`",
                stamp.plugin, manifest.plugin
            ),
        });
    }
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        stamp,
        manifest,
        library,
    })
}

/// Turns abi_stable's (very long) error into a few lines naming the plugin and what to rebuild.
fn summarise_library_error(path: &Path, stamp: &AbiStamp, e: LibraryError) -> Error {
    let details = e.to_string().trim().to_string();
    let rebuild = format!(
        "rebuild it against vpt-sdk {} ({})",
        vpt_sdk::SDK_VERSION,
        vpt_sdk::TORCH_TAG
    );
    let message = match &e {
        LibraryError::AbiInstability(_) | LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            format!(
                "plugin `{}` (stamped vpt-sdk {}) does not match this host's plugin interface \
                 (abi_stable's layout check failed: mismatched interface); {rebuild}. \
                 Run with --verbose for abi_stable's full report.",
                stamp.plugin, stamp.sdk
            )
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "plugin `{}` declares vpt-sdk {actual_version} but this host needs {expected_version}; {rebuild}.",
            stamp.plugin
        ),
        LibraryError::GetSymbolError { .. } => format!(
            "plugin `{}` has a vpt stamp but no abi_stable root module (is `export_plugin!` invoked?)",
            stamp.plugin
        ),
        LibraryError::RootModule { .. } => format!(
            "plugin `{}`: its root module failed to initialise (it returned an error or panicked). \
             Run with --verbose for the full report.",
            stamp.plugin
        ),
        _ => format!(
            "plugin `{}` was refused by abi_stable; {rebuild}. Run with --verbose for the full report.",
            stamp.plugin
        ),
    };
    Error::PluginAbi {
        path: path.to_path_buf(),
        message,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_plugins_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<LoadedPlugin>();
        send_sync::<Plugins>();
    }
}
