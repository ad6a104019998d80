//! `vpt compare` across interruptions, through the real binary on the tiny task (CPU): a
//! compare stopped by Ctrl-C and SIGTERM and rerun finishes with the metrics of an
//! uninterrupted one; a rerun with another setting is refused naming it (replaced only with
//! `--overwrite`); an arm directory locked by another process is refused and kept; progress
//! lines come every `--log-every` seconds when stderr is a file; and `vpt bench` times the arms
//! in both orders.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};
use vpt_integration::{scratch_dir, tiny_config_path, vpt_command};

/// `vpt compare examples/tiny.toml --out OUT ARGS…`.
fn compare(out: &Path, args: &[&str]) -> Command {
    let mut c = vpt_command();
    c.arg("compare")
        .arg(tiny_config_path())
        .arg("--out")
        .arg(out)
        .args(args);
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every metrics record of a run without its wall-clock `seconds`, as text lines.
fn metrics_without_time(dir: &Path) -> Vec<String> {
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

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// The files of a run directory and their bytes (checkpoints included), to show nothing moved.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

const STEPS: [&str; 8] = [
    "--arms",
    "baseline,v",
    "--set",
    "run.steps=400",
    "--set",
    "run.eval_every=50",
    "--set",
    "run.checkpoint_every=100",
];

/// Starts `cmd` with stderr to `log`, sends `signal` once `arm`'s metrics have 30 lines (some
/// of its steps done), and returns what it said; it must exit 130 naming the command that
/// continues the comparison, with `arm` unfinished.
fn interrupt_in(cmd: &mut Command, out: &Path, arm: &str, signal: &str, log: &Path) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let metrics = out.join(arm).join("seed-0/metrics.jsonl");
    let waited = Instant::now();
    while lines_in(&metrics) < 30 {
        assert!(
            waited.elapsed() < Duration::from_secs(300),
            "the {arm} arm never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "compare ended early");
        std::thread::sleep(Duration::from_millis(2));
    }
    ok(Command::new("kill")
        .args([signal, &child.id().to_string()])
        .stdout(Stdio::null()));
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains("continue the comparison with `") && said.contains(" compare "),
        "the interrupt must name the command that continues it:\n{said}"
    );
    assert!(
        !out.join(arm).join("seed-0/summary.json").exists(),
        "{signal} landed after the {arm} arm finished; the test must stop it mid-arm:\n{said}"
    );
    said
}

/// The step at which `said` (a compare's stderr) resumed `dir`.
fn resumed_at(said: &str, dir: &Path) -> u64 {
    let prefix = format!("resuming {} at step ", dir.display());
    said.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "{} must continue from its checkpoint:\n{said}",
                dir.display()
            )
        })
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_compare_stopped_by_signals_and_rerun_matches_an_uninterrupted_one() {
    let root = scratch_dir("compare-sigterm");
    ok(&mut compare(&root.join("full"), &STEPS));

    let cut = root.join("cut");
    // Ctrl-C inside the first arm, then SIGTERM inside the second, then to the end.
    interrupt_in(
        &mut compare(&cut, &STEPS),
        &cut,
        "baseline",
        "-INT",
        &root.join("1.log"),
    );
    let said = interrupt_in(
        &mut compare(&cut, &STEPS),
        &cut,
        "v",
        "-TERM",
        &root.join("2.log"),
    );
    assert!(
        resumed_at(&said, &cut.join("baseline/seed-0")) > 0,
        "{said}"
    );
    assert!(cut.join("baseline/seed-0/summary.json").exists(), "{said}");

    let said = stderr(&ok(&mut compare(&cut, &STEPS)));
    assert!(
        said.contains("[baseline seed 0] already finished"),
        "{said}"
    );
    assert!(resumed_at(&said, &cut.join("v/seed-0")) > 0, "{said}");
    for arm in ["baseline", "v"] {
        let (full, cut) = (
            metrics_without_time(&root.join("full").join(arm).join("seed-0")),
            metrics_without_time(&cut.join(arm).join("seed-0")),
        );
        assert!(full.len() > 400, "train and eval records expected");
        assert_eq!(full, cut, "{arm}: the interrupted compare diverged");
    }
}

