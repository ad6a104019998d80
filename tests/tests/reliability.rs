//! Replays the bad-input and fault cases of issue 14 against the real `vpt` binary (tiny task
//! unless said): crafted checkpoints, clobbered and shared run directories, interrupted and
//! killed runs, a full disk, truncated plugin files, runaway configs, corrupt checkpoints,
//! NaN metrics, huge names. One test replays them all and keeps a count; each case says what it
//! checks. "Clear error" means: a non-zero exit code (not a signal), a short message naming the
//! thing at fault, and nothing lost.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use vpt_integration::faults::{
    ckpt_dirs, clear_error, lines, run_ok, signal, spawn_long_run, stderr, tiny_run, vpt_bin, MIN,
};
use vpt_integration::{cdylib, scratch_dir, tiny_config_path, tiny_plugin, vpt_command};

// ---- the cases ---------------------------------------------------------------------------

/// 1. A crafted TorchScript checkpoint (tests/fixtures/evil-ot, whose `__setstate__` writes a
///    file when loaded) is refused, never opened, by `eval --checkpoint` and `run --resume`.
fn case_01_crafted_checkpoint_runs_no_code() {
    let root = scratch_dir("rel-01");
    let run = root.join("run");
    run_ok(&mut tiny_run(&run, &["run.steps=1"]));
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    let step = run.join("checkpoints/step-000000001");
    std::fs::create_dir_all(&step).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/evil-ot/tensors.ot");
    std::fs::copy(&fixture, step.join("tensors.ot")).unwrap();
    std::fs::write(step.join("state.json"), r#"{"step":1,"state":{}}"#).unwrap();
    std::fs::write(run.join("checkpoints/LATEST"), "step-000000001").unwrap();
    let marker = root.join("PWNED-by-checkpoint");
    clear_error(
        vpt_command()
            .current_dir(&root)
            .arg("eval")
            .arg(tiny_config_path())
            .arg("--checkpoint")
            .arg(&run),
        &["old TorchScript format"],
        MIN,
    );
    clear_error(
        vpt_command()
            .current_dir(&root)
            .args(["run", "--resume"])
            .arg(&run),
        &["old TorchScript format"],
        MIN,
    );
    assert!(
        !marker.exists(),
        "loading the crafted checkpoint ran its code"
    );
}

/// 2. Inspecting (or searching past) a shared library that is not a vpt plugin does not run its
///    constructors: the dynamic linker never initialises it (`LD_DEBUG=files` would say
///    "calling init"), and inspection says that loading a plugin runs its code.
fn case_02_inspection_runs_no_foreign_code() {
    let candidates = [
        "/lib/x86_64-linux-gnu/libBrokenLocale.so.1",
        "/lib/x86_64-linux-gnu/libanl.so.1",
        "/usr/lib64/libanl.so.1",
        "/lib64/libanl.so.1",
    ];
    let Some(lib) = candidates.iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("case 2 skipped: none of {candidates:?} exists on this system");
        return;
    };
    let o = Command::new(vpt_bin())
        .args(["plugins", "inspect"])
        .arg(lib)
        .env("LD_DEBUG", "files")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not a vpt plugin"), "{err}");
    let name = lib.file_name().unwrap().to_string_lossy();
    assert!(
        !err.lines()
            .any(|l| l.contains("calling init") && l.contains(&*name)),
        "inspection ran {name}'s constructors"
    );
    let o = run_ok(
        vpt_command()
            .args(["plugins", "inspect"])
            .arg(tiny_plugin()),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("a plugin is code"), "{out}");
}

