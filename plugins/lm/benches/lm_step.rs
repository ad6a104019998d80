//! Tokens/s of one baseline learner step (forward + backward) and the extra time of a V meta
//! step (g_down, design inputs, construct, g_pre with create_graph, ∇φ of the alignment), on
//! SmolLM2-135M at the demo settings (or any GGUF in `VPT_SMOLLM2_GGUF`). Prints figures only.
//!
//! `VPT_SMOLLM2_GGUF=$(scripts/setup.sh model) cargo bench -p vpt-lm --bench lm_step`
//! Overrides: `LM_BENCH_SEQ`, `LM_BENCH_BATCH`, `LM_BENCH_LAST_N`, `LM_BENCH_K`, `LM_BENCH_STEPS`.

use std::time::Instant;
use tch::{Kind, Tensor};
use vpt_lm::designer::{LmDesignContext, TopKSoft, TopKSoftConfig};
use vpt_lm::task::CausalLm;
use vpt_sdk::{BatchSource, BuildContext, Construction, Designer, Task};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Ok(gguf) = std::env::var("VPT_SMOLLM2_GGUF") else {
        eprintln!("lm_step: set VPT_SMOLLM2_GGUF=$(scripts/setup.sh model); skipping");
        return;
    };
    let threads = env("LM_BENCH_THREADS", 2);
    tch::set_num_threads(threads as i32);
    let (seq, batch, last_n, k, steps) = (
        env("LM_BENCH_SEQ", 128),
        env("LM_BENCH_BATCH", 4),
        env("LM_BENCH_LAST_N", 2),
        env("LM_BENCH_K", 64),
        env("LM_BENCH_STEPS", 5),
    );
    let cfg = serde_json::json!({
        "model": {"gguf": gguf}, "trainable": {"last_n": last_n}, "seq_len": seq, "batch_size": batch, "top_k": k,
        "eval": {"general_rows": 8, "test": {"size": 4}, "max_new_tokens": 96},
        "feedback": [{"name": "math", "kind": "generated", "size": 64, "heldout": 8}],
    });
    let ctx = BuildContext {
        seed: 0,
        device: "cpu".into(),
    };
    let t0 = Instant::now();
    let mut task = CausalLm::new(vpt_sdk::parse_config(&cfg).expect("config"), &ctx).expect("task");
    println!("load: {:.1}s", t0.elapsed().as_secs_f64());
    let info = task.info();
    let tc: LmDesignContext = serde_json::from_value(info.designer_context.clone()).unwrap();
    let mut designer = TopKSoft::new(TopKSoftConfig::default(), &tc, &ctx).unwrap();
    let theta: Vec<Tensor> = task
        .parameters()
        .unwrap()
        .tensors()
        .map(|t| t.shallow_clone())
        .collect();
    let s: Vec<Tensor> = task
        .parameters()
        .unwrap()
        .select(&info.alignment)
        .unwrap()
        .tensors()
        .map(|t| t.shallow_clone())
        .collect();
    let phi: Vec<Tensor> = designer
        .parameters()
        .unwrap()
        .tensors()
        .map(|t| t.shallow_clone())
        .collect();
    let tokens = (seq * batch) as f64;
    let u = BatchSource::Unlabeled { domain: 0 };

    let mut base = Vec::new();
    let mut meta = Vec::new();
    for step in 0..steps + 1 {
        let b = task.next_batch(u).unwrap();
        // Baseline learner step: forward + backward to θ.
        let t = Instant::now();
        let l = task
            .pretrain_loss(&b, &Construction::baseline())
            .unwrap()
            .mean(Kind::Float);
        let _ = Tensor::run_backward(&[l], &theta, false, false);
        let base_s = t.elapsed().as_secs_f64();
        // V meta step's extra work.
        let t = Instant::now();
        let fb = task.next_batch(BatchSource::Feedback { set: 0 }).unwrap();
        let g_down: Vec<Tensor> =
            Tensor::run_backward(&[task.feedback_loss(&fb).unwrap()], &s, false, false);
        let inputs = task.design_inputs(&b).unwrap();
        let c = designer.construct(&inputs).unwrap();
        let l = task.pretrain_loss(&b, &c).unwrap().mean(Kind::Float);
        let g_pre = Tensor::run_backward(&[l], &s, true, true);
        let v = g_down
            .iter()
            .zip(&g_pre)
            .map(|(a, b)| (a * b).sum(Kind::Float))
            .fold(Tensor::from(0.0f32), |x, y| x + y);
        let _ = Tensor::run_backward(&[v], &phi, false, false);
        let meta_s = t.elapsed().as_secs_f64();
        if step > 0 {
            base.push(base_s);
            meta.push(meta_s);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (b, m) = (mean(&base), mean(&meta));
    println!("settings: T={seq} B={batch} last_n={last_n} K={k} threads={threads}");
    println!(
        "baseline learner step: {:.2}s = {:.0} tokens/s",
        b,
        tokens / b
    );
    println!(
        "V meta step extra:     {:.2}s ({:.2}x a learner step)",
        m,
        m / b
    );
    let b = task.next_batch(u).unwrap();
    let t = Instant::now();
    let _ = tch::no_grad(|| {
        task.model()
            .forward_hidden(
                b.tensors.require("ids").unwrap(),
                vpt_lm::model::Attention::Fused,
            )
            .unwrap()
    });
    println!(
        "no-grad forward (fused, hidden only): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let out = task
        .model()
        .generate(
            &[1, 2, 3, 4, 5, 6, 7, 8],
            32,
            vpt_lm::model::Sampling::Greedy,
            &[],
        )
        .unwrap();
    println!(
        "generate {} tokens (KV cache): {:.2}s",
        out.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let metrics = task.evaluate(None).unwrap();
    println!("evaluate (8 general rows, 8 held-out feedback, 4 test problems greedy ≤96 tokens): {:.1}s {metrics:?}", t.elapsed().as_secs_f64());
}
