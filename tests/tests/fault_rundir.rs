//! Run directories, checkpoints, export targets, signals and symbolic links under faults, each
//! case against the real `vpt` binary (the tiny task unless said; the LM's `tiny_random` model
//! where the case needs its export or its token ids): nothing a user made is lost, nothing is
//! written outside the named directories, and a crafted file is refused naming the file and
//! the field.

use serde_json::{json, Value};
use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};
use vpt_integration::faults::{
    ckpt_dirs, clear_error, lines, run_ok, signal, spawn_long_run, stderr, tiny_run, MIN,
};
use vpt_integration::{cdylib, scratch_dir, vpt_command};
use vpt_sdk::tensor_file::FileDigest;

// ---- helpers -------------------------------------------------------------------------------

/// The JSON lines of `run/metrics.jsonl`.
fn records(run: &Path) -> Vec<Value> {
    lines(&run.join("metrics.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{step:09}"))
}

/// Edits `state.json` of checkpoint `dir` and re-signs its manifest, as someone who can write
/// the run directory could: the checkpoint passes its integrity check.
fn edit_state_resigned(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let p = dir.join("state.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut doc);
    let bytes = serde_json::to_vec(&doc).unwrap();
    std::fs::write(&p, &bytes).unwrap();
    let m = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    manifest["files"]["state.json"] = serde_json::to_value(FileDigest::of(&bytes)).unwrap();
    std::fs::write(&m, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// `vpt` with the LM plugin on its search path too.
fn vpt_lm() -> Command {
    let mut c = vpt_command();
    c.arg("--plugin").arg(cdylib("vpt_lm"));
    c
}

/// A finished run of the LM's `tiny_random` model (`steps` steps, a checkpoint every step)
/// with `task` merged into its task config; returns the run directory.
fn lm_run(root: &Path, steps: u64, task: Value) -> PathBuf {
    let mut cfg = serde_json::to_value(vpt_lm::task::CausalLmConfig::tiny()).unwrap();
    if let (Some(c), Value::Object(extra)) = (cfg.as_object_mut(), task) {
        c.extend(extra);
    }
    let doc = json!({
        "run": {"steps": steps, "threads": 2, "eval_limit": 2, "checkpoint_every": 1},
        "task": {"plugin": "lm", "name": "causal_lm", "config": cfg},
    });
    let config = root.join("lm.toml");
    let doc = vpt_host::config::json_to_toml(doc).unwrap();
    std::fs::write(&config, toml::to_string(&doc).unwrap()).unwrap();
    let run = root.join("lm-run");
    run_ok(vpt_lm().arg("run").arg(&config).arg("--out").arg(&run));
    run
}

/// `vpt export RUN ARGS --out OUT` (LM plugin on the path).
fn export(run: &Path, out: &Path, args: &[&str]) -> Command {
    let mut c = vpt_lm();
    c.arg("export").arg(run).args(args).arg("--out").arg(out);
    c
}

// ---- losses ----------------------------------------------------------------------------------

/// The keep policy counts only intact checkpoints: with the newest one corrupt, a resume that
/// keeps one checkpoint keeps the one it just wrote, and the run can be resumed again.
#[test]
fn keep_policy_never_deletes_the_only_intact_checkpoint() {
    let root = scratch_dir("fr-keep");
    let run = root.join("r");
    run_ok(&mut tiny_run(
        &run,
        &["run.steps=30", "run.checkpoint_every=5"],
    ));
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let t = step_dir(&run, 30).join("tensors.safetensors");
    let mut bytes = std::fs::read(&t).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&t, bytes).unwrap();
    run_ok(vpt_command().args(["run", "--resume"]).arg(&run).args([
        "--set",
        "run.keep_checkpoints=1",
        "--steps",
        "28",
    ]));
    assert!(
        ckpt_dirs(&run).contains(&"step-000000028".to_string()),
        "the checkpoint just written was deleted: {:?}",
        ckpt_dirs(&run)
    );
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--steps", "29"]),
    );
}

/// A `${…}` that the first run kept literal (it came from an environment variable) is not
/// expanded again on resume.
#[test]
fn resume_does_not_expand_a_saved_value_again() {
    let root = scratch_dir("fr-expand");
    let run = root.join("r");
    run_ok(
        tiny_run(
            &run,
            &[
                "run.steps=4",
                "run.checkpoint_every=2",
                "task.config.nan_in=\"${VPT_FR_X}\"",
            ],
        )
        .args(["--halt-after", "2"])
        .env("VPT_FR_X", "a${VPT_FR_Z}b")
        .env_remove("VPT_FR_Z"),
    );
    let saved = |run: &Path| -> Value {
        let c: Value =
            serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
        c["task"]["config"]["nan_in"].clone()
    };
    assert_eq!(saved(&run), "a${VPT_FR_Z}b");
    // VPT_FR_Z unset: a second expansion would refuse the run
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--steps", "3", "--halt-after", "3"])
            .env_remove("VPT_FR_Z"),
    );
    // VPT_FR_Z set: a second expansion would silently change the value (saved on resume)
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--steps", "4"])
            .env("VPT_FR_Z", "SURPRISE"),
    );
    assert_eq!(saved(&run), "a${VPT_FR_Z}b");
}

