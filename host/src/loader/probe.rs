//! The cheap first look at a plugin file: is it a shared library, does it export the plain-C
//! `vpt_plugin_abi` stamp, and was it built against this SDK and libtorch? Every refusal is one
//! short paragraph (no dlerror or abi_stable walls).

use super::elf;
use crate::error::clip;
use crate::{Error, Result};
use std::{ffi::CStr, os::raw::c_char, path::Path};
use vpt_sdk::{ffi::module::ABI_SYMBOL, foreign::dlopen_path, AbiStamp};

const NOT_A_PLUGIN: &str = "a shared library but not a vpt plugin (it exports no `vpt_plugin_abi` \
     symbol; plugins are built with `vpt_sdk::export_plugin!`); it was not opened";

fn refuse(path: &Path, message: impl Into<String>) -> Error {
    Error::Load {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a plugin's ABI stamp without judging it: opens the library (running its constructors;
/// the handle is leaked on purpose, plugins are never unloaded) and calls `vpt_plugin_abi`.
pub fn read_stamp(path: &Path) -> Result<AbiStamp> {
    check_elf(path)?;
    // SAFETY: opening a shared library runs its initialisers: a plugin is code, trusted by
    // whoever put it on the search path (docs/trust.md). The static check above keeps files
    // that are not whole vpt plugins from ever reaching this point.
    let lib = unsafe { libloading::Library::new(dlopen_path(path)) }
        .map_err(|e| refuse(path, dlopen_summary(path, &e)))?;
    // Never unload: tensors, vtables and panic hooks of the plugin may outlive any handle.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol's type is fixed by the SDK (`export_plugin!`): a no-argument C function
    // returning a NUL-terminated static string.
    let stamp_fn = unsafe { lib.get::<extern "C" fn() -> *const c_char>(ABI_SYMBOL) }
        .map_err(|_| refuse(path, NOT_A_PLUGIN))?;
    let ptr = stamp_fn();
    if ptr.is_null() {
        return Err(refuse(path, "its `vpt_plugin_abi` returned a null stamp"));
    }
    // SAFETY: non-null, NUL-terminated and static by the symbol's contract.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    AbiStamp::parse(&text).ok_or_else(|| {
        let shown: String = text.chars().take(120).collect();
        refuse(path, format!("its ABI stamp `{shown}` is malformed (expected `vpt-sdk=…;tch=…;libtorch=…;plugin=…`)"))
    })
}

/// Reads a plugin's ABI stamp and refuses it unless it was built against this host's SDK
/// (major.minor) and libtorch, in one paragraph naming both versions and what to rebuild.
pub fn probe(path: &Path) -> Result<AbiStamp> {
    let stamp = read_stamp(path)?;
    match stamp.incompatibility() {
        Some(why) => Err(refuse(
            path,
            format!("plugin `{}` was {why}.", stamp.plugin),
        )),
        None => Ok(stamp),
    }
}

/// Refuses, without running any of its code, a file that is missing, not a whole ELF shared
/// library (a truncated copy would kill the process with SIGBUS inside `dlopen`), or a library
/// that does not export the vpt stamp (so its constructors never run).
fn check_elf(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => refuse(path, "no such file"),
        _ => refuse(path, e.to_string()),
    })?;
    if meta.is_dir() {
        return Err(refuse(
            path,
            "is a directory, not a plugin file (directories go in VPT_PLUGIN_PATH)",
        ));
    }
    if !meta.is_file() {
        // Opening a named pipe would block until someone writes to it.
        return Err(refuse(
            path,
            format!(
                "is {}, not a plugin file",
                vpt_sdk::checks::file_kind(&meta)
            ),
        ));
    }
    let info = elf::inspect(path, ABI_SYMBOL.strip_suffix(b"\0").unwrap_or(ABI_SYMBOL))
        .map_err(|m| refuse(path, m))?;
    if info.exports == Some(false) {
        return Err(refuse(path, NOT_A_PLUGIN));
    }
    Ok(())
}

/// dlerror text, shortened: the path prefix removed, known causes named, one line at most.
fn dlopen_summary(path: &Path, e: &libloading::Error) -> String {
    let full = e.to_string();
    let text = full
        .strip_prefix(&format!("{}: ", path.display()))
        .unwrap_or(&full);
    let first = text.lines().next().unwrap_or_default().trim();
    if first.contains("position-independent executable") {
        return "not a shared library (an executable)".into();
    }
    if first.contains("wrong ELF class") || first.contains("invalid ELF header") {
        return format!("not a shared library for this machine ({first})");
    }
    if first.contains("undefined symbol") || first.contains("cannot open shared object file") {
        return format!(
            "cannot be opened: {} (was it built against another libtorch? rebuild it against this vpt-sdk)",
            clip(first, 200)
        );
    }
    format!("cannot be opened: {}", clip(first, 200))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<AbiStamp>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn refuses_non_libraries_briefly() {
        let dir = std::env::temp_dir().join(format!("vpt-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("bogus.so");
        std::fs::write(&text, "not a library\n").unwrap();
        let m = message(probe(&text));
        assert!(m.contains("not a shared library (not an ELF file)"), "{m}");
        let m = message(probe(&dir.join("missing.so")));
        assert!(m.ends_with("no such file"), "{m}");
        let m = message(probe(&dir));
        assert!(m.contains("is a directory"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_an_executable() {
        let m = message(probe(Path::new("/bin/ls")));
        assert!(m.contains("not a shared library"), "{m}");
        assert_eq!(m.lines().count(), 1, "{m}");
    }

    #[test]
    fn refuses_a_library_that_is_not_a_plugin() {
        // libm is on every glibc system and exports no stamp.
        let libm = [
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/usr/lib64/libm.so.6",
            "/lib64/libm.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
        let Some(libm) = libm else { return };
        let m = message(probe(libm));
        assert!(m.contains("not a vpt plugin"), "{m}");
    }
}
