//! `vpt new plugin NAME`: writes a designer-plugin crate from `examples/designer-template`
//! (embedded at build time, so the template and the scaffold never drift apart), depending on
//! the SDK installed with `vpt` (or the checkout it was built from), and building against the
//! libtorch `vpt` runs with.

use crate::loader::{Plugins, SearchPath};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const TEMPLATE_CARGO: &str = include_str!("../../examples/designer-template/Cargo.toml");
const TEMPLATE_LIB: &str = include_str!("../../examples/designer-template/src/lib.rs");
/// The template's lock file: the scaffold builds with the versions the fast build path was tested
/// with (no fresh resolution against the registry).
const TEMPLATE_LOCK: &str = include_str!("../../examples/designer-template/Cargo.lock");
const TEMPLATE_README: &str = include_str!("../../examples/designer-template/README.md");
/// The template's own name, replaced by the new plugin's name.
const TEMPLATE_NAME: &str = "designer_template";

/// Creates crate `name` in `dir`, depending on vpt-sdk at `sdk` (default: [`default_sdk`]).
/// When the libtorch this process runs with is known, the crate's `.cargo/config.toml` sets
/// `LIBTORCH` to it (a plugin must be built against the host's libtorch; an exported `LIBTORCH`
/// still wins).
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
        None => default_sdk()?,
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
    files.push((
        ".cargo/config.toml",
        cargo_config(running_libtorch().as_deref()),
    ));
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

/// The SDK a new plugin depends on: the one installed with this executable
/// (`<exe>/../share/vpt/sdk`, written by `make install`), else the sdk/ of the checkout this
/// binary was built from.
pub fn default_sdk() -> Result<PathBuf> {
    let exe = std::env::current_exe().ok();
    let installed = exe
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(installed_sdk);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    installed
        .into_iter()
        .chain([checkout])
        .find(|d| d.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            Error::config(
                "--sdk",
                "no vpt-sdk found next to this vpt (PREFIX/share/vpt/sdk) or in the checkout it \
                 was built from; pass --sdk PATH",
            )
        })
}

/// `PREFIX/share/vpt/sdk`: where `make install PREFIX=…` puts the SDK's sources.
pub fn installed_sdk(prefix: &Path) -> PathBuf {
    prefix.join("share").join("vpt").join("sdk")
}

/// The libtorch this process runs with (`LIBTORCH`, the folder holding `lib/libtorch_cpu.so`),
/// read from the process's memory map.
fn running_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/lib/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent()?.parent().map(Path::to_path_buf))
}

/// The new crate's `.cargo/config.toml`: `LIBTORCH` for torch-sys's build script (the
/// libtorch this vpt runs with) and `VPT_PLUGIN_PATH` for its tests (the files of this vpt's
/// task plugins, as its own search path finds them). Values set in the environment win.
fn cargo_config(libtorch: Option<&Path>) -> String {
    let mut plugins = Plugins::discover(&SearchPath::from_env(&[]));
    let files: Vec<String> = TEST_TASK_PLUGINS
        .iter()
        .filter_map(|name| plugins.get(name).ok()?.path.canonicalize().ok())
        .map(|p| p.display().to_string())
        .collect();
    let mut out = format!(
        "# Written by `vpt new plugin`: the libtorch that vpt runs with (a plugin must be built\n\
         # against the host's libtorch) and where the tests' `vpt_sdk::testing::plugin(..)` finds\n\
         # the task plugins ({}) of the vpt that made this crate. Variables exported in the\n\
         # environment take precedence.\n[env]\n",
        TEST_TASK_PLUGINS.join(", ")
    );
    if let Some(l) = libtorch {
        out += &format!(
            "LIBTORCH = {}\n",
            toml::Value::String(l.display().to_string())
        );
    }
    if !files.is_empty() {
        out += &format!(
            "VPT_PLUGIN_PATH = {}\n",
            toml::Value::String(files.join(":"))
        );
    }
    out
}
