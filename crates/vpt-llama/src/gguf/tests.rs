//! Tests of the GGUF reader, writer and Llama loader together: a tiny model written as
//! llama.cpp would and read back, and (when `VPT_SMOLLM2_GGUF` is set) the real SmolLM2-135M.

use super::*;
use crate::config::Config;
use crate::model::{Attention, Llama};
use crate::tokenizer::Tokenizer;
use tch::{nn, Device, Kind, Tensor};

/// Writes a tiny random model as llama.cpp would (permuted Q/K, Q8_0 matrices, f32 norms,
/// f16 embedding) and checks the loader gives the same function as the original weights
/// after the same quantisation round trip.
#[test]
fn written_gguf_reads_back_into_the_same_model() {
    tch::set_num_threads(2);
    tch::manual_seed(11);
    let cfg = Config {
        max_position: 64,
        ..Config::tiny()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Llama::new(&vs.root(), &cfg);
    let tok = Tokenizer::tiny();
    let mut w = GgufWriter::with_alignment(64).unwrap();
    let s = |v: &str| Value::Str(v.to_string());
    let strs = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
    let u = |v: i64| Value::U32(v as u32);
    w.set("general.architecture", s("llama"));
    w.set("llama.block_count", u(cfg.num_layers as i64));
    w.set("llama.context_length", u(cfg.max_position));
    w.set("llama.embedding_length", u(cfg.hidden_size));
    w.set("llama.feed_forward_length", u(cfg.intermediate_size));
    w.set("llama.attention.head_count", u(cfg.num_heads));
    w.set("llama.attention.head_count_kv", u(cfg.num_kv_heads));
    w.set("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32));
    w.set(
        "llama.attention.layer_norm_rms_epsilon",
        Value::F32(cfg.rms_eps as f32),
    );
    w.set("tokenizer.ggml.model", s("gpt2"));
    w.set("tokenizer.ggml.pre", s("smollm"));
    let tokens: Vec<String> = (0..300)
        .map(|i| tok.inner().id_to_token(i).unwrap())
        .collect();
    w.set("tokenizer.ggml.tokens", strs(&tokens));
    let json: serde_json::Value =
        serde_json::from_str(&tok.inner().to_string(false).unwrap()).unwrap();
    let merges: Vec<String> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            a => format!("{} {}", a[0].as_str().unwrap(), a[1].as_str().unwrap()),
        })
        .collect();
    w.set("tokenizer.ggml.merges", strs(&merges));
    let mut types = vec![Value::I32(1); 300];
    types[..3].fill(Value::I32(3));
    w.set("tokenizer.ggml.token_type", Value::Array(types));
    w.set("tokenizer.ggml.eos_token_id", u(2));
    w.set("tokenizer.ggml.bos_token_id", u(1));
    w.set(
        "tokenizer.chat_template",
        s("{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}"),
    );
    let vars = vs.variables();
    let mut expected = std::collections::HashMap::new();
    for name in cfg.parameter_names() {
        let t = &vars[&name];
        let g = gguf_name(&name).unwrap();
        let mut file_t = t.detach();
        if name.ends_with("q_proj.weight") {
            file_t = permute_rows(&file_t, cfg.num_heads).unwrap();
        } else if name.ends_with("k_proj.weight") {
            file_t = permute_rows(&file_t, cfg.num_kv_heads).unwrap();
        }
        let flat: Vec<f32> = Vec::try_from(file_t.contiguous().view([-1])).unwrap();
        let ty = if t.dim() == 1 {
            GgmlType::F32
        } else if name.contains("embed") {
            GgmlType::F16
        } else {
            GgmlType::Q8_0
        };
        let bytes = encode(&g, &t.size(), ty, &flat).unwrap();
        // What the loader should give back: the dequantised file tensor, un-permuted.
        let back = Tensor::from_slice(&dequantize(ty, &bytes).unwrap()).view(t.size().as_slice());
        let back = if name.ends_with("q_proj.weight") {
            unpermute_rows(&back, cfg.num_heads).unwrap()
        } else if name.ends_with("k_proj.weight") {
            unpermute_rows(&back, cfg.num_kv_heads).unwrap()
        } else {
            back
        };
        assert!(
            (&back - t).abs().max().double_value(&[]) < 0.01,
            "{name} quantisation error"
        );
        expected.insert(name.clone(), back);
        w.tensor(&g, &t.size(), ty, &flat).unwrap();
    }
    let path = std::env::temp_dir().join(format!("vpt-gguf-{}.gguf", std::process::id()));
    w.write(&path).unwrap();

    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 64);
    assert_eq!(g.get("llama.block_count").unwrap(), &Value::U32(2));
    let (cfg2, vs2, tok2) = load_gguf(&path, Device::Cpu).unwrap();
    assert_eq!(cfg2.num_kv_heads, 2);
    assert_eq!(cfg2.head_dim, 16);
    assert!(cfg2.tie_embeddings && !cfg2.qkv_bias);
    assert!((cfg2.rms_eps - 1e-5).abs() < 1e-9);
    let cfg_cmp = Config {
        rms_eps: cfg.rms_eps,
        ..cfg2.clone()
    };
    assert_eq!(cfg_cmp, cfg);
    let vars2 = vs2.variables();
    for (name, want) in &expected {
        assert!(vars2[name].equal(want), "{name} differs after load");
    }
    let s = "the 42 cats<|im_end|>";
    assert_eq!(
        tok2.encode(s, false).unwrap(),
        tok.encode(s, false).unwrap()
    );
    assert_eq!(tok2.system_prompt(), Some("Be brief."));
    // Un-permuted Q/K give the same function as the original weights (up to quantisation).
    let m2 = Llama::new(&vs2.root(), &cfg2);
    let ids = Tensor::from_slice(
        &tok.encode("the cat is on the mat and 12 + 30", false)
            .unwrap(),
    )
    .view([1, -1]);
    let a = m.forward_hidden(&ids, Attention::Math).unwrap();
    let b = m2.forward_hidden(&ids, Attention::Math).unwrap();
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff < 0.05, "loaded model differs by {diff}");

    // Errors name the file and the tensor.
    let bad = path.with_extension("bad.gguf");
    let mut bytes = std::fs::read(&path).unwrap();
    let cut = bytes.len() - 100;
    bytes.truncate(cut);
    std::fs::write(&bad, bytes).unwrap();
    let e = Gguf::open(&bad).unwrap_err().to_string();
    assert!(
        e.contains(".gguf") && e.contains("runs past the end"),
        "{e}"
    );
    let e = g.tensor("blk.9.attn_q.weight").unwrap_err().to_string();
    assert!(
        e.contains(".gguf") && e.contains("blk.9.attn_q.weight"),
        "{e}"
    );
    std::fs::write(&bad, b"GGUF\x01\0\0\0").unwrap();
    let e = Gguf::open(&bad).unwrap_err().to_string();
    assert!(e.contains("version 1"), "{e}");
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&bad).unwrap();
}

