//! The Hugging Face side of `vpt export`: the model directory transformers loads
//! (`config.json`, `model.safetensors`, `tokenizer.json` via [`crate::hf::save_hf`], plus
//! `tokenizer_config.json` with the chat template and `generation_config.json`), and the LoRA
//! adapter alone in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`).

use super::TokenizerSource;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};
use vpt_llama::store::set_var;
use vpt_llama::Config;
use vpt_sdk::{Error, Result};

fn write_json(path: &Path, v: &Value) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::msg(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
    Ok(path.to_path_buf())
}

/// Writes the HF model directory for `weights` (HF names, merged, f32) into `dir`.
pub fn write_hf(
    dir: &Path,
    cfg: &Config,
    weights: &BTreeMap<String, Tensor>,
    tok: &TokenizerSource,
) -> Result<Vec<PathBuf>> {
    let vs = nn::VarStore::new(Device::Cpu);
    for (name, t) in weights {
        set_var(&vs, name, t)?;
    }
    vpt_llama::hf::save_hf(dir, cfg, &vs, Some(&tok.tokenizer), None)?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos(),
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": cfg.max_position,
    });
    for (which, key) in [
        ("bos", "bos_token"),
        ("eos", "eos_token"),
        ("padding", "pad_token"),
        ("unknown", "unk_token"),
    ] {
        if let Some(t) = tok.special(which) {
            tc[key] = json!(t);
        }
    }
    if let Some(t) = tok.chat_template() {
        tc["chat_template"] = json!(t);
    }
    let mut gc = json!({ "_from_model_config": false });
    for (which, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("padding", "pad_token_id"),
    ] {
        if let Some(id) = tok.special_id(which) {
            gc[key] = json!(id);
        }
    }
    let mut files = vec![
        dir.join("config.json"),
        dir.join("model.safetensors"),
        dir.join("tokenizer.json"),
    ];
    files.push(write_json(&dir.join("tokenizer_config.json"), &tc)?);
    files.push(write_json(&dir.join("generation_config.json"), &gc)?);
    Ok(files)
}

/// Writes the LoRA adapters of `vs` (`….{q,k,v,o}_proj.lora_{A,B}.weight`) into `dir` as a PEFT
/// adapter (`base_model.model.` name prefix, `adapter_config.json` with r, α and the layers).
pub fn write_peft_adapter(
    dir: &Path,
    vs: &nn::VarStore,
    rank: i64,
    alpha: f64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut layers = std::collections::BTreeSet::new();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (name, t) in vars.iter().filter(|(n, _)| n.contains(".lora_")) {
        if let Some(i) = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
        {
            layers.insert(i);
        }
        let (shape, bytes) = vpt_llama::hf::f32_le_bytes(t, name)?;
        data.push((format!("base_model.model.{name}"), shape, bytes));
    }
    if data.is_empty() {
        return Err(Error::msg("the model has no LoRA adapter to export"));
    }
    let path = dir.join("adapter_model.safetensors");
    let views = data
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    safetensors::serialize_to_file(views, &None, &path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let cfg = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "layers_to_transform": layers.into_iter().collect::<Vec<_>>(),
        "base_model_name_or_path": null,
    });
    Ok(vec![
        path,
        write_json(&dir.join("adapter_config.json"), &cfg)?,
    ])
}
