//! In-process tests of `dino_dense` and the mask designers through the SDK traits, on a tiny ViT.

mod common;
use common::tiny_config;
use tch::{Kind, Tensor};
use vpt_sdk::testing::sgd_step;
use vpt_sdk::value::{alignment_subset, designer_gradient, feedback_gradient, value, Align};
use vpt_sdk::{
    BatchSource, BuildContext, Construction, Designer, DesignerFactory, Differentiation, Task,
    TensorMap,
};
use vpt_vision::designer::{RandomMask, UnetMask, MASK};
use vpt_vision::task::DinoDenseTask;

const UNLABELED: BatchSource = BatchSource::Unlabeled { domain: 0 };
const FEEDBACK: BatchSource = BatchSource::Feedback { set: 0 };

fn ctx(seed: u64) -> BuildContext {
    BuildContext {
        seed,
        device: "cpu".into(),
    }
}

/// Torch's RNG is global to the process: building a task or a designer (a seeded init) and
/// the hypergradient check (which reseeds before every evaluation of V) hold this lock, so
/// tests running in parallel do not draw from each other's streams.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(seed: u64) -> DinoDenseTask {
    tch::set_num_threads(2);
    let _rng = torch_rng();
    DinoDenseTask::new(vpt_sdk::parse_config(&tiny_config()).unwrap(), &ctx(seed)).unwrap()
}

/// The U-Net mask designer with its default config, for task `t`.
fn unet(t: &DinoDenseTask, seed: u64) -> UnetMask {
    let _rng = torch_rng();
    UnetMask::new(
        serde_json::from_str("{}").unwrap(),
        &t.info().designer_context,
        &ctx(seed),
    )
    .unwrap()
}

fn registry() -> vpt_sdk::Registry {
    vpt_vision::vpt_registry()
}

#[test]
fn manifest_lists_the_task_and_both_designers() {
    let m = registry().manifest();
    assert_eq!(m.plugin, "vision");
    assert_eq!(m.tasks[0].name, "dino_dense");
    assert_eq!(
        m.tasks[0].kinds,
        vec![vpt_sdk::KIND_VISION_VIEW_MASK.to_string()]
    );
    let names: Vec<_> = m.designers.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["unet_mask", "random_mask"]);
    let err = registry()
        .task("dino_dense")
        .unwrap()
        .build(&serde_json::json!({"batch_sz": 3}), &ctx(0))
        .err()
        .unwrap();
    assert!(err.to_string().contains("batch_sz"), "{err}");
    let err = registry()
        .task("dino_dense")
        .unwrap()
        .build(&serde_json::json!({"vit": {"heads": 5}}), &ctx(0))
        .err()
        .unwrap();
    assert!(err.to_string().contains("vit.heads"), "{err}");
}

