//! The embedded interpreter: started once per process, on the Python installation whose torch
//! package provides the libtorch this process already runs, so that Python's `torch` and the
//! host share one libtorch, one autograd engine and one tensor type.
//!
//! Start-up: find the loaded `libtorch_cpu.so` (its `torch/lib` directory names the torch
//! package and its `site-packages`), promote libpython to global symbol scope (the host opens
//! plugins with local scope, and `torch._C` needs Python's symbols), start the interpreter
//! without signal handlers, add that `site-packages` to `sys.path`, import torch and check it
//! is the package of the loaded libtorch, compile the bridge (`bridge.py`), then release the GIL:
//! every later call into Python takes it for the call only.

use crate::tensors::Converter;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The bridge's source, compiled into the interpreter as module `vpt_bridge`.
const BRIDGE: &str = include_str!("bridge.py");

/// libpython's soname, from the interpreter the plugin was built against (build.rs).
const LIBPYTHON: &str = env!("VPT_LIBPYTHON_SONAME");

/// The started interpreter: the bridge module and the tensor converter.
pub struct Interpreter {
    /// `vpt_bridge` (bridge.py).
    pub bridge: Py<PyModule>,
    /// Tensor conversion between tch and Python.
    pub tensors: Converter,
}

/// The interpreter, started on first use; the error (one line) is kept and repeated.
pub fn get() -> Result<&'static Interpreter, String> {
    static INTERP: OnceLock<Result<Interpreter, String>> = OnceLock::new();
    INTERP.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// The `torch/lib` directory of the `libtorch_cpu.so` mapped into this process.
fn loaded_libtorch_dir() -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("reading /proc/self/maps to find the loaded libtorch: {e}"))?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
        .ok_or_else(|| "no libtorch_cpu.so is loaded in this process".to_string())
}

/// The torch package (`…/site-packages/torch`) whose libtorch is loaded, or what is missing.
fn torch_package() -> Result<PathBuf, String> {
    let lib = loaded_libtorch_dir()?;
    let torch = lib.parent().map(Path::to_path_buf).unwrap_or_default();
    let missing: Vec<String> = [torch.join("__init__.py"), lib.join("libtorch_python.so")]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(torch)
    } else {
        Err(format!(
            "Python designers need the Python torch package of the libtorch this process runs \
             ({}), but {} is missing: build vpt against a pip-installed torch 2.11.0 (the default \
             LIBTORCH of scripts/setup.sh, ~/.cache/vpt/venv) rather than a standalone libtorch",
            lib.display(),
            missing.join(" and ")
        ))
    }
}

/// Makes libpython's symbols global (it was loaded with the plugin, in local scope).
fn promote_libpython() -> Result<(), String> {
    let name = CString::new(LIBPYTHON).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with RTLD_NOLOAD only changes the scope of an already-loaded library.
    let handle = unsafe {
        libc::dlopen(
            name.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_GLOBAL | libc::RTLD_NOLOAD,
        )
    };
    if handle.is_null() {
        return Err(format!(
            "{LIBPYTHON} (the Python library this plugin was built against) is not loaded"
        ));
    }
    Ok(())
}

fn start() -> Result<Interpreter, String> {
    let torch_dir = torch_package()?;
    let site = torch_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    promote_libpython()?;
    Python::initialize();
    Python::attach(|py| -> Result<Interpreter, String> {
        let err = |what: &str, e: PyErr| format!("{what}: {}", crate::errors::describe(py, &e));
        let setup = CString::new(format!(
            "import site, sys\nif not getattr(sys, 'argv', None):\n    sys.argv = ['vpt']\n\
             site.addsitedir({:?})\n",
            site.display().to_string()
        ))
        .map_err(|e| e.to_string())?;
        py.run(&setup, None, None)
            .map_err(|e| err("starting Python", e))?;
        let torch = py
            .import("torch")
            .map_err(|e| err(&format!("importing torch from {}", site.display()), e))?;
        let file: String = torch
            .getattr("__file__")
            .and_then(|f| f.extract())
            .map_err(|e| err("torch.__file__", e))?;
        let imported = Path::new(&file)
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .unwrap_or_default();
        if imported != torch_dir.canonicalize().unwrap_or_default() {
            return Err(format!(
                "Python imported torch from {} but this process runs the libtorch of {}: \
                 remove the other torch from PYTHONPATH",
                imported.display(),
                torch_dir.display()
            ));
        }
        let bridge = PyModule::from_code(
            py,
            &CString::new(BRIDGE).expect("bridge.py has no NUL"),
            c"<vpt python plugin>/bridge.py",
            c"vpt_bridge",
        )
        .map_err(|e| err("compiling the bridge", e))?;
        let tensors = Converter::new(py, &torch_dir, &bridge)?;
        Ok(Interpreter {
            bridge: bridge.unbind(),
            tensors,
        })
    })
}