/// SIGHUP (a closed terminal) stops a run like SIGTERM: a checkpoint, exit 130 and the resume
/// command; the run then resumes.
#[test]
fn sighup_checkpoints_and_names_the_resume_command() {
    let root = scratch_dir("fr-hup");
    let run = root.join("r");
    let child = spawn_long_run(&run, &["run.checkpoint_every=0"]);
    signal(&child, "-HUP");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{:?}\n{err}", o.status);
    assert!(err.contains("vpt run --resume"), "{err}");
    assert!(!ckpt_dirs(&run).is_empty(), "no checkpoint after SIGHUP");
    let step: u64 = ckpt_dirs(&run).last().unwrap()[5..].parse().unwrap();
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--steps", &(step + 2).to_string()]),
    );
}

/// Every shipped config checkpoints during the run, not only at its end.
#[test]
fn shipped_configs_checkpoint_during_the_run() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let template = examples.join("designer-template");
    let mut seen = 0;
    let configs = [&examples, &template]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap());
    for e in configs {
        let p = e.unwrap().path();
        // run configs only: the template's Cargo.toml is a TOML file too
        if p.extension().is_none_or(|x| x != "toml") || p.ends_with("Cargo.toml") {
            continue;
        }
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let every = doc["run"]
            .get("checkpoint_every")
            .and_then(toml::Value::as_integer)
            .unwrap_or(0);
        let steps = doc["run"].get("steps").and_then(toml::Value::as_integer);
        assert!(
            every > 0 && steps.is_none_or(|s| every < s),
            "{}: run.checkpoint_every = {every} (steps {steps:?}): an interrupted run would \
             lose all of it",
            p.display()
        );
        seen += 1;
    }
    assert!(seen >= 7, "found {seen} example and template configs");
}

/// `export RUN --out RUN` (or a directory inside it) is refused, and the run still resumes.
#[test]
fn export_into_the_run_directory_is_refused() {
    let root = scratch_dir("fr-export-self");
    let run = lm_run(&root, 1, json!({}));
    let before = std::fs::read(run.join("config.json")).unwrap();
    for out in [run.clone(), run.join("export")] {
        clear_error(
            &mut export(&run, &out, &["--format", "hf"]),
            &["--out", "inside the run directory"],
            MIN,
        );
    }
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), before);
    assert!(!run.join("export").exists());
}

/// Export into a non-empty `--out` is refused naming what it holds, unless `--overwrite`.
#[test]
fn export_into_a_non_empty_directory_needs_overwrite() {
    let root = scratch_dir("fr-export-full");
    let run = lm_run(&root, 1, json!({}));
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), "mine").unwrap();
    clear_error(
        &mut export(&run, &out, &["--format", "hf"]),
        &["is not empty", "config.json", "--overwrite"],
        MIN,
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        "mine"
    );
    run_ok(&mut export(&run, &out, &["--format", "hf", "--overwrite"]));
    assert_ne!(
        std::fs::read_to_string(out.join("config.json")).unwrap(),
        "mine"
    );
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".vpt")),
        "the staging directory was left behind"
    );
}

