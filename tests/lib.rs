//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

pub mod faults;

/// The directories a test binary looks in for built cdylibs: its own (`target/<profile>/deps`,
/// where dev-dependency cdylibs land) and the one above (where `cargo build --workspace`
/// uplifts them).
pub fn artifact_dirs() -> Vec<PathBuf> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    let mut dirs = vec![dir.clone()];
    if dir.file_name().is_some_and(|n| n == "deps") {
        dirs.extend(dir.parent().map(Path::to_path_buf));
    }
    dirs
}

/// The built cdylib of crate `krate` (e.g. `vpt_tiny` for `libvpt_tiny.so`); panics with the
/// command to run when it has not been built.
pub fn cdylib(krate: &str) -> PathBuf {
    let file = format!("lib{krate}.so");
    let dirs = artifact_dirs();
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            panic!(
                "{file} is not built (looked in {}): run `cargo build --release --workspace` first",
                looked.join(", ")
            )
        })
}

/// The tiny plugin's cdylib.
pub fn tiny_plugin() -> PathBuf {
    cdylib("vpt_tiny")
}

/// A fresh, empty scratch directory under the system temp dir, unique to this process and `tag`.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpt-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a scratch dir");
    d
}

/// Resident set size of this process in KiB (from `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// `target/<profile>/vpt` with the tiny plugin on its search path and no data-parallel
/// variables inherited.
pub fn vpt_command() -> std::process::Command {
    let bin = artifact_dirs()
        .into_iter()
        .map(|d| d.join("vpt"))
        .find(|p| p.is_file())
        .expect("target/release/vpt: run `cargo build --release --workspace` first");
    let mut c = std::process::Command::new(bin);
    // from the repository root: the tests name configs as examples/… (the configs' own paths
    // are relative to each config file, so any directory would do for those)
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .arg("--plugin")
        .arg(tiny_plugin())
        .env_remove("RANK")
        .env_remove("WORLD_SIZE");
    c
}

/// `examples/tiny.toml`.
pub fn tiny_config_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/tiny.toml"
    ))
}

pub use faults::{clear_error, tiny_run};
