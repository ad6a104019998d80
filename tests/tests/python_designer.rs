//! Designers written in Python (plugins/python): the Python ports of `reweight` and `topk_soft`
//! (examples/python) give the Rust designers' construction, V and ∇φ from the same φ; the SDK's
//! contract harness passes on both; a designer that raises, returns the wrong thing or cuts its
//! output off the graph gets one line naming the file:line or the tensor; and `vpt compare`
//! trains the Python arm of examples/reweight-tiny.toml with φ moving.
//!
//! Entry point for checking a designer of your own against the harness: this file's
//! `contract_harness_passes_on_both_python_examples` (see docs/writing-plugins.md).

use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use vpt_host::loader::{LoadedPlugin, Plugins, SearchPath};
use vpt_integration::{cdylib, scratch_dir, tiny_plugin, vpt_command};
use vpt_lm::designer::{LmDesignContext, TopKSoft, TopKSoftConfig};
use vpt_lm::task::{CausalLm, CausalLmConfig};
use vpt_sdk::testing::{check_hypergradient, check_invariants, InvariantOptions};
use vpt_sdk::value::{alignment_subset, designer_gradient, feedback_gradient, value, Align};
use vpt_sdk::{
    BatchSource, BuildContext, Construction, Designer, Task, TensorMap, KIND_EXAMPLE_WEIGHTS,
    KIND_LM_SOFT_TARGETS,
};

const U: BatchSource = BatchSource::Unlabeled { domain: 0 };
const F: BatchSource = BatchSource::Feedback { set: 0 };
/// How far the Python port may be from the Rust designer (relative, f32).
const TOL: f64 = 1e-5;

fn ctx() -> BuildContext {
    BuildContext {
        seed: 3,
        device: "cpu".into(),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn example(file: &str) -> String {
    workspace()
        .join("examples/python")
        .join(file)
        .display()
        .to_string()
}

/// The tiny, reweight and python plugins, loaded through the host's loader.
fn plugins() -> (LoadedPlugin, LoadedPlugin, LoadedPlugin) {
    let mut p = Plugins::discover(&SearchPath::only(&[
        tiny_plugin(),
        cdylib("vpt_reweight"),
        cdylib("vpt_python"),
    ]));
    let get = |p: &mut Plugins, n: &str| p.get(n).unwrap_or_else(|e| panic!("{n}: {e}")).clone();
    (
        get(&mut p, "tiny"),
        get(&mut p, "reweight"),
        get(&mut p, "python"),
    )
}

fn python_config(
    module: &str,
    class: &str,
    kind: &str,
    args: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({ "module": module, "class": class, "produces": kind, "args": args })
}

fn tiny_task(tiny: &LoadedPlugin) -> Box<dyn Task> {
    let cfg = serde_json::json!({ "batch_size": 16, "feedback_batch_size": 16 });
    Box::new(tiny.new_task("tiny", &cfg, &ctx()).unwrap())
}

/// Moves every φ tensor off its initialisation (the output layers start at zero).
fn perturb(designer: &dyn Designer, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (_, p) in designer.parameters().unwrap().iter() {
            let _ = p.shallow_clone().f_add_(&(p.randn_like() * 0.3)).unwrap();
        }
    });
}

/// Copies φ's values from `from` into `to` by name (the names must be the same).
fn copy_phi(from: &dyn Designer, to: &dyn Designer) {
    let (src, dst) = (from.parameters().unwrap(), to.parameters().unwrap());
    let mut a = src.names();
    let mut b = dst.names();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the Python port's parameter names");
    tch::no_grad(|| {
        for (name, t) in dst.iter() {
            let s = src.get(name).unwrap();
            assert_eq!(s.size(), t.size(), "{name}");
            t.shallow_clone().f_copy_(s).unwrap();
        }
    });
}

/// max |a − b| / max(1, max |a|).
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (
        a.detach().to_kind(Kind::Double),
        b.detach().to_kind(Kind::Double),
    );
    let scale = a.abs().max().double_value(&[]).max(1.0);
    (a - b).abs().max().double_value(&[]) / scale
}

