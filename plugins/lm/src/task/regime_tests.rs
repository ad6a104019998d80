//! The mixed stream's source tags, the corrupted stream, the split step metrics and the
//! corruption oracle, on the tiny random model.

use super::split::step_metrics;
use super::*;
use crate::corrupt::{Among, CorruptConfig};
use crate::pack::Source;
use std::path::PathBuf;
use tch::Kind;

const U: BatchSource = BatchSource::Unlabeled { domain: 0 };

fn ctx() -> BuildContext {
    BuildContext {
        seed: 3,
        device: "cpu".into(),
    }
}

/// A fresh scratch directory with `files` (relative path, text).
fn scratch(tag: &str, files: &[(&str, String)]) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("vpt-lm-regime-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    for (rel, text) in files {
        let p = d.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    d
}

/// The tiny config on GSM8K train solutions, general prose and code from scratch directories.
fn mixed_config(general: f64, code: f64) -> CausalLmConfig {
    let mut c = CausalLmConfig::tiny();
    let prose =
        "This paragraph of prose is long enough to be kept by the general text reader. ".repeat(4);
    let docs: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("d{i}.rst.txt"),
                format!("Title {i}\n=====\n\n{prose}\n\n{prose}\n"),
            )
        })
        .collect();
    let docs: Vec<(&str, String)> = docs.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    let py: Vec<(String, String)> = (0..40)
        .map(|i| {
            let body = (0..30)
                .map(|j| format!("def f{i}_{j}(x):\n    return x * {j} + {i}\n\n"))
                .collect::<String>();
            (format!("pkg/m{i}.py"), body)
        })
        .collect();
    let py: Vec<(&str, String)> = py.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
    c.general.root = scratch("docs", &docs).display().to_string().into();
    c.general.min_chars = 100;
    c.code.root = scratch("code", &py).display().to_string();
    c.code.min_chars = 50;
    c.code.max_chars = 400;
    c.unlabeled.generated_math = false;
    c.unlabeled.jsonl = vec![serde_json::from_value(serde_json::json!({
        "path": concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k/train.jsonl"),
        "kind": "gsm8k_jsonl"
    }))
    .unwrap()];
    c.unlabeled.general_fraction = general;
    c.unlabeled.code_fraction = code;
    c
}

