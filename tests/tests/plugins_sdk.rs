//! Writing plugins against the SDK alone: the designer template (built outside the workspace)
//! loads into the unchanged `vpt` and trains, `vpt new plugin` scaffolds exactly the template,
//! the `reweight` designer beats the baseline on the tiny task through `vpt compare`, and the
//! SDK's testing harness passes on plugins loaded through the host loader.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};
use vpt_host::loader::{Plugins, SearchPath};
use vpt_integration::{artifact_dirs, cdylib, scratch_dir, tiny_plugin};
use vpt_sdk::{
    testing::{check_hypergradient, check_invariants, InvariantOptions},
    BuildContext, Designer, Task,
};

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

fn vpt() -> Command {
    Command::new(release_dir().join("vpt"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest modification time of the files under `path`.
fn newest(path: &Path) -> SystemTime {
    if path.is_dir() {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| newest(&e.unwrap().path()))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        path.metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The designer template's cdylib. `make build` builds it into the workspace's target dir
/// (`cargo build --release --manifest-path examples/designer-template/Cargo.toml --target-dir
/// target`, ~12 s as it reuses the workspace's dependencies); that file is used when it is newer
/// than the template's and the SDK's sources. Otherwise it is built here into its own target dir
/// (`target/template`: cargo running inside `cargo test` on the same target dir would wait
/// forever for the build-dir lock), which compiles torch-sys once (minutes).
fn template_plugin() -> PathBuf {
    let ws = workspace();
    let sources = [
        "examples/designer-template/Cargo.toml",
        "examples/designer-template/build.rs",
        "examples/designer-template/src",
        "sdk/Cargo.toml",
        "sdk/src",
    ];
    let stamp = sources.iter().map(|s| newest(&ws.join(s))).max().unwrap();
    let prebuilt = release_dir().join("libdesigner_template.so");
    if newest(&prebuilt) > stamp {
        return prebuilt;
    }
    let target = release_dir().parent().unwrap().join("template");
    eprintln!(
        "{} is missing or older than its sources: building it into {}",
        prebuilt.display(),
        target.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_ok(
        Command::new(cargo)
            .args(["build", "--release", "--manifest-path"])
            .arg(ws.join("examples/designer-template/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target),
    );
    target.join("release/libdesigner_template.so")
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn metric(report: &serde_json::Value, arm: &str, name: &str) -> f64 {
    report["arms"][arm]["summary"]["metrics"][name]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("{arm}/{name} in {report}"))
}

#[test]
fn designer_template_built_outside_the_workspace_trains_in_the_unchanged_host() {
    let so = template_plugin();
    let listing = run_ok(vpt().arg("--plugin").arg(&so).args(["plugins", "list"]));
    assert!(
        listing.contains("designer designer_template produces any.example_weights/v1"),
        "{listing}"
    );

    let out = scratch_dir("template-run");
    let sets = [
        "designer.plugin=designer_template",
        "designer.name=designer_template",
        "designer.config={}",
        "run.steps=30",
        "run.eval_every=0",
        "run.checkpoint_every=0",
    ];
    let mut cmd = vpt();
    cmd.arg("--plugin")
        .arg(&so)
        .arg("--plugin")
        .arg(tiny_plugin())
        .arg("compare")
        .arg(workspace().join("examples/tiny.toml"));
    for s in sets {
        cmd.args(["--set", s]);
    }
    run_ok(
        cmd.args(["--arms", "baseline,v", "--seeds", "1", "--out"])
            .arg(&out),
    );
    let r = report(&out);
    assert_eq!(metric(&r, "v", "meta_steps"), 30.0, "{r}");
    // φ starts as the baseline (zero init); a different learner proves φ moved and was applied.
    let (base, v) = (
        metric(&r, "baseline", "feedback_loss"),
        metric(&r, "v", "feedback_loss"),
    );
    assert!(
        (base - v).abs() > 1e-6,
        "baseline {base} vs v {v}: the template designer had no effect"
    );
}

#[test]
fn new_plugin_scaffolds_the_template_with_the_name_replaced() {
    let ws = workspace();
    let root = scratch_dir("scaffold");
    let dir = root.join("my_weights");
    run_ok(
        vpt()
            .args(["new", "plugin", "my_weights", "--dir"])
            .arg(&dir)
            .arg("--sdk")
            .arg(ws.join("sdk")),
    );
    let template = ws.join("examples/designer-template");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    for file in ["src/lib.rs", "README.md", "build.rs"] {
        assert_eq!(
            read(&dir.join(file)),
            read(&template.join(file)).replace("designer_template", "my_weights"),
            "{file}"
        );
    }
    assert_eq!(
        read(&dir.join("Cargo.lock")),
        read(&template.join("Cargo.lock"))
            .replace("name = \"designer-template\"", "name = \"my-weights\""),
        "the scaffold must carry the template's lock file, its package renamed"
    );
    let new: toml::Value = toml::from_str(&read(&dir.join("Cargo.toml"))).unwrap();
    let old: toml::Value = toml::from_str(&read(&template.join("Cargo.toml"))).unwrap();
    assert_eq!(new["package"]["name"].as_str(), Some("my-weights"));
    assert_eq!(new["lib"]["name"].as_str(), Some("my_weights"));
    assert_eq!(new["lib"]["crate-type"], old["lib"]["crate-type"]);
    assert!(
        new.get("workspace").is_some(),
        "the scaffold must stay out of any enclosing workspace"
    );
    let sdk = PathBuf::from(new["dependencies"]["vpt-sdk"]["path"].as_str().unwrap());
    assert_eq!(sdk, ws.join("sdk"), "vpt-sdk must point at the given SDK");
    let (mut nd, mut od) = (new["dependencies"].clone(), old["dependencies"].clone());
    nd.as_table_mut().unwrap().remove("vpt-sdk");
    od.as_table_mut().unwrap().remove("vpt-sdk");
    assert_eq!(nd, od, "the other dependencies are the template's");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        "tiny.toml",
        "lm-tiny.toml",
    ] {
        assert!(
            !read(&dir.join(file)).contains("designer_template"),
            "{file} still names the template"
        );
    }
    // The run configs name the new designer; the harness is a dev-dependency on the SDK alone
    // (its `testing` feature), and the tests find vpt's task plugins through
    // .cargo/config.toml.
    for file in ["tiny.toml", "lm-tiny.toml"] {
        assert_eq!(
            read(&dir.join(file)),
            read(&template.join(file)).replace("designer_template", "my_weights"),
            "{file}"
        );
    }
    let dev = &new["dev-dependencies"]["vpt-sdk"];
    assert_eq!(PathBuf::from(dev["path"].as_str().unwrap()), ws.join("sdk"));
    assert_eq!(dev["features"], toml::Value::from(vec!["testing"]));
    assert!(
        new["dev-dependencies"].get("vpt-host").is_none(),
        "the harness needs no host"
    );
    let env: toml::Value = toml::from_str(&read(&dir.join(".cargo/config.toml"))).unwrap();
    let plugin_path = env["env"]["VPT_PLUGIN_PATH"].as_str().unwrap();
    let named: Vec<PathBuf> = plugin_path.split(':').map(PathBuf::from).collect();
    assert!(
        named.iter().all(|p| p.is_absolute())
            && Plugins::discover(&SearchPath::only(&named))
                .get("tiny")
                .is_ok(),
        "VPT_PLUGIN_PATH `{plugin_path}` should name the tiny plugin's file, absolute"
    );

    // A bad name and a non-empty directory are refused.
    let bad = vpt()
        .args(["new", "plugin", "My-Plugin", "--dir"])
        .arg(root.join("x"))
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("lowercase"));
    let again = vpt()
        .args(["new", "plugin", "my_weights", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty")
    );
}

#[test]
fn reweight_designer_beats_the_baseline_on_the_tiny_task_through_compare() {
    let out = scratch_dir("reweight-compare");
    let mut cmd = vpt();
    cmd.arg("--plugin")
        .arg(tiny_plugin())
        .arg("--plugin")
        .arg(cdylib("vpt_reweight"));
    cmd.arg("compare")
        .arg(workspace().join("examples/reweight-tiny.toml"));
    for s in ["run.steps=40", "run.eval_every=0", "run.checkpoint_every=0"] {
        cmd.args(["--set", s]);
    }
    run_ok(
        cmd.args(["--arms", "baseline,v", "--seeds", "1", "--out"])
            .arg(&out),
    );
    assert!(out.join("report.md").is_file());
    let r = report(&out);
    assert_eq!(metric(&r, "v", "meta_steps"), 40.0);
    let (base, v) = (
        metric(&r, "baseline", "feedback_loss"),
        metric(&r, "v", "feedback_loss"),
    );
    assert!(
        v < base - 0.02,
        "reweight should help within 40 steps: baseline {base}, v {v}"
    );
}

/// Moves every φ tensor off its (zero) initialisation so every layer has a hypergradient.
fn perturb(designer: &dyn Designer) {
    tch::manual_seed(11);
    tch::no_grad(|| {
        for (_, p) in designer.parameters().unwrap().iter() {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.3)).unwrap();
        }
    });
}

#[test]
fn testing_harness_passes_on_plugins_loaded_through_the_host_loader() {
    tch::set_num_threads(1);
    let mut plugins =
        Plugins::discover(&SearchPath::only(&[tiny_plugin(), cdylib("vpt_reweight")]));
    let ctx = BuildContext {
        seed: 0,
        device: "cpu".into(),
    };
    let tiny = plugins.get("tiny").unwrap().clone();
    let reweight = plugins.get("reweight").unwrap().clone();
    let new_task = || {
        tiny.new_task(
            "tiny",
            &serde_json::json!({ "batch_size": 16, "feedback_batch_size": 16 }),
            &ctx,
        )
        .unwrap()
    };

    // The tiny task with its own designer (both f64).
    let mut task = new_task();
    let context = task.info().designer_context;
    let mut soft = tiny
        .new_designer("tiny_soft", &serde_json::json!({}), &context, &ctx)
        .unwrap();
    let opts = InvariantOptions::for_task(tiny.task_manifest("tiny").unwrap());
    let r = check_invariants(&mut task, Some(&mut soft), &opts);
    println!("{r}");
    r.assert_passed();
    let h = check_hypergradient(&mut task, &mut soft, 1e-6, 1e-5);
    println!("{h}");
    h.assert_passed();

    // The tiny task with a designer from another plugin (reweight, φ in f64).
    let mut task = new_task();
    let mut rw = reweight
        .new_designer(
            "reweight",
            &serde_json::json!({ "dtype": "float64", "hidden": [8] }),
            &context,
            &ctx,
        )
        .unwrap();
    check_invariants(&mut task, Some(&mut rw), &opts).assert_passed();
    perturb(&rw);
    let h = check_hypergradient(&mut task, &mut rw, 1e-6, 1e-5);
    println!("{h}");
    h.assert_passed();
    // two coordinates of each φ tensor, one of the single-value score.bias
    assert_eq!(
        h.checks
            .iter()
            .filter(|c| c.name.starts_with("∂V/∂"))
            .count(),
        7,
        "{h}"
    );

    // The harness can fail through the loader too: φ in f32 with a tight tolerance.
    let mut task = new_task();
    let mut rw32 = reweight
        .new_designer(
            "reweight",
            &serde_json::json!({ "hidden": [8] }),
            &context,
            &ctx,
        )
        .unwrap();
    perturb(&rw32);
    let h = check_hypergradient(&mut task, &mut rw32, 1e-6, 1e-9);
    assert!(
        !h.passed(),
        "f32 φ cannot pass a 1e-9 finite-difference check:\n{h}"
    );
}

/// A designer whose construction does not depend on φ (tiny_soft with `alpha_max = 0`: the
/// targets are the pretext labels whatever φ is, so ∇φ is exactly 0) is named once on stderr
/// and under "Warnings" in report.md; the shipped designer, which does depend on φ, is not.
#[test]
fn a_designer_gradient_of_exactly_zero_is_warned_about_in_the_run_and_the_report() {
    const WARNING: &str = "φ's gradient was exactly 0 at each of the first 3 meta steps";
    let compare = |out: &Path, extra: &[&str]| {
        let mut cmd = vpt();
        cmd.arg("--plugin")
            .arg(tiny_plugin())
            .arg("compare")
            .arg(workspace().join("examples/tiny.toml"));
        for s in ["run.steps=6", "run.eval_every=0", "run.checkpoint_every=0"]
            .iter()
            .chain(extra)
        {
            cmd.args(["--set", s]);
        }
        let o = cmd
            .args(["--arms", "v", "--seeds", "1", "--out"])
            .arg(out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        (stderr, md)
    };
    let root = scratch_dir("zero-phi-grad");
    let (stderr, md) = compare(&root.join("cut"), &["designer.config.alpha_max=0"]);
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    assert!(
        md.contains("## Warnings") && md.contains(&format!("**v, seed 0**: {WARNING}")),
        "{md}"
    );
    let (stderr, md) = compare(&root.join("sound"), &[]);
    assert!(!stderr.contains(WARNING), "{stderr}");
    assert!(!md.contains("## Warnings"), "{md}");
}
