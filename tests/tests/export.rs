//! `vpt export` end to end: a run's checkpoint → HF directory and GGUF files → read back by
//! vpt's own loaders (identical F32 logits) and by transformers, the `gguf` package and
//! tensorboard (tests/python/check_export.py, in the venv `scripts/setup.sh interop` prepares).

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Tensor};
use vpt_host::checkpoint;
use vpt_integration::{cdylib, scratch_dir, vpt_command};
use vpt_lm::gguf::{load_gguf, Gguf, Value};
use vpt_lm::hf::load_hf;
use vpt_lm::model::{Attention, Llama};
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

/// The run's task rebuilt in-process from its `config.json`, θ restored from its latest
/// checkpoint: vpt's own model, the reference every export is compared with.
fn restored_task(run: &Path) -> CausalLm {
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

fn loaded(vs_cfg: (vpt_lm::model::Config, tch::nn::VarStore)) -> (Llama, tch::nn::VarStore) {
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
    assert!(std::fs::read_dir(&run)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents.")));

    let hf = dir.join("hf");
    let gg = dir.join("gguf");
    let listed = ok(
        vpt().args(["export", "--format", "hf", "--adapter", "--out"]).arg(&hf).arg(&run),
        "vpt export --format hf --adapter",
    );
    assert!(listed.contains("adapter_model.safetensors"), "{listed}");
    ok(
        vpt().args(["export", "--format", "gguf", "--out"]).arg(&gg).arg(&run),
        "vpt export --format gguf",
    );

    let reference = restored_task(&run);
    let tok = vpt_lm::tokenizer::Tokenizer::tiny();
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
    assert_eq!(max_diff(&from_hf, &logits(&m_gg, &ids)), 0.0, "HF vs GGUF F32");
    let merged = max_diff(&from_hf, &want);
    assert!(merged < 1e-4, "merged export differs from the adapted model by {merged}");
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
    let acfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(acfg["r"], 4);
    assert_eq!(acfg["lora_alpha"], 8.0);
    assert_eq!(acfg["layers_to_transform"], serde_json::json!([1]));

    // Bad requests name the flag.
    let out = vpt()
        .args(["export", "--format", "onnx", "--out"])
        .arg(dir.join("x"))
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--format") && err.contains("gguf"), "{err}");
    let out = vpt()
        .args(["export", "--format", "gguf", "--checkpoint", "99", "--out"])
        .arg(dir.join("x"))
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("step 99"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
