//! [`PluginLibrary`]: a plugin file opened in this process, from which tasks and designers are
//! built. The host's loader adds its checks and messages around it; the test harness
//! ([`crate::testing::plugin`], feature `testing`) uses it directly, so a plugin's tests load
//! another plugin's task without the host.

use crate::{
    ffi::{module::PluginModRef, to_json, unwrap_ffi},
    foreign::{ForeignDesigner, ForeignTask},
    BuildContext, Error, Manifest, Result,
};
use abi_stable::library::{lib_header_from_path, LibraryError};
use std::path::{Path, PathBuf};

/// The root module of a loaded plugin. Copying is cheap; the library is never unloaded (its
/// code may be referenced by tensors, vtables and panic hooks long after the last handle).
#[derive(Clone, Copy)]
pub struct PluginLibrary {
    module: PluginModRef,
}

impl PluginLibrary {
    /// Opens the plugin file at `path` (see [`dlopen_path`]) with abi_stable's checks: the
    /// plugin's SDK must be semver-compatible with this one (0.x: the minor must match), its
    /// libtorch tag and interface layout equal to this one's.
    pub fn open(path: &Path) -> std::result::Result<PluginLibrary, LibraryError> {
        // Not `RootModule::load_from_file`: it caches one module per type, i.e. one plugin per
        // process.
        let module =
            lib_header_from_path(&dlopen_path(path))?.init_root_module::<PluginModRef>()?;
        Ok(PluginLibrary { module })
    }

    /// The plugin's manifest: its name, version, tasks and designers with their kinds and
    /// config schemas.
    pub fn manifest(&self) -> Result<Manifest> {
        let text = unwrap_ffi((self.module.manifest())())?;
        serde_json::from_str(text.as_str())
            .map_err(|e| Error::msg(format!("its manifest is malformed: {e}")))
    }

    /// Builds task `name` from its JSON config. Errors (a bad config, a panic inside the plugin)
    /// come back as [`Error::Plugin`].
    pub fn new_task(
        &self,
        name: &str,
        config: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<ForeignTask> {
        let (config, ctx) = (to_json(config)?, to_json(ctx)?);
        let task = unwrap_ffi((self.module.new_task())(
            name.into(),
            config.as_str().into(),
            ctx.as_str().into(),
        ))?;
        ForeignTask::new(task)
    }

    /// Builds designer `name` from its JSON config, for a task whose designer context
    /// ([`crate::TaskInfo::designer_context`]) is `task_context`.
    pub fn new_designer(
        &self,
        name: &str,
        config: &serde_json::Value,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<ForeignDesigner> {
        let (config, task_context, ctx) = (to_json(config)?, to_json(task_context)?, to_json(ctx)?);
        let designer = unwrap_ffi((self.module.new_designer())(
            name.into(),
            config.as_str().into(),
            task_context.as_str().into(),
            ctx.as_str().into(),
        ))?;
        ForeignDesigner::new(designer)
    }
}

/// `path` as `dlopen` must see it: a bare file name (which `dlopen` would look up on the
/// library path) becomes `./NAME`, relative to the working directory like any other path.
pub fn dlopen_path(path: &Path) -> PathBuf {
    if path.is_relative() && path.components().count() == 1 {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// The environment variable listing extra plugin files or directories, `:`-separated: read by
/// the host's search path and by [`crate::testing::plugin`].
pub const PLUGIN_PATH_VAR: &str = "VPT_PLUGIN_PATH";

/// The `*.so` files of `dir`, sorted by name; none when `dir` is not a readable directory.
pub fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so") && p.is_file())
        .collect();
    files.sort();
    files
}
