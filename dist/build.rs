//! Compiles the C++ c10d shim (`cpp/vpt_dist.cpp`) against the headers of the libtorch that
//! torch-sys links, and links it with `torch_cpu`/`c10` (plus `torch_cuda`/`c10_cuda` when the
//! NCCL backend can be compiled).
//!
//! The NCCL part is compiled only when libtorch has `libtorch_cuda.so` and both `nccl.h` and the
//! CUDA runtime headers (`cuda_runtime_api.h` with `crt/host_config.h`) are found; the reason it
//! was left out is baked into the crate (`VPT_DIST_NCCL_STATUS`) so the run-time error names it.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=cpp/vpt_dist.cpp");
    println!("cargo:rerun-if-changed=cpp/vpt_dist.h");
    println!("cargo:rerun-if-changed=cpp/third_party");
    for var in [
        "VPT_DIST_CUDA_INCLUDE",
        "VPT_DIST_NCCL_INCLUDE",
        "CUDA_HOME",
        "VPT_DIST_NO_NCCL",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(vpt_dist_nccl)");

    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "vpt-dist: DEP_TCH_LIBTORCH_LIB is unset; torch-sys must be a direct dependency \
         (set LIBTORCH, e.g. `export LIBTORCH=$(scripts/setup.sh libtorch)`)",
    ));
    let include = lib.join("..").join("include");
    let c10d = include.join("torch/csrc/distributed/c10d");
    if !c10d.join("ProcessGroupGloo.hpp").exists() {
        panic!(
            "vpt-dist: {} not found; the libtorch at {} has no distributed headers \
             (use a libtorch built with USE_DISTRIBUTED, e.g. the PyPI torch wheel)",
            c10d.join("ProcessGroupGloo.hpp").display(),
            lib.display()
        );
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("cpp/vpt_dist.cpp")
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .include("cpp")
        .warnings(false)
        .flag("-Wall")
        .flag("-Wextra");
    // libtorch's and gloo's own headers are system headers: their warnings are not ours.
    for dir in [
        include.clone(),
        include.join("torch/csrc/api/include"),
        PathBuf::from("cpp/third_party/gloo/include"),
    ] {
        build
            .flag("-isystem")
            .flag(dir.to_str().expect("libtorch path is not UTF-8"));
    }

    let nccl = nccl_includes(&lib, &c10d);
    match &nccl {
        Ok(dirs) => {
            build
                .define("VPT_DIST_NCCL", None)
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None);
            for dir in dirs {
                build
                    .flag("-isystem")
                    .flag(dir.to_str().expect("CUDA path is not UTF-8"));
            }
            println!("cargo:rustc-cfg=vpt_dist_nccl");
            println!("cargo:rustc-env=VPT_DIST_NCCL_STATUS=compiled");
        }
        Err(why) => println!("cargo:rustc-env=VPT_DIST_NCCL_STATUS={why}"),
    }
    build.compile("vpt_dist_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl.is_ok() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    // For this crate's own tests, examples and benches (a consumer binary sets its own rpath).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

/// The include directories the NCCL backend needs, or why it cannot be compiled.
fn nccl_includes(lib: &Path, c10d: &Path) -> Result<Vec<PathBuf>, String> {
    if std::env::var_os("VPT_DIST_NO_NCCL").is_some() {
        return Err("disabled by VPT_DIST_NO_NCCL at build time".into());
    }
    if !lib.join("libtorch_cuda.so").exists() {
        return Err(format!(
            "libtorch at {} is CPU-only (no libtorch_cuda.so)",
            lib.display()
        ));
    }
    if !c10d.join("ProcessGroupNCCL.hpp").exists() {
        return Err("libtorch has no ProcessGroupNCCL.hpp".into());
    }
    let site = lib.join("../..");
    let env_dir = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let cuda_home = env_dir("CUDA_HOME").map(|h| h.join("include"));
    let find = |file: &str, candidates: Vec<Option<PathBuf>>| {
        candidates
            .into_iter()
            .flatten()
            .find(|d| d.join(file).exists())
    };
    let nccl = find(
        "nccl.h",
        vec![
            env_dir("VPT_DIST_NCCL_INCLUDE"),
            Some(site.join("nvidia/nccl/include")),
            cuda_home.clone(),
            Some("/usr/include".into()),
        ],
    )
    .ok_or("nccl.h not found (set VPT_DIST_NCCL_INCLUDE at build time)")?;
    let cuda = find(
        "crt/host_config.h",
        vec![
            env_dir("VPT_DIST_CUDA_INCLUDE"),
            cuda_home,
            Some(site.join("nvidia/cu13/include")),
            Some(site.join("nvidia/cuda_runtime/include")),
            Some("/usr/local/cuda/include".into()),
        ],
    )
    .ok_or(
        "CUDA runtime headers with crt/host_config.h not found (install the CUDA toolkit \
         headers, e.g. PyPI nvidia-cuda-crt, and set VPT_DIST_CUDA_INCLUDE at build time)",
    )?;
    Ok(vec![nccl, cuda])
}