#[test]
fn batches_losses_and_alignment_subset() {
    let mut t = tiny(0);
    let info = t.info();
    assert_eq!(info.alignment.len(), 14, "{:?}", info.alignment); // last block (12 tensors) + final norm (2)
    assert!(info
        .alignment
        .iter()
        .all(|n| n.starts_with("backbone.blocks.1.") || n.starts_with("backbone.norm.")));
    let bu = t.next_batch(UNLABELED).unwrap();
    assert_eq!(
        bu.tensors.require("global").unwrap().size(),
        [4, 2, 1, 64, 64]
    );
    assert_eq!(
        bu.tensors.require("local").unwrap().size(),
        [4, 2, 1, 32, 32]
    );
    let l = t
        .pretrain_loss(&bu, &Construction::baseline(), Differentiation::Once)
        .unwrap();
    assert_eq!(l.size(), [4]);
    assert!(l.isfinite().all().int64_value(&[]) == 1);
    // Same seed → same batches and losses; the next batch differs.
    let mut u = tiny(0);
    let bu2 = u.next_batch(UNLABELED).unwrap();
    assert!(bu
        .tensors
        .require("global")
        .unwrap()
        .equal(bu2.tensors.require("global").unwrap()));
    assert!(l.equal(
        &u.pretrain_loss(&bu2, &Construction::baseline(), Differentiation::Once)
            .unwrap()
    ));
    let nb = t.next_batch(UNLABELED).unwrap();
    assert!(!nb
        .tensors
        .require("global")
        .unwrap()
        .equal(bu.tensors.require("global").unwrap()));
    // A feedback batch is refused by pretrain_loss; an unlabeled one by feedback_loss.
    let fb = t.next_batch(FEEDBACK).unwrap();
    assert!(t
        .pretrain_loss(&fb, &Construction::baseline(), Differentiation::Once)
        .is_err());
    assert!(t.feedback_loss(&bu).is_err());
    let lf = t.feedback_loss(&fb).unwrap();
    assert_eq!(lf.size(), Vec::<i64>::new());
    assert!(lf.double_value(&[]).is_finite() && lf.double_value(&[]) > 0.0);
    // A full mask (μ = 1) is the baseline recipe; a partial one changes the loss.
    let ones = Tensor::ones([4, 2, 1, 64, 64], (Kind::Float, tch::Device::Cpu));
    let c1 = Construction {
        kind: vpt_sdk::KIND_VISION_VIEW_MASK.into(),
        tensors: TensorMap::new().with(MASK, ones.shallow_clone()),
    };
    assert!(
        (t.pretrain_loss(&bu, &c1, Differentiation::Once).unwrap() - &l)
            .abs()
            .max()
            .double_value(&[])
            < 1e-6
    );
    let c0 = Construction {
        kind: vpt_sdk::KIND_VISION_VIEW_MASK.into(),
        tensors: TensorMap::new().with(MASK, ones * 0.2),
    };
    assert!(
        (t.pretrain_loss(&bu, &c0, Differentiation::Once).unwrap() - &l)
            .abs()
            .max()
            .double_value(&[])
            > 1e-4
    );
    // Kinds are checked against their spec by the SDK glue before a construction reaches the
    // task: a mask outside [0, 1] is refused there, naming the tensor.
    let over = Construction {
        kind: vpt_sdk::KIND_VISION_VIEW_MASK.into(),
        tensors: TensorMap::new().with(
            MASK,
            Tensor::full([4, 2, 1, 64, 64], 1.5, (Kind::Float, tch::Device::Cpu)),
        ),
    };
    let err = vpt_sdk::kinds::VISION_VIEW_MASK
        .check(&over)
        .unwrap_err()
        .to_string();
    assert!(err.contains(MASK), "{err}");
    assert!(vpt_sdk::kinds::VISION_VIEW_MASK.check(&c1).is_ok());
}

#[test]
fn evaluate_reports_every_metric_without_changing_state() {
    let mut t = tiny(1);
    let bu = t.next_batch(UNLABELED).unwrap();
    let before = t
        .pretrain_loss(&bu, &Construction::baseline(), Differentiation::Once)
        .unwrap();
    let m = t.evaluate(Some(8)).unwrap();
    for k in [
        "miou",
        "depth_rmse",
        "probe_acc",
        "feedback_loss",
        "general_loss",
        "seg_ce",
        "depth_l1",
    ] {
        assert!(m.get(k).is_some_and(|v| v.is_finite()), "{k}: {m:?}");
    }
    assert!((0.0..=1.0).contains(&m["miou"]) && (0.0..=1.0).contains(&m["probe_acc"]));
    // Background dominates: even a weak head beats chance on mIoU over 11 classes.
    assert!(m["miou"] > 0.05, "{m:?}");
    assert!(before.equal(
        &t.pretrain_loss(&bu, &Construction::baseline(), Differentiation::Once)
            .unwrap()
    ));
    assert_eq!(
        m,
        t.evaluate(Some(8)).unwrap(),
        "evaluation must be deterministic"
    );
}

