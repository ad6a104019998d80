//! `vpt new plugin NAME`: writes a designer-plugin crate from `examples/designer-template`
//! (embedded at build time, so the template and the scaffold never drift apart).

use crate::loader::{Plugins, SearchPath};
use crate::{Error, Result};
use std::path::Path;

const TEMPLATE_CARGO: &str = include_str!("../../examples/designer-template/Cargo.toml");
const TEMPLATE_LIB: &str = include_str!("../../examples/designer-template/src/lib.rs");
/// The template's lock file: the scaffold builds with the versions the fast build path was tested
/// with (no fresh resolution against the registry).
const TEMPLATE_LOCK: &str = include_str!("../../examples/designer-template/Cargo.lock");
const TEMPLATE_README: &str = include_str!("../../examples/designer-template/README.md");
/// The template's own name, replaced by the new plugin's name.
const TEMPLATE_NAME: &str = "designer_template";

/// Creates crate `name` in `dir`, depending on vpt-sdk at `sdk` (default: this checkout's sdk/).
pub fn new_plugin(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(Error::config(
            "NAME",
            format!("`{name}` must be a lowercase identifier (a-z, 0-9, _)"),
        ));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::Msg(format!(
            "{} already exists and is not empty",
            dir.display()
        )));
    }
    let sdk = match sdk {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
    };
    let sdk = sdk.canonicalize().map_err(|e| Error::io(&sdk, e))?;
    let package = name.replace('_', "-");
    let cargo = TEMPLATE_CARGO
        .replace(TEMPLATE_NAME, name)
        .replace("designer-template", &package)
        .replace("../../sdk", &sdk.display().to_string());
    let lock = TEMPLATE_LOCK.replace(
        "name = \"designer-template\"",
        &format!("name = \"{package}\""),
    );
    let mut files = vec![
        ("Cargo.toml", cargo),
        ("Cargo.lock", lock),
        ("src/lib.rs", TEMPLATE_LIB.replace(TEMPLATE_NAME, name)),
        ("README.md", TEMPLATE_README.replace(TEMPLATE_NAME, name)),
        (
            "build.rs",
            include_str!("../../examples/designer-template/build.rs").to_string(),
        ),
        (
            "tiny.toml",
            include_str!("../../examples/designer-template/tiny.toml").replace(TEMPLATE_NAME, name),
        ),
        (
            "lm-tiny.toml",
            include_str!("../../examples/designer-template/lm-tiny.toml")
                .replace(TEMPLATE_NAME, name),
        ),
    ];
    if let Some(config) = cargo_config() {
        files.push((".cargo/config.toml", config));
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The task plugins a new designer's tests run against (`vpt_sdk::testing::plugin`).
const TEST_TASK_PLUGINS: [&str; 3] = ["tiny", "lm", "vision"];

/// `.cargo/config.toml` setting `VPT_PLUGIN_PATH` for the new crate's tests to the files of
/// this vpt's task plugins (as its own search path finds them); `None` when it finds none.
fn cargo_config() -> Option<String> {
    let mut plugins = Plugins::discover(&SearchPath::from_env(&[]));
    let files: Vec<String> = TEST_TASK_PLUGINS
        .iter()
        .filter_map(|name| plugins.get(name).ok()?.path.canonicalize().ok())
        .map(|p| p.display().to_string())
        .collect();
    if files.is_empty() {
        return None;
    }
    Some(format!(
        "# Written by `vpt new plugin`: where the tests' `vpt_sdk::testing::plugin(..)` finds the\n\
         # task plugins ({}) of the vpt that made this crate. A VPT_PLUGIN_PATH set in the\n\
         # environment wins over this value.\n[env]\nVPT_PLUGIN_PATH = {:?}\n",
        TEST_TASK_PLUGINS.join(", "),
        files.join(":")
    ))
}