// ---- symbolic links ----------------------------------------------------------------------------

/// A dangling `metrics.jsonl` link in a fresh `--out` is refused by name; nothing is written
/// where it points.
#[test]
fn a_metrics_link_in_a_new_run_is_refused() {
    let root = scratch_dir("fr-link-new");
    let run = root.join("r");
    std::fs::create_dir_all(&run).unwrap();
    let target = root.join("outside.jsonl");
    symlink(&target, run.join("metrics.jsonl")).unwrap();
    for overwrite in [false, true] {
        let mut c = tiny_run(&run, &["run.steps=2"]);
        if overwrite {
            c.arg("--overwrite");
        }
        clear_error(&mut c, &["metrics.jsonl", "symbolic link"], MIN);
    }
    assert!(!target.exists(), "vpt wrote through the link");
}

/// A `metrics.jsonl` replaced by a link before `--resume` is refused by name.
#[test]
fn a_metrics_link_on_resume_is_refused() {
    let root = scratch_dir("fr-link-resume");
    let run = root.join("r");
    run_ok(tiny_run(&run, &["run.steps=4", "run.checkpoint_every=2"]).args(["--halt-after", "2"]));
    std::fs::remove_file(run.join("metrics.jsonl")).unwrap();
    let target = root.join("outside.jsonl");
    symlink(&target, run.join("metrics.jsonl")).unwrap();
    clear_error(
        vpt_command().args(["run", "--resume"]).arg(&run),
        &["metrics.jsonl", "symbolic link"],
        MIN,
    );
    assert!(!target.exists(), "vpt wrote through the link");
}

/// A `.lock` link is refused; its target is not created.
#[test]
fn a_lock_link_is_refused() {
    let root = scratch_dir("fr-link-lock");
    let run = root.join("r");
    std::fs::create_dir_all(&run).unwrap();
    let target = root.join("created-by-vpt");
    symlink(&target, run.join(".lock")).unwrap();
    clear_error(
        &mut tiny_run(&run, &["run.steps=2"]),
        &[".lock", "symbolic link"],
        MIN,
    );
    assert!(!target.exists(), "vpt created the link's target");
}

/// Links among `--out`'s files are refused, also with `--overwrite`; nothing is written
/// through them.
#[test]
fn export_refuses_links_in_out() {
    let root = scratch_dir("fr-link-export");
    let run = lm_run(&root, 1, json!({}));
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let target = root.join("victim.json");
    std::fs::write(&target, "precious").unwrap();
    symlink(&target, out.join("config.json")).unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut c = export(&run, &out, &["--format", "hf"]);
        c.args(extra);
        clear_error(&mut c, &["config.json", "symbolic link"], MIN);
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

// ---- crafted, re-signed checkpoints ------------------------------------------------------------

/// Token ids outside the vocabulary in a re-signed LM checkpoint are refused naming the file
/// and the field, not a libtorch index error.
#[test]
fn resigned_token_ids_out_of_range_are_refused() {
    let root = scratch_dir("fr-token-ids");
    let run = lm_run(&root, 2, json!({}));
    std::fs::remove_file(run.join("summary.json")).unwrap();
    edit_state_resigned(&step_dir(&run, 2), |doc| {
        doc["state"]["task"]["buffer"] =
            json!({"ids": [1_000_000_000_i64, 5], "loss_runs": [0, 2]});
    });
    clear_error(
        vpt_lm()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--steps", "3"]),
        &["state.json", "state.task.buffer", "token id 1000000000"],
        MIN,
    );
}

/// A re-signed `state.seconds = -1e308` is refused naming the field (it would make a
/// `--wall-clock` run endless).
#[test]
fn resigned_negative_seconds_are_refused() {
    let root = scratch_dir("fr-seconds");
    let run = root.join("r");
    run_ok(tiny_run(&run, &["run.steps=4", "run.checkpoint_every=2"]).args(["--halt-after", "2"]));
    edit_state_resigned(&step_dir(&run, 2), |doc| {
        doc["state"]["seconds"] = json!(-1e308);
    });
    clear_error(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&run)
            .args(["--wall-clock", "5"]),
        &["state.json", "state.seconds"],
        MIN,
    );
}

