//! Link settings of the `python` plugin:
//! - libtorch's lib dir in the rpath (as every plugin), and libtorch_cuda kept linked when it
//!   exists, so the plugin loads without LD_LIBRARY_PATH;
//! - libpython's directory in the rpath, and its soname in `VPT_LIBPYTHON_SONAME` (the plugin
//!   promotes it to global symbol scope before starting the interpreter). Both come from the
//!   interpreter pyo3 builds against: `PYO3_PYTHON` (the Makefile sets it to the venv whose torch
//!   provides libtorch), else `python3`.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let query = "import sysconfig as s; print(s.get_config_var('LIBDIR') or ''); \
                 print(s.get_config_var('INSTSONAME') or '')";
    let out = Command::new(&python)
        .args(["-c", query])
        .output()
        .unwrap_or_else(|e| panic!("running {python} (PYO3_PYTHON) to find libpython: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let libdir = lines.next().unwrap_or_default().trim().to_string();
    let soname = lines.next().unwrap_or_default().trim().to_string();
    if !libdir.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
    println!("cargo:rustc-env=VPT_LIBPYTHON_SONAME={soname}");
}
