use super::*;
use tch::Kind;

fn inputs(b: i64, t: i64, d: i64, k: i64) -> TensorMap {
    tch::manual_seed(0);
    let lp = Tensor::randn([b, t, 300], (Kind::Float, tch::Device::Cpu))
        .log_softmax(-1, Kind::Float)
        .narrow(-1, 0, k);
    TensorMap::new()
        .with(
            "features",
            Tensor::randn([b, t, d], (Kind::Float, tch::Device::Cpu)),
        )
        .with(
            "cand_ids",
            Tensor::arange(k, (Kind::Int64, tch::Device::Cpu))
                .expand([b, t, k], false)
                .contiguous(),
        )
        .with("cand_logprobs", lp)
        .with(
            "loss_mask",
            Tensor::ones([b, t], (Kind::Float, tch::Device::Cpu)),
        )
        .with(
            "cand_embeddings",
            Tensor::randn([b, t, k, d], (Kind::Float, tch::Device::Cpu)),
        )
}

fn ctx() -> BuildContext {
    BuildContext {
        seed: 1,
        device: "cpu".into(),
    }
}

fn check_rows(c: &Construction, alpha_max: f64) {
    assert_eq!(c.kind, KIND_LM_SOFT_TARGETS);
    let q = c.tensors.require("probs").unwrap();
    assert_eq!(q.size(), vec![2, 5, 8]);
    let sums = q.sum_dim_intlist(-1i64, false, Kind::Double);
    assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
    assert!(q.min().double_value(&[]) >= 0.0);
    let q0_min = q.select(-1, 0).min().double_value(&[]);
    assert!(q0_min >= 1.0 - alpha_max - 1e-6, "true-token mass {q0_min}");
    assert_eq!(c.tensors.require("cand_ids").unwrap().size(), vec![2, 5, 8]);
}

#[test]
fn topk_soft_rows_are_distributions_within_the_gate() {
    let tc = LmDesignContext {
        d_model: 16,
        k: 8,
        feature_dim: 17,
    };
    let cfg = TopKSoftConfig {
        layers: 2,
        width: 32,
        heads: 4,
        alpha_max: 0.3,
        gate_init: 3.0,
    };
    let mut d = TopKSoft::new(cfg, &tc, &ctx()).unwrap();
    let inp = inputs(2, 5, 16, 8);
    let c = d.construct(&inp).unwrap();
    check_rows(&c, 0.3);
    let (_, alpha) = d
        .scores_and_gate(
            inp.require("features").unwrap(),
            inp.require("cand_logprobs").unwrap(),
            inp.require("cand_embeddings").unwrap(),
        )
        .unwrap();
    let (lo, hi) = (alpha.min().double_value(&[]), alpha.max().double_value(&[]));
    assert!(lo >= 0.0 && hi <= 0.3 && hi > 0.25, "alpha in [{lo}, {hi}]");
    // R is differentiable in φ.
    let r = d.regularizer(&c).unwrap().unwrap();
    let params = d.parameters().unwrap();
    let g = Tensor::run_backward(&[r], &params.tensors().collect::<Vec<_>>(), false, false);
    assert!(g
        .iter()
        .any(|g| g.abs().sum(Kind::Double).double_value(&[]) > 0.0));
    assert!(params.names().contains(&"blocks.1.qkv.weight"));
    // Causal: changing the last position's features leaves earlier positions unchanged.
    let mut inp2 = inputs(2, 5, 16, 8);
    let f = inp2.require("features").unwrap().copy();
    let _ = f.narrow(1, 4, 1).fill_(3.0);
    inp2.insert("features", f);
    let c2 = d.construct(&inp2).unwrap();
    let (a, b) = (
        c.tensors.require("probs").unwrap().narrow(1, 0, 4),
        c2.tensors.require("probs").unwrap().narrow(1, 0, 4),
    );
    assert!((a - b).abs().max().double_value(&[]) < 1e-6);
    // Deterministic by seed, distinct across seeds.
    let d2 = TopKSoft::new(
        TopKSoftConfig {
            layers: 2,
            width: 32,
            heads: 4,
            ..Default::default()
        },
        &tc,
        &ctx(),
    )
    .unwrap();
    let d3 = TopKSoft::new(
        TopKSoftConfig {
            layers: 2,
            width: 32,
            heads: 4,
            ..Default::default()
        },
        &tc,
        &BuildContext {
            seed: 2,
            device: "cpu".into(),
        },
    )
    .unwrap();
    let w = |d: &TopKSoft| d.parameters().unwrap().require("slot").unwrap().copy();
    assert!(w(&d).equal(&w(&d2)));
    assert!(!w(&d).equal(&w(&d3)));
}

fn small(gate_init: f64) -> TopKSoft {
    let tc = LmDesignContext {
        d_model: 16,
        k: 8,
        feature_dim: 17,
    };
    let cfg = TopKSoftConfig {
        layers: 1,
        width: 32,
        heads: 4,
        alpha_max: 0.5,
        gate_init,
    };
    TopKSoft::new(cfg, &tc, &ctx()).unwrap()
}

