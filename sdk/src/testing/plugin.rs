//! [`plugin`]: another plugin (the task a designer is tested against) loaded into a plugin's
//! own tests, with the SDK alone.

use crate::foreign::{plugin_files, PluginLibrary, PLUGIN_PATH_VAR};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The plugin called `name` (e.g. `"tiny"` or `"lm"`, the `plugin` of its configs), from the
/// files listed in `VPT_PLUGIN_PATH` (files or directories, `:`-separated; a directory gives
/// its `*.so` files). A crate made by `vpt new plugin` sets `VPT_PLUGIN_PATH` for its tests in
/// `.cargo/config.toml`, pointing at the plugins of the `vpt` that made it; an environment
/// value wins over that file.
///
/// Files named `libvpt_NAME.so` or `libNAME.so` are tried first; a file that is not a plugin
/// built against this SDK and libtorch is skipped (and named in the error when none matches).
///
/// ```ignore
/// let tiny = vpt_sdk::testing::plugin("tiny")?;
/// let mut task = tiny.new_task("tiny", &serde_json::json!({}), &ctx)?;
/// let opts = InvariantOptions::for_task(tiny.manifest()?.task("tiny").unwrap());
/// ```
pub fn plugin(name: &str) -> Result<PluginLibrary> {
    let value = std::env::var(PLUGIN_PATH_VAR).unwrap_or_default();
    plugin_on(name, &value)
}

/// [`plugin`] on an explicit `VPT_PLUGIN_PATH` value.
pub fn plugin_on(name: &str, path_value: &str) -> Result<PluginLibrary> {
    let mut files: Vec<PathBuf> = Vec::new();
    for part in path_value.split(':').filter(|p| !p.is_empty()) {
        let p = Path::new(part);
        if p.is_dir() {
            files.extend(plugin_files(p));
        } else {
            files.push(p.to_path_buf());
        }
    }
    let preferred = [format!("libvpt_{name}.so"), format!("lib{name}.so")];
    let is_preferred = |p: &PathBuf| {
        p.file_name()
            .is_some_and(|f| preferred.iter().any(|n| f == n.as_str()))
    };
    files.sort_by_key(|p| !is_preferred(p)); // stable: search order kept within each group
    let mut skipped = Vec::new();
    for file in &files {
        let opened = PluginLibrary::open(file)
            .map_err(|e| first_line(&e.to_string()))
            .and_then(|lib| Ok((lib.manifest().map_err(|e| e.to_string())?, lib)));
        match opened {
            Ok((m, lib)) if m.plugin == name => return Ok(lib),
            Ok(_) => {}
            Err(why) => skipped.push(format!("{} ({why})", file.display())),
        }
    }
    let mut msg = format!(
        "no plugin `{name}` on {PLUGIN_PATH_VAR} (`{path_value}`): set {PLUGIN_PATH_VAR} to the \
         directory of vpt's plugins (PREFIX/share/vpt/plugins of an installed vpt, target/release \
         of a checkout; `vpt plugins list` names each plugin's file)"
    );
    if !skipped.is_empty() {
        msg.push_str(&format!(
            "; files that did not load: {}",
            skipped.join("; ")
        ));
    }
    Err(Error::msg(msg))
}

fn first_line(s: &str) -> String {
    s.trim().lines().next().unwrap_or_default().to_string()
}
