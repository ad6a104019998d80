use super::*;
use crate::generate::Sampling;
use crate::lora::{is_lora, Scope};

fn tiny(kind: Kind) -> (nn::VarStore, Llama) {
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let m = Llama::new(&vs.root(), &Config::tiny());
    if kind == Kind::Double {
        vs.double();
    }
    (vs, m)
}

fn ids(b: i64, t: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(300, [b, t], (Kind::Int64, Device::Cpu))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn names_match_store_and_count() {
    let (vs, m) = tiny(Kind::Float);
    let mut store: Vec<String> = vs.variables().into_keys().collect();
    store.sort();
    assert_eq!(store, m.parameter_names());
    let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(n, Config::tiny().num_parameters());
    assert!(store.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()));
    assert!(vs.root().get("model").is_none());
}

#[test]
fn rope_preserves_norm_and_is_relative() {
    let cfg = Config::tiny();
    let rope = Rotary::new(&cfg, Device::Cpu).unwrap();
    tch::manual_seed(1);
    let x = Tensor::randn([1, 1, 1, 16], (Kind::Double, Device::Cpu));
    let y = Tensor::randn([1, 1, 1, 16], (Kind::Double, Device::Cpu));
    let at = |v: &Tensor, p: i64| {
        let (c, s) = rope.tables(p, 1, Kind::Double).unwrap();
        apply_rope(v, &c, &s).unwrap()
    };
    for p in [0, 3, 100] {
        let n0 = x.norm().double_value(&[]);
        let n1 = at(&x, p).norm().double_value(&[]);
        assert!((n0 - n1).abs() < 1e-12, "norm changed at {p}: {n0} vs {n1}");
    }
    let dot = |m: i64, n: i64| (at(&x, m) * at(&y, n)).sum(Kind::Double).double_value(&[]);
    for (m, n, s) in [(5, 2, 7), (0, 9, 40), (30, 30, 3)] {
        let (a, b) = (dot(m, n), dot(m + s, n + s));
        assert!((a - b).abs() < 1e-10, "q·k not relative: {a} vs {b}");
    }
    // and it does depend on the offset
    assert!((dot(5, 2) - dot(5, 3)).abs() > 1e-6);
    // Position 0 is the identity.
    assert!(max_diff(&at(&x, 0), &x) < 1e-15);
}

#[test]
fn math_and_fused_attention_agree() {
    let (_vs, m) = tiny(Kind::Float);
    let x = ids(3, 17, 2);
    let a = m.forward_hidden(&x, Attention::Math).unwrap();
    let b = m.forward_hidden(&x, Attention::Fused).unwrap();
    assert_eq!(a.size(), vec![3, 17, 64]);
    assert!(
        max_diff(&a, &b) < 1e-5,
        "math vs fused {}",
        max_diff(&a, &b)
    );
    let l = m.logits(&a).unwrap();
    assert_eq!(l.size(), vec![3, 17, 300]);
}

#[test]
fn causal_prefix_is_independent_of_suffix() {
    let (_vs, m) = tiny(Kind::Double);
    let x = ids(1, 12, 3);
    let y = Tensor::cat(&[x.narrow(1, 0, 6), ids(1, 6, 4)], 1);
    for attn in [Attention::Math, Attention::Fused] {
        let a = m.forward_hidden(&x, attn).unwrap().narrow(1, 0, 6);
        let b = m.forward_hidden(&y, attn).unwrap().narrow(1, 0, 6);
        assert!(max_diff(&a, &b) < 1e-12);
    }
    let a = m
        .forward_hidden(&x, Attention::Math)
        .unwrap()
        .narrow(1, 6, 6);
    let b = m
        .forward_hidden(&y, Attention::Math)
        .unwrap()
        .narrow(1, 6, 6);
    assert!(max_diff(&a, &b) > 1e-6);
}