#[test]
fn state_round_trip_resumes_exactly() {
    let mut a = tiny(2);
    let base = Construction::baseline();
    for s in 0..2 {
        let bu = a.next_batch(UNLABELED).unwrap();
        sgd_step(&mut a, &bu, &base, 0.05, s).unwrap();
    }
    a.next_batch(FEEDBACK).unwrap();
    a.prepare_feedback().unwrap();
    let theta: Vec<(String, Tensor)> = a
        .parameters()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let st = a.state().unwrap();
    let mut b = tiny(2);
    tch::no_grad(|| {
        for ((_, src), (_, dst)) in theta.iter().zip(b.parameters().unwrap()) {
            dst.shallow_clone().copy_(src);
        }
    });
    b.load_state(st).unwrap();
    for s in 2..4 {
        let (ba, bb) = (
            a.next_batch(UNLABELED).unwrap(),
            b.next_batch(UNLABELED).unwrap(),
        );
        let la = sgd_step(&mut a, &ba, &base, 0.05, s).unwrap();
        let lb = sgd_step(&mut b, &bb, &base, 0.05, s).unwrap();
        assert_eq!(la, lb);
    }
    let (fa, fb) = (
        a.next_batch(FEEDBACK).unwrap(),
        b.next_batch(FEEDBACK).unwrap(),
    );
    assert!(a
        .feedback_loss(&fa)
        .unwrap()
        .equal(&b.feedback_loss(&fb).unwrap()));
    let mut c = tiny(3);
    assert!(c
        .load_state(a.state().unwrap())
        .unwrap_err()
        .to_string()
        .contains("seed"));
}

#[test]
fn ema_teacher_moves_towards_the_student() {
    let mut t = tiny(4);
    let bu = t.next_batch(UNLABELED).unwrap();
    sgd_step(&mut t, &bu, &Construction::baseline(), 0.5, 0).unwrap();
    // After one SGD step the student differs from the teacher; EMA at m=0.99 moved it 1% of the way.
    let st = t.state().unwrap();
    let name = "backbone.norm.weight";
    let student = t.parameters().unwrap().require(name).unwrap().copy();
    let teacher = st.tensors.require(&format!("teacher.{name}")).unwrap();
    let init = Tensor::ones_like(&student); // LayerNorm weights start at 1 for both
    let want = &init * 0.99 + &student * 0.01;
    assert!((teacher - want).abs().max().double_value(&[]) < 1e-6);
    assert!(
        st.tensors
            .require("center")
            .unwrap()
            .abs()
            .sum(Kind::Float)
            .double_value(&[])
            > 0.0
    );
}

/// ∇φ V for a V step on the tiny ViT: finite, nonzero, and equal to finite differences (f64).
#[test]
fn v_step_gradient_matches_finite_differences() {
    let mut t = tiny(5);
    t.set_kind(Kind::Double).unwrap();
    let mut d = unet(&t, 5);
    d.set_kind(Kind::Double);
    let mut bu = t.next_batch(UNLABELED).unwrap();
    let mut fb = t.next_batch(FEEDBACK).unwrap();
    for b in [&mut bu, &mut fb] {
        b.tensors = b
            .tensors
            .iter()
            .map(|(n, x)| {
                (
                    n.to_string(),
                    if x.is_floating_point() {
                        x.to_kind(Kind::Double)
                    } else {
                        x.shallow_clone()
                    },
                )
            })
            .collect();
    }
    // V on the batch's own forward, as the host's meta step (g_pre with create_graph)
    let s = alignment_subset(&t).unwrap();
    t.prepare_feedback().unwrap();
    let gd = feedback_gradient(&mut t, &s, &fb).unwrap();
    let v_of = |t: &mut DinoDenseTask, d: &mut UnetMask| {
        let f = t.pretrain_forward(&bu).unwrap();
        value(t, d, &s, &gd, &[&bu], &[&f], Align::Dot).unwrap().v
    };
    let v = v_of(&mut t, &mut d);
    let grads = designer_gradient(&v, &d.parameters().unwrap()).unwrap();
    assert!(v.double_value(&[]).is_finite());
    assert!(grads
        .iter()
        .all(|g| g.isfinite().all().int64_value(&[]) == 1));
    let total: f64 = grads
        .iter()
        .map(|g| g.abs().sum(Kind::Double).double_value(&[]))
        .sum();
    assert!(total > 0.0, "∇φ V is zero");
    // Finite differences of V w.r.t. the U-Net's output bias (a global shift of the mask logits).
    let names: Vec<String> = d
        .parameters()
        .unwrap()
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let i = names.iter().position(|n| n == "unet.out.bias").unwrap();
    let bias = d
        .parameters()
        .unwrap()
        .require("unet.out.bias")
        .unwrap()
        .shallow_clone();
    let v_at = |delta: f64, t: &mut DinoDenseTask, d: &mut UnetMask| {
        let _ = tch::no_grad(|| bias.shallow_clone().f_add_scalar_(delta).unwrap());
        let v = v_of(t, d).double_value(&[]);
        let _ = tch::no_grad(|| bias.shallow_clone().f_sub_scalar_(delta).unwrap());
        v
    };
    let eps = 1e-4;
    let fd = (v_at(eps, &mut t, &mut d) - v_at(-eps, &mut t, &mut d)) / (2.0 * eps);
    let an = grads[i].double_value(&[0]);
    eprintln!("dV/db: analytic {an:.6e}, finite differences {fd:.6e}");
    assert!(an.abs() > 1e-10, "analytic ∂V/∂b = {an}");
    assert!(
        (fd - an).abs() <= 1e-5 * (1.0 + an.abs()) + 1e-4 * an.abs(),
        "fd {fd} vs analytic {an}"
    );
}