/// V, ∇φ V and the construction of `d` on one unlabeled batch of `task`, against a fixed g_down.
fn value_and_gradient(
    task: &mut dyn Task,
    d: &mut dyn Designer,
    batch: &vpt_sdk::Batch,
    g_down: &[Tensor],
) -> (f64, TensorMap, Construction) {
    let s = alignment_subset(task).unwrap();
    tch::manual_seed(7);
    let forward = task.pretrain_forward(batch).unwrap();
    let v = value(task, d, &s, g_down, &[batch], &[&forward], Align::Dot).unwrap();
    let phi = d.parameters().unwrap();
    let grads = designer_gradient(&v.v, &phi).unwrap();
    let grads = phi
        .names()
        .into_iter()
        .map(String::from)
        .zip(grads)
        .collect();
    let c = v.constructions.into_iter().next().unwrap().detached();
    (v.v.double_value(&[]), grads, c)
}

/// The two designers give the same construction, V, ∇φ V and regulariser.
fn assert_equivalent(task: &mut dyn Task, rust: &mut dyn Designer, py: &mut dyn Designer) {
    let s = alignment_subset(task).unwrap();
    let fb = task.next_batch(F).unwrap();
    let g_down = feedback_gradient(task, &s, &fb).unwrap();
    let batch = task.next_batch(U).unwrap();
    let (v_r, g_r, c_r) = value_and_gradient(task, rust, &batch, &g_down);
    let (v_p, g_p, c_p) = value_and_gradient(task, py, &batch, &g_down);
    assert_eq!(c_r.kind, c_p.kind);
    for (name, t) in c_r.tensors.iter() {
        let other = c_p
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` missing"));
        assert_eq!(t.size(), other.size(), "{name}");
        let d = rel_diff(t, other);
        assert!(d <= TOL, "construction `{name}` differs by {d}");
    }
    assert_eq!(c_r.tensors.len(), c_p.tensors.len());
    assert!(v_r != 0.0, "V is 0: nothing compared");
    let dv = (v_r - v_p).abs() / v_r.abs().max(1e-12);
    assert!(dv <= TOL, "V: rust {v_r}, python {v_p} (rel {dv})");
    let mut nonzero = 0;
    for (name, g) in g_r.iter() {
        let d = rel_diff(g, g_p.get(name).unwrap());
        assert!(d <= TOL, "∇φ `{name}` differs by {d}");
        nonzero += (g.abs().max().double_value(&[]) > 0.0) as usize;
    }
    assert!(nonzero > 0, "∇φ is zero everywhere: nothing compared");
    let (r_r, r_p) = (
        rust.regularizer(&c_r).unwrap().unwrap().double_value(&[]),
        py.regularizer(&c_p).unwrap().unwrap().double_value(&[]),
    );
    assert!(
        (r_r - r_p).abs() <= TOL * r_r.abs().max(1.0),
        "R: {r_r} vs {r_p}"
    );
}

#[test]
fn reweight_port_gives_the_rust_designers_construction_value_and_gradient() {
    tch::set_num_threads(1);
    let (tiny, reweight, python) = plugins();
    let mut task = tiny_task(&tiny);
    let context = task.info().designer_context;
    let args = serde_json::json!({ "hidden": [8], "temperature": 0.7 });
    let mut rust = reweight
        .new_designer("reweight", &args, &context, &ctx())
        .unwrap();
    let cfg = python_config(
        &example("reweight.py"),
        "Reweight",
        KIND_EXAMPLE_WEIGHTS,
        args,
    );
    let mut py = python
        .new_designer("python", &cfg, &context, &ctx())
        .unwrap();
    perturb(&rust, 11);
    copy_phi(&rust, &py);
    assert_equivalent(task.as_mut(), &mut rust, &mut py);
}

fn lm_task() -> (CausalLm, LmDesignContext) {
    tch::set_num_threads(2);
    let task = CausalLm::new(CausalLmConfig::tiny(), &ctx()).unwrap();
    let tc = serde_json::from_value(task.info().designer_context).unwrap();
    (task, tc)
}

fn topk_args() -> serde_json::Value {
    serde_json::json!({ "layers": 2, "width": 16, "heads": 2, "alpha_max": 0.5, "gate_init": -1.0 })
}

#[test]
fn topk_soft_port_gives_the_rust_designers_construction_value_and_gradient() {
    let (_, _, python) = plugins();
    let (mut task, tc) = lm_task();
    let cfg: TopKSoftConfig = serde_json::from_value(topk_args()).unwrap();
    let mut rust = TopKSoft::new(cfg, &tc, &ctx()).unwrap();
    let context = task.info().designer_context;
    let cfg = python_config(
        &example("topk_soft.py"),
        "TopKSoft",
        KIND_LM_SOFT_TARGETS,
        topk_args(),
    );
    let mut py = python
        .new_designer("python", &cfg, &context, &ctx())
        .unwrap();
    perturb(&rust, 12);
    copy_phi(&rust, &py);
    assert_equivalent(&mut task, &mut rust, &mut py);
    // The optional metrics method maps to the designer's step metrics.
    let b = task.next_batch(U).unwrap();
    let inputs = task.design_inputs(&b).unwrap();
    let (c_r, c_p) = (
        rust.construct(&inputs).unwrap(),
        py.construct(&inputs).unwrap(),
    );
    let (m_r, m_p) = (rust.metrics(&c_r).unwrap(), py.metrics(&c_p).unwrap());
    assert!(
        (m_r["alpha_mean"] - m_p["alpha_mean"]).abs() < TOL,
        "{m_r:?} {m_p:?}"
    );
}

/// The SDK's harness (invariants and ∂V/∂φ against finite differences, in f64) on both Python
/// examples, loaded through the host loader as `vpt` loads them.
#[test]
fn contract_harness_passes_on_both_python_examples() {
    let (tiny, _, python) = plugins();
    tch::set_num_threads(1);
    let mut task = tiny_task(&tiny);
    let context = task.info().designer_context;
    let args = serde_json::json!({ "hidden": [8], "dtype": "float64" });
    let cfg = python_config(
        &example("reweight.py"),
        "Reweight",
        KIND_EXAMPLE_WEIGHTS,
        args,
    );
    let mut rw = python
        .new_designer("python", &cfg, &context, &ctx())
        .unwrap();
    let opts = InvariantOptions::for_task(tiny.task_manifest("tiny").unwrap());
    let r = check_invariants(task.as_mut(), Some(&mut rw), &opts);
    println!("{r}");
    r.assert_passed();
    perturb(&rw, 13);
    let h = check_hypergradient(task.as_mut(), &mut rw, 1e-6, 1e-5);
    println!("{h}");
    h.assert_passed();

    let (mut lm, _) = lm_task();
    lm.set_kind(Kind::Double);
    let context = lm.info().designer_context;
    let mut args = topk_args();
    args["dtype"] = "float64".into();
    let cfg = python_config(
        &example("topk_soft.py"),
        "TopKSoft",
        KIND_LM_SOFT_TARGETS,
        args,
    );
    let mut topk = python
        .new_designer("python", &cfg, &context, &ctx())
        .unwrap();
    let manifest = vpt_lm::vpt_registry().task("causal_lm").unwrap().manifest();
    let opts = InvariantOptions {
        evaluate: false,
        eval_limit: None,
        ..InvariantOptions::for_task(&manifest)
    };
    let r = check_invariants(&mut lm, Some(&mut topk), &opts);
    println!("{r}");
    r.assert_passed();
    perturb(&topk, 14);
    let h = check_hypergradient(&mut lm, &mut topk, 1e-6, 1e-5);
    println!("{h}");
    h.assert_passed();
}

/// A designer file in a scratch directory: `body` is the class's `forward`/`__init__` code.
fn bad_designer(dir: &Path, name: &str, source: &str) -> String {
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, source).unwrap();
    path.display().to_string()
}

const HEADER: &str = "import torch\nfrom torch import nn\n\n\nclass D(nn.Module):\n    def __init__(self, context, fail=False):\n        super().__init__()\n        if fail:\n            raise RuntimeError('bad init')\n        self.w = nn.Parameter(torch.zeros(context['feature_dim']))\n\n";

fn one_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.trim().contains('\n'), "not one line:\n{s}");
    println!("{s}");
    s
}

#[test]
fn python_errors_are_one_line_naming_the_file_line_or_the_tensor() {
    let (tiny, _, python) = plugins();
    tch::set_num_threads(1);
    let dir = scratch_dir("python-errors");
    let mut task = tiny_task(&tiny);
    let context = task.info().designer_context;
    let b = task.next_batch(U).unwrap();
    let inputs = task.design_inputs(&b).unwrap();
    let build = |file: &str, args: serde_json::Value| {
        let cfg = python_config(file, "D", KIND_EXAMPLE_WEIGHTS, args);
        python.new_designer("python", &cfg, &context, &ctx())
    };
    let forward = |body: &str| format!("{HEADER}    def forward(self, inputs):\n{body}");
    let x = "        x = inputs['example_features'].float() @ self.w.float()\n";

    // An exception in __init__ and one in forward: type, message and file:line.
    let raises = bad_designer(
        &dir,
        "raises",
        &forward(&format!(
            "{x}        return {{'weights': torch.cat([x, 'nope'])}}\n"
        )),
    );
    let e = one_line(
        &build(&raises, serde_json::json!({"fail": true}))
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("RuntimeError: bad init") && e.contains("raises.py:9 in __init__"),
        "{e}"
    );
    let mut d = build(&raises, serde_json::json!({})).unwrap();
    let e = one_line(&d.construct(&inputs).unwrap_err());
    assert!(
        e.contains("raises.py:14 in forward") && e.contains("forward"),
        "{e}"
    );

    // A wrong return type, and a tensor of the wrong shape (the kind's spec names it).
    let wrong = bad_designer(&dir, "wrong", &forward("        return [inputs]\n"));
    let e = one_line(
        &build(&wrong, serde_json::json!({}))
            .unwrap()
            .construct(&inputs)
            .unwrap_err(),
    );
    assert!(
        e.contains("must return a dict[str, Tensor], got list"),
        "{e}"
    );
    let shape = bad_designer(
        &dir,
        "shape",
        &forward(&format!(
            "{x}        return {{'weights': (torch.softmax(x, 0) * x.shape[0]).unsqueeze(1)}}\n"
        )),
    );
    let mut d = build(&shape, serde_json::json!({})).unwrap();
    let e = one_line(
        &vpt_sdk::kinds::EXAMPLE_WEIGHTS
            .check(&d.construct(&inputs).unwrap())
            .unwrap_err(),
    );
    assert!(e.contains("tensor `weights`"), "{e}");
    let s = alignment_subset(task.as_ref()).unwrap();
    let fb = task.next_batch(F).unwrap();
    let g_down = feedback_gradient(task.as_mut(), &s, &fb).unwrap();
    let batch = task.next_batch(U).unwrap();
    let fwd = task.pretrain_forward(&batch).unwrap();
    let e = one_line(
        &value(
            task.as_mut(),
            &mut d,
            &s,
            &g_down,
            &[&batch],
            &[&fwd],
            Align::Dot,
        )
        .err()
        .unwrap(),
    );
    assert!(e.contains("`weights`"), "{e}");

    // A declared design input the task does not have.
    let missing = bad_designer(
        &dir,
        "missing",
        &format!("{HEADER}    inputs = ['nope']\n\n    def forward(self, inputs):\n        return {{}}\n"),
    );
    let mut d = build(&missing, serde_json::json!({})).unwrap();
    let e = one_line(&d.construct(&inputs).unwrap_err());
    assert!(
        e.contains("`inputs` names `nope`, which the task does not provide"),
        "{e}"
    );

    // A construction cut off φ's graph is refused in the meta step (grad on), not under no_grad.
    let cut = bad_designer(
        &dir,
        "cut",
        &forward(&format!(
            "{x}        return {{'weights': torch.ones_like(x) + 0 * x.detach()}}\n"
        )),
    );
    let mut d = build(&cut, serde_json::json!({})).unwrap();
    let e = one_line(&d.construct(&inputs).unwrap_err());
    assert!(e.contains("`weights` cut off φ's graph"), "{e}");
    tch::no_grad(|| d.construct(&inputs)).unwrap();

    // A missing class and a missing file name the config field.
    let cfg = python_config(&raises, "Nope", KIND_EXAMPLE_WEIGHTS, serde_json::json!({}));
    let e = one_line(
        &python
            .new_designer("python", &cfg, &context, &ctx())
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("defines no `Nope` (its torch.nn.Module classes: D)"),
        "{e}"
    );
    let e = one_line(
        &build("/nonexistent/d.py", serde_json::json!({}))
            .err()
            .unwrap(),
    );
    assert!(
        e.contains("module") && e.contains("/nonexistent/d.py"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `vpt compare examples/reweight-tiny.toml --arms python` trains the Python reweight port
/// through the unchanged host, and φ moves; a kind the task does not consume is refused.
#[test]
fn compare_runs_the_python_arm_and_phi_moves() {
    let out = scratch_dir("python-compare");
    let config = workspace().join("examples/reweight-tiny.toml");
    let mut cmd = vpt_command();
    cmd.arg("--plugin").arg(cdylib("vpt_python"));
    cmd.arg("compare").arg(&config);
    for s in ["run.steps=6", "run.eval_every=0", "run.checkpoint_every=0"] {
        cmd.args(["--set", s]);
    }
    let o = cmd
        .args(["--arms", "python", "--seeds", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = find(&out, "metrics.jsonl").expect("a metrics.jsonl under the compare dir");
    let norms: Vec<f64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "train" && r["meta"].is_object())
        .map(|r| r["meta"]["phi_grad_norm"].as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(norms.len(), 6, "{}", metrics.display());
    assert!(norms.iter().all(|n| *n > 0.0), "{norms:?}");

    let wrong = vpt_command()
        .arg("--plugin")
        .arg(cdylib("vpt_python"))
        .arg("run")
        .arg(&config)
        .args(["--set", "designer.plugin=python", "--set", "designer.name=python"])
        .args(["--set", "designer.config={ module = \"examples/python/reweight.py\", class = \"Reweight\", produces = \"vision.view_mask/v1\" }"])
        .args(["--steps", "1", "--out"])
        .arg(out.join("wrong"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        err.contains("produces `vision.view_mask/v1`, but task `tiny` consumes only"),
        "{err}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// The first file called `name` under `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// Every metrics record without its timing field, as text lines.
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

/// φ of a Python designer and its optimizer state are checkpointed by the host like any
/// designer's: an interrupted-and-resumed run reproduces the uninterrupted one exactly.
#[test]
fn interrupted_and_resumed_python_run_reproduces_the_uninterrupted_one() {
    let root = scratch_dir("python-resume");
    let config = workspace().join("examples/reweight-tiny.toml");
    let sets = [
        "designer.plugin=python",
        "designer.name=python",
        "designer.config={ module = \"examples/python/reweight.py\", class = \"Reweight\", produces = \"any.example_weights/v1\", args = { hidden = [8], dtype = \"float64\" } }",
        "run.steps=12",
        "run.checkpoint_every=4",
        "run.eval_every=4",
    ];
    let run = |out: &str, extra: &[&str]| {
        let mut cmd = vpt_command();
        cmd.arg("--plugin")
            .arg(cdylib("vpt_python"))
            .arg("run")
            .arg(&config);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let o = cmd
            .arg("--out")
            .arg(root.join(out))
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("full", &[]);
    run("cut", &["--halt-after", "6"]);
    let o = vpt_command()
        .arg("--plugin")
        .arg(cdylib("vpt_python"))
        .arg("run")
        .arg("--resume")
        .arg(root.join("cut"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (full, cut) = (
        metrics_without_time(&root.join("full")),
        metrics_without_time(&root.join("cut")),
    );
    assert!(full.len() >= 12, "{full:?}");
    assert_eq!(
        full, cut,
        "the resumed Python run diverged from the uninterrupted one"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