#[test]
fn kv_cache_matches_full_forward() {
    let (_vs, m) = tiny(Kind::Double);
    let x = ids(1, 10, 5);
    let full = m.forward_hidden(&x, Attention::Math).unwrap();
    for attn in [Attention::Math, Attention::Fused] {
        let mut cache: Vec<Option<(Tensor, Tensor)>> = vec![None, None];
        let a = m
            .forward_at(&x.narrow(1, 0, 4), attn, Some(&mut cache), 0)
            .unwrap();
        let b = m
            .forward_at(&x.narrow(1, 4, 3), attn, Some(&mut cache), 4)
            .unwrap();
        let c = m
            .forward_at(&x.narrow(1, 7, 1), attn, Some(&mut cache), 7)
            .unwrap();
        let d = m
            .forward_at(&x.narrow(1, 8, 2), attn, Some(&mut cache), 8)
            .unwrap();
        let inc = Tensor::cat(&[a, b, c, d], 1);
        assert!(
            max_diff(&full, &inc) < 1e-10,
            "{attn:?}: {}",
            max_diff(&full, &inc)
        );
    }
}

#[test]
fn generate_greedy_matches_argmax_of_full_forward() {
    let (_vs, m) = tiny(Kind::Float);
    let prompt = [5i64, 17, 42, 7];
    let out = m.generate(&prompt, 6, Sampling::Greedy, &[]).unwrap();
    assert_eq!(out.len(), 6);
    let mut seq = prompt.to_vec();
    for &tok in &out {
        let h = m
            .forward_hidden(&Tensor::from_slice(&seq).view([1, -1]), Attention::Math)
            .unwrap();
        let last = m.logits(&h).unwrap().get(0).get(seq.len() as i64 - 1);
        assert_eq!(last.argmax(0, false).int64_value(&[]), tok);
        seq.push(tok);
    }
    // A stop token ends generation before its first occurrence is emitted.
    let first = out.iter().position(|&t| t == out[5]).unwrap();
    let stopped = m.generate(&prompt, 6, Sampling::Greedy, &[out[5]]).unwrap();
    assert_eq!(stopped, out[..first].to_vec());
    let s1 = m
        .generate(&prompt, 5, Sampling::Temperature { t: 1.0, seed: 9 }, &[])
        .unwrap();
    let s2 = m
        .generate(&prompt, 5, Sampling::Temperature { t: 1.0, seed: 9 }, &[])
        .unwrap();
    assert_eq!(s1, s2);
    assert!(m
        .generate(&prompt, 5, Sampling::Temperature { t: 0.0, seed: 9 }, &[])
        .is_err());
}

#[test]
fn batched_greedy_matches_one_prompt_at_a_time() {
    let (_vs, m) = tiny(Kind::Double);
    let prompts: Vec<Vec<i64>> = vec![
        vec![5, 17, 42, 7],
        vec![9],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        vec![200, 100],
    ];
    let alone: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| m.generate(p, 7, Sampling::Greedy, &[]).unwrap())
        .collect();
    let batch = m.generate_greedy_batch(&prompts, 7, &[]).unwrap();
    assert_eq!(batch, alone);
    // Stops are per row: stopping row 0 at its 3rd token leaves the others unchanged.
    let stop = alone[0][2];
    let batch = m.generate_greedy_batch(&prompts, 7, &[stop]).unwrap();
    for (p, got) in prompts.iter().zip(&batch) {
        assert_eq!(got, &m.generate(p, 7, Sampling::Greedy, &[stop]).unwrap());
    }
    assert!(batch[0].len() <= 2);
    assert!(m.generate_greedy_batch(&[vec![]], 3, &[]).is_err());
}

#[test]
fn lora_starts_as_identity_and_scopes_select_the_right_tensors() {
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = Config::tiny();
    let scope = Scope::LoraLastN {
        layers: 1,
        rank: 4,
        alpha: 8.0,
    };
    let lora = Llama::with_scope(&vs.root(), &cfg, &scope).unwrap();
    // A plain model on the same store reuses the base weights.
    let base = Llama::new(&vs.root(), &cfg);
    let x = ids(2, 9, 6);
    let h0 = base.forward_hidden(&x, Attention::Math).unwrap();
    let h1 = lora.forward_hidden(&x, Attention::Math).unwrap();
    assert!(max_diff(&h0, &h1) < 1e-7);

    let trainable = lora.apply_scope(&vs, &scope).unwrap();
    assert_eq!(trainable.len(), 8); // q,k,v,o × (A, B) in layer 1
    assert!(trainable
        .iter()
        .all(|(n, t)| n.starts_with("model.layers.1.") && is_lora(n) && t.requires_grad()));
    let all = vs.variables();
    assert!(!all["model.embed_tokens.weight"].requires_grad());
    assert_eq!(
        lora.alignment_names(&scope),
        trainable.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
    );

    // Moving B changes the function.
    tch::no_grad(|| {
        let _ = all["model.layers.1.self_attn.v_proj.lora_B.weight"]
            .shallow_clone()
            .fill_(0.1);
    });
    let h2 = lora.forward_hidden(&x, Attention::Math).unwrap();
    assert!(max_diff(&h0, &h2) > 1e-4);

    let last = lora.apply_scope(&vs, &Scope::LastN(1)).unwrap();
    assert_eq!(last.len(), 9); // 2 norms + 4 attn + 3 mlp weights
    assert!(last
        .iter()
        .all(|(n, _)| n.starts_with("model.layers.1.") && !is_lora(n)));
    assert!(!all["model.layers.1.self_attn.v_proj.lora_B.weight"].requires_grad());
    assert!(lora.apply_scope(&vs, &Scope::LastN(3)).is_err());
    assert!(base.apply_scope(&vs, &scope).is_err());
    assert_eq!(lora.apply_scope(&vs, &Scope::All).unwrap().len(), all.len());
}

