//! vpt outside its checkout: `scripts/install.sh PREFIX` (what `make install PREFIX=…` runs after
//! `make build`) installs into a temporary prefix; from a directory outside the repository the
//! installed `vpt` finds its plugins in PREFIX/share/vpt/plugins, runs `compare` on a copy of
//! examples/tiny.toml and on an LM config that reads GSM8K by paths relative to the config file
//! (and one given with `--set`, relative to the working directory), resumes a run from another
//! directory, names a missing file with its field, and `vpt new plugin` scaffolds a designer that
//! builds against the installed SDK and loads.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};
use vpt_integration::{artifact_dirs, scratch_dir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `target/release` (where `cargo build --release --workspace` puts `vpt` and the plugins).
fn release_dir() -> PathBuf {
    artifact_dirs()
        .into_iter()
        .find(|d| d.join("vpt").is_file())
        .expect("target/release/vpt: run `cargo build --release --workspace` first")
}

fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The first `n` lines of the repository's `data/gsm8k/NAME`.
fn gsm8k_head(name: &str, n: usize) -> String {
    let text = std::fs::read_to_string(workspace().join("data/gsm8k").join(name)).unwrap();
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

/// An LM run on the tiny random model; its data paths are relative to this file's directory.
const LM_CONFIG: &str = r#"
[run]
steps = 2
eval_every = 0
threads = 1

[task]
plugin = "lm"
name = "causal_lm"
[task.config]
model = "tiny_random"
seq_len = 32
batch_size = 2
top_k = 8
feedback_batch_size = 2
feedback_max_len = 96
[task.config.unlabeled]
generated_math = false
jsonl = [{ path = "../data/train.jsonl", kind = "gsm8k_jsonl" }]
general_fraction = 0.0
[[task.config.feedback]]
name = "gsm8k"
kind = "gsm8k_jsonl"
path = "../data/train.jsonl"
size = 16
heldout = 4
[task.config.eval]
general_rows = 0
max_new_tokens = 4
bootstrap = 0
[task.config.eval.test]
kind = "gsm8k_jsonl"
path = "../data/test.jsonl"
size = 4

[designer]
name = "topk_soft"
[designer.config]
layers = 1
width = 32
heads = 2

[meta]
period = 1
"#;

#[test]
fn installed_vpt_runs_outside_the_checkout_and_scaffolds_a_plugin_that_loads() {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{:6.1}s] {what}", started.elapsed().as_secs_f64());
    let root = scratch_dir("install");
    assert!(
        !root.starts_with(workspace()),
        "the scratch dir must lie outside the checkout"
    );
    let prefix = root.join("prefix");

    // Install (copies the release build: `make install` = `make build` + this script).
    let target = release_dir().parent().unwrap().to_path_buf();
    run_ok(
        Command::new(workspace().join("scripts/install.sh"))
            .arg(&prefix)
            .env("CARGO_TARGET_DIR", &target),
    );
    let share = prefix.join("share/vpt");
    for f in [
        "bin/vpt",
        "share/vpt/plugins/libvpt_lm.so",
        "share/vpt/plugins/libvpt_vision.so",
        "share/vpt/plugins/libvpt_reweight.so",
        "share/vpt/plugins/libvpt_tiny.so",
        "share/vpt/sdk/Cargo.toml",
        "share/vpt/sdk/src/lib.rs",
        "share/vpt/designer-template/Cargo.toml",
        "share/vpt/designer-template/src/lib.rs",
        "share/vpt/examples/tiny.toml",
        "share/vpt/examples/lm-smollm2.toml",
        "share/vpt/data/gsm8k/train.jsonl",
    ] {
        assert!(prefix.join(f).is_file(), "{f} is not installed");
    }
    lap("installed");

    // The installed vpt, run from a project directory outside the checkout, with no plugin
    // source but its own installation (no VPT_PLUGIN_PATH, an empty user plugin dir).
    let project = root.join("project");
    for d in ["configs", "data"] {
        std::fs::create_dir_all(project.join(d)).unwrap();
    }
    let vpt = |cwd: &Path| {
        let mut c = Command::new(prefix.join("bin/vpt"));
        c.current_dir(cwd)
            .env_remove("VPT_PLUGIN_PATH")
            .env("XDG_DATA_HOME", root.join("xdg"))
            .env_remove("RANK")
            .env_remove("WORLD_SIZE");
        c
    };
    let listing: serde_json::Value =
        serde_json::from_str(&run_ok(vpt(&project).args(["plugins", "list", "--json"]))).unwrap();
    let mut found: Vec<String> = listing["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let path = PathBuf::from(p["path"].as_str().unwrap());
            assert!(path.starts_with(share.join("plugins")), "{listing}");
            p["plugin"].as_str().unwrap().to_string()
        })
        .collect();
    found.sort();
    assert_eq!(found, ["lm", "reweight", "tiny", "vision"], "{listing}");

    // The tiny compare on a copy of examples/tiny.toml.
    std::fs::copy(
        workspace().join("examples/tiny.toml"),
        project.join("configs/tiny.toml"),
    )
    .unwrap();
    run_ok(vpt(&project).args([
        "compare",
        "configs/tiny.toml",
        "--set",
        "run.steps=20",
        "--set",
        "run.eval_every=0",
        "--set",
        "run.checkpoint_every=0",
        "--arms",
        "baseline,v",
        "--seeds",
        "1",
        "--out",
        "runs/tiny",
    ]));
    let r = json(&project.join("runs/tiny/report.json"));
    assert_eq!(
        r["arms"]["v"]["summary"]["metrics"]["meta_steps"]["mean"].as_f64(),
        Some(20.0),
        "{r}"
    );
    lap("tiny compare");

    // An LM compare reading GSM8K: the file's paths are relative to configs/ (from the project
    // directory, `../data` would miss), the --set one to the working directory (from configs/,
    // `data/test.jsonl` would miss).
    std::fs::write(
        project.join("data/train.jsonl"),
        gsm8k_head("train.jsonl", 64),
    )
    .unwrap();
    std::fs::write(project.join("data/test.jsonl"), gsm8k_head("test.jsonl", 8)).unwrap();
    std::fs::write(project.join("configs/lm.toml"), LM_CONFIG).unwrap();
    run_ok(vpt(&project).args([
        "compare",
        "configs/lm.toml",
        "--set",
        "task.config.eval.test.path=data/test.jsonl",
        "--arms",
        "baseline,v",
        "--seeds",
        "1",
        "--out",
        "runs/lm",
    ]));
    let r = json(&project.join("runs/lm/report.json"));
    assert!(
        r["arms"]["v"]["summary"]["metrics"]["pass@1"]["mean"].is_number(),
        "{r}"
    );
    // The run directory records the resolved, absolute paths …
    let saved = json(&project.join("runs/lm/v/seed-0/config.json"));
    let fb = PathBuf::from(
        saved["task"]["config"]["feedback"][0]["path"]
            .as_str()
            .unwrap(),
    );
    assert!(fb.is_absolute(), "{fb:?}");
    assert_eq!(
        fb.canonicalize().unwrap(),
        project.join("data/train.jsonl").canonicalize().unwrap()
    );
    let test = &saved["task"]["config"]["eval"]["test"]["path"];
    assert_eq!(
        test.as_str(),
        project.join("data/test.jsonl").to_str(),
        "{saved}"
    );
    // … so the run resumes from any directory.
    run_ok(
        vpt(&root)
            .args(["run", "--resume"])
            .arg(project.join("runs/lm/v/seed-0"))
            .args(["--set", "run.steps=3"]),
    );
    lap("LM compare and resume");

    // A missing file names the field and the path as resolved.
    let out = output(vpt(&project).args([
        "run",
        "configs/lm.toml",
        "--set",
        "task.config.eval.test.path=nope.jsonl",
        "--out",
        "runs/missing",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("`task.config.eval.test.path`")
            && err.contains(&format!(
                "{}: no such file",
                project.join("nope.jsonl").display()
            )),
        "{err}"
    );

    // `vpt new plugin` depends on the installed SDK and builds against vpt's libtorch.
    run_ok(vpt(&project).args(["new", "plugin", "my_weights"]));
    let crate_dir = project.join("my_weights");
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap()).unwrap();
    let sdk = manifest["dependencies"]["vpt-sdk"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(Path::new(sdk), share.join("sdk").canonicalize().unwrap());
    let cargo_config: toml::Value =
        toml::from_str(&std::fs::read_to_string(crate_dir.join(".cargo/config.toml")).unwrap())
            .unwrap();
    let libtorch = PathBuf::from(cargo_config["env"]["LIBTORCH"].as_str().unwrap());
    assert!(
        libtorch.join("lib/libtorch_cpu.so").is_file(),
        "{libtorch:?}"
    );
    // Built into the workspace's target dir, whose tch and torch-sys are compiled already (the
    // SDK, at its new path, and the plugin compile).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .current_dir(&crate_dir)
            .args(["build", "--release"])
            .env("CARGO_TARGET_DIR", &target),
    );
    let so = target.join("release/libmy_weights.so");
    lap("scaffold built");
    let inspected = run_ok(vpt(&project).args(["plugins", "inspect"]).arg(&so));
    assert!(inspected.contains("my_weights"), "{inspected}");
    run_ok(
        vpt(&project)
            .arg("--plugin")
            .arg(&so)
            .args(["run", "configs/tiny.toml", "--out", "runs/mine"])
            .args(["--set", "designer.plugin=my_weights"])
            .args(["--set", "designer.name=my_weights"])
            .args(["--set", "designer.config={}"])
            .args(["--set", "run.steps=5", "--set", "run.eval_every=0"])
            .args(["--set", "run.checkpoint_every=0"]),
    );
    let summary = json(&project.join("runs/mine/summary.json"));
    assert_eq!(summary["steps"].as_u64(), Some(5), "{summary}");
    lap("scaffolded designer loaded and trained");
    let _ = std::fs::remove_dir_all(&root);
}
