use super::config::d_levels;
use super::*;
use crate::data::{Fields, Record};
use crate::designer::{TopKSoft, TopKSoftConfig};
use crate::labeled::{self, JsonlSource, SetKind};
use crate::scorer::ScorerConfig;
use std::collections::HashSet;
use tch::Kind;
use vpt_llama::Scope;
use vpt_sdk::value::{alignment_subset, designer_gradient, feedback_gradient, Align};
use vpt_sdk::{Designer, Forward, MetaBatch, KIND_LM_SOFT_TARGETS};

fn ctx() -> BuildContext {
    BuildContext {
        seed: 3,
        device: "cpu".into(),
    }
}

fn tiny_task() -> CausalLm {
    tch::set_num_threads(2);
    CausalLm::new(CausalLmConfig::tiny(), &ctx()).unwrap()
}

const U: BatchSource = BatchSource::Unlabeled { domain: 0 };
const F: BatchSource = BatchSource::Feedback { set: 0 };

fn onehot_soft(inputs: &TensorMap) -> Construction {
    let cand = inputs.require("cand_ids").unwrap();
    let q = cand.zeros_like().to_kind(Kind::Float);
    let _ = q.narrow(-1, 0, 1).fill_(1.0);
    Construction {
        kind: KIND_LM_SOFT_TARGETS.into(),
        tensors: TensorMap::new()
            .with("cand_ids", cand.copy())
            .with("probs", q),
    }
}

#[test]
fn builds_through_the_registry_and_rejects_bad_config() {
    let reg = crate::vpt_registry();
    let t = reg.task("causal_lm").unwrap().build(&serde_json::json!({"model": "tiny_random", "seq_len": 16, "unlabeled": {"general_fraction": 0.0}, "eval": {"general_rows": 0}}), &ctx()).unwrap();
    let info = t.info();
    let kinds = reg.task("causal_lm").unwrap().manifest().kinds;
    assert_eq!(kinds, vec![KIND_LM_SOFT_TARGETS.to_string()]);
    assert_eq!(info.feedback_sets[0].name, "math");
    assert_eq!(info.designer_context["k"], 64);
    // Default trainable = last 2 layers of the 2-layer tiny model; S = the same.
    assert!(info
        .alignment
        .iter()
        .all(|n| n.starts_with("model.layers.")));
    let err = reg
        .task("causal_lm")
        .unwrap()
        .build(
            &serde_json::json!({"model": "tiny_random", "seq_lenn": 3}),
            &ctx(),
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("seq_lenn"), "{err}");
    let err = reg
        .task("causal_lm")
        .unwrap()
        .build(&serde_json::json!({"model": "tiny_random", "feedback": [{"name": "g", "kind": "gsm8k_jsonl"}]}), &ctx())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("feedback[0].path"), "{err}");
    let m = reg.manifest();
    assert_eq!(m.designers.len(), 4);
    assert!(m.tasks[0].schema.to_string().contains("alignment_layers"));
}