#[test]
fn topk_soft_starts_uniform_at_the_gate_init() {
    let mut d = small(-1.0);
    let c = d.construct(&inputs(2, 5, 16, 8)).unwrap();
    let q = c.tensors.require("probs").unwrap();
    let alpha = 0.5 / (1.0 + 1f64.exp()); // α_max · sigmoid(−1)
    let want_true = 1.0 - alpha + alpha / 8.0;
    let q0 = q.select(-1, 0);
    assert!((q0 - want_true).abs().max().double_value(&[]) < 1e-6);
    let others = q.narrow(-1, 1, 7);
    assert!((others - alpha / 8.0).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn topk_soft_reads_candidate_embeddings() {
    let d = small(0.0);
    // Leave the zero start: give the query layer weights, as a meta step would.
    tch::no_grad(|| {
        d.score
            .w
            .shallow_clone()
            .copy_(&(d.score.w.randn_like() * 0.5));
    });
    let inp = inputs(2, 5, 16, 8);
    let (f, lp, e) = (
        inp.require("features").unwrap(),
        inp.require("cand_logprobs").unwrap(),
        inp.require("cand_embeddings").unwrap(),
    );
    let (r, _) = d.scores_and_gate(f, lp, e).unwrap();
    // Another embedding for candidate 3 at (0, 2) changes r there and nowhere else.
    let e2 = e.copy();
    e2.get(0)
        .get(2)
        .get(3)
        .copy_(&(e.get(0).get(2).get(3) * -3.0 + 1.0));
    let (r2, _) = d.scores_and_gate(f, lp, &e2).unwrap();
    let diff = (&r2 - &r).abs();
    assert!(diff.get(0).get(2).max().double_value(&[]) > 1e-4);
    let _ = diff.get(0).get(2).zero_();
    assert!(diff.max().double_value(&[]) < 1e-7);
    // A wrong shape is refused by name.
    let bad = e.narrow(-1, 0, 4);
    let err = d.scores_and_gate(f, lp, &bad).unwrap_err().to_string();
    assert!(err.contains("cand_embeddings"), "{err}");
}

#[test]
fn off_target_mass_counts_only_loss_positions() {
    let mut u = UniformTopK::build(
        UniformTopKConfig { alpha: 0.4 },
        &serde_json::json!({"d_model": 16, "k": 8}),
        &ctx(),
    )
    .unwrap();
    let mut inp = inputs(2, 5, 16, 8);
    let c = u.construct(&inp).unwrap();
    let full = off_target_mass(&c).unwrap().double_value(&[]);
    assert!((full - 0.35).abs() < 1e-6, "{full}"); // α·(1 − 1/K)
                                                   // Prompt/padding positions carry a one-hot target here: they must not dilute R.
    let mask =
        Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]).reshape([2, 5]);
    inp.insert("loss_mask", mask.shallow_clone());
    let c = u.construct(&inp).unwrap();
    let mut c2 = Construction {
        kind: c.kind.clone(),
        tensors: c.tensors.detached(),
    };
    let q = c2.tensors.require("probs").unwrap().copy();
    let onehot = Tensor::zeros([8], (Kind::Float, tch::Device::Cpu)).index_fill(
        0,
        &Tensor::from_slice(&[0i64]),
        1.0,
    );
    let m = mask.unsqueeze(-1);
    let q = &q * &m + onehot * (1.0 - &m);
    c2.tensors.insert("probs", q);
    let masked = off_target_mass(&c2).unwrap().double_value(&[]);
    assert!((masked - 0.35).abs() < 1e-6, "{masked}");
    c2.tensors.remove("loss_mask");
    let unmasked = off_target_mass(&c2).unwrap().double_value(&[]);
    assert!((unmasked - 0.35 * 3.0 / 10.0).abs() < 1e-6, "{unmasked}");
}

#[test]
fn controls_mix_fixed_alpha() {
    let tc = serde_json::json!({"d_model": 16, "k": 8});
    let inp = inputs(2, 5, 16, 8);
    let mut u = UniformTopK::build(UniformTopKConfig { alpha: 0.4 }, &tc, &ctx()).unwrap();
    let c = u.construct(&inp).unwrap();
    check_rows(&c, 0.4);
    let q = c.tensors.require("probs").unwrap();
    assert!((q.double_value(&[0, 0, 0]) - (0.6 + 0.05)).abs() < 1e-6);
    assert!((q.double_value(&[1, 3, 5]) - 0.05).abs() < 1e-6);
    let mut s = SelfTopK::build(SelfTopKConfig { alpha: 0.4 }, &tc, &ctx()).unwrap();
    let c = s.construct(&inp).unwrap();
    check_rows(&c, 0.4);
    let lp = inp.require("cand_logprobs").unwrap();
    let r = lp.softmax(-1, Kind::Float);
    let q = c.tensors.require("probs").unwrap();
    assert!((q.double_value(&[1, 2, 3]) - 0.4 * r.double_value(&[1, 2, 3])).abs() < 1e-6);
    assert!(u.parameters().unwrap().is_empty() && s.parameters().unwrap().is_empty());
    let r = s.regularizer(&c).unwrap().unwrap().double_value(&[]);
    let expect = (q.select(-1, 0).neg() + 1.0)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!((r - expect).abs() < 1e-6);
    assert!(UniformTopK::build(UniformTopKConfig { alpha: 1.5 }, &tc, &ctx()).is_err());
    assert!(UniformTopK::build(
        UniformTopKConfig { alpha: 0.1 },
        &serde_json::json!({}),
        &ctx()
    )
    .is_err());
}
