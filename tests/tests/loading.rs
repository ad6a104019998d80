//! Plugin loading with real cdylibs (the tiny plugin and the fixtures under tests/fixtures):
//! refusals in a few lines, panics caught at the boundary, tensors and autograd graphs across
//! it both ways (checked against finite differences), listing and schemas, and leaks.

use serde_json::json;
use std::path::PathBuf;
use tch::{Kind, Tensor};
use vpt_host::{
    config::{apply_overrides, RunConfig},
    loader::{
        self, cmd_plugins_inspect, cmd_plugins_list, cmd_schema, LoadedPlugin, Plugins, SearchPath,
    },
    train::Session,
    Error,
};
use vpt_integration::{cdylib, rss_kib, scratch_dir, tiny_config_path, tiny_plugin, vpt_command};
use vpt_sdk::{
    BatchSource, BuildContext, Construction, Designer, Differentiation, ErrorKind, PluginError,
    Task, TensorMap,
};

const UNLABELED: BatchSource = BatchSource::Unlabeled { domain: 0 };
const FEEDBACK: BatchSource = BatchSource::Feedback { set: 0 };

fn ctx() -> BuildContext {
    BuildContext {
        seed: 7,
        device: "cpu".into(),
    }
}

fn tiny() -> LoadedPlugin {
    loader::load(&tiny_plugin()).unwrap_or_else(|e| panic!("loading tiny: {e}"))
}