/// The SDK's hypergradient check on the tiny ViT and the U-Net mask designer, through the
/// host's path (forward, meta slice, designer, g_pre with create_graph). In f32, so ε = 1e-2
/// and tolerance 5e-2 (worst error 6e-3 here); the test above is the tight f64 one.
#[test]
fn the_sdk_hypergradient_check_passes() {
    let mut t = tiny(7);
    let mut d = unet(&t, 7);
    let _rng = torch_rng();
    let h = vpt_sdk::testing::check_hypergradient(&mut t, &mut d, 1e-2, 5e-2);
    println!("{h}");
    h.assert_passed();
}

#[test]
fn random_mask_control_runs_through_the_task() {
    let mut t = tiny(6);
    let mut d = RandomMask::build(
        serde_json::from_str("{}").unwrap(),
        &t.info().designer_context,
        &ctx(6),
    )
    .unwrap();
    let bu = t.next_batch(UNLABELED).unwrap();
    let inputs = t.design_inputs(&bu).unwrap();
    let c = d.construct(&inputs).unwrap();
    let l = t.pretrain_loss(&bu, &c, Differentiation::Once).unwrap();
    assert_eq!(l.size(), [4]);
    assert!(!l.equal(
        &t.pretrain_loss(&bu, &Construction::baseline(), Differentiation::Once)
            .unwrap()
    ));
    assert!(d.regularizer(&c).unwrap().is_none());
}

#[test]
fn stage0_is_cached_by_config_and_reused() {
    tch::set_num_threads(2);
    let dir = std::env::temp_dir().join(format!("vpt-vision-stage0-{}", std::process::id()));
    let mut cfg = tiny_config();
    cfg["stage0_steps"] = serde_json::json!(2);
    cfg["cache_dir"] = serde_json::json!(dir.display().to_string());
    let build = |cfg: &serde_json::Value| {
        DinoDenseTask::new(vpt_sdk::parse_config(cfg).unwrap(), &ctx(7)).unwrap()
    };
    let a = build(&cfg);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let b = build(&cfg);
    let fresh = tiny(7);
    let name = "backbone.blocks.0.attn.qkv.weight";
    let (pa, pb, pf) = (
        a.parameters().unwrap(),
        b.parameters().unwrap(),
        fresh.parameters().unwrap(),
    );
    assert!(pa.require(name).unwrap().equal(pb.require(name).unwrap()));
    assert!(
        !pa.require(name).unwrap().equal(pf.require(name).unwrap()),
        "stage 0 changed nothing"
    );
    // The same file works as an explicit base checkpoint.
    let mut c2 = tiny_config();
    c2["base_checkpoint"] = serde_json::json!(files[0].display().to_string());
    assert!(build(&c2)
        .parameters()
        .unwrap()
        .require(name)
        .unwrap()
        .equal(pa.require(name).unwrap()));
    c2["base_checkpoint"] = serde_json::json!("/nonexistent.ot");
    let e = DinoDenseTask::new(vpt_sdk::parse_config(&c2).unwrap(), &ctx(7))
        .err()
        .unwrap();
    assert!(e.to_string().contains("base_checkpoint"), "{e}");
    assert!(e.to_string().contains("TorchScript"), "{e}");
    // A corrupt cache is rebuilt (and rewritten intact), not fatal.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&files[0], bytes).unwrap();
    assert!(vpt_sdk::tensor_file::load_verified(&files[0], tch::Device::Cpu).is_err());
    build(&cfg);
    vpt_sdk::tensor_file::load_verified(&files[0], tch::Device::Cpu).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `examples/vision-fmnist.toml`: its task and designer tables parse, for every arm's designer.
#[test]
fn example_config_parses_for_every_arm() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/vision-fmnist.toml"
    );
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let json = |v: &toml::Value| serde_json::to_value(v).unwrap();
    let task = json(&doc["task"]["config"]);
    let cfg: vpt_vision::config::DinoDenseConfig = vpt_sdk::parse_config(&task).unwrap();
    assert!(cfg.stage0_steps > 0);
    let designer = json(&doc["designer"]["config"]);
    let reg = registry();
    let tc = serde_json::json!({"views": 2, "channels": 1, "height": 64, "width": 64});
    for name in ["unet_mask", "random_mask"] {
        reg.designer(name)
            .unwrap()
            .build(&designer, &tc, &ctx(0))
            .unwrap();
    }
    let arm = doc["arms"]["random_masks"]["set"].as_array().unwrap();
    assert!(arm
        .iter()
        .any(|s| s.as_str() == Some("designer.name=random_mask")));
}

