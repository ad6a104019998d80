//! Exact resume and crash safety of checkpoints, through the real `vpt` binary: an
//! interrupted-and-resumed run reproduces the uninterrupted run's metrics exactly (CPU), and a
//! run killed with SIGKILL mid-checkpoint leaves a loadable checkpoint behind.

use std::{process::Command, time::Duration};
use vpt_integration::{scratch_dir, tiny_config_path, vpt_command};

/// Every metrics record without its timing fields, as text lines.
fn metrics_without_time(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.to_string()
        })
        .collect()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn interrupted_and_resumed_run_reproduces_the_uninterrupted_metrics() {
    let root = scratch_dir("resume");
    let common = [
        "--set",
        "run.steps=60",
        "--set",
        "run.checkpoint_every=20",
        "--set",
        "run.eval_every=10",
    ];
    run_ok(
        vpt_command()
            .arg("run")
            .arg(tiny_config_path())
            .args(common)
            .arg("--out")
            .arg(root.join("full")),
    );
    // Interrupted after step 30: the last checkpoint is at 20; the resumed run redoes 21..30.
    run_ok(
        vpt_command()
            .arg("run")
            .arg(tiny_config_path())
            .args(common)
            .arg("--out")
            .arg(root.join("cut"))
            .args(["--halt-after", "30"]),
    );
    run_ok(
        vpt_command()
            .arg("run")
            .arg("--resume")
            .arg(root.join("cut")),
    );
    let (full, cut) = (
        metrics_without_time(&root.join("full")),
        metrics_without_time(&root.join("cut")),
    );
    assert!(
        full.len() > 60,
        "train and eval records expected, got {}",
        full.len()
    );
    assert_eq!(full, cut, "resumed run diverged from the uninterrupted one");
}

#[test]
fn sigkill_during_checkpointing_leaves_a_loadable_checkpoint() {
    let root = scratch_dir("sigkill");
    for (i, delay_ms) in [350u64, 500, 650, 800].into_iter().enumerate() {
        let dir = root.join(format!("run{i}"));
        // A checkpoint after every step: the kill very likely lands inside a write.
        let mut child = vpt_command()
            .arg("run")
            .arg(tiny_config_path())
            .args([
                "--set",
                "run.steps=100000",
                "--set",
                "run.checkpoint_every=1",
                "--set",
                "run.keep_checkpoints=2",
            ])
            .arg("--out")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        match vpt_host::checkpoint::load_latest(&dir) {
            Ok(c) => assert!(c.step >= 1 && !c.tensors.is_empty()),
            Err(e) => assert!(
                e.to_string().contains("no checkpoint found"),
                "unloadable checkpoint: {e}"
            ),
        }
        // And the run resumes from it.
        if vpt_host::checkpoint::load_latest(&dir).is_ok() {
            run_ok(
                vpt_command()
                    .arg("run")
                    .arg("--resume")
                    .arg(&dir)
                    .args(["--set", "run.steps=1"]),
            );
        }
    }
}