/// 3. A second `vpt run --out D` on an existing run is refused and D is untouched;
///    `--overwrite` replaces it; `--resume` continues it.
fn case_03_existing_run_is_not_clobbered() {
    let root = scratch_dir("rel-03");
    let d = root.join("r");
    run_ok(&mut tiny_run(
        &d,
        &["run.steps=6", "run.checkpoint_every=3"],
    ));
    let before = (lines(&d.join("metrics.jsonl")), ckpt_dirs(&d));
    clear_error(
        &mut tiny_run(&d, &["run.steps=4", "learner.lr=0.1"]),
        &["already holds a run", "--resume", "--overwrite"],
        MIN,
    );
    assert_eq!(before, (lines(&d.join("metrics.jsonl")), ckpt_dirs(&d)));
    run_ok(tiny_run(&d, &["run.steps=4"]).arg("--overwrite"));
    let m = lines(&d.join("metrics.jsonl"));
    assert!(m.last().unwrap().contains("\"step\":4"), "{m:?}");
    assert_eq!(ckpt_dirs(&d), vec!["step-000000004"]);
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&d)
            .args(["--set", "run.steps=5"]),
    );
}

/// 4. A second process on a run directory in use is refused (new run with --overwrite, or
///    --resume), and the first run's log stays one JSON record per line.
fn case_04_concurrent_runs_are_refused() {
    let root = scratch_dir("rel-04");
    let d = root.join("r");
    let mut first = spawn_long_run(&d, &[]);
    clear_error(
        tiny_run(&d, &["run.steps=3"]).arg("--overwrite"),
        &["in use by another vpt process"],
        MIN,
    );
    clear_error(
        vpt_command().args(["run", "--resume"]).arg(&d),
        &["in use by another vpt process"],
        MIN,
    );
    first.kill().unwrap();
    first.wait().unwrap();
    for l in lines(&d.join("metrics.jsonl")) {
        serde_json::from_str::<serde_json::Value>(&l).expect("a garbled metrics line");
    }
}

/// 5. A replacement of `step-N` killed between its two renames (old copy aside, new not yet in
///    place) still resumes: the old copy is found.
fn case_05_interrupted_replacement_resumes() {
    let root = scratch_dir("rel-05");
    let d = root.join("r");
    run_ok(&mut tiny_run(
        &d,
        &["run.steps=4", "run.checkpoint_every=2"],
    ));
    let ck = d.join("checkpoints");
    std::fs::rename(ck.join("step-000000004"), ck.join("step-000000004.old")).unwrap();
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&d)
            .args(["--set", "run.steps=6"]),
    );
    assert!(ckpt_dirs(&d).contains(&"step-000000006".to_string()));
}

/// 6. SIGTERM (and SIGINT) finish the step, checkpoint, exit 130 naming the resume command,
///    even with `checkpoint_every = 0`; the run then resumes. A second signal exits at once.
fn case_06_signals_checkpoint_and_resume() {
    let root = scratch_dir("rel-06");
    let d = root.join("r");
    let child = spawn_long_run(&d, &["run.checkpoint_every=0"]);
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("vpt run --resume"), "{err}");
    let saved = vpt_host::checkpoint::load_latest(&d).unwrap().step;
    run_ok(
        vpt_command()
            .args(["run", "--resume"])
            .arg(&d)
            .args(["--set", &format!("run.steps={}", saved + 2)]),
    );
    // Two SIGINTs in a row during a long step (a huge batch): out at once, with no checkpoint.
    let d2 = root.join("r2");
    let mut child = tiny_run(&d2, &["run.steps=1000000", "task.config.batch_size=400000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    // Wait until the handler is installed: SIGINT (2) shows in SigCgt.
    loop {
        let caught = std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                let hex = s
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))?
                    .trim()
                    .to_string();
                u64::from_str_radix(&hex, 16).ok()
            })
            .is_some_and(|m| m & (1 << 1) != 0);
        if caught {
            break;
        }
        assert!(started.elapsed() < MIN, "the handler was never installed");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-INT");
    signal(&child, "-INT");
    let t = Instant::now();
    let o = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a second SIGINT did not exit at once"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(ckpt_dirs(&d2).is_empty(), "{:?}", ckpt_dirs(&d2));
}