#[test]
fn a_rerun_with_another_setting_is_refused_naming_it_unless_overwrite() {
    let root = scratch_dir("compare-changed");
    let out = root.join("cmp");
    let args = ["--arms", "baseline", "--steps", "20"];
    ok(&mut compare(&out, &args));
    let dir = out.join("baseline/seed-0");
    let before = snapshot(&dir);

    let changed = [&args[..], &["--set", "learner.lr=0.01"]].concat();
    let refused = run(&mut compare(&out, &changed));
    let said = stderr(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("learner.lr is 0.003 there, 0.01 now") && said.contains("--overwrite"),
        "the refusal must name the field, both values and --overwrite:\n{said}"
    );
    assert_eq!(snapshot(&dir), before, "a refused compare changed the run");

    let overwrite = [&changed[..], &["--overwrite"]].concat();
    let said = stderr(&ok(&mut compare(&out, &overwrite)));
    assert!(said.contains("replacing it (--overwrite)"), "{said}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["learner"]["lr"], 0.01);
    let train_records = metrics_without_time(&dir)
        .iter()
        .filter(|l| l.contains("pretrain_loss"))
        .count();
    assert_eq!(train_records, 20, "the replaced run starts afresh");
}

#[test]
fn an_arm_directory_locked_by_another_process_is_refused_and_kept() {
    let root = scratch_dir("compare-locked");
    let out = root.join("cmp");
    let args = ["--arms", "baseline", "--steps", "10"];
    ok(&mut compare(&out, &args));
    let dir = out.join("baseline/seed-0");
    let before = snapshot(&dir);
    // This test process holds the run's lock, as a `vpt run --resume` of it would.
    let lock = vpt_host::rundir::RunDir::resume(&dir).unwrap();
    for extra in [&[][..], &["--set", "learner.lr=0.01", "--overwrite"][..]] {
        let refused = run(&mut compare(&out, &[&args[..], extra].concat()));
        let said = stderr(&refused);
        assert!(!refused.status.success(), "{said}");
        assert!(
            said.contains("in use by another vpt process") && said.contains(".lock"),
            "the refusal must name the lock:\n{said}"
        );
        assert_eq!(snapshot(&dir), before, "a locked run directory was changed");
    }
    drop(lock);
}

/// `HH:MM:SS` of a progress line's leading `YYYY-MM-DDTHH:MM:SSZ`, in seconds.
fn clock(line: &str) -> Option<u64> {
    let t = line.get(11..19)?;
    let parts: Vec<u64> = t
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (line.get(19..20) == Some("Z") && parts.len() == 3)
        .then(|| parts[0] * 3600 + parts[1] * 60 + parts[2])
}

#[test]
fn progress_lines_come_every_log_every_seconds_when_stderr_is_a_file() {
    let root = scratch_dir("compare-progress");
    let log = std::fs::File::create(root.join("log")).unwrap();
    // A 4-second charged budget: several 1-second ticks, however fast the machine.
    let out = compare(
        &root.join("cmp"),
        &[
            "--arms",
            "baseline",
            "--wall-clock",
            "4",
            "--log-every",
            "1",
            "--set",
            "run.eval_every=0",
            "--set",
            "run.checkpoint_every=0",
        ],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .status()
    .unwrap();
    let said = std::fs::read_to_string(root.join("log")).unwrap();
    assert!(out.success(), "{said}");
    let ticks: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("[baseline seed 0] step "))
        .collect();
    assert!(ticks.len() >= 3, "expected a line a second:\n{said}");
    for l in &ticks {
        for field in ["s charged", "elapsed ", "ETA ", "loss ", "V "] {
            assert!(l.contains(field), "`{field}` missing from `{l}`");
        }
    }
    let times: Vec<u64> = ticks
        .iter()
        .map(|l| clock(l).unwrap_or_else(|| panic!("no UTC timestamp on `{l}`")))
        .collect();
    for w in times.windows(2) {
        let gap = (w[1] + 86_400 - w[0]) % 86_400;
        assert!(gap <= 3, "{gap}s between progress lines:\n{said}");
    }
    assert!(
        said.contains("[baseline seed 0] evaluating task `tiny` (all examples) at step 0")
            && said.contains("[baseline seed 0] evaluated at step 0 in "),
        "evaluations must be announced with their duration:\n{said}"
    );
}

#[test]
fn bench_repeats_time_the_arms_in_both_orders() {
    let bench = |json: bool| {
        let mut c = vpt_command();
        c.arg("bench").arg(tiny_config_path()).args([
            "--steps",
            "2",
            "--warmup",
            "1",
            "--period",
            "1",
            "--repeats",
            "2",
        ]);
        if json {
            c.arg("--json");
        }
        String::from_utf8(ok(&mut c).stdout).unwrap()
    };
    let text = bench(false);
    for want in [
        "repeat 1 (baseline, then v): ",
        "repeat 2 (v, then baseline): ",
        "the median of 2 repeats",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    let v: serde_json::Value = serde_json::from_str(&bench(true)).unwrap();
    let orders: Vec<serde_json::Value> = v["repeats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order"].clone())
        .collect();
    assert_eq!(
        orders,
        vec![
            serde_json::json!(["baseline", "v"]),
            serde_json::json!(["v", "baseline"])
        ]
    );
    let ratios: Vec<f64> = v["repeats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ratio"].as_f64().unwrap())
        .collect();
    let median = v["median_ratio"].as_f64().unwrap();
    assert!(
        (median - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["arms"][0]["timed_steps"], 4);
}
