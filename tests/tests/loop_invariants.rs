//! DESIGN §1 invariants of the host loop, checked on the real tiny plugin (f64):
//! feedback never steers θ directly, the learner trains on the detached construction, feedback
//! batches never reach `pretrain_loss`, the hypergradient matches finite differences,
//! non-finite values are skipped without corrupting θ or φ, V beats the baseline, and a V
//! learner step runs the learner's forward once.

use tch::{Kind, Tensor};
use vpt_host::{
    config::{apply_overrides, RunConfig},
    loader::{Plugins, SearchPath},
    train::Session,
};
use vpt_integration::tiny_plugin;
use vpt_sdk::value::{
    alignment_subset, feedback_gradient, grad, mean_pretrain_objective, value, Align,
};
use vpt_sdk::{Batch, BatchSource, Designer, Differentiation, MetaBatch, Task, TensorMap};

fn tiny_config(overrides: &[&str]) -> RunConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny.toml");
    let mut doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    apply_overrides(&mut doc, &ov).unwrap();
    RunConfig::from_toml(doc).unwrap()
}

fn session(overrides: &[&str]) -> Session {
    tch::set_num_threads(1);
    let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
    Session::build(tiny_config(overrides), &mut plugins).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn theta_values(s: &Session) -> Vec<Vec<f64>> {
    s.theta().tensors().map(values).collect()
}

#[test]
fn frozen_designer_makes_the_learner_independent_of_the_feedback_set() {
    let run = |feedback_seed: u64, designer_lr: f64| {
        let fs = format!("task.config.feedback_seed={feedback_seed}");
        let lr = format!("designer_optim.lr={designer_lr}");
        let mut s = session(&[&fs, &lr]);
        for _ in 0..25 {
            s.train_step().unwrap();
        }
        theta_values(&s)
    };
    // φ frozen: bitwise identical θ for two different feedback sets.
    assert_eq!(run(1, 0.0), run(7, 0.0));
    // The control: with φ learning, the feedback set does change θ (so the check can fail).
    assert_ne!(run(1, 1e-2), run(7, 1e-2));
}

#[test]
fn learner_gradient_is_the_pretraining_gradient_on_the_detached_construction() {
    // Plain SGD, lr 1, constant: the learner's update is exactly −∇θ L_pre.
    let mut s = session(&[
        "learner.optimizer=sgd",
        "learner.betas=[0.0, 0.0]",
        "learner.lr=1.0",
        "learner.warmup=0",
        "learner.min_lr_ratio=1.0",
        "learner.clip=0.0",
    ]);
    let theta0: Vec<Tensor> = s.theta().tensors().map(|t| t.detach().copy()).collect();
    let state0 = s.task_mut().state().unwrap();
    let record = s.train_step().unwrap(); // includes a meta step (period 1): φ moves first
    assert!(matches!(
        record,
        vpt_host::report::Record::Train(vpt_host::report::TrainRecord { meta: Some(_), .. })
    ));
    let delta: Vec<Vec<f64>> = s
        .theta()
        .tensors()
        .zip(&theta0)
        .map(|(t1, t0)| values(&(t0 - t1.detach())))
        .collect();

    // Rewind θ and the data cursor, rebuild the construction with the updated φ, detached.
    tch::no_grad(|| {
        for (t, t0) in s.theta().tensors().zip(&theta0) {
            t.shallow_clone().copy_(t0);
        }
    });
    s.task_mut().load_state(state0).unwrap();
    let batches = s.next_unlabeled().unwrap();
    let constructions = s.learner_constructions(&batches).unwrap();
    for c in &constructions {
        assert!(
            c.tensors.tensors().all(|t| !t.requires_grad()),
            "the host must detach every construction tensor"
        );
    }
    let refs: Vec<&Batch> = batches.iter().collect();
    let theta: Vec<Tensor> = s.theta().tensors().map(Tensor::shallow_clone).collect();
    let none = TensorMap::new();
    let loss = mean_pretrain_objective(
        s.task_mut(),
        &refs,
        &vec![&none; refs.len()],
        &constructions,
        Differentiation::Once,
    )
    .unwrap()
    .loss;
    let g: Vec<Vec<f64>> = grad(&loss, &theta, false)
        .unwrap()
        .iter()
        .map(values)
        .collect();
    for (d, g) in delta.iter().flatten().zip(g.iter().flatten()) {
        assert!((d - g).abs() < 1e-12, "update {d} vs gradient {g}");
    }
}

#[test]
fn feedback_batches_never_reach_pretrain_loss() {
    let mut s = session(&[]);
    for _ in 0..10 {
        s.train_step().unwrap();
    }
    let state = s.task_mut().state().unwrap();
    assert_eq!(state.json["feedback_in_pretrain"], 0);
    assert!(
        state.json["feedback_cursor"][0].as_u64().unwrap() >= 10,
        "meta steps drew feedback batches"
    );
    // The host refuses a feedback batch outright, before the plugin sees it.
    let fb = s
        .task_mut()
        .next_batch(BatchSource::Feedback { set: 0 })
        .unwrap();
    let err = mean_pretrain_objective(
        s.task_mut(),
        &[&fb],
        &[&TensorMap::new()],
        &[vpt_sdk::Construction::baseline()],
        Differentiation::Once,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("feedback never enters a learner batch"),
        "{err}"
    );
    assert_eq!(
        s.task_mut().state().unwrap().json["feedback_in_pretrain"],
        0
    );
}

#[test]
fn designer_hypergradient_matches_finite_differences() {
    // V(φ) = g_downᵀ ∇_S L_pre(θ; B_u, c(φ)); compare ∂V/∂φ (double backward through the
    // plugin-built graph) with central differences, in f64.
    tch::set_num_threads(1);
    let cfg = tiny_config(&[]);
    let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
    let plugin = plugins.get("tiny").unwrap();
    let ctx = vpt_sdk::BuildContext {
        seed: 3,
        device: "cpu".into(),
    };
    let mut task = plugin.new_task("tiny", &cfg.task.config, &ctx).unwrap();
    let info = task.info();
    let mut designer = plugin
        .new_designer(
            "tiny_soft",
            &serde_json::json!({"gate_init": 0.0}),
            &info.designer_context,
            &ctx,
        )
        .unwrap();
    let s = alignment_subset(&task).unwrap();
    let phi: Vec<Tensor> = designer
        .parameters()
        .unwrap()
        .tensors()
        .map(Tensor::shallow_clone)
        .collect();
    let b_u = task
        .next_batch(BatchSource::Unlabeled { domain: 0 })
        .unwrap();
    let b_f = task.next_batch(BatchSource::Feedback { set: 0 }).unwrap();
    let g_down = feedback_gradient(&mut task, &s, &b_f).unwrap();

    // V through the host's path across the FFI: the learner's forward, its meta slice (a
    // quarter of the rows), the designer on the slice, g_pre from the forward's state (Twice).
    let rows = task.info().batch_size / 4;
    let value = |task: &mut vpt_sdk::foreign::ForeignTask,
                 designer: &mut vpt_sdk::foreign::ForeignDesigner| {
        let forward = task.pretrain_forward(&b_u).unwrap();
        let size = MetaBatch {
            rows,
            max_len: None,
        };
        let (b, f) = task.meta_batch(&b_u, &forward, size).unwrap();
        assert_eq!(b.tensors.require("x").unwrap().size()[0], rows as i64);
        value(task, designer, &s, &g_down, &[&b], &[&f], Align::Dot)
            .unwrap()
            .v
    };
    let v = value(&mut task, &mut designer);
    let analytic = grad(&v, &phi, false).unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (p, g) in phi.iter().zip(&analytic) {
        for idx in [0i64, p.numel() as i64 - 1] {
            let flat = p.view(-1);
            let orig = tch::no_grad(|| flat.double_value(&[idx]));
            let set = |x: f64| {
                tch::no_grad(|| {
                    let _ = flat.get(idx).fill_(x);
                })
            };
            set(orig + eps);
            let up = value(&mut task, &mut designer).double_value(&[]);
            set(orig - eps);
            let down = value(&mut task, &mut designer).double_value(&[]);
            set(orig);
            let fd = (up - down) / (2.0 * eps);
            let an = g.view(-1).double_value(&[idx]);
            assert!(
                (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                "∂V/∂φ: analytic {an} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6);
    assert!(
        analytic
            .iter()
            .any(|g| g.abs().sum(Kind::Double).double_value(&[]) > 1e-8),
        "hypergradient is not all zero"
    );
}

#[test]
fn non_finite_meta_values_are_skipped_and_leave_phi_untouched() {
    // Every feedback loss is NaN: every meta step is skipped, φ stays exactly as initialised.
    let mut s = session(&["task.config.nan_in=\"feedback\"", "task.config.nan_every=1"]);
    let phi0: Vec<Vec<f64>> = s.phi().tensors().map(values).collect();
    let theta_before = theta_values(&s);
    for _ in 0..6 {
        s.train_step().unwrap();
    }
    assert_eq!(s.counters.meta_skipped, 6);
    assert_eq!(s.counters.meta_steps, 6);
    assert_ne!(theta_values(&s), theta_before, "the learner still trains");
    assert_eq!(
        s.phi().tensors().map(values).collect::<Vec<_>>(),
        phi0,
        "φ must not move on a skipped meta step"
    );
    assert!(theta_values(&s).iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn non_finite_learner_losses_skip_the_update_and_stop_after_too_many() {
    let mut s = session(&[
        "task.config.nan_in=\"pretrain\"",
        "task.config.nan_every=2",
        "meta.estimator=none",
    ]);
    s.train_step().unwrap(); // call 1: finite
    let before = theta_values(&s);
    s.train_step().unwrap(); // call 2: NaN → skipped
    assert_eq!(s.counters.learner_skipped, 1);
    assert_eq!(theta_values(&s), before, "a NaN loss must not touch θ");

    let mut s = session(&[
        "task.config.nan_in=\"pretrain\"",
        "task.config.nan_every=1",
        "meta.estimator=none",
    ]);
    let err = (0..20)
        .find_map(|_| s.train_step().err())
        .expect("a run of NaN losses must stop the run");
    assert!(err.to_string().contains("non-finite"), "{err}");
    assert!(theta_values(&s).iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn v_beats_the_baseline_in_every_seed_and_random_feedback_does_not() {
    let dir = vpt_integration::scratch_dir("tiny-compare");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny.toml");
    let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
    let arms: Vec<String> = ["baseline", "v", "random_feedback"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let overrides = vec![
        "run.steps=200".to_string(),
        "run.checkpoint_every=0".to_string(),
    ];
    vpt_host::compare::compare(
        std::path::Path::new(config),
        &overrides,
        &arms,
        2,
        &dir,
        &Default::default(),
        &Default::default(),
        &mut plugins,
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let losses = |arm: &str| -> Vec<f64> {
        report["arms"][arm]["seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metrics"]["feedback_loss"].as_f64().unwrap())
            .collect()
    };
    let (base, v, rf) = (losses("baseline"), losses("v"), losses("random_feedback"));
    assert_eq!(base.len(), 2);
    for (b, x) in base.iter().zip(&v) {
        assert!(
            x < &(b - 0.1),
            "V {x} must beat the baseline {b} clearly in every seed"
        );
    }
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    assert!(
        mean(&rf) > mean(&base) - 0.05,
        "random feedback {rf:?} must not beat the baseline {base:?}"
    );
    assert!(dir.join("report.md").exists());
    assert!(std::fs::read_dir(&dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".svg")));
}

#[test]
fn multi_task_and_domain_matched_feedback_use_every_set() {
    // Two domains with their own feedback sets; ω weights one set more than the other.
    let weighted = [
        "task.config.domains=2",
        "meta.feedback=[{set=\"clean0\", weight=1.0}, {set=\"clean1\", weight=0.5}]",
    ];
    for matched in ["false", "true"] {
        let dm = format!("meta.domain_matched={matched}");
        let mut s = session(&[weighted[0], weighted[1], &dm]);
        for _ in 0..8 {
            s.train_step().unwrap();
        }
        let state = s.task_mut().state().unwrap();
        assert_eq!(
            state.json["feedback_cursor"],
            serde_json::json!([8, 8]),
            "both feedback sets are drawn each meta step"
        );
        assert_eq!(
            state.json["unlabeled_cursor"],
            serde_json::json!([8, 8]),
            "one batch per domain per step"
        );
        assert_eq!(s.counters.meta_steps, 8);
        assert_eq!(s.counters.meta_skipped, 0);
    }
    // A feedback set the task does not have is refused, naming the field.
    let mut plugins = Plugins::discover(&SearchPath::only(&[tiny_plugin()]));
    let err = Session::build(
        tiny_config(&["meta.feedback=[{set=\"gsm8k\"}]"]),
        &mut plugins,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("meta.feedback[0].set") && err.contains("clean0"),
        "{err}"
    );
}

#[test]
fn a_v_learner_step_runs_one_learner_forward() {
    let forwards = |s: &mut Session| {
        s.task_mut().state().unwrap().json["unlabeled_forwards"]
            .as_u64()
            .unwrap()
    };
    // Meta period 2: steps 0, 2 carry a meta step; each step is still one forward.
    let mut s = session(&["meta.period=2", "meta.batch_fraction=0.25"]);
    for step in 0..4 {
        let before = forwards(&mut s);
        let record = s.train_step().unwrap();
        let vpt_host::report::Record::Train(t) = record else {
            panic!("a train record")
        };
        assert_eq!(t.meta.is_some(), step % 2 == 0);
        if let Some(m) = &t.meta {
            assert_eq!(m.rows, 16, "a quarter of the 64-example batch");
        }
        assert_eq!(forwards(&mut s) - before, 1, "step {step}");
    }
    // The baseline (no designer) also makes one forward, inside its loss.
    let mut b = session(&["designer.enabled=false", "meta.estimator=none"]);
    let before = forwards(&mut b);
    b.train_step().unwrap();
    assert_eq!(forwards(&mut b) - before, 1);
}

#[test]
fn the_adam_preconditioned_value_aligns_p_times_g_down_with_g_pre() {
    // `meta.precondition = "adam"`: V = (P ⊙ g_down)ᵀ g_pre with P = 1/(√v̂ + ε) from the
    // learner's AdamW. With ε = 1e6 ≫ √v̂, P = 1/ε to 1e-6, so V·ε must equal the plain V of an
    // identical run (φ frozen, so both runs see the same θ and batches) — and a V not
    // multiplied by P fails this by a factor of 1e6. Before the learner's first step there is
    // no preconditioner and V is the plain one.
    let run = |precondition: &str| {
        let mut s = session(&[
            "learner.eps=1e6",
            "designer_optim.lr=0.0",
            &format!("meta.precondition={precondition}"),
        ]);
        (0..6)
            .map(|_| match s.train_step().unwrap() {
                vpt_host::records::Record::Train(r) => r.meta.unwrap(),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let (plain, adam) = (run("none"), run("adam"));
    assert!(!adam[0].preconditioned && adam[0].value == plain[0].value);
    for (p, a) in plain.iter().zip(&adam).skip(1) {
        assert!(a.preconditioned && !p.preconditioned);
        let rel = (a.value * 1e6 - p.value).abs() / p.value.abs();
        assert!(
            rel < 1e-4,
            "V_P·ε = {} vs V = {} (rel {rel})",
            a.value * 1e6,
            p.value
        );
    }
    // Adam's metric needs an Adam learner
    let mut doc: toml::Value = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/tiny.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    apply_overrides(
        &mut doc,
        &[
            "meta.precondition=adam".into(),
            "learner.optimizer=sgd".into(),
        ],
    )
    .unwrap();
    let err = RunConfig::from_toml(doc).unwrap_err().to_string();
    assert!(err.contains("meta.precondition"), "{err}");
}
