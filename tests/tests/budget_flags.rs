//! `--steps` / `--wall-clock` on `run`, `compare` and `bench`, and the TensorBoard event file
//! each run directory gets (one per arm and seed under `compare`).

use vpt_integration::{scratch_dir, tiny_config_path, vpt_command};

fn run_ok(args: &[&str], dir: &std::path::Path) -> String {
    let out = vpt_command().args(args).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "vpt {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn steps_of(dir: &std::path::Path) -> u64 {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    s["steps"].as_u64().unwrap()
}

fn has_events(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
            && e.metadata().unwrap().len() > 0
    })
}

#[test]
fn budget_flags_replace_the_configs_budget() {
    let dir = scratch_dir("budget-flags");
    let config = tiny_config_path();
    let config = config.to_str().unwrap();
    // examples/tiny.toml sets run.steps = 300.
    let run = dir.join("run");
    run_ok(&["run", config, "--steps", "7", "--out"], &run);
    assert_eq!(steps_of(&run), 7);
    assert!(has_events(&run));
    // --wall-clock alone replaces run.steps: a tiny budget stops after very few steps.
    let wall = dir.join("wall");
    run_ok(&["run", config, "--wall-clock", "0.05", "--out"], &wall);
    assert!((1..300).contains(&steps_of(&wall)), "{}", steps_of(&wall));
    // compare: every arm and seed runs the flag's budget and has its own event file.
    let cmp = dir.join("cmp");
    run_ok(
        &[
            "compare",
            config,
            "--arms",
            "baseline,v",
            "--seeds",
            "2",
            "--steps",
            "4",
            "--out",
        ],
        &cmp,
    );
    for arm in ["baseline", "v"] {
        for seed in [0, 1] {
            let d = cmp.join(arm).join(format!("seed-{seed}"));
            assert_eq!(steps_of(&d), 4, "{}", d.display());
            assert!(has_events(&d), "{}", d.display());
        }
    }
    // bench: --wall-clock caps the timed steps of each arm.
    let out = vpt_command()
        .args([
            "bench",
            config,
            "--steps",
            "1000000",
            "--warmup",
            "0",
            "--wall-clock",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("| v |"));
    // Bad values name the flag.
    let out = vpt_command()
        .args(["run", config, "--steps", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--steps"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