/// The supervised diagnostic (`diagnostic_supervised`): θ is S plus the two heads, a
/// construction is refused naming the switch, its loss is the dense feedback loss on labelled
/// scenes (not the batch's images), and gradient steps on it lower that loss and move every
/// tensor of S and the heads.
#[test]
fn supervised_diagnostic_trains_s_and_heads_on_labels() {
    tch::set_num_threads(2);
    let mut cfg = tiny_config();
    cfg["diagnostic_supervised"] = serde_json::json!(true);
    let mut t = DinoDenseTask::new(vpt_sdk::parse_config(&cfg).unwrap(), &ctx(3)).unwrap();
    let theta = t.parameters().unwrap();
    let align = t.info().alignment;
    let mut names: Vec<String> = theta.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    let mut want = align.clone();
    want.extend(
        ["dep_head.b", "dep_head.w", "seg_head.b", "seg_head.w"]
            .map(|h| format!("diagnostic_supervised.{h}")),
    );
    want.sort();
    assert_eq!(names, want);
    let all = tiny(3).parameters().unwrap();
    assert!(all.len() > theta.len() && all.iter().all(|(n, _)| !n.starts_with("diagnostic")));

    let bu = t.next_batch(UNLABELED).unwrap();
    let mask = Tensor::ones([4, 2, 1, 64, 64], (Kind::Float, tch::Device::Cpu));
    let c = Construction {
        kind: vpt_sdk::KIND_VISION_VIEW_MASK.into(),
        tensors: TensorMap::new().with(MASK, mask),
    };
    let err = t
        .pretrain_loss(&bu, &c, Differentiation::Once)
        .unwrap_err()
        .to_string();
    assert!(err.contains("task.config.diagnostic_supervised"), "{err}");

    // the loss reads labels, not the batch's images: blanking the images changes nothing
    let loss = |t: &mut DinoDenseTask, b: &vpt_sdk::Batch| {
        t.pretrain_loss(b, &Construction::baseline(), Differentiation::Once)
            .unwrap()
    };
    let l0 = loss(&mut t, &bu);
    assert_eq!(l0.size(), [4], "per-example loss");
    let mut blank = vpt_sdk::Batch {
        source: bu.source,
        tensors: TensorMap::new(),
    };
    for (n, x) in bu.tensors.iter() {
        let x = if n == "index" {
            x.copy()
        } else {
            x.zeros_like()
        };
        blank.tensors.insert(n, x);
    }
    assert!(loss(&mut t, &blank).equal(&l0));

    let params: Vec<Tensor> = theta.iter().map(|(_, p)| p.shallow_clone()).collect();
    let start: Vec<Tensor> = params.iter().map(|p| p.copy()).collect();
    for step in 0..20 {
        let l = loss(&mut t, &bu).mean(Kind::Float);
        let g = Tensor::run_backward(&[l], &params, false, false);
        tch::no_grad(|| {
            for (p, g) in params.iter().zip(&g) {
                let _ = p.shallow_clone().f_sub_(&(g * 1e-3)).unwrap();
            }
        });
        t.after_step(step, &[]).unwrap();
    }
    let l1 = loss(&mut t, &bu);
    let (a, b) = (
        l0.mean(Kind::Double).double_value(&[]),
        l1.mean(Kind::Double).double_value(&[]),
    );
    assert!(b < 0.85 * a, "supervised loss {a} → {b}");
    let moved = |i: usize| (&params[i] - &start[i]).abs().max().double_value(&[]) > 0.0;
    assert!(
        (0..params.len()).all(moved),
        "every tensor of S and the heads moves"
    );
}