/// Checks on the real default model; each test skips (prints a line) when `VPT_SMOLLM2_GGUF`
/// is unset.
#[cfg(test)]
mod smollm2 {
    use super::*;
    use crate::generate::Sampling;
    use std::time::Instant;

    fn model() -> Option<(Config, nn::VarStore, Llama, Tokenizer)> {
        let Ok(path) = std::env::var("VPT_SMOLLM2_GGUF") else {
            eprintln!(
                "skipping: VPT_SMOLLM2_GGUF is unset (scripts/setup.sh model prints the path)"
            );
            return None;
        };
        tch::set_num_threads(2);
        let t0 = Instant::now();
        let (cfg, vs, tok) = load_gguf(&path, Device::Cpu).unwrap();
        let m = Llama::new(&vs.root(), &cfg);
        eprintln!("loaded {path} in {:.1}s", t0.elapsed().as_secs_f64());
        Some((cfg, vs, m, tok))
    }

    /// Mean NLL (nats/token) of `target` after `context`.
    fn nll(m: &Llama, tok: &Tokenizer, context: &str, target: &str) -> (f64, usize) {
        let c = tok.encode(context, false).unwrap();
        let t = tok.encode(target, false).unwrap();
        let ids: Vec<i64> = c.iter().chain(&t).copied().collect();
        let x = Tensor::from_slice(&ids).view([1, -1]);
        let logits = tch::no_grad(|| {
            m.logits(&m.forward_hidden(&x, Attention::Fused).unwrap())
                .unwrap()
        });
        let n = ids.len() as i64;
        // Positions c-1 .. n-2 predict the target tokens.
        let pred = logits.get(0).narrow(0, c.len() as i64 - 1, t.len() as i64);
        let lp = pred.log_softmax(-1, Kind::Double);
        let y = Tensor::from_slice(&ids[c.len()..n as usize]);
        let v = -lp
            .gather(1, &y.view([-1, 1]), false)
            .mean(Kind::Double)
            .double_value(&[]);
        (v, t.len())
    }