// ---- silent ------------------------------------------------------------------------------------

/// A run stopped after its final evaluation and checkpoint but before `summary.json` is
/// finished by `--resume` without a second final evaluation.
#[test]
fn resume_before_summary_does_not_evaluate_twice() {
    let root = scratch_dir("fr-summary");
    let run = root.join("r");
    run_ok(&mut tiny_run(&run, &["run.steps=3"]));
    std::fs::remove_file(run.join("summary.json")).unwrap();
    run_ok(vpt_command().args(["run", "--resume"]).arg(&run));
    let finals = records(&run)
        .iter()
        .filter(|r| r["kind"] == "eval" && r["step"] == 3)
        .count();
    assert_eq!(finals, 1, "{:?}", records(&run));
    assert!(run.join("summary.json").exists());
}

/// `--steps` given to `--resume` is saved, so the resume command an interrupt prints later
/// continues to that budget instead of ending the run early.
#[test]
fn budget_given_on_resume_is_saved() {
    let root = scratch_dir("fr-budget");
    let run = root.join("r");
    run_ok(tiny_run(&run, &["run.steps=6", "run.checkpoint_every=2"]).args(["--halt-after", "2"]));
    run_ok(vpt_command().args(["run", "--resume"]).arg(&run).args([
        "--steps",
        "12",
        "--halt-after",
        "4",
    ]));
    let o = run_ok(vpt_command().args(["run", "--resume"]).arg(&run));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["steps"], 12, "{summary}");
}

/// `--overwrite` removes the old run's TensorBoard file too.
#[test]
fn overwrite_removes_the_old_event_file() {
    let root = scratch_dir("fr-events");
    let run = root.join("r");
    run_ok(&mut tiny_run(&run, &["run.steps=3"]));
    run_ok(tiny_run(&run, &["run.steps=2"]).arg("--overwrite"));
    let events: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
}

/// A run whose every learner step was skipped (NaN loss) says so.
#[test]
fn a_run_that_never_trained_warns() {
    let root = scratch_dir("fr-skipped");
    let run = root.join("r");
    let o = run_ok(&mut tiny_run(
        &run,
        &[
            "run.steps=3",
            "task.config.nan_in=\"pretrain\"",
            "task.config.nan_every=1",
        ],
    ));
    let err = stderr(&o);
    assert!(
        err.contains("all 3 learner steps were skipped"),
        "no warning:\n{err}"
    );
}

// ---- export requests -------------------------------------------------------------------------

/// A bad `--format` / `--dtype` is refused before the task is built (here the task could not
/// be built at all: its saved config names a field this plugin does not have).
#[test]
fn bad_export_format_is_refused_before_building() {
    let root = scratch_dir("fr-format");
    let run = lm_run(&root, 1, json!({}));
    let p = run.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["task"]["config"]["not_a_field"] = json!(1);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = root.join("x");
    clear_error(
        &mut export(&run, &out, &["--format", "onnx"]),
        &["--format", "onnx", "hf"],
        MIN,
    );
    clear_error(
        &mut export(&run, &out, &["--format", "gguf", "--dtype", "f64"]),
        &["--dtype", "f64", "q8_0"],
        MIN,
    );
}

/// `--adapter` on a run without LoRA is refused before anything is written.
#[test]
fn adapter_without_lora_writes_nothing() {
    let root = scratch_dir("fr-adapter");
    let run = lm_run(&root, 1, json!({}));
    let out = root.join("x");
    clear_error(
        &mut export(&run, &out, &["--format", "hf", "--adapter"]),
        &["--adapter", "LoRA"],
        MIN,
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "written before refusing: {left:?}");
}