/// A masked learner step on cluttered scenes: after_step reports the mask's keep on objects,
/// background and clutter (matching the masks' mean, weighted by region), a baseline step
/// reports none, and with `VPT_RUN_DIR` set the start grid is written on the first masked step
/// and the end grid at evaluation, as PNG files.
#[test]
fn masked_steps_report_keep_by_region_and_draw_the_view_grid() {
    let dir = std::env::temp_dir().join(format!("vpt-vision-views-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = tiny_config();
    cfg["scenes"] = serde_json::json!({"clutter": 0.5, "perspective": true});
    let mut t = {
        tch::set_num_threads(2);
        let _rng = torch_rng();
        DinoDenseTask::new(vpt_sdk::parse_config(&cfg).unwrap(), &ctx(8)).unwrap()
    };
    let mut d = unet(&t, 8);
    let bu = t.next_batch(UNLABELED).unwrap();
    assert_eq!(
        bu.tensors.require("region_global").unwrap().size(),
        [4, 2, 2, 64, 64]
    );
    // baseline: teacher side outputs only, no statistics
    let f = t.pretrain_forward(&bu).unwrap();
    let base = t
        .pretrain_loss_from_forward(
            &bu,
            &f.state,
            &Construction::baseline(),
            Differentiation::Once,
        )
        .unwrap();
    assert!(t.after_step(0, &[base.side]).unwrap().is_empty());
    std::env::set_var(vpt_vision::viewgrid::RUN_DIR_ENV, &dir);
    let f = t.pretrain_forward(&bu).unwrap();
    let c = d.construct(&f.design_inputs).unwrap();
    let out = t
        .pretrain_loss_from_forward(&bu, &f.state, &c, Differentiation::Once)
        .unwrap();
    let m = t.after_step(1, &[out.side]).unwrap();
    for k in [
        "keep_objects",
        "keep_background",
        "keep_clutter",
        "keep_object_margin",
    ] {
        assert!(m.get(k).is_some_and(|v| v.is_finite()), "{k}: {m:?}");
    }
    assert!((m["keep_object_margin"] - (m["keep_objects"] - m["keep_background"])).abs() < 1e-9);
    // the region-weighted keeps bracket the plain mean of the masks
    let mean = c
        .tensors
        .require(MASK)
        .unwrap()
        .mean(Kind::Double)
        .double_value(&[]);
    let (lo, hi) = (
        m["keep_objects"].min(m["keep_background"]),
        m["keep_objects"].max(m["keep_background"]),
    );
    assert!(
        lo - 1e-3 <= mean && mean <= hi + 1e-3,
        "{mean} not in [{lo}, {hi}]"
    );
    let start = dir.join(vpt_vision::task::VIEWS_START_PNG);
    assert!(std::fs::read(&start).unwrap().starts_with(b"\x89PNG"));
    t.evaluate(Some(4)).unwrap();
    std::env::remove_var(vpt_vision::viewgrid::RUN_DIR_ENV);
    let end = std::fs::read(dir.join(vpt_vision::task::VIEWS_END_PNG)).unwrap();
    assert!(end.starts_with(b"\x89PNG"));
    assert!(d.metrics(&c).unwrap().contains_key("phi_drift"));
    std::fs::remove_dir_all(&dir).unwrap();
}