#[test]
fn example_configs_parse() {
    let reg = crate::vpt_registry();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for name in [
        "lm-smollm2.toml",
        "lm-gsm8k.toml",
        "lm-gsm8k-cpu.toml",
        "lm-two-feedback.toml",
        "bench-lm.toml",
        "lm-mix-cpu.toml",
        "lm-noisy-cpu.toml",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        let v: serde_json::Value = toml::from_str(&text).unwrap();
        let cfg: CausalLmConfig =
            vpt_sdk::parse_config(&v["task"]["config"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cfg.model, ModelSource::Gguf("${VPT_SMOLLM2_GGUF}".into()));
        let d = &v["designer"];
        assert_eq!(d["name"], "topk_soft");
        let _: crate::designer::TopKSoftConfig = vpt_sdk::parse_config(&d["config"]).unwrap();
        assert!(reg.designer(d["name"].as_str().unwrap()).is_ok());
        let sets: Vec<&str> = cfg.feedback.iter().map(|f| f.name.as_str()).collect();
        if let Some(w) = v["meta"]["feedback"].as_array() {
            assert!(
                w.iter().all(|f| sets.contains(&f["set"].as_str().unwrap())),
                "{name}: weights name a missing set"
            );
        }
    }
}

#[test]
fn batches_inputs_and_losses_have_the_right_shapes() {
    let mut t = tiny_task();
    let b = t.next_batch(U).unwrap();
    assert_eq!(b.tensors.require("ids").unwrap().size(), vec![2, 32]);
    let inputs = t.design_inputs(&b).unwrap();
    let cand = inputs.require("cand_ids").unwrap();
    assert_eq!(cand.size(), vec![2, 32, 8]);
    assert!(cand
        .select(-1, 0)
        .equal(b.tensors.require("targets").unwrap()));
    // The true token is not repeated among the other candidates.
    let dup = cand
        .narrow(-1, 1, 7)
        .eq_tensor(&cand.narrow(-1, 0, 1))
        .any()
        .int64_value(&[]);
    assert_eq!(dup, 0);
    assert!(
        inputs
            .require("cand_logprobs")
            .unwrap()
            .max()
            .double_value(&[])
            <= 0.0
    );
    assert_eq!(inputs.require("features").unwrap().size(), vec![2, 32, 64]);
    assert!(!inputs.require("features").unwrap().requires_grad());
    let base = t
        .pretrain_loss(&b, &Construction::baseline(), Differentiation::Once)
        .unwrap();
    assert_eq!(base.size(), vec![2]);
    assert!(base.requires_grad());
    // Soft targets with α = 0 (one-hot on the true candidate) equal the baseline CE.
    let soft = t
        .pretrain_loss(&b, &onehot_soft(&inputs), Differentiation::Once)
        .unwrap();
    assert!(
        (&soft - &base).abs().max().double_value(&[]) < 1e-5,
        "{soft:?} vs {base:?}"
    );
    // Random-init CE is near log V.
    assert!((base.mean(Kind::Double).double_value(&[]) - (300f64).ln()).abs() < 1.0);
    let fb = t.next_batch(F).unwrap();
    let l = t.feedback_loss(&fb).unwrap();
    assert_eq!(l.size(), Vec::<i64>::new());
    assert!(
        t.pretrain_loss(&fb, &Construction::baseline(), Differentiation::Once)
            .is_err(),
        "feedback batches never reach L_pre"
    );
    assert!(t.feedback_loss(&b).is_err());
}

#[test]
fn resume_replays_the_same_batches() {
    let mut a = tiny_task();
    for _ in 0..3 {
        a.next_batch(U).unwrap();
        a.next_batch(F).unwrap();
    }
    let saved = a.state().unwrap();
    let next: Vec<Tensor> = (0..4)
        .flat_map(|_| [a.next_batch(U).unwrap(), a.next_batch(F).unwrap()])
        .map(|b| b.tensors.require("ids").unwrap().copy())
        .collect();
    let mut b = tiny_task();
    b.load_state(State {
        json: saved.json,
        tensors: TensorMap::new(),
    })
    .unwrap();
    let again: Vec<Tensor> = (0..4)
        .flat_map(|_| [b.next_batch(U).unwrap(), b.next_batch(F).unwrap()])
        .map(|b| b.tensors.require("ids").unwrap().copy())
        .collect();
    for (x, y) in next.iter().zip(&again) {
        assert!(x.equal(y));
    }
    // A fresh task (no restore) is at the start, so it differs.
    let mut c = tiny_task();
    assert!(!c
        .next_batch(U)
        .unwrap()
        .tensors
        .require("ids")
        .unwrap()
        .equal(&next[0]));
}

#[test]
fn evaluate_reports_the_required_metrics() {
    let mut t = tiny_task();
    let m = t.evaluate(Some(2)).unwrap();
    for k in [
        "feedback_loss",
        "feedback_loss/math",
        "general_loss",
        "pass@1",
    ] {
        assert!(m.contains_key(k), "{m:?}");
    }
    assert!(m["feedback_loss"].is_finite() && m["feedback_loss"] > 0.0);
    assert!((0.0..=1.0).contains(&m["pass@1"]));
}

fn gsm8k(name: &str) -> vpt_sdk::InputPath {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k/"))
        .join(name)
        .into()
}

fn gsm8k_set(name: &str, size: usize, heldout: usize) -> FeedbackSetConfig {
    FeedbackSetConfig {
        name: "gsm8k".into(),
        kind: SetKind::Gsm8kJsonl,
        path: Some(gsm8k(name)),
        fields: None,
        levels: d_levels(),
        size,
        heldout,
    }
}

/// The real-data layout of the LM configs: stream = GSM8K train minus the feedback split,
/// feedback = 1,024 train examples (256 held out), test = GSM8K test; pairwise disjoint.
#[test]
fn gsm8k_stream_feedback_and_test_are_disjoint() {
    let mut cfg = CausalLmConfig::tiny();
    cfg.unlabeled.generated_math = false;
    cfg.unlabeled.jsonl = vec![JsonlSource::Labeled(labeled::LabeledSource {
        path: gsm8k("train.jsonl"),
        kind: SetKind::Gsm8kJsonl,
        fields: None,
    })];
    cfg.feedback = vec![gsm8k_set("train.jsonl", 768, 256)];
    cfg.eval.test = TestSetConfig {
        kind: SetKind::Gsm8kJsonl,
        path: Some(gsm8k("test.jsonl")),
        size: 1319,
        ..TestSetConfig::default()
    };
    let mut t = CausalLm::new(cfg, &ctx()).unwrap();
    let fb = &t.feedback[0];
    assert_eq!((fb.train.len(), fb.heldout.len()), (768, 256));
    let feedback: HashSet<String> = fb
        .train
        .iter()
        .chain(&fb.heldout)
        .map(|e| labeled::stream_prompt(&e.prompt))
        .collect();
    assert_eq!(feedback.len(), 1024);
    let stream: HashSet<String> = t
        .stream
        .jsonl
        .iter()
        .map(|r| match r {
            Record::PromptResponse { prompt, .. } => prompt.clone(),
            Record::Text(_) => panic!("GSM8K records carry a prompt"),
        })
        .collect();
    let test: HashSet<String> = t
        .test
        .iter()
        .map(|e| labeled::stream_prompt(&e.prompt))
        .collect();
    assert_eq!((stream.len(), test.len()), (7473 - 1024, 1319));
    assert!(stream.is_disjoint(&feedback) && stream.is_disjoint(&test));
    assert!(feedback.is_disjoint(&test));
    // Every train problem is in exactly one of stream and feedback.
    let train = labeled::read_set(SetKind::Gsm8kJsonl, &gsm8k("train.jsonl"), None, None).unwrap();
    for e in &train {
        let p = labeled::stream_prompt(&e.prompt);
        assert!(stream.contains(&p) != feedback.contains(&p));
    }
    // The stream's loss is on the solution only: the prompt tokens carry no loss.
    let frac = (0..20)
        .map(|_| {
            let b = t.next_batch(U).unwrap();
            b.tensors
                .require("mask")
                .unwrap()
                .mean(Kind::Double)
                .double_value(&[])
        })
        .sum::<f64>()
        / 20.0;
    assert!(frac > 0.2 && frac < 0.95, "loss fraction {frac}");
}

/// A downstream task as data: a JSONL feedback set with its own field names and a
/// multiple-choice test set, evaluated with intervals, no code.
#[test]
fn jsonl_sets_with_scorers_evaluate_with_intervals() {
    let dir = std::env::temp_dir().join(format!("vpt-lm-task-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fb_path = dir.join("fb.jsonl");
    let lines: String = (0..12)
        .map(|i| format!("{{\"q\": \"say {i}\", \"a\": \"{i}\"}}\n"))
        .collect();
    std::fs::write(&fb_path, lines).unwrap();
    let choice = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/arith-choice/test.jsonl"
    );
    let mut cfg = CausalLmConfig::tiny();
    cfg.feedback = vec![FeedbackSetConfig {
        name: "echo".into(),
        kind: SetKind::Jsonl,
        path: Some(fb_path.clone().into()),
        fields: Some(Fields {
            prompt: "q".into(),
            response: "a".into(),
            options: "o".into(),
        }),
        levels: d_levels(),
        size: 8,
        heldout: 4,
    }];
    cfg.eval.test = TestSetConfig {
        kind: SetKind::Jsonl,
        path: Some(choice.into()),
        size: 6,
        scorer: Some(ScorerConfig::Choice),
        ..TestSetConfig::default()
    };
    let mut t = CausalLm::new(cfg.clone(), &ctx()).unwrap();
    let m = t.evaluate(None).unwrap();
    for k in [
        "feedback_loss",
        "feedback_loss.ci_lo",
        "feedback_loss/echo.ci_hi",
        "choice_accuracy",
        "choice_accuracy.ci_lo",
    ] {
        assert!(m.contains_key(k), "{k} missing: {m:?}");
    }
    assert!(!m.contains_key("pass@1"));
    assert!(m["feedback_loss.ci_lo"] <= m["feedback_loss"]);
    assert!(m["feedback_loss"] <= m["feedback_loss.ci_hi"]);
    for k in ["", ".ci_lo", ".ci_hi"] {
        assert_eq!(
            m[&format!("feedback_loss{k}")],
            m[&format!("feedback_loss/echo{k}")]
        );
    }
    // Deterministic, intervals included (no general rows here: no general_loss interval).
    assert!(!m.contains_key("general_loss.ci_lo"));
    assert_eq!(format!("{:?}", t.evaluate(None).unwrap()), format!("{m:?}"));
    // The feedback loss is on the response tokens only: the one-digit answer + EOS.
    let fb = t.next_batch(F).unwrap();
    let per_row = fb
        .tensors
        .require("mask")
        .unwrap()
        .sum_dim_intlist(-1, false, Kind::Float);
    assert!(per_row.le(3.0).all().int64_value(&[]) == 1, "{per_row:?}");
    // Bad data and bad scorers are named.
    let mut bad = cfg.clone();
    bad.eval.test.scorer = Some(ScorerConfig::Numeric {
        pattern: "(".into(),
        fallback_last_number: true,
    });
    let err = CausalLm::new(bad, &ctx()).err().unwrap().to_string();
    assert!(err.contains("eval.test.scorer.numeric.pattern"), "{err}");
    let mut bad = cfg;
    bad.eval.test.path = Some(fb_path.clone().into());
    let err = CausalLm::new(bad, &ctx()).err().unwrap().to_string();
    assert!(err.contains("fb.jsonl:1:"), "{err}");
}

/// V(φ) = g_down · g_pre(φ) on S (the SDK's one implementation: g_pre built with
/// create_graph), on a batch whose forward is `forward`.
fn value(
    task: &mut CausalLm,
    d: &mut TopKSoft,
    b: &Batch,
    forward: &Forward,
    g_down: &[Tensor],
    s: &[Tensor],
) -> Tensor {
    vpt_sdk::value::value(task, d, s, g_down, &[b], &[forward], Align::Dot)
        .unwrap()
        .v
}

#[test]
fn hypergradient_matches_finite_differences() {
    let mut t = tiny_task();
    t.set_kind(Kind::Double);
    let info = t.info();
    let tc: LmDesignContext = serde_json::from_value(info.designer_context.clone()).unwrap();
    let cfg = TopKSoftConfig {
        layers: 1,
        width: 16,
        heads: 2,
        alpha_max: 0.5,
        gate_init: 0.0,
    };
    let mut d = TopKSoft::new(cfg, &tc, &ctx()).unwrap();
    d.to_double();
    let s = alignment_subset(&t).unwrap();
    let fb = t.next_batch(F).unwrap();
    let g_down = feedback_gradient(&mut t, &s, &fb).unwrap();
    let b = t.next_batch(U).unwrap();
    // the batch without a forward (empty state): the task's own `pretrain_loss` path
    let forward = Forward {
        design_inputs: t.design_inputs(&b).unwrap(),
        state: TensorMap::new(),
    };
    let phi = d.parameters().unwrap();
    let phi_t: Vec<Tensor> = phi.tensors().map(|x| x.shallow_clone()).collect();
    let v = value(&mut t, &mut d, &b, &forward, &g_down, &s);
    let grads = designer_gradient(&v, &phi).unwrap();
    let total: f64 = grads
        .iter()
        .map(|g| g.abs().sum(Kind::Double).double_value(&[]))
        .sum();
    assert!(total > 0.0 && total.is_finite(), "hypergradient {total}");
    // Directional finite difference along a random direction in φ.
    tch::manual_seed(5);
    let dirs: Vec<Tensor> = phi_t.iter().map(|p| p.randn_like()).collect();
    let analytic: f64 = grads
        .iter()
        .zip(&dirs)
        .map(|(g, u)| (g * u).sum(Kind::Double).double_value(&[]))
        .sum();
    let eps = 1e-5;
    let mut shifted = |sign: f64| {
        tch::no_grad(|| {
            for (p, u) in phi_t.iter().zip(&dirs) {
                let _ = p.shallow_clone().g_add_(&(u * (sign * eps)));
            }
        });
        let v = value(&mut t, &mut d, &b, &forward, &g_down, &s);
        tch::no_grad(|| {
            for (p, u) in phi_t.iter().zip(&dirs) {
                let _ = p.shallow_clone().g_sub_(&(u * (sign * eps)));
            }
        });
        v.double_value(&[])
    };
    let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps);
    let rel = (numeric - analytic).abs() / analytic.abs().max(1e-12);
    assert!(
        rel < 1e-4,
        "analytic {analytic} vs numeric {numeric} (rel {rel})"
    );
}

/// The SDK harness on the tiny LM in f64, S = the last block only (a real prefix below S):
/// the forward path (`pretrain_forward`, `meta_batch`, `pretrain_loss_from_forward`) gives
/// the losses of `pretrain_loss` in both differentiation modes, and ∂V/∂φ through it
/// matches finite differences.
#[test]
fn the_sdk_harness_passes_through_the_shared_forward_and_the_meta_slice() {
    let mut cfg = CausalLmConfig::tiny();
    cfg.alignment_layers = Some(1);
    tch::set_num_threads(2);
    let mut t = CausalLm::new(cfg, &ctx()).unwrap();
    assert_eq!(t.s_start, Some(1));
    t.set_kind(Kind::Double);
    let tc: LmDesignContext = serde_json::from_value(t.info().designer_context).unwrap();
    let dcfg = TopKSoftConfig {
        layers: 1,
        width: 16,
        heads: 2,
        alpha_max: 0.5,
        gate_init: 0.0,
    };
    let mut d = TopKSoft::new(dcfg, &tc, &ctx()).unwrap();
    d.to_double();
    let manifest = crate::vpt_registry().task("causal_lm").unwrap().manifest();
    let opts = vpt_sdk::testing::InvariantOptions {
        evaluate: false,
        eval_limit: None,
        ..vpt_sdk::testing::InvariantOptions::for_task(&manifest)
    };
    vpt_sdk::testing::check_invariants(&mut t, Some(&mut d), &opts).assert_passed();
    vpt_sdk::testing::check_hypergradient(&mut t, &mut d, 1e-6, 1e-5).assert_passed();
}

/// g_down through the prefix cache (filling it, then hitting it, also under extra padding)
/// equals g_down through the blocks below S, in f64; the cache is off whenever a parameter
/// below S is trainable.
#[test]
fn the_feedback_prefix_cache_is_exact_and_only_on_when_below_s_is_frozen() {
    let mut cfg = CausalLmConfig::tiny();
    cfg.alignment_layers = Some(1);
    assert!(CausalLm::new(cfg.clone(), &ctx())
        .unwrap()
        .prefix_cache
        .is_none());
    cfg.trainable = Scope::All;
    assert!(CausalLm::new(cfg.clone(), &ctx())
        .unwrap()
        .prefix_cache
        .is_none());
    cfg.trainable = Scope::LastN(1);
    let mut t = CausalLm::new(cfg, &ctx()).unwrap();
    assert_eq!(t.s_start, Some(1));
    t.set_kind(Kind::Double);
    let s: Vec<Tensor> = t.trainable.iter().map(|(_, p)| p.shallow_clone()).collect();
    let b = t.next_batch(BatchSource::Feedback { set: 0 }).unwrap();
    let mut padded = vpt_sdk::narrow_rows(&b.tensors, i64::MAX).unwrap();
    for (name, value) in [("ids", 0.0), ("targets", 0.0), ("mask", 0.0)] {
        let x = b.tensors.require(name).unwrap();
        let pad = x.narrow(1, 0, 5).full_like(value);
        padded.insert(name, Tensor::cat(&[x, &pad], 1));
    }
    let padded = Batch {
        source: b.source,
        tensors: padded,
    };
    let g_down = |t: &mut CausalLm, batch: &Batch| -> Vec<Tensor> {
        feedback_gradient(t, &s, batch).unwrap()
    };
    let cache = t.prefix_cache.take();
    let reference = g_down(&mut t, &b);
    t.prefix_cache = cache;
    let runs = [
        g_down(&mut t, &b),
        g_down(&mut t, &b),
        g_down(&mut t, &padded),
    ];
    let c = t.prefix_cache.as_ref().unwrap();
    let rows = b.tensors.require("ids").unwrap().size()[0] as u64;
    assert_eq!(c.counts(), (2 * rows, rows), "filled once, then hit");
    assert!(c.bytes() > 0);
    for g in &runs {
        for (a, r) in g.iter().zip(&reference) {
            let err = (a - r).abs().max().double_value(&[]);
            let scale = r.abs().max().double_value(&[]);
            assert!(scale > 0.0 && err <= 1e-6 * scale, "{err} vs {scale}");
        }
    }
}

/// A meta batch on fewer rows and a shorter sequence cuts every design input with a time axis
/// (`cand_embeddings` included) to that length, so the designer builds on it.
#[test]
fn a_shorter_meta_sequence_cuts_every_timed_design_input() {
    let mut t = tiny_task();
    let tc: LmDesignContext = serde_json::from_value(t.info().designer_context).unwrap();
    let mut d = TopKSoft::new(TopKSoftConfig::default(), &tc, &ctx()).unwrap();
    let batch = t.next_batch(BatchSource::Unlabeled { domain: 0 }).unwrap();
    let forward = t.pretrain_forward(&batch).unwrap();
    let size = MetaBatch {
        rows: 1,
        max_len: Some(8),
    };
    let (_, sliced) = t.meta_batch(&batch, &forward, size).unwrap();
    for (name, x) in sliced.design_inputs.iter() {
        assert_eq!(x.size()[0], 1, "{name}");
        if name != "example_features" {
            assert_eq!(x.size()[1], 8, "{name}");
        }
    }
    d.construct(&sliced.design_inputs).unwrap();
}

/// Unlabeled rows that are all prompt (a prompt longer than a row) are warned about once,
/// naming how many rows and what to change; rows with a loss-bearing token are not.
#[test]
fn rows_without_loss_bearing_tokens_are_warned_about() {
    let row = |mask: Vec<f32>| Row {
        ids: vec![0; mask.len()],
        targets: vec![0; mask.len()],
        mask,
    };
    let (empty, some) = (row(vec![0.0; 4]), row(vec![0.0, 0.0, 1.0, 1.0]));
    assert!(stream::prompt_only_warning([some.clone(), some.clone()].iter(), 4).is_none());
    let w = stream::prompt_only_warning([empty.clone(), some.clone()].iter(), 4).unwrap();
    assert!(
        w.contains("1 of the 2 rows") && w.contains("task.config.seq_len (now 4 tokens)"),
        "{w}"
    );
    let w = stream::prompt_only_warning([empty.clone(), empty].iter(), 4).unwrap();
    assert!(w.contains("pretrain_loss is 0 and V is 0"), "{w}");

    // A task whose unlabeled records have 200-byte prompts and 16-token rows.
    let dir = std::env::temp_dir().join(format!("vpt-lm-prompt-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("long-prompts.jsonl");
    let prompt = "p".repeat(200);
    let lines: String = (0..4)
        .map(|i| format!("{{\"prompt\": \"{prompt}\", \"response\": \"{i}\"}}\n"))
        .collect();
    std::fs::write(&path, lines).unwrap();
    let mut cfg = CausalLmConfig::tiny();
    cfg.seq_len = 16;
    cfg.unlabeled.generated_math = false;
    cfg.unlabeled.jsonl = vec![JsonlSource::Path(path.display().to_string().into())];
    let mut t = CausalLm::new(cfg, &ctx()).unwrap();
    assert!(!t.stream.prompt_only_warned);
    let b = t.next_batch(U).unwrap();
    let mask = b.tensors.require("mask").unwrap();
    assert_eq!(mask.sum(Kind::Double).double_value(&[]), 0.0, "all prompt");
    assert!(t.stream.prompt_only_warned, "the first such batch warns");
    std::fs::remove_dir_all(&dir).unwrap();
}