    #[test]
    fn smollm2_answers_paris_and_scores_gsm8k() {
        let Some((cfg, _vs, m, tok)) = model() else {
            return;
        };
        assert_eq!(
            (
                cfg.num_layers,
                cfg.hidden_size,
                cfg.num_heads,
                cfg.num_kv_heads
            ),
            (30, 576, 9, 3)
        );
        assert_eq!(cfg.vocab_size, 49152);
        assert!(cfg.tie_embeddings);
        // Tokenizer: digits singly, specials recognised, chat template with its system turn.
        assert_eq!(tok.encode("12345", false).unwrap().len(), 5);
        assert_eq!(tok.encode("<|im_start|>", false).unwrap(), vec![1]);
        assert_eq!(tok.eos_id(), 2);
        let prompt = tok.chat_prompt("What is the capital of France?");
        assert!(
            prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        );

        let t0 = Instant::now();
        let ids = tok.encode(&prompt, false).unwrap();
        let out = m
            .generate(&ids, 24, Sampling::Greedy, &[tok.eos_id()])
            .unwrap();
        let answer = tok.decode(&out).unwrap();
        eprintln!(
            "greedy answer ({} tokens, {:.1}s): {answer:?}",
            out.len(),
            t0.elapsed().as_secs_f64()
        );
        assert!(answer.contains("Paris"), "answer: {answer:?}");

        // The first GSM8K train problem (vendored in the repository).
        let gsm8k = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k/train.jsonl");
        let text = std::fs::read_to_string(gsm8k).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let (q, a) = (
            first["question"].as_str().unwrap(),
            first["answer"].as_str().unwrap(),
        );
        let (plain, n) = nll(&m, &tok, "<|im_start|>", a);
        let (chat, _) = nll(&m, &tok, &tok.chat_prompt(q), a);
        eprintln!("GSM8K solution NLL: {plain:.3} nats/token alone, {chat:.3} after its question (chat), {n} tokens");
        assert!((1.0..3.0).contains(&plain), "NLL {plain}");
        assert!(chat < plain, "the question should help: {chat} vs {plain}");
    }

    /// On the real model, the fused and math attention kernels agree (the meta step relies on
    /// the math one) and generation returns what was asked; prints throughput, times nothing.
    #[test]
    fn smollm2_kernels_agree_and_generate() {
        let Some((_cfg, _vs, m, _tok)) = model() else {
            return;
        };
        let x = Tensor::randint(49152, [4, 128], (Kind::Int64, Device::Cpu));
        let mut hidden = Vec::new();
        for attn in [Attention::Fused, Attention::Math] {
            let t0 = Instant::now();
            hidden.push(tch::no_grad(|| m.forward_hidden(&x, attn).unwrap()));
            eprintln!(
                "forward_hidden {attn:?} B=4 T=128, no grad, {} threads: {:.0} tokens/s",
                tch::get_num_threads(),
                512.0 / t0.elapsed().as_secs_f64()
            );
        }
        let diff = (&hidden[0] - &hidden[1]).abs().max().double_value(&[]);
        assert!(diff < 1e-3, "fused vs math attention differ by {diff}");
        let prompt: Vec<i64> = (0..32).map(|i| 100 + i).collect();
        let t0 = Instant::now();
        let out = m.generate(&prompt, 16, Sampling::Greedy, &[]).unwrap();
        assert_eq!(out.len(), 16);
        eprintln!(
            "generate: 32-token prompt + {} new tokens in {:.2}s",
            out.len(),
            t0.elapsed().as_secs_f64()
        );
    }
}
