//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) + `tokenizer.json`, read into the same [`Config`], VarStore
//! (HF names) and [`Tokenizer`] as the GGUF loader; and [`save_hf`], which writes that layout.
//!
//! Supported `model_type`s: `llama`, `qwen2` (q/k/v bias). RoPE scaling is refused.

use crate::config::Config;
use crate::tokenizer::Tokenizer;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};
use vpt_sdk::{Error, Result, TchContext};

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads an HF `config.json` into a [`Config`]; errors name the file and the key.
pub fn read_config(path: &Path) -> Result<Config> {
    let v: Value = serde_json::from_slice(&read(path)?)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let bad = |k: &str, what: &str| Error::msg(format!("{}: key `{k}` {what}", path.display()));
    let int = |k: &str| {
        v[k].as_i64()
            .ok_or_else(|| bad(k, "is missing or not an integer"))
    };
    let int_or = |k: &str, d: i64| if v[k].is_null() { Ok(d) } else { int(k) };
    let num_or = |k: &str, d: f64| {
        if v[k].is_null() {
            Ok(d)
        } else {
            v[k].as_f64().ok_or_else(|| bad(k, "is not a number"))
        }
    };
    let model_type = v["model_type"]
        .as_str()
        .ok_or_else(|| bad("model_type", "is missing"))?;
    if model_type != "llama" && model_type != "qwen2" {
        return Err(bad(
            "model_type",
            &format!("= `{model_type}` is not supported (llama, qwen2)"),
        ));
    }
    let scaling = &v["rope_scaling"];
    if !scaling.is_null()
        && scaling["rope_type"].as_str().or(scaling["type"].as_str()) != Some("default")
    {
        return Err(bad("rope_scaling", "is set; RoPE scaling is not supported"));
    }
    let hidden = int("hidden_size")?;
    let heads = int("num_attention_heads")?;
    let cfg = Config {
        vocab_size: int("vocab_size")?,
        hidden_size: hidden,
        intermediate_size: int("intermediate_size")?,
        num_layers: int("num_hidden_layers")? as usize,
        num_heads: heads,
        num_kv_heads: int_or("num_key_value_heads", heads)?,
        head_dim: int_or("head_dim", if heads > 0 { hidden / heads } else { 0 })?,
        rms_eps: num_or("rms_norm_eps", 1e-6)?,
        rope_theta: num_or("rope_theta", 10_000.0)?,
        tie_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
        qkv_bias: model_type == "qwen2" || v["attention_bias"].as_bool().unwrap_or(false),
        max_position: int_or("max_position_embeddings", 2048)?,
    };
    cfg.validate()
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

/// The HF `config.json` for `cfg`.
pub fn config_json(cfg: &Config) -> Value {
    json!({
        "architectures": [if cfg.qkv_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": if cfg.qkv_bias { "qwen2" } else { "llama" },
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": cfg.qkv_bias,
        "max_position_embeddings": cfg.max_position,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    })
}

/// A safetensors tensor as an f32 torch tensor on CPU.
fn to_tensor(
    file: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
) -> Result<Tensor> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        d => {
            return Err(Error::msg(format!(
                "{}: tensor `{name}` has unsupported dtype {d:?}",
                file.display()
            )))
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .op(&format!("{}: tensor `{name}`", file.display()))
}

/// Loads an HF checkpoint directory: `config.json`, `model.safetensors` or the shards of
/// `model.safetensors.index.json`, and `tokenizer.json` (+ `tokenizer_config.json`). Returns the
/// config, a VarStore on `device` with every weight under its HF name, and the tokenizer.
pub fn load_hf(dir: impl AsRef<Path>, device: Device) -> Result<(Config, nn::VarStore, Tokenizer)> {
    let dir = dir.as_ref();
    let cfg = read_config(&dir.join("config.json"))?;
    let tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(Kind::Float);
    load_weights(dir, &cfg, &vs)?;
    Ok((cfg, vs, tok))
}

/// Fills `vs` from the safetensors of `dir` (creating or copying into variables). Every base
/// parameter of `cfg` must be present; unexpected tensors are an error (RoPE `inv_freq` buffers
/// and a tied `lm_head.weight` are skipped).
pub fn load_weights(dir: &Path, cfg: &Config, vs: &nn::VarStore) -> Result<()> {
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<String> = if index.exists() {
        let v: Value = serde_json::from_slice(&read(&index)?)
            .map_err(|e| Error::msg(format!("{}: {e}", index.display())))?;
        let map = v["weight_map"].as_object().ok_or_else(|| {
            Error::msg(format!("{}: key `weight_map` is missing", index.display()))
        })?;
        let set: BTreeSet<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        set.into_iter().collect()
    } else {
        vec!["model.safetensors".to_string()]
    };
    let expected: HashSet<String> = cfg.parameter_names().into_iter().collect();
    let mut seen = HashSet::new();
    for f in files {
        let path = dir.join(&f);
        let bytes = read(&path)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        for (name, view) in st.tensors() {
            if name.ends_with("rotary_emb.inv_freq")
                || (cfg.tie_embeddings && name == "lm_head.weight")
            {
                continue;
            }
            if !expected.contains(&name) {
                return Err(Error::msg(format!(
                    "{}: tensor `{name}` is not a parameter of this config",
                    path.display()
                )));
            }
            let t = to_tensor(&path, &name, &view)?;
            crate::store::set_var(vs, &name, &t)
                .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
            seen.insert(name);
        }
    }
    if let Some(m) = cfg
        .parameter_names()
        .into_iter()
        .find(|n| !seen.contains(n))
    {
        return Err(Error::msg(format!(
            "{}: tensor `{m}` is missing from the checkpoint",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `vs`'s base-model weights (f32) and `config.json` (and `tokenizer.json` when given) to
/// `dir`. With `shard_bytes`, weights are split into `model-0000i-of-0000n.safetensors` shards of
/// about that size plus an index; otherwise one `model.safetensors`.
pub fn save_hf(
    dir: impl AsRef<Path>,
    cfg: &Config,
    vs: &nn::VarStore,
    tok: Option<&Tokenizer>,
    shard_bytes: Option<usize>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let vars = vs.variables();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in cfg.parameter_names() {
        let t = vars.get(&name).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            message: "not in the VarStore".into(),
        })?;
        let (shape, bytes) = f32_le_bytes(t, &name)?;
        data.push((name, shape, bytes));
    }
    // Group into shards.
    let limit = shard_bytes.unwrap_or(usize::MAX);
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut size = 0;
    for (i, d) in data.iter().enumerate() {
        if size > 0 && size + d.2.len() > limit {
            shards.push(vec![]);
            size = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        size += d.2.len();
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (k, shard) in shards.iter().enumerate() {
        let file = if shard_bytes.is_none() {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        };
        let views = shard
            .iter()
            .map(|&i| {
                let (name, shape, bytes) = &data[i];
                weight_map.insert(name.clone(), file.clone());
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::msg(format!("{file}: {e}")))?;
        let path = dir.join(&file);
        safetensors::serialize_to_file(views, &None, &path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    }
    let write = |name: &str, v: &Value| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).expect("json"))
            .map_err(|e| Error::io(&p, e))
    };
    if shard_bytes.is_some() {
        write(
            "model.safetensors.index.json",
            &json!({"metadata": {}, "weight_map": weight_map}),
        )?;
    }
    write("config.json", &config_json(cfg))?;
    if let Some(t) = tok {
        t.save(dir.join("tokenizer.json"))?;
        write(
            "tokenizer_config.json",
            &json!({"eos_token": t.decode(&[t.eos_id()])?, "add_bos_token": false}),
        )?;
    }
    Ok(())
}

/// A tensor as safetensors wants it: its shape and its values as little-endian f32 bytes (on CPU,
/// detached, contiguous).
pub fn f32_le_bytes(t: &Tensor, name: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let t = t
        .f_detach()?
        .f_to_kind(Kind::Float)?
        .f_to(Device::Cpu)?
        .f_contiguous()?;
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(&t.f_view([-1])?).op(name)?;
    Ok((shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attention, Llama};

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vpt-hf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_and_load_give_identical_logits() {
        tch::set_num_threads(2);
        tch::manual_seed(3);
        for (tag, cfg, shard) in [
            ("single", Config::tiny(), None),
            (
                "sharded",
                Config {
                    tie_embeddings: false,
                    qkv_bias: true,
                    ..Config::tiny()
                },
                Some(40_000),
            ),
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let m = Llama::new(&vs.root(), &cfg);
            let dir = tmp(tag);
            save_hf(&dir, &cfg, &vs, Some(&Tokenizer::tiny()), shard).unwrap();
            if shard.is_some() {
                assert!(dir.join("model.safetensors.index.json").exists());
                let shards = std::fs::read_dir(&dir)
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .starts_with("model-")
                    })
                    .count();
                assert!(shards > 1, "{shards} shards");
            }
            let (cfg2, vs2, tok) = load_hf(&dir, Device::Cpu).unwrap();
            assert_eq!(cfg2, cfg);
            let m2 = Llama::new(&vs2.root(), &cfg2);
            let ids = Tensor::from_slice(&tok.encode("the cat sat on 12 mats", false).unwrap())
                .view([1, -1]);
            let a = m
                .logits(&m.forward_hidden(&ids, Attention::Fused).unwrap())
                .unwrap();
            let b = m2
                .logits(&m2.forward_hidden(&ids, Attention::Fused).unwrap())
                .unwrap();
            assert_eq!((a - b).abs().max().double_value(&[]), 0.0, "{tag}");
            assert_eq!(tok.eos_id(), 2);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let dir = tmp("err");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = Config::tiny();
        let mut j = config_json(&cfg);
        j["model_type"] = json!("gpt2");
        std::fs::write(dir.join("config.json"), j.to_string()).unwrap();
        let e = read_config(&dir.join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("model_type"), "{e}");
        j = config_json(&cfg);
        j.as_object_mut().unwrap().remove("hidden_size");
        std::fs::write(dir.join("config.json"), j.to_string()).unwrap();
        let e = read_config(&dir.join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
        // A checkpoint missing a tensor names it.
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = Llama::new(&vs.root(), &cfg);
        save_hf(&dir, &cfg, &vs, Some(&Tokenizer::tiny()), None).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != "model.norm.weight")
            .collect();
        let out = safetensors::serialize(kept, &None).unwrap();
        std::fs::write(dir.join("model.safetensors"), out).unwrap();
        let e = load_hf(&dir, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("model.norm.weight"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