/// w·H·u through Attention::Math by autograd (double backward) vs central differences of
/// the first-order directional derivative ∇L·u.
#[test]
fn second_derivative_through_math_attention_matches_finite_differences() {
    let (vs, m) = tiny(Kind::Double);
    let x = ids(2, 8, 7);
    let params: Vec<Tensor> = {
        let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|p| p.1).collect()
    };
    tch::manual_seed(8);
    let u: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
    let w: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
    let loss = || {
        let h = m.forward_hidden(&x, Attention::Math).unwrap();
        let logits = m.logits(&h).unwrap().narrow(1, 0, 7).reshape([-1, 300]);
        logits
            .log_softmax(-1, Kind::Double)
            .nll_loss(&x.narrow(1, 1, 7).reshape([-1]))
    };
    let dir = |create: bool| {
        let g = Tensor::run_backward(&[loss()], &params, create, create);
        g.iter()
            .zip(&u)
            .map(|(g, u)| (g * u).sum(Kind::Double))
            .fold(Tensor::from(0.0f64), |a, b| a + b)
    };
    let d = dir(true);
    let hv = Tensor::run_backward(&[d], &params, false, false);
    let exact: f64 = hv
        .iter()
        .zip(&w)
        .map(|(h, w)| (h * w).sum(Kind::Double).double_value(&[]))
        .sum();
    let eps = 1e-6;
    let shift = |s: f64| {
        tch::no_grad(|| {
            for (p, w) in params.iter().zip(&w) {
                let _ = p.shallow_clone().g_add_(&(w * s));
            }
        })
    };
    shift(eps);
    let plus = dir(false).double_value(&[]);
    shift(-2.0 * eps);
    let minus = dir(false).double_value(&[]);
    shift(eps);
    let fd = (plus - minus) / (2.0 * eps);
    eprintln!("w·H·u: autograd {exact:.9}, central differences {fd:.9}");
    assert!(exact.abs() > 1e-3, "degenerate check: {exact}");
    assert!(
        (exact - fd).abs() < 1e-6 * exact.abs().max(1.0),
        "autograd {exact} vs fd {fd}"
    );
}

#[test]
fn config_validation_names_the_field() {
    let mut c = Config::tiny();
    c.num_kv_heads = 3;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("num_kv_heads"));
    let mut c = Config::tiny();
    c.head_dim = 15;
    assert!(c.validate().unwrap_err().to_string().contains("head_dim"));
    let json = serde_json::to_string(&Config::tiny()).unwrap();
    assert_eq!(
        serde_json::from_str::<Config>(&json).unwrap(),
        Config::tiny()
    );
}

#[test]
fn untied_qkv_bias_model_builds_and_runs() {
    tch::set_num_threads(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = Config {
        tie_embeddings: false,
        qkv_bias: true,
        ..Config::tiny()
    };
    let m = Llama::new(&vs.root(), &cfg);
    assert_eq!(vs.variables().len(), m.parameter_names().len());
    assert!(vs.variables().contains_key("lm_head.weight"));
    assert!(vs
        .variables()
        .contains_key("model.layers.0.self_attn.q_proj.bias"));
    let h = m.forward_hidden(&ids(1, 5, 1), Attention::Fused).unwrap();
    assert_eq!(m.logits(&h).unwrap().size(), vec![1, 5, 300]);
}
