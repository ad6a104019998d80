//! `vpt export` for the causal LM: θ as trained (LoRA merged into the base weights) written as
//! a Hugging Face directory ([`hf`]) or a llama.cpp GGUF file ([`vpt_llama::gguf::writer`]), optionally
//! with the LoRA adapter alone in PEFT's layout.
//!
//! The tokenizer travels with the weights: from a GGUF source its `tokenizer.*` metadata is
//! copied as the source had it; from an HF source or the tiny model it is derived from the
//! tokenizer vpt uses ([`TokenizerSource::open`]).

pub mod hf;

use crate::task::config::ModelSource;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{nn, Device, Kind, Tensor};
use vpt_llama::gguf::{self, permute_rows, GgmlType, Gguf, GgufWriter, Value};
use vpt_llama::Tokenizer;
use vpt_llama::{Config, Scope};
use vpt_sdk::{Error, ExportRequest, Result, TchContext};

/// Formats and element types this task writes: (format, dtypes).
pub const FORMATS: &[(&str, &[&str])] = &[("hf", &["f32"]), ("gguf", &["f32", "f16", "q8_0"])];

/// Writes the model as `req` asks and returns the files written.
pub fn export(
    src: &ModelSource,
    scope: &Scope,
    cfg: &Config,
    vs: &nn::VarStore,
    req: &ExportRequest,
) -> Result<Vec<PathBuf>> {
    check_request(req)?;
    if req.adapter && !matches!(scope, Scope::LoraLastN { .. }) {
        return Err(Error::config(
            "--adapter",
            "this run trains no LoRA adapter (task.config.trainable is not lora_last_n)",
        ));
    }
    let weights = tch::no_grad(|| merged_weights(cfg, scope, vs))?;
    let tok = TokenizerSource::open(src)?;
    let out = &req.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut files = match req.format.as_str() {
        "hf" => hf::write_hf(out, cfg, &weights, &tok)?,
        _ => {
            let ty = match req.dtype.as_str() {
                "f16" => GgmlType::F16,
                "q8_0" => GgmlType::Q8_0,
                _ => GgmlType::F32,
            };
            let path = out.join(format!("model-{}.gguf", req.dtype));
            gguf_file(cfg, &weights, &tok, ty)?.write(&path)?;
            vec![path]
        }
    };
    if let (true, Scope::LoraLastN { rank, alpha, .. }) = (req.adapter, scope) {
        files.extend(hf::write_peft_adapter(
            &out.join("adapter"),
            vs,
            *rank,
            *alpha,
        )?);
    }
    Ok(files)
}