fn longs(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1).to_kind(Kind::Int64)).unwrap()
}
fn floats(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

#[test]
fn mixed_stream_tags_every_target_with_its_source_and_resumes() {
    tch::set_num_threads(2);
    let mut cfg = mixed_config(0.3, 0.3);
    cfg.eval.code_rows = 2;
    let mut t = CausalLm::new(cfg.clone(), &ctx()).unwrap();
    assert_eq!(
        t.stream.sources(),
        vec![Source::Math, Source::General, Source::Code]
    );
    let mut counts = [0usize; 3];
    for _ in 0..30 {
        let b = t.next_batch(U).unwrap();
        let src = b.tensors.require("source").unwrap();
        assert_eq!(src.size(), vec![2, 32]);
        assert_eq!(src.kind(), Kind::Int64);
        for s in longs(src) {
            counts[s as usize] += 1;
        }
        // no corruption configured: nothing marked
        assert_eq!(
            floats(b.tensors.require("corrupt").unwrap())
                .iter()
                .sum::<f64>(),
            0.0
        );
    }
    assert!(counts.iter().all(|&n| n > 100), "{counts:?}");
    let saved = t.state().unwrap();
    let next: Vec<Vec<i64>> = (0..3)
        .map(|_| longs(t.next_batch(U).unwrap().tensors.require("source").unwrap()))
        .collect();
    let mut again = CausalLm::new(cfg, &ctx()).unwrap();
    again.load_state(saved).unwrap();
    for n in next {
        assert_eq!(
            n,
            longs(
                again
                    .next_batch(U)
                    .unwrap()
                    .tensors
                    .require("source")
                    .unwrap()
            )
        );
    }
    let m = t.evaluate(Some(2)).unwrap();
    assert!(m["code_loss"].is_finite() && m["code_loss"] > 0.0, "{m:?}");
    // without code in the stream or the evaluation, none is read and none is reported
    let mut plain = CausalLm::new(mixed_config(0.3, 0.0), &ctx()).unwrap();
    assert_eq!(plain.stream.sources(), vec![Source::Math, Source::General]);
    assert!(!plain.evaluate(Some(1)).unwrap().contains_key("code_loss"));
}

#[test]
fn corrupted_stream_replaces_only_the_marked_loss_targets() {
    tch::set_num_threads(2);
    let clean = mixed_config(0.0, 0.0);
    let mut noisy = clean.clone();
    noisy.unlabeled.corrupt = Some(CorruptConfig {
        fraction: 0.25,
        among: Among::All,
        seed: 9,
        sources: Source::ALL.to_vec(),
    });
    let (mut a, mut b) = (
        CausalLm::new(clean, &ctx()).unwrap(),
        CausalLm::new(noisy.clone(), &ctx()).unwrap(),
    );
    let (mut hit, mut loss) = (0.0, 0.0);
    for _ in 0..20 {
        let (x, y) = (a.next_batch(U).unwrap(), b.next_batch(U).unwrap());
        let g = |b: &Batch, n: &str| b.tensors.require(n).unwrap().shallow_clone();
        assert!(g(&x, "ids").equal(&g(&y, "ids")), "inputs are untouched");
        let changed = floats(&g(&x, "targets").ne_tensor(&g(&y, "targets")));
        let marked = floats(&g(&y, "corrupt"));
        let mask = floats(&g(&y, "mask"));
        for (i, ((c, m), l)) in changed.iter().zip(&marked).zip(&mask).enumerate() {
            assert_eq!(c, m, "position {i}");
            assert!(*m == 0.0 || *l == 1.0, "a prompt target was corrupted");
        }
        hit += marked.iter().sum::<f64>();
        loss += mask.iter().sum::<f64>();
    }
    assert!((hit / loss - 0.25).abs() < 0.05, "{hit} of {loss}");
    // the mask reaches designers only in a diagnostic run
    let batch = b.next_batch(U).unwrap();
    assert!(b
        .design_inputs(&batch)
        .unwrap()
        .get("corrupt_mask")
        .is_none());
    noisy.diagnostic_corrupt_mask = true;
    let mut d = CausalLm::new(noisy, &ctx()).unwrap();
    // a batch with a corrupted target (a row can be all prompt)
    let batch = (0..20)
        .map(|_| d.next_batch(U).unwrap())
        .find(|b| {
            floats(b.tensors.require("corrupt").unwrap())
                .iter()
                .sum::<f64>()
                > 0.0
        })
        .unwrap();
    let inputs = d.design_inputs(&batch).unwrap();
    assert!(inputs
        .require("corrupt_mask")
        .unwrap()
        .equal(batch.tensors.require("corrupt").unwrap()));
    // the oracle: α = α_max exactly on the corrupted positions
    let reg = crate::vpt_registry();
    let mut oracle = reg
        .designer("oracle_corrupt")
        .unwrap()
        .build(
            &serde_json::json!({"alpha_max": 0.4}),
            &d.info().designer_context,
            &ctx(),
        )
        .unwrap();
    let c = oracle.construct(&inputs).unwrap();
    let alpha = floats(c.tensors.require("alpha").unwrap());
    let marked = floats(batch.tensors.require("corrupt").unwrap());
    assert!(marked.iter().sum::<f64>() > 0.0);
    for (a, m) in alpha.iter().zip(&marked) {
        assert!((a - 0.4 * m).abs() < 1e-6);
    }
    let q0 = floats(&c.tensors.require("probs").unwrap().select(-1, 0));
    for (q, m) in q0.iter().zip(&marked) {
        assert_eq!(*q < 1.0 - 1e-6, *m == 1.0);
    }
    // the side outputs of the learner loss carry the split; after_step turns them into metrics
    let fwd = d.pretrain_forward(&batch).unwrap();
    let out = d
        .pretrain_loss_from_forward(&batch, &fwd.state, &c, Differentiation::Once)
        .unwrap();
    let m = d.after_step(0, std::slice::from_ref(&out.side)).unwrap();
    assert!((m["alpha/corrupt"] - 0.4).abs() < 1e-6, "{m:?}");
    assert_eq!(m["alpha/clean"], 0.0);
    assert!(m["corrupted_tokens"] > 0.0 && m["corrupted_fraction"] < 1.0);
    let err = oracle.construct(&b.design_inputs(&batch).unwrap());
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("diagnostic_corrupt_mask"));
}

#[test]
fn split_metrics_average_over_loss_bearing_positions_by_source_and_corruption() {
    let t = |v: &[f64]| Tensor::from_slice(v).reshape([1, v.len() as i64]);
    let side = TensorMap::new()
        .with("mask", t(&[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]))
        .with(
            "source",
            Tensor::from_slice(&[0i64, 0, 0, 1, 2, 2]).reshape([1, 6]),
        )
        .with("corrupt", t(&[0.0, 1.0, 0.0, 0.0, 1.0, 0.0]))
        .with("alpha", t(&[9.0, 0.5, 0.1, 0.2, 0.4, 0.0]))
        .with("offtarget", t(&[9.0, 0.25, 0.05, 0.1, 0.2, 0.0]));
    let all = [Source::Math, Source::General, Source::Code];
    let m = step_metrics(&[side.shallow_clone(), side.shallow_clone()], &all, true).unwrap();
    let near = |k: &str, v: f64| assert!((m[k] - v).abs() < 1e-12, "{k}: {} vs {v}", m[k]);
    near("alpha/math", 0.3); // the prompt position (9.0) never counts
    near("alpha/general", 0.2);
    near("alpha/code", 0.2);
    near("alpha/corrupt", 0.45);
    near("alpha/clean", 0.1);
    near("offtarget/math", 0.15);
    near("tokens/math", 0.4);
    near("tokens/code", 0.4);
    near("corrupted_tokens", 4.0);
    near("corrupted_fraction", 0.4);
    // without corruption: no corrupt / clean split, no counts
    let m = step_metrics(&[side], &all, false).unwrap();
    assert!(!m.contains_key("alpha/corrupt") && !m.contains_key("corrupted_tokens"));
    assert!(m.contains_key("alpha/code"));
}