/// 7. A full disk while checkpointing is an error (exit 1 naming the problem), not an abort,
///    and leaves no `.tmp` directory. Needs root for a 1 MiB tmpfs; elsewhere it says so and
///    passes (the checkpoint unit tests still cover the clean-up path).
fn case_07_full_disk_is_an_error() {
    let root = scratch_dir("rel-07");
    let mnt = root.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("case 7 skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    // Leave about 12 KiB: room for config.json and the first metrics, not for a checkpoint.
    std::fs::write(mnt.join("filler"), vec![0u8; (1 << 20) - 12 * 1024]).ok();
    let d = mnt.join("r");
    let r = std::panic::catch_unwind(|| {
        clear_error(
            &mut tiny_run(&d, &["run.steps=20", "run.checkpoint_every=1"]),
            &["No space left on device"],
            MIN,
        )
    });
    let tmp_left: Vec<String> = ckpt_dirs(&d)
        .into_iter()
        .chain(
            std::fs::read_dir(d.join("checkpoints"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().into_string().ok()),
        )
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    Command::new("umount").arg(&mnt).status().unwrap();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
}

/// 8. A truncated `.so` on the plugin path is refused in one line; it does not kill every
///    command with SIGBUS.
fn case_08_truncated_plugin_is_refused() {
    let root = scratch_dir("rel-08");
    let whole = std::fs::read(tiny_plugin()).unwrap();
    std::fs::write(root.join("libx.so"), &whole[..65536]).unwrap();
    // No --plugin: the truncated file comes first on the search path, the built tiny plugin
    // (next to the executable) after it.
    run_ok(
        Command::new(vpt_bin())
            .arg("run")
            .arg(tiny_config_path())
            .args(["--set", "run.steps=2", "--out"])
            .arg(root.join("r"))
            .env("VPT_PLUGIN_PATH", &root),
    );
    clear_error(
        Command::new(vpt_bin())
            .args(["plugins", "inspect"])
            .arg(root.join("libx.so")),
        &["truncated"],
        MIN,
    );
    let o = Command::new(vpt_bin())
        .args(["plugins", "list"])
        .env("VPT_PLUGIN_PATH", &root)
        .output()
        .unwrap();
    assert!(
        o.status.code().is_some(),
        "plugins list died: {:?}",
        o.status
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("truncated"));
}

/// 9. `${VAR}` whose value contains `${VAR}` is expanded once, not forever.
fn case_09_env_expansion_terminates() {
    let root = scratch_dir("rel-09");
    clear_error(
        tiny_run(&root.join("r"), &["run.device=\"${VPT_REL_LOOP}\""])
            .env("VPT_REL_LOOP", "${VPT_REL_LOOP}x"),
        &["run.device", "${VPT_REL_LOOP}x"],
        Duration::from_secs(20),
    );
}

/// 10. Tiny-task and host values are validated naming the field (no C++ stack):
///     negative batch, zero hidden, zero feedback batch, a bad or absent device.
fn case_10_values_are_validated() {
    let root = scratch_dir("rel-10");
    for (i, (set, field)) in [
        ("task.config.batch_size=-4", "batch_size"),
        ("task.config.hidden=0", "hidden"),
        ("task.config.feedback_batch_size=0", "feedback_batch_size"),
        ("run.device=\"gpu0\"", "run.device"),
        ("run.device=\"cuda:77\"", "run.device"),
    ]
    .into_iter()
    .enumerate()
    {
        clear_error(
            &mut tiny_run(&root.join(format!("r{i}")), &[set]),
            &[field],
            MIN,
        );
    }
}

/// 11. The LM stream bounds its buffer and saves it compactly: covered in-crate by
///     `plugins/lm` `data::tests::long_documents_are_bounded_and_the_buffer_saves_compactly`;
///     here, the checkpoint state is written without pretty-printing.
fn case_11_state_is_compact() {
    let root = scratch_dir("rel-11");
    let d = root.join("r");
    run_ok(&mut tiny_run(&d, &["run.steps=2"]));
    let state = std::fs::read_to_string(d.join("checkpoints/step-000000002/state.json")).unwrap();
    assert_eq!(state.lines().count(), 1, "state.json is pretty-printed");
}

/// 12. `--plugin mytiny.so` (a bare name) means ./mytiny.so, not the linker's search path and
///     not silently the built-in copy.
fn case_12_bare_plugin_name_is_the_local_file() {
    let root = scratch_dir("rel-12");
    std::fs::copy(tiny_plugin(), root.join("mytiny.so")).unwrap();
    let o = run_ok(Command::new(vpt_bin()).current_dir(&root).args([
        "--plugin",
        "mytiny.so",
        "plugins",
        "list",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let path = v["plugins"][0]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(path.ends_with("mytiny.so"), "first plugin from {path}: {v}");
    // A named file that cannot be read is an error, not a fall-back to another copy.
    clear_error(
        Command::new(vpt_bin())
            .current_dir(&root)
            .args(["--plugin", "missing.so", "run"])
            .arg(tiny_config_path())
            .args(["--set", "run.steps=1", "--out", "r"]),
        &["missing.so", "no such file"],
        MIN,
    );
}

/// 13. Corrupt checkpoints never load silently: a flipped byte, a counter turned into a string,
///     a truncated file each fall back to the previous intact checkpoint, saying so; with none
///     intact, a clear error.
fn case_13_corrupt_checkpoints_fall_back() {
    let root = scratch_dir("rel-13");
    let d = root.join("r");
    run_ok(&mut tiny_run(
        &d,
        &[
            "run.steps=6",
            "run.checkpoint_every=3",
            "run.keep_checkpoints=3",
        ],
    ));
    let step3 = d.join("checkpoints/step-000000003");
    let step6 = d.join("checkpoints/step-000000006");
    let eval = |ck: &Path| {
        let o = run_ok(
            vpt_command()
                .arg("eval")
                .arg(tiny_config_path())
                .arg("--checkpoint")
                .arg(ck),
        );
        (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o))
    };
    let (at3, _) = eval(&step3);
    let pristine = std::fs::read(step6.join("tensors.safetensors")).unwrap();
    let state = std::fs::read_to_string(step6.join("state.json")).unwrap();
    let mut flipped = pristine.clone();
    let n = flipped.len();
    flipped[n - 5] ^= 0x01;
    let corruptions: [(&str, Vec<u8>, Vec<u8>); 3] = [
        ("checksum mismatch", flipped, state.clone().into_bytes()),
        (
            "state.json:",
            pristine.clone(),
            state
                .replacen("\"meta_steps\":", "\"meta_steps\":\"x\",\"_\":", 1)
                .into_bytes(),
        ),
        (
            "truncated",
            pristine[..n / 2].to_vec(),
            state.clone().into_bytes(),
        ),
    ];
    for (why, tensors, st) in corruptions {
        std::fs::write(step6.join("tensors.safetensors"), &tensors).unwrap();
        std::fs::write(step6.join("state.json"), &st).unwrap();
        let (metrics, err) = eval(&d);
        assert!(err.contains(why) && err.contains("falling back"), "{err}");
        assert_eq!(metrics, at3, "the fall-back did not load step 3");
    }
    std::fs::write(step3.join("state.json"), "{}").unwrap();
    clear_error(
        vpt_command()
            .arg("eval")
            .arg(tiny_config_path())
            .arg("--checkpoint")
            .arg(&d),
        &["no intact checkpoint"],
        MIN,
    );
}

/// 14. A NaN metric is logged (as null), not fatal; `learner.lr=nan` is named as NaN.
fn case_14_nan_metrics_and_values() {
    let root = scratch_dir("rel-14");
    let d = root.join("r");
    // a step size that overflows θ: the final evaluation's losses are NaN
    run_ok(&mut tiny_run(
        &d,
        &["run.steps=3", "learner.lr=1e308", "learner.clip=0"],
    ));
    let last = lines(&d.join("metrics.jsonl")).pop().unwrap_or_default();
    assert!(last.contains("\"feedback_loss\":null"), "{last}");
    clear_error(
        &mut tiny_run(&root.join("r2"), &["learner.lr=nan"]),
        &["`learner.lr`", "NaN"],
        MIN,
    );
}

/// 15. Plugin config errors name the field once: `task.config.top_k`, never
///     `task.config.task.config.top_k` (the LM plugin's own messages carry the prefix).
fn case_15_field_prefix_is_not_repeated() {
    let root = scratch_dir("rel-15");
    let cfg = root.join("lm.toml");
    std::fs::write(
        &cfg,
        "[run]\nsteps = 1\n[task]\nplugin = \"lm\"\nname = \"causal_lm\"\n\
         [task.config]\nmodel = \"tiny_random\"\ntop_k = 1\n",
    )
    .unwrap();
    let err = clear_error(
        vpt_command()
            .arg("--plugin")
            .arg(cdylib("vpt_lm"))
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(root.join("r")),
        &["`task.config.top_k`"],
        MIN,
    );
    assert!(!err.contains("task.config.task.config"), "{err}");
}

/// 16. Resuming a finished run adds nothing; a run whose every meta step was skipped warns;
///     a 10 MB bad name is not echoed whole. (The corrupt vision stage-0 cache and non-UTF-8
///     data lines are covered in-crate: `plugins/vision` stage-0 tests and `plugins/lm`
///     `data::tests::non_utf8_lines_are_named_by_file_and_line`.)
fn case_16_misc() {
    let root = scratch_dir("rel-16");
    let d = root.join("r");
    run_ok(&mut tiny_run(&d, &["run.steps=3"]));
    let before = lines(&d.join("metrics.jsonl"));
    for _ in 0..2 {
        run_ok(vpt_command().args(["run", "--resume"]).arg(&d));
    }
    assert_eq!(before, lines(&d.join("metrics.jsonl")));

    let o = run_ok(&mut tiny_run(
        &root.join("nan"),
        &[
            "run.steps=3",
            "task.config.nan_in=\"feedback\"",
            "task.config.nan_every=1",
        ],
    ));
    assert!(
        stderr(&o).contains("meta steps were skipped"),
        "{}",
        stderr(&o)
    );

    let cfg = root.join("huge.toml");
    let text = std::fs::read_to_string(tiny_config_path())
        .unwrap()
        .replace(
            "name = \"tiny\"",
            &format!("name = \"{}\"", "n".repeat(10 << 20)),
        );
    std::fs::write(&cfg, text).unwrap();
    clear_error(
        vpt_command()
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(root.join("huge")),
        &["task.name"],
        MIN,
    );
}

#[test]
fn every_case_of_issue_14() {
    let cases: [(&str, fn()); 16] = [
        (
            "1 crafted checkpoint runs no code",
            case_01_crafted_checkpoint_runs_no_code,
        ),
        (
            "2 inspection runs no foreign code",
            case_02_inspection_runs_no_foreign_code,
        ),
        (
            "3 existing run not clobbered",
            case_03_existing_run_is_not_clobbered,
        ),
        (
            "4 concurrent runs refused",
            case_04_concurrent_runs_are_refused,
        ),
        (
            "5 interrupted replacement resumes",
            case_05_interrupted_replacement_resumes,
        ),
        (
            "6 signals checkpoint and resume",
            case_06_signals_checkpoint_and_resume,
        ),
        ("7 full disk is an error", case_07_full_disk_is_an_error),
        (
            "8 truncated plugin refused",
            case_08_truncated_plugin_is_refused,
        ),
        (
            "9 env expansion terminates",
            case_09_env_expansion_terminates,
        ),
        ("10 values validated", case_10_values_are_validated),
        ("11 state is compact", case_11_state_is_compact),
        (
            "12 bare plugin name is local",
            case_12_bare_plugin_name_is_the_local_file,
        ),
        (
            "13 corrupt checkpoints fall back",
            case_13_corrupt_checkpoints_fall_back,
        ),
        ("14 NaN metrics and values", case_14_nan_metrics_and_values),
        ("15 field prefix once", case_15_field_prefix_is_not_repeated),
        ("16 misc", case_16_misc),
    ];
    let only = std::env::var("VPT_RELIABILITY_CASE").ok();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if only
            .as_deref()
            .is_some_and(|o| !name.starts_with(&format!("{o} ")))
        {
            continue;
        }
        ran += 1;
        let t = Instant::now();
        match std::panic::catch_unwind(case) {
            Ok(()) => eprintln!("case {name}: ok ({:.1}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!("case {name}: FAILED");
                failed.push(name);
            }
        }
    }
    eprintln!("{} of {ran} cases held", ran - failed.len());
    assert!(failed.is_empty(), "failed: {failed:?}");
}