fn check_request(req: &ExportRequest) -> Result<()> {
    let list = || {
        FORMATS
            .iter()
            .map(|(f, d)| format!("{f} ({})", d.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((_, dtypes)) = FORMATS.iter().find(|(f, _)| *f == req.format) else {
        return Err(Error::config(
            "--format",
            format!("the LM cannot write `{}`; it writes {}", req.format, list()),
        ));
    };
    if !dtypes.contains(&req.dtype.as_str()) {
        return Err(Error::config(
            "--dtype",
            format!(
                "format `{}` takes {}, not `{}`",
                req.format,
                dtypes.join(", "),
                req.dtype
            ),
        ));
    }
    Ok(())
}

/// The base-model weights under HF names, f32 on CPU, with every LoRA adapter of `scope`
/// merged in: W + (α/r)·B·A.
pub fn merged_weights(
    cfg: &Config,
    scope: &Scope,
    vs: &nn::VarStore,
) -> Result<BTreeMap<String, Tensor>> {
    let vars = vs.variables();
    let lora_scale = match scope {
        Scope::LoraLastN { rank, alpha, .. } => Some(alpha / *rank as f64),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for name in cfg.parameter_names() {
        let t = vars.get(&name).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            message: "not in the model's VarStore".into(),
        })?;
        let mut w = t.f_detach()?.f_to_kind(Kind::Float)?.f_to(Device::Cpu)?;
        if let (Some(scale), Some(stem)) = (lora_scale, name.strip_suffix(".weight")) {
            let (a, b) = (
                vars.get(&format!("{stem}.lora_A.weight")),
                vars.get(&format!("{stem}.lora_B.weight")),
            );
            if let (Some(a), Some(b)) = (a, b) {
                let delta = b
                    .f_to_kind(Kind::Float)?
                    .f_to(Device::Cpu)?
                    .f_matmul(&a.f_to_kind(Kind::Float)?.f_to(Device::Cpu)?)
                    .op(&format!("merging the LoRA adapter of `{name}`"))?;
                w = w.f_add(&delta.f_mul_scalar(scale)?)?;
            }
        }
        out.insert(name, w.f_contiguous()?);
    }
    Ok(out)
}

/// The tokenizer of the model source and its GGUF-style metadata (`tokenizer.*` keys).
pub struct TokenizerSource {
    /// The tokenizer vpt uses.
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.*` and `tokenizer.chat_template`, as llama.cpp names them.
    pub metadata: BTreeMap<String, Value>,
}

impl TokenizerSource {
    /// Reads the tokenizer of `src`: a GGUF's metadata verbatim; for an HF directory or the
    /// tiny model, metadata derived from the tokenizer (and `tokenizer_config.json`).
    pub fn open(src: &ModelSource) -> Result<TokenizerSource> {
        match src {
            ModelSource::Gguf(p) => {
                let g = Gguf::open(p)?;
                Ok(TokenizerSource {
                    tokenizer: g.tokenizer()?,
                    metadata: g
                        .metadata
                        .iter()
                        .filter(|(k, _)| k.starts_with("tokenizer."))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
            }
            ModelSource::Hf(d) => {
                let dir = d.as_path();
                let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
                let cfg_path = dir.join("tokenizer_config.json");
                let tc: Json = match std::fs::read_to_string(&cfg_path) {
                    Ok(s) => serde_json::from_str(&s)
                        .map_err(|e| Error::msg(format!("{}: {e}", cfg_path.display())))?,
                    Err(_) => Json::Null,
                };
                let metadata = derived_metadata(
                    &tokenizer,
                    tc["add_bos_token"].as_bool().unwrap_or(false),
                    tc["chat_template"].as_str(),
                )?;
                Ok(TokenizerSource {
                    tokenizer,
                    metadata,
                })
            }
            ModelSource::TinyRandom => {
                let tokenizer = Tokenizer::tiny();
                let metadata = derived_metadata(&tokenizer, false, None)?;
                Ok(TokenizerSource {
                    tokenizer,
                    metadata,
                })
            }
        }
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.metadata
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
    }

    /// Whether BOS is prepended when encoding.
    pub fn add_bos(&self) -> bool {
        self.metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The token string of the special id `tokenizer.ggml.{which}_token_id`, if set.
    pub fn special(&self, which: &str) -> Option<String> {
        let id = self
            .metadata
            .get(&format!("tokenizer.ggml.{which}_token_id"))?
            .as_u64()?;
        self.tokenizer.inner().id_to_token(id as u32)
    }

    /// The special id `tokenizer.ggml.{which}_token_id`, if set.
    pub fn special_id(&self, which: &str) -> Option<u64> {
        self.metadata
            .get(&format!("tokenizer.ggml.{which}_token_id"))?
            .as_u64()
    }
}

/// llama.cpp's `tokenizer.*` metadata for a byte-level BPE `tok` (what its converter writes).
fn derived_metadata(
    tok: &Tokenizer,
    add_bos: bool,
    chat_template: Option<&str>,
) -> Result<BTreeMap<String, Value>> {
    let inner = tok.inner();
    let n = tok.vocab_size() as u32;
    let tokens = (0..n)
        .map(|i| {
            inner
                .id_to_token(i)
                .map(Value::Str)
                .ok_or_else(|| Error::msg(format!("tokenizer: id {i} has no token")))
        })
        .collect::<Result<Vec<_>>>()?;
    let json: Json = serde_json::from_str(
        &inner
            .to_string(false)
            .map_err(|e| Error::msg(format!("tokenizer: {e}")))?,
    )
    .map_err(|e| Error::msg(format!("tokenizer: {e}")))?;
    let merges = json["model"]["merges"]
        .as_array()
        .ok_or_else(|| Error::msg("tokenizer: not a BPE model (no merges)"))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Value::Str(s.clone()),
            pair => Value::Str(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
        })
        .collect();
    let added = inner.get_added_tokens_decoder();
    let types = (0..n)
        .map(|i| {
            Value::I32(match added.get(&i) {
                Some(t) if t.special => 3,
                Some(_) => 4,
                None => 1,
            })
        })
        .collect();
    let digits = json["pre_tokenizer"].to_string().contains("\"Digits\"");
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| m.insert(format!("tokenizer.{k}"), v);
    put("ggml.model", Value::Str("gpt2".into()));
    put(
        "ggml.pre",
        Value::Str(if digits { "smollm" } else { "gpt2" }.into()),
    );
    put("ggml.tokens", Value::Array(tokens));
    put("ggml.token_type", Value::Array(types));
    put("ggml.merges", Value::Array(merges));
    put("ggml.eos_token_id", Value::U32(tok.eos_id() as u32));
    if let Some(b) = tok.bos_id() {
        put("ggml.bos_token_id", Value::U32(b as u32));
    }
    put("ggml.padding_token_id", Value::U32(tok.pad_id() as u32));
    put("ggml.add_bos_token", Value::Bool(add_bos));
    if let Some(t) = chat_template {
        put("chat_template", Value::Str(t.into()));
    }
    Ok(m)
}

/// The GGUF file of `weights` (HF names) as llama.cpp's converter writes it: `llama` (or
/// `qwen2`) hyper-parameters, the tokenizer metadata, GGUF names, Q/K rows permuted for
/// `llama`, 1-D tensors in F32 and matrices in `ty` (F16 where a row does not split into Q8_0
/// blocks).
pub fn gguf_file(
    cfg: &Config,
    weights: &BTreeMap<String, Tensor>,
    tok: &TokenizerSource,
    ty: GgmlType,
) -> Result<GgufWriter> {
    let arch = if cfg.qkv_bias { "qwen2" } else { "llama" };
    let mut w = GgufWriter::new();
    let file_type = match ty {
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        _ => 0,
    };
    let u = |x: i64| Value::U32(x as u32);
    w.set("general.architecture", Value::Str(arch.into()));
    w.set("general.name", Value::Str("vpt export".into()));
    w.set("general.file_type", Value::U32(file_type));
    for (k, v) in [
        ("vocab_size", u(cfg.vocab_size)),
        ("context_length", u(cfg.max_position)),
        ("embedding_length", u(cfg.hidden_size)),
        ("block_count", u(cfg.num_layers as i64)),
        ("feed_forward_length", u(cfg.intermediate_size)),
        ("attention.head_count", u(cfg.num_heads)),
        ("attention.head_count_kv", u(cfg.num_kv_heads)),
        ("attention.key_length", u(cfg.head_dim)),
        ("attention.value_length", u(cfg.head_dim)),
        ("rope.dimension_count", u(cfg.head_dim)),
        ("rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_eps as f32),
        ),
    ] {
        w.set(&format!("{arch}.{k}"), v);
    }
    for (k, v) in &tok.metadata {
        w.set(k, v.clone());
    }
    for (name, t) in weights {
        let g = gguf::gguf_name(name)
            .ok_or_else(|| Error::msg(format!("tensor `{name}` has no GGUF name in the table")))?;
        let t = if arch == "llama" && name.contains("q_proj.") {
            permute_rows(t, cfg.num_heads)?
        } else if arch == "llama" && name.contains("k_proj.") {
            permute_rows(t, cfg.num_kv_heads)?
        } else {
            t.shallow_clone()
        };
        let shape = t.size();
        let ty = match (shape.len(), ty) {
            (1, _) => GgmlType::F32,
            (_, GgmlType::Q8_0) if shape[shape.len() - 1] % 32 != 0 => GgmlType::F16,
            (_, ty) => ty,
        };
        let values = Vec::<f32>::try_from(t.f_contiguous()?.f_view([-1])?).op(name)?;
        w.tensor(&g, &shape, ty, &values)?;
    }
    Ok(w)
}