/// The plugin error inside an SDK error (what task and designer calls return).
fn plugin_error(e: &vpt_sdk::Error) -> &PluginError {
    match e {
        vpt_sdk::Error::Plugin(p) => p,
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

/// The plugin error inside a host error (what `new_task` / `new_designer` return).
fn host_plugin_error(e: &Error) -> &PluginError {
    match e {
        Error::Sdk(inner) => plugin_error(inner),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

fn assert_short(m: &str, max_lines: usize) {
    assert!(
        m.lines().count() <= max_lines,
        "more than {max_lines} lines:\n{m}"
    );
    assert!(m.len() < 600, "too long ({} chars):\n{m}", m.len());
}

/// The fixture claims the previous SDK minor (0.2): a plugin built against it is refused before
/// any of its code runs, in one line naming both versions.
#[test]
fn a_plugin_built_against_the_previous_sdk_is_refused_in_one_line() {
    let path = cdylib("fixture_wrong_sdk");
    let e = loader::load(&path).unwrap_err();
    assert!(matches!(e, Error::Load { .. }), "{e:?}");
    let m = e.to_string();
    assert_short(&m, 1);
    assert!(m.contains(&path.display().to_string()), "{m}");
    assert!(m.contains("plugin `old`"), "{m}");
    assert!(m.contains("vpt-sdk 0.2.0"), "{m}");
    assert!(
        m.contains(&format!("vpt-sdk {}", vpt_sdk::SDK_VERSION)),
        "{m}"
    );
    assert!(m.contains("rebuild"), "{m}");
    // The CLI body says the same.
    let m = cmd_plugins_inspect(&path, false).unwrap_err().to_string();
    assert!(m.contains("vpt-sdk 0.2.0"), "{m}");
}

#[test]
fn another_libtorch_is_refused_in_one_paragraph() {
    let path = cdylib("fixture_wrong_torch");
    let m = loader::load(&path).unwrap_err().to_string();
    assert_short(&m, 5);
    assert!(m.contains("plugin `oldtorch`"), "{m}");
    assert!(m.contains("tch=0.20.0;libtorch=2.7.0"), "{m}");
    assert!(m.contains(vpt_sdk::TORCH_TAG), "{m}");
    assert!(m.contains("rebuild"), "{m}");
}

#[test]
fn abi_stable_layout_mismatch_is_summarised_with_details_behind_verbose() {
    let path = cdylib("fixture_bad_layout");
    assert_eq!(
        loader::probe(&path).unwrap().plugin,
        "badlayout",
        "the fixture must pass the probe"
    );
    let e = loader::load(&path).unwrap_err();
    let Error::PluginAbi {
        message, details, ..
    } = &e
    else {
        panic!("expected PluginAbi, got {e:?}")
    };
    assert!(
        message.contains("plugin `badlayout`") && message.contains("rebuild"),
        "{message}"
    );
    assert!(
        message.contains(&format!("vpt-sdk {}", vpt_sdk::SDK_VERSION)),
        "{message}"
    );
    let short = e.to_string();
    assert_short(&short, 5);
    assert!(
        details.lines().count() > 5,
        "abi_stable's report should be kept whole:\n{details}"
    );
    let verbose = cmd_plugins_inspect(&path, true).unwrap_err().to_string();
    assert!(
        verbose.contains(details.as_str()) && verbose.len() > short.len(),
        "{verbose}"
    );
    let terse = cmd_plugins_inspect(&path, false).unwrap_err().to_string();
    assert_eq!(terse, short);
}

#[test]
fn non_plugins_and_missing_files_are_refused_briefly() {
    let dir = scratch_dir("refusals");
    let bogus = dir.join("bogus.so");
    std::fs::write(&bogus, "this is text, not a library\n").unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (PathBuf::from("/bin/ls"), "not a shared library"),
        (bogus, "not a shared library (not an ELF file)"),
        (dir.join("missing.so"), "no such file"),
    ];
    for (path, want) in &cases {
        for m in [
            loader::load(path).unwrap_err().to_string(),
            cmd_plugins_inspect(path, false).unwrap_err().to_string(),
        ] {
            assert!(m.contains(want), "{}: {m}", path.display());
            assert!(m.contains(&path.display().to_string()), "{m}");
            assert_short(&m, 1);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn panics_in_a_plugin_become_errors_and_the_host_keeps_running() {
    tch::set_num_threads(2);
    let p = tiny();
    let e = p
        .new_task("tiny", &json!({ "panic_in": "new" }), &ctx())
        .err()
        .expect("panic_in = new must fail");
    let pe = host_plugin_error(&e);
    assert_eq!(pe.kind, ErrorKind::Panic);
    assert!(
        pe.message.contains("new_task") && pe.message.contains("panic_in = new"),
        "{pe}"
    );
    assert_eq!(pe.plugin.as_str(), "tiny");

    for method in ["pretrain_loss", "after_step", "evaluate"] {
        let mut t = p
            .new_task("tiny", &json!({ "panic_in": method }), &ctx())
            .unwrap();
        let batch = t.next_batch(UNLABELED).unwrap();
        let err = match method {
            "pretrain_loss" => t
                .pretrain_loss(&batch, &Construction::baseline(), Differentiation::Once)
                .err(),
            "after_step" => t.after_step(3, &[]).err(),
            _ => t.evaluate(Some(8)).err(),
        };
        let err = err.unwrap_or_else(|| panic!("panic_in = {method} must fail"));
        let pe = plugin_error(&err);
        assert_eq!(pe.kind, ErrorKind::Panic, "{pe}");
        assert!(pe.message.contains(&format!("`{method}`")), "{pe}");
        // The task that panicked is still usable for the methods that do not panic.
        let fb = t.next_batch(FEEDBACK).unwrap();
        assert!(t.feedback_loss(&fb).is_ok());
    }

    // The same process builds a healthy task and computes a loss.
    let mut t = p.new_task("tiny", &json!({}), &ctx()).unwrap();
    let batch = t.next_batch(UNLABELED).unwrap();
    let loss = t
        .pretrain_loss(&batch, &Construction::baseline(), Differentiation::Once)
        .unwrap();
    assert_eq!(loss.size(), vec![t.info().batch_size as i64]);
    let mean = loss.mean(Kind::Double).double_value(&[]);
    assert!(mean.is_finite() && mean > 0.0, "{mean}");
}

#[test]
fn plugin_config_errors_name_the_field() {
    let p = tiny();
    let e = p
        .new_task("tiny", &json!({ "dim": "wide" }), &ctx())
        .err()
        .unwrap();
    let pe = host_plugin_error(&e);
    assert_eq!(pe.kind, ErrorKind::Config);
    assert_eq!(pe.field.as_str(), "dim", "{pe}");
    let e = p.new_task("nope", &json!({}), &ctx()).err().unwrap();
    assert!(
        e.to_string().contains("has no task `nope` (it has: tiny)"),
        "{e}"
    );
    let e = p
        .new_designer("tiny_soft", &json!({}), &json!({}), &ctx())
        .err()
        .unwrap();
    assert!(e.to_string().contains("feature_dim"), "{e}");
}

/// A bad field of a plugin's config, through a whole run config: the error names the field as
/// the run config does (the field path crosses the ABI as data, not as text to parse).
#[test]
fn run_config_errors_name_the_plugin_field_by_its_path() {
    let build = |set: &str| {
        let mut doc: toml::Value =
            toml::from_str(&std::fs::read_to_string(tiny_config_path()).unwrap()).unwrap();
        apply_overrides(&mut doc, &[set.to_string()]).unwrap();
        let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
        Session::build(RunConfig::from_toml(doc).unwrap(), &mut plugins)
            .err()
            .expect("a bad field is refused")
    };
    for (set, field) in [
        ("task.config.alignment=\"middle\"", "task.config.alignment"),
        ("task.config.dim=\"wide\"", "task.config.dim"),
        ("designer.config.hidden=0", "designer.config.hidden"),
    ] {
        let e = build(set);
        let Error::Sdk(inner) = &e else {
            panic!("{set}: expected a plugin error, got {e:?}")
        };
        assert_eq!(inner.field(), Some(field), "{set}: {e}");
        let m = e.to_string();
        assert!(m.contains(&format!("field `{field}`")), "{set}: {m}");
        assert_short(&m, 1);
    }
}

/// V(φ) = g_downᵀ g_pre with g_pre = ∇_θS mean L_pre(θ; B_u, designer_φ(B_u)), all through the
/// plugin; `create_graph` keeps g_pre differentiable in φ.
fn value(
    task: &mut dyn Task,
    designer: &mut dyn Designer,
    batch: &vpt_sdk::Batch,
    inputs: &TensorMap,
    theta: &[&Tensor],
    g_down: &[Tensor],
    create_graph: bool,
) -> Tensor {
    let c = designer.construct(inputs).unwrap();
    let diff = if create_graph {
        Differentiation::Twice
    } else {
        Differentiation::Once
    };
    let l_pre = task
        .pretrain_loss(batch, &c, diff)
        .unwrap()
        .mean(Kind::Double);
    let g_pre = Tensor::run_backward(&[&l_pre], theta, create_graph, create_graph);
    g_down
        .iter()
        .zip(&g_pre)
        .map(|(a, b)| (a * b).sum(Kind::Double))
        .fold(Tensor::from(0.0f64), |s, t| s + t)
}

/// A designer whose `probs` rows sum to 3 (the tiny designer's targets, tripled): the SDK glue
/// refuses its construction where it crosses to the task, naming the kind, the tensor and the
/// row sums; a construction of a kind the task does not consume is refused too.
#[test]
fn constructions_are_checked_against_their_kind_where_they_reach_the_task() {
    let p = tiny();
    let mut task = p.new_task("tiny", &json!({}), &ctx()).unwrap();
    let info = task.info();
    let mut designer = p
        .new_designer("tiny_soft", &json!({}), &info.designer_context, &ctx())
        .unwrap();
    let batch = task.next_batch(UNLABELED).unwrap();
    let inputs = task.design_inputs(&batch).unwrap();
    let good = designer.construct(&inputs).unwrap().detached();
    assert!(task
        .pretrain_loss(&batch, &good, Differentiation::Once)
        .is_ok());
    let mut tripled = good.detached();
    let probs = tripled.tensors.require("probs").unwrap() * 3.0;
    tripled.tensors.insert("probs", probs);
    let e = task
        .pretrain_loss(&batch, &tripled, Differentiation::Once)
        .unwrap_err()
        .to_string();
    assert_short(&e, 1);
    for part in [
        "tiny.soft_targets/v1",
        "`probs`",
        "distributions",
        "row sums [3.0000, 3.0000]",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    let forward = task.pretrain_forward(&batch).unwrap();
    let e = task
        .pretrain_loss_from_forward(&batch, &forward.state, &tripled, Differentiation::Twice)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row sums"), "{e}");
    let other = Construction {
        kind: "lm.soft_targets/v1".into(),
        tensors: good.tensors.detached(),
    };
    let e = task
        .pretrain_loss(&batch, &other, Differentiation::Once)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not one this task consumes"), "{e}");
}

/// Named metrics a designer reports of its constructions land in each learner step's record of
/// `metrics.jsonl` (the tiny designer's mean gate α, through the real binary).
#[test]
fn designer_metrics_land_in_metrics_jsonl() {
    let dir = scratch_dir("designer-metrics");
    let config = tiny_config_path();
    let out = vpt_command()
        .args(["run", config.to_str().unwrap(), "--steps", "3", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let alphas: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "train")
        .map(|r| r["metrics"]["alpha_mean"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(alphas.len(), 3, "{text}");
    // tiny.toml: gate_init = −2, so α ≈ sigmoid(−2) ≈ 0.12 at the start.
    assert!(alphas.iter().all(|a| *a > 0.01 && *a < 0.5), "{alphas:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn autograd_graphs_cross_the_boundary_both_ways() {
    tch::set_num_threads(2);
    let p = tiny();
    let cfg =
        json!({ "dim": 6, "classes": 3, "hidden": 8, "batch_size": 16, "feedback_batch_size": 16 });
    let mut task = p.new_task("tiny", &cfg, &ctx()).unwrap();
    let info = task.info();
    let mut designer = p
        .new_designer(
            "tiny_soft",
            &json!({ "hidden": 8, "gate_init": 0.0 }),
            &info.designer_context,
            &ctx(),
        )
        .unwrap();
    let theta = task.parameters().unwrap().select(&info.alignment).unwrap();
    let theta: Vec<&Tensor> = theta.tensors().collect();
    let phi = designer.parameters().unwrap();
    assert!(!phi.is_empty());
    assert!(theta
        .iter()
        .copied()
        .chain(phi.tensors())
        .all(|t| t.requires_grad() && t.kind() == Kind::Double));

    let bu = task.next_batch(UNLABELED).unwrap();
    let bf = task.next_batch(FEEDBACK).unwrap();
    let inputs = task.design_inputs(&bu).unwrap();
    let l_down = task.feedback_loss(&bf).unwrap();
    let g_down: Vec<Tensor> = Tensor::run_backward(&[&l_down], &theta, false, false)
        .into_iter()
        .map(|g| g.detach())
        .collect();

    // Mixed second derivative ∂V/∂φ through the plugin-built graphs (task's and designer's).
    let v = value(
        &mut task,
        &mut designer,
        &bu,
        &inputs,
        &theta,
        &g_down,
        true,
    );
    let phis: Vec<&Tensor> = phi.tensors().collect();
    let grads = Tensor::run_backward(&[&v], &phis, false, false);

    let h = 1e-5;
    let mut checked = 0;
    for ((name, p), g) in phi.iter().zip(&grads) {
        let flat = g.reshape([-1]);
        let mut picks = vec![flat.abs().argmax(0, false).int64_value(&[])];
        picks.push(flat.size()[0] / 2);
        picks.dedup();
        for i in picks {
            let analytic = flat.double_value(&[i]);
            let bump = |delta: f64| {
                tch::no_grad(|| {
                    let mut e = p.reshape([-1]).narrow(0, i, 1);
                    let _ = e.f_add_scalar_(delta).unwrap();
                })
            };
            bump(h);
            let up = value(
                &mut task,
                &mut designer,
                &bu,
                &inputs,
                &theta,
                &g_down,
                false,
            )
            .double_value(&[]);
            bump(-2.0 * h);
            let down = value(
                &mut task,
                &mut designer,
                &bu,
                &inputs,
                &theta,
                &g_down,
                false,
            )
            .double_value(&[]);
            bump(h);
            let fd = (up - down) / (2.0 * h);
            let scale = analytic.abs().max(fd.abs()).max(1e-6);
            assert!(
                (analytic - fd).abs() / scale < 1e-6,
                "∂V/∂{name}[{i}]: autograd {analytic:e} vs finite differences {fd:e}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "checked {checked} entries");
    // The largest entry is not numerically zero: the check above compared real signal.
    let largest = grads
        .iter()
        .map(|g| g.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(
        largest > 1e-4,
        "∂V/∂φ is ~0 ({largest:e}); the test would prove nothing"
    );
}

#[test]
fn listing_shows_tasks_designers_and_schemas_and_survives_broken_files() {
    let dir = scratch_dir("listing");
    let bogus = dir.join("bogus.so");
    std::fs::write(&bogus, "text\n").unwrap();
    let search = SearchPath::only(&[tiny_plugin(), cdylib("fixture_wrong_sdk"), dir.clone()]);

    let v: serde_json::Value =
        serde_json::from_str(&cmd_plugins_list(&search, true).unwrap()).unwrap();
    let plugins = v["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{v:#}");
    let tiny = &plugins[0];
    assert_eq!(tiny["plugin"], "tiny");
    assert_eq!(tiny["path"], tiny_plugin().display().to_string());
    assert_eq!(tiny["tasks"][0]["name"], "tiny");
    assert_eq!(tiny["tasks"][0]["kinds"][0], "tiny.soft_targets/v1");
    assert!(
        tiny["tasks"][0]["schema"]["properties"]["panic_in"].is_object(),
        "{v:#}"
    );
    assert_eq!(tiny["designers"][0]["name"], "tiny_soft");
    assert!(
        tiny["designers"][0]["schema"]["properties"]["alpha_max"].is_object(),
        "{v:#}"
    );
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{v:#}");
    assert!(errors.contains(&bogus.to_str().unwrap()), "{errors:?}");

    let text = cmd_plugins_list(&search, false).unwrap();
    assert!(
        text.contains("tiny_soft") && text.contains("could not load 2 file(s)"),
        "{text}"
    );

    let schema: serde_json::Value =
        serde_json::from_str(&cmd_schema(&search, "tiny_soft").unwrap()).unwrap();
    assert!(schema["properties"]["hidden"].is_object(), "{schema:#}");
    assert!(cmd_schema(&search, "tiny:task:tiny")
        .unwrap()
        .contains("corrupt_threshold"));
    let e = cmd_schema(&search, "nope").unwrap_err().to_string();
    assert!(
        e.contains("tiny:tiny (task)") && e.contains("tiny:tiny_soft (designer)"),
        "{e}"
    );

    // Two copies of one plugin: the first on the path wins, the second is shadowed; the schema
    // of a name both export is then still unambiguous.
    let copy = dir.join("libvpt_tiny_copy.so");
    std::fs::copy(tiny_plugin(), &copy).unwrap();
    let both = SearchPath::only(&[tiny_plugin(), copy.clone()]);
    let listing = Plugins::discover(&both).list();
    assert_eq!(listing.plugins.len(), 1);
    assert_eq!(listing.shadowed, vec![(copy, "tiny".to_string())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugins_are_found_by_name_and_refusals_explained() {
    let dir = scratch_dir("by-name");
    let bogus = dir.join("bogus.so");
    std::fs::write(&bogus, "text\n").unwrap();
    let mut plugins = Plugins::discover(&SearchPath::only(&[
        cdylib("fixture_wrong_sdk"),
        tiny_plugin(),
        bogus,
    ]));
    assert_eq!(
        plugins.get("tiny").unwrap().manifest.designers[0].name,
        "tiny_soft"
    );
    assert_eq!(plugins.loaded().len(), 1);
    let e = plugins.get("old").unwrap_err().to_string();
    assert!(e.contains("vpt-sdk 0.2.0") && e.contains("rebuild"), "{e}");
    let e = plugins.get("vision").unwrap_err();
    assert!(matches!(e, Error::PluginNotFound { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("plugins found: old, tiny; not plugins or unreadable: bogus.so"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // The default search path of a test binary finds the plugins built next to it.
    let mut defaults = Plugins::discover(&SearchPath::from_env(&[]));
    let found = defaults.get("tiny").unwrap();
    assert!(
        found
            .path
            .file_name()
            .is_some_and(|n| n == "libvpt_tiny.so"),
        "{}",
        found.path.display()
    );
}

#[test]
fn no_leaks_across_the_boundary() {
    tch::set_num_threads(2);
    let p = tiny();
    // Per round: θ ≈ 70 KiB, a batch and design inputs ≈ 130 KiB, graph activations ≈ 260 KiB.
    let cfg = json!({ "dim": 64, "hidden": 128, "batch_size": 128, "feedback_size": 64, "feedback_batch_size": 64 });
    let round = || {
        let mut t = p.new_task("tiny", &cfg, &ctx()).unwrap();
        let dctx = t.info().designer_context;
        let mut d = p
            .new_designer("tiny_soft", &json!({ "hidden": 64 }), &dctx, &ctx())
            .unwrap();
        let b = t.next_batch(UNLABELED).unwrap();
        let inputs = t.design_inputs(&b).unwrap();
        let c = d.construct(&inputs).unwrap();
        let reg = d.regularizer(&c).unwrap().unwrap();
        let loss = t
            .pretrain_loss(&b, &c, Differentiation::Once)
            .unwrap()
            .mean(Kind::Double)
            + reg;
        let params: Vec<Tensor> = t
            .parameters()
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let grads = Tensor::run_backward(&[&loss], &params, false, false);
        let fb_batch = t.next_batch(FEEDBACK).unwrap();
        let fb = t.feedback_loss(&fb_batch).unwrap();
        let state = t.state().unwrap();
        t.load_state(state).unwrap();
        grads
            .iter()
            .map(|g| g.abs().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            + fb.double_value(&[])
    };
    for _ in 0..20 {
        assert!(round().is_finite());
    }
    let before = rss_kib();
    for _ in 0..200 {
        assert!(round().is_finite());
    }
    let grown_mib = (rss_kib() as f64 - before as f64) / 1024.0;
    println!("RSS grew by {grown_mib:.1} MiB over 200 rounds");
    // Leaking any one of a round's batches, constructions or graphs would grow RSS by more
    // than 20 MiB over 200 rounds.
    assert!(
        grown_mib < 12.0,
        "RSS grew by {grown_mib:.1} MiB over 200 rounds"
    );
}

#[test]
fn inspect_describes_a_plugin() {
    let text = cmd_plugins_inspect(&tiny_plugin(), false).unwrap();
    assert!(text.starts_with("tiny "), "{text}");
    assert!(
        text.contains("task     tiny") && text.contains("designer tiny_soft"),
        "{text}"
    );
    assert!(!text.contains("\"properties\""), "{text}");
    // The task's design inputs and the kind's tensors, as declared.
    for line in [
        "design inputs of task tiny:",
        "pretext_onehot     float (B,C) rows sum to 1 — its (possibly wrong) pretext label",
        "kind tiny.soft_targets/v1:",
        "probs              float (B,C) rows sum to 1, differentiable in φ — the target distribution",
        "alpha              float (B) in [0,1], optional — the designer's gate",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    let verbose = cmd_plugins_inspect(&tiny_plugin(), true).unwrap();
    assert!(verbose.contains("\"alpha_max\""), "{verbose}");
}
