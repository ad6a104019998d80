//! The LM regime configs (`examples/lm-mix-cpu.toml`, `examples/lm-noisy-cpu.toml`) end to end
//! on the tiny random model: every arm they document builds and takes learner (and meta) steps
//! through the real plugins, and the step metrics split the designer's mass by stream source and
//! by corrupted vs clean targets.

use std::collections::BTreeMap;
use std::path::Path;
use vpt_host::{
    compare::arm_overrides,
    config::{apply_overrides, RunConfig},
    loader::{Plugins, SearchPath},
    records::Record,
    train::Session,
};
use vpt_integration::cdylib;

/// The step metrics of `steps` learner steps of `arm` of `config` on the tiny model, and how
/// many meta steps ran.
fn run_arm(config: &str, arm: &str, steps: usize) -> (Vec<BTreeMap<String, f64>>, usize) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut doc: toml::Value = toml::from_str(&text).unwrap();
    // the tiny model and a tiny designer first; the arm's overrides then replace what they name
    let tiny = [
        "task.config.model=\"tiny_random\"",
        "task.config.seq_len=32",
        "task.config.batch_size=2",
        "task.config.top_k=8",
        "task.config.feedback_batch_size=2",
        "task.config.feedback_max_len=96",
        "task.config.eval.general_rows=2",
        "designer.config.layers=1",
        "designer.config.width=32",
        "designer.config.heads=2",
        "meta.period=1",
        "meta.burn_in=0",
        "run.threads=1",
        "run.eval_every=0",
    ];
    let mut overrides: Vec<String> = tiny.iter().map(|s| s.to_string()).collect();
    if doc["task"]["config"]["eval"].get("code_rows").is_some() {
        overrides.push("task.config.eval.code_rows=2".into());
    }
    apply_overrides(&mut doc, &overrides).unwrap();
    let arm_set = arm_overrides(&doc, arm).unwrap();
    apply_overrides(&mut doc, &arm_set).unwrap();
    // paths written in the file are taken from its directory, as `vpt` does
    let cfg = RunConfig::from_toml(doc)
        .and_then(|c| c.read_from(Path::new(config), &[]))
        .unwrap_or_else(|e| panic!("{config} {arm}: {e}"));
    let mut plugins = Plugins::discover(&SearchPath::only(&[
        cdylib("vpt_lm"),
        cdylib("vpt_reweight"),
    ]));
    let mut s = Session::build(cfg, &mut plugins).unwrap_or_else(|e| panic!("{config} {arm}: {e}"));
    let (mut out, mut metas) = (Vec::new(), 0);
    for _ in 0..steps {
        match s
            .train_step()
            .unwrap_or_else(|e| panic!("{config} {arm}: {e}"))
        {
            Record::Train(t) => {
                metas += t.meta.is_some() as usize;
                out.push(t.metrics);
            }
            r => panic!("{r:?}"),
        }
    }
    (out, metas)
}

fn has_prefix(m: &BTreeMap<String, f64>, p: &str) -> bool {
    m.keys().any(|k| k.starts_with(p))
}

#[test]
fn regime_configs_run_every_arm_on_the_tiny_model() {
    tch::set_num_threads(1);
    // the config paths below (examples/…) are relative to the repository root
    std::env::set_current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
    let soft = [
        "v",
        "v_adam",
        "random_feedback",
        "uniform_topk",
        "self_topk",
    ];
    let learned = ["v", "v_adam", "random_feedback", "reweight"];

    let mix = "examples/lm-mix-cpu.toml";
    for arm in [
        "baseline",
        "v",
        "v_adam",
        "reweight",
        "random_feedback",
        "uniform_topk",
        "self_topk",
        "baseline_math_only",
    ] {
        let (steps, metas) = run_arm(mix, arm, 2);
        assert_eq!(
            metas > 0,
            learned.contains(&arm),
            "{arm}: meta steps {metas}"
        );
        let last = &steps[1];
        let shares: f64 = ["math", "general", "code"]
            .iter()
            .filter_map(|s| last.get(&format!("tokens/{s}")))
            .sum();
        assert!((shares - 1.0).abs() < 1e-9, "{arm}: {last:?}");
        if arm == "baseline_math_only" {
            assert!(!last.contains_key("tokens/code"), "{last:?}");
        } else {
            assert!(last.contains_key("tokens/code"), "{arm}: {last:?}");
        }
        assert_eq!(
            has_prefix(last, "offtarget/"),
            soft.contains(&arm),
            "{arm}: {last:?}"
        );
        assert_eq!(
            has_prefix(last, "alpha/"),
            arm.starts_with('v') || arm == "random_feedback",
            "{arm}: {last:?}"
        );
        assert!(!last.contains_key("corrupted_tokens"));
    }

    let noisy = "examples/lm-noisy-cpu.toml";
    for arm in [
        "baseline",
        "v",
        "v_adam",
        "reweight",
        "random_feedback",
        "uniform_topk",
        "self_topk",
        "oracle_corrupt",
        "baseline_clean",
    ] {
        let (steps, metas) = run_arm(noisy, arm, 2);
        assert_eq!(
            metas > 0,
            learned.contains(&arm),
            "{arm}: meta steps {metas}"
        );
        let corrupted: f64 = steps.iter().map(|m| m["corrupted_tokens"]).sum();
        if arm == "baseline_clean" {
            assert_eq!(corrupted, 0.0);
        } else {
            assert!(corrupted > 0.0, "{arm}: {steps:?}");
            let f = steps[1]["corrupted_fraction"];
            assert!((0.05..0.6).contains(&f), "{arm}: corrupted fraction {f}");
        }
        let last = &steps[1];
        if soft.contains(&arm) {
            assert!(
                last.contains_key("offtarget/corrupt") && last.contains_key("offtarget/clean"),
                "{arm}: {last:?}"
            );
        }
        if arm == "oracle_corrupt" {
            // a step whose rows hold no corrupted target has no `alpha/corrupt`
            let hits: Vec<&BTreeMap<String, f64>> = steps
                .iter()
                .filter(|m| m["corrupted_tokens"] > 0.0)
                .collect();
            assert!(!hits.is_empty());
            for m in hits {
                assert!((m["alpha/corrupt"] - 0.5).abs() < 1e-6, "{m:?}");
                assert_eq!(m["alpha/clean"], 0.0, "{m:?}");
            }
        }
    }
}
