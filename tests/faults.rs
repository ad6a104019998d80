//! Helpers of the fault tests (tests/tests/reliability.rs, tests/tests/fault_rundir.rs): tiny
//! runs against the real `vpt` binary, and what "a clear error" means.

use crate::{artifact_dirs, tiny_config_path, vpt_command};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `vpt` binary itself (no `--plugin` added).
pub fn vpt_bin() -> PathBuf {
    artifact_dirs()
        .into_iter()
        .map(|d| d.join("vpt"))
        .find(|p| p.is_file())
        .expect("target/release/vpt: run `cargo build --release --workspace` first")
}

/// `vpt run examples/tiny.toml --out OUT` with `--set` for each of `sets`.
pub fn tiny_run(out: &Path, sets: &[&str]) -> Command {
    let mut c = vpt_command();
    c.arg("run").arg(tiny_config_path()).arg("--out").arg(out);
    for s in sets {
        c.args(["--set", s]);
    }
    c
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cmd` and asserts that it succeeded, showing its stderr when not.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("spawning vpt");
    assert!(o.status.success(), "{cmd:?} failed:\n{}", stderr(&o));
    o
}

/// Runs `cmd` (killed after `limit`) and checks it failed cleanly: an exit code of 1, not a
/// signal or an abort, within the time limit, with a short message containing every needle.
pub fn clear_error(cmd: &mut Command, needles: &[&str], limit: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning vpt");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waiting").is_some() {
            break;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("{cmd:?} hung (killed after {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().expect("collecting output");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{cmd:?}: {:?}\n{err}", o.status);
    for n in needles {
        assert!(err.contains(n), "{cmd:?}: `{n}` not in:\n{err}");
    }
    assert!(
        err.lines().count() <= 6 && err.len() < 4000,
        "{cmd:?}: message too long ({} lines, {} bytes):\n{}",
        err.lines().count(),
        err.len(),
        &err[..err.len().min(2000)]
    );
    err
}

/// The lines of the text file `p` (none when it cannot be read).
pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The names of the `step-*` directories in `run/checkpoints`, sorted.
pub fn ckpt_dirs(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The time limit of most cases.
pub const MIN: Duration = Duration::from_secs(60);

/// Spawns a long tiny run on `d` and waits until it has logged (and so holds its lock and has
/// its signal handlers installed).
pub fn spawn_long_run(d: &Path, sets: &[&str]) -> std::process::Child {
    let mut c = tiny_run(d, &[&["run.steps=1000000"], sets].concat());
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while lines(&d.join("metrics.jsonl")).len() < 3 {
        assert!(started.elapsed() < MIN, "the run never started logging");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Sends `sig` (e.g. `-TERM`) to `child` with kill(1).
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}
