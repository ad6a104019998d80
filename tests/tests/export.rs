//! `vpt export` end to end: a run's checkpoint → HF directory and GGUF files → read back by
//! vpt's own loaders (identical F32 logits) and by transformers, the `gguf` package and
//! tensorboard (tests/python/check_export.py, in the venv `scripts/setup.sh interop` prepares).

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Tensor};
use vpt_host::checkpoint;
use vpt_integration::{cdylib, scratch_dir, vpt_command};
use vpt_llama::gguf::{load_gguf, Gguf, Value};
use vpt_llama::hf::load_hf;
use vpt_llama::{Attention, Llama};
use vpt_lm::task::{CausalLm, CausalLmConfig};
use vpt_sdk::{BuildContext, ExportRequest, Task};

/// `vpt` with the LM plugin on its search path.
fn vpt() -> Command {
    let mut c = vpt_command();
    c.arg("--plugin").arg(cdylib("vpt_lm"));
    c
}

fn ok(c: &mut Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `vpt export ARGS --out OUT RUN`, asserts that it fails, and returns its stderr.
fn failed_export(mut vpt: Command, args: &[&str], out: &Path, run: &Path) -> String {
    let res = vpt
        .arg("export")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg(run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(
        !res.status.success(),
        "vpt export {args:?} should fail:\n{err}"
    );
    err
}

/// The run's task rebuilt in-process from its `config.json`, θ restored from its latest
/// checkpoint: vpt's own model, the reference every export is compared with.
fn restored_task(run: &Path) -> CausalLm {
    // config.json stores every path absolute, so this works from any directory
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let task_cfg: CausalLmConfig = serde_json::from_value(cfg["task"]["config"].clone()).unwrap();
    let ctx = BuildContext {
        seed: cfg["run"]["seed"].as_u64().unwrap(),
        device: "cpu".into(),
    };
    let task = CausalLm::new(task_cfg, &ctx).unwrap();
    let ckpt = checkpoint::load_latest(run).unwrap();
    let theta = checkpoint::with_prefix(&ckpt.tensors, "theta");
    let params = task.parameters().unwrap();
    assert!(!params.is_empty());
    tch::no_grad(|| {
        for (name, t) in params.iter() {
            t.shallow_clone().copy_(theta.get(name).unwrap());
        }
    });
    task
}

/// Next-token logits (all positions) of `m` on `ids`.
fn logits(m: &Llama, ids: &[i64]) -> Tensor {
    tch::no_grad(|| {
        let x = Tensor::from_slice(ids).view([1, -1]);
        m.logits(&m.forward_hidden(&x, Attention::Math).unwrap())
            .unwrap()
    })
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn loaded(vs_cfg: (vpt_llama::Config, tch::nn::VarStore)) -> (Llama, tch::nn::VarStore) {
    let (cfg, vs) = vs_cfg;
    (Llama::new(&vs.root(), &cfg), vs)
}

fn request(format: &str, dtype: &str, out: PathBuf) -> ExportRequest {
    ExportRequest {
        format: format.into(),
        dtype: dtype.into(),
        adapter: false,
        out_dir: out,
    }
}

fn file_mb(p: &Path) -> f64 {
    std::fs::metadata(p).unwrap().len() as f64 / 1e6
}

/// A tiny LoRA run: the merged export equals the model with its adapters (HF and GGUF F32
/// identical to each other), the adapters matter, and the PEFT adapter holds θ exactly.
#[test]
fn lora_run_exports_merged_weights_and_the_peft_adapter() {
    tch::set_num_threads(2);
    let dir = scratch_dir("export-lora");
    let mut task: serde_json::Value = serde_json::to_value(CausalLmConfig::tiny()).unwrap();
    task["trainable"] = serde_json::json!({"lora_last_n": {"layers": 1, "rank": 4, "alpha": 8.0}});
    task["eval"]["general_rows"] = 2.into(); // without general rows general_loss is NaN
    let doc = serde_json::json!({
        "run": {"steps": 3, "threads": 2, "eval_limit": 2},
        "task": {"plugin": "lm", "name": "causal_lm", "config": task},
        "learner": {"lr": 0.05, "warmup": 0},
    });
    let config = dir.join("lora.toml");
    let toml_doc = vpt_host::config::json_to_toml(doc).unwrap();
    std::fs::write(&config, toml::to_string(&toml_doc).unwrap()).unwrap();
    let run = dir.join("run");
    ok(
        vpt().arg("run").arg(&config).arg("--out").arg(&run),
        "vpt run (tiny LoRA)",
    );
    // TensorBoard events sit next to metrics.jsonl.
    assert!(std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents.")));

    let hf = dir.join("hf");
    let gg = dir.join("gguf");
    let listed = ok(
        vpt()
            .args(["export", "--format", "hf", "--adapter", "--out"])
            .arg(&hf)
            .arg(&run),
        "vpt export --format hf --adapter",
    );
    assert!(listed.contains("adapter_model.safetensors"), "{listed}");
    ok(
        vpt()
            .args(["export", "--format", "gguf", "--out"])
            .arg(&gg)
            .arg(&run),
        "vpt export --format gguf",
    );

    let reference = restored_task(&run);
    let tok = vpt_llama::Tokenizer::tiny();
    let ids = tok.encode("the cat sat on 12 mats", false).unwrap();
    let want = logits(reference.model(), &ids);
    let (m_hf, vs_hf) = loaded({
        let (c, v, _) = load_hf(&hf, Device::Cpu).unwrap();
        (c, v)
    });
    let (m_gg, _vs2) = loaded({
        let (c, v, _) = load_gguf(gg.join("model-f32.gguf"), Device::Cpu).unwrap();
        (c, v)
    });
    let from_hf = logits(&m_hf, &ids);
    assert_eq!(
        max_diff(&from_hf, &logits(&m_gg, &ids)),
        0.0,
        "HF vs GGUF F32"
    );
    let merged = max_diff(&from_hf, &want);
    assert!(
        merged < 1e-4,
        "merged export differs from the adapted model by {merged}"
    );
    // Taking the adapters back out (W − (α/r)·B·A) changes the function measurably, so an
    // export that forgot to merge would fail the check above.
    let theta = reference.parameters().unwrap();
    let vars = vs_hf.variables();
    tch::no_grad(|| {
        for (name, w) in vars.iter() {
            let stem = name.trim_end_matches(".weight");
            if let (Some(a), Some(b)) = (
                theta.get(&format!("{stem}.lora_A.weight")),
                theta.get(&format!("{stem}.lora_B.weight")),
            ) {
                let _ = w.shallow_clone().g_sub_(&(b.matmul(a) * 2.0));
            }
        }
    });
    let unmerged = max_diff(&logits(&m_hf, &ids), &want);
    assert!(
        unmerged > 100.0 * merged.max(1e-6),
        "the adapters change logits by only {unmerged}"
    );

    // The PEFT adapter holds θ (the LoRA weights) exactly, under PEFT's names.
    let bytes = std::fs::read(hf.join("adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names().len(), theta.len());
    for (name, t) in theta.iter() {
        let view = st.tensor(&format!("base_model.model.{name}")).unwrap();
        let back = Tensor::from_data_size(view.data(), &t.size(), tch::Kind::Float);
        assert!(back.equal(&t.detach()), "{name}");
    }
    let acfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hf.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(acfg["r"], 4);
    assert_eq!(acfg["lora_alpha"], 8.0);
    assert_eq!(acfg["layers_to_transform"], serde_json::json!([1]));

    // Bad requests name the flag.
    let err = failed_export(vpt(), &["--format", "onnx"], &dir.join("x"), &run);
    assert!(err.contains("--format") && err.contains("gguf"), "{err}");
    let err = failed_export(
        vpt(),
        &["--format", "gguf", "--checkpoint", "99"],
        &dir.join("x"),
        &run,
    );
    assert!(err.contains("step 99"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real model: a one-step SmolLM2-135M run exported as HF (through the CLI) and GGUF
/// F32/F16/Q8_0 (through `Task::export`). vpt's loaders give back vpt's logits (F32:
/// identically), the GGUF carries the source's tokenizer metadata, and transformers, the
/// `gguf` reader and tensorboard read the files (tests/python/check_export.py).
#[test]
fn smollm2_export_round_trips_and_loads_in_transformers_gguf_and_tensorboard() {
    tch::set_num_threads(2);
    let source = std::env::var("VPT_SMOLLM2_GGUF")
        .expect("VPT_SMOLLM2_GGUF is unset: `make test` sets it (scripts/setup.sh model)");
    let dir = scratch_dir("export-smollm2");
    let run = dir.join("run");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lm-smollm2.toml");
    let sets = [
        "designer.enabled=false",
        "meta.estimator=none",
        "learner.warmup=0",
        "run.eval_limit=1",
        "task.config.eval.max_new_tokens=1",
        "task.config.eval.general_rows=1",
    ];
    let mut c = vpt();
    c.arg("run")
        .arg(config)
        .args(["--steps", "1", "--out"])
        .arg(&run);
    for s in sets {
        c.args(["--set", s]);
    }
    let t0 = std::time::Instant::now();
    ok(&mut c, "vpt run (SmolLM2, 1 step)");
    println!("vpt run: {:.1}s", t0.elapsed().as_secs_f64());

    let hf = dir.join("hf");
    let started = std::time::Instant::now();
    ok(
        vpt()
            .args(["export", "--format", "hf", "--out"])
            .arg(&hf)
            .arg(&run),
        "vpt export --format hf",
    );
    let cli_seconds = started.elapsed().as_secs_f64();

    let t0 = std::time::Instant::now();
    let reference = restored_task(&run);
    println!("reference task built: {:.1}s", t0.elapsed().as_secs_f64());
    let src = Gguf::open(&source).unwrap();
    let tok = src.tokenizer().unwrap();
    let prompt = "Tom has 3 apples and buys 4 more. How many apples does he have now?";
    let ids = tok.encode(prompt, false).unwrap();
    let want = logits(reference.model(), &ids);
    let last = want.select(1, -1).squeeze();

    // θ came from the checkpoint: the trained block differs from the source file.
    let (_, vs_hf, _) = load_hf(&hf, Device::Cpu).unwrap();
    let cfg = reference.model().config().clone();
    let trained = format!("model.layers.{}.mlp.down_proj.weight", cfg.num_layers - 1);
    let in_source = src
        .tensor(&vpt_llama::gguf::gguf_name(&trained).unwrap())
        .unwrap();
    assert!(max_diff(&vs_hf.variables()[&trained], &in_source) > 0.0);
    let m_hf = Llama::new(&vs_hf.root(), &cfg);
    assert_eq!(max_diff(&logits(&m_hf, &ids), &want), 0.0, "HF export");

    // GGUF through the task's export, as `vpt export --format gguf` calls it.
    let mut figures = serde_json::json!({"export_hf_cli_seconds": cli_seconds});
    let mut gguf_refs = Vec::new();
    // Max-abs bounds over all positions × 49152 logits (of magnitude ~20); quantised files must
    // also predict the same next token.
    for (dtype, bound) in [("f32", 0.0), ("f16", 0.1), ("q8_0", 2.0)] {
        let out = dir.join(format!("gguf-{dtype}"));
        let started = std::time::Instant::now();
        let files = reference.export(&request("gguf", dtype, out)).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let path = files[0].clone();
        let (c, vs, _) = load_gguf(&path, Device::Cpu).unwrap();
        assert_eq!(c, cfg, "{dtype}: config");
        let got = logits(&Llama::new(&vs.root(), &c), &ids);
        let diff = max_diff(&got, &want);
        assert!(
            diff <= bound,
            "GGUF {dtype}: logits differ by {diff} (bound {bound})"
        );
        assert_eq!(
            got.select(1, -1).argmax(-1, false).int64_value(&[]),
            last.argmax(-1, false).int64_value(&[]),
            "GGUF {dtype}: next token"
        );
        figures[format!("gguf_{dtype}")] = serde_json::json!({
            "max_abs_logit_diff": diff, "seconds": seconds, "mb": file_mb(&path)});
        let g = Gguf::open(&path).unwrap();
        // The tokenizer metadata is the source's, key by key.
        for (k, v) in src
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
        {
            assert_eq!(g.metadata.get(k), Some(v), "{dtype}: metadata `{k}`");
        }
        gguf_refs.push(serde_json::json!({
            "path": path,
            "dtype": dtype,
            "tensors": g.tensors.iter().map(|t| {
                let ty = match vpt_llama::gguf::GgmlType::from_id(t.type_id).unwrap() {
                    vpt_llama::gguf::GgmlType::F32 => "F32",
                    vpt_llama::gguf::GgmlType::F16 => "F16",
                    vpt_llama::gguf::GgmlType::Q8_0 => "Q8_0",
                    other => panic!("unexpected type {other:?}"),
                };
                (t.name.clone(), serde_json::json!([t.shape(), ty]))
            }).collect::<serde_json::Map<_, _>>(),
            "metadata": expected_metadata(&g),
        }));
    }
    println!("export figures: {figures}");

    // The same files, read by transformers, gguf and tensorboard.
    let eos = tok.decode(&[tok.eos_id()]).unwrap();
    let reference_json = serde_json::json!({
        "hf_dir": hf,
        "prompt": prompt,
        "ids": ids,
        "logits": Vec::<f64>::try_from(&last).unwrap(),
        "chat_user": "What is 2 + 3?",
        "chat_prompt": tok.chat_prompt("What is 2 + 3?"),
        "eos_token": eos,
        "gguf": gguf_refs,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "check_layers": [0, cfg.num_layers - 1],
        "run_dir": run,
    });
    let ref_path = dir.join("reference.json");
    std::fs::write(&ref_path, reference_json.to_string()).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = ok(
        Command::new(format!("{root}/scripts/setup.sh")).arg("interop"),
        "scripts/setup.sh interop",
    );
    let started = std::time::Instant::now();
    let out = ok(
        Command::new(python.trim())
            .arg(format!("{root}/tests/python/check_export.py"))
            .arg(&ref_path),
        "tests/python/check_export.py",
    );
    println!(
        "python check ({:.1}s wall): {}",
        started.elapsed().as_secs_f64(),
        out.trim()
    );
    let py: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(py["hf_f32_max_abs_diff"].as_f64().unwrap() <= 1e-3);
    assert!(py["tensorboard_scalars_checked"].as_u64().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the `gguf` reader should find in `g`: scalars as they are, arrays as their length and
/// first items.
fn expected_metadata(g: &Gguf) -> serde_json::Value {
    fn plain(v: &Value) -> serde_json::Value {
        match v {
            Value::Str(s) => s.clone().into(),
            Value::Bool(b) => (*b).into(),
            Value::F32(x) => (*x as f64).into(),
            Value::F64(x) => (*x).into(),
            other => other.as_u64().map_or_else(
                || other.as_f64().map_or(serde_json::Value::Null, Into::into),
                Into::into,
            ),
        }
    }
    g.metadata
        .iter()
        .map(|(k, v)| {
            let j = match v {
                Value::Array(a) => serde_json::json!({
                    "len": a.len(),
                    "head": a.iter().take(5).map(plain).collect::<Vec<_>>(),
                }),
                v => plain(v),
            };
            (k.clone(), j)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A task that does not implement `Task::export` (the tiny example) answers, across the plugin
/// boundary, with the SDK's default error.
#[test]
fn a_task_without_export_says_so() {
    let dir = scratch_dir("export-none");
    let run = dir.join("run");
    ok(
        vpt_command()
            .arg("run")
            .arg(vpt_integration::tiny_config_path())
            .args(["--steps", "2", "--out"])
            .arg(&run),
        "vpt run (tiny)",
    );
    let err = failed_export(vpt_command(), &["--format", "hf"], &dir.join("x"), &run);
    assert!(
        err.contains("cannot export") && err.contains("`hf`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
