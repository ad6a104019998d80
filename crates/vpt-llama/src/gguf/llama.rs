//! Loading a llama.cpp `llama` / `qwen2` GGUF file as a Llama: the [`Config`] from the
//! metadata, the [`Tokenizer`] from `tokenizer.ggml.*`, and every tensor into a VarStore under
//! its HF name (Q/K rows un-permuted for `llama`, see [`super::names`]).

use super::names::{gguf_name, hf_name, unpermute_rows};
use super::reader::{Gguf, Value};
use crate::config::Config;
use crate::store::set_var;
use crate::tokenizer::{BpeSpec, Tokenizer};
use std::path::Path;
use tch::{nn, Device, Kind};
use vpt_sdk::Result;

impl Gguf {
    /// The model [`Config`] read from the metadata (and the tensor directory for tying/bias).
    pub fn config(&self) -> Result<Config> {
        let arch = self.architecture()?.to_string();
        if arch != "llama" && arch != "qwen2" {
            return Err(self.err(format!(
                "architecture `{arch}` is not supported (llama, qwen2)"
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        if let Some(v) = self.metadata.get(&key("rope.scaling.type")) {
            if v.as_str() != Some("none") {
                return Err(self.err(format!(
                    "metadata `{}` = {v:?}: RoPE scaling is not supported",
                    key("rope.scaling.type")
                )));
            }
        }
        let hidden = self.get_u64(&key("embedding_length"))? as i64;
        let heads = self.get_u64(&key("attention.head_count"))? as i64;
        let kv = match self.metadata.get(&key("attention.head_count_kv")) {
            Some(_) => self.get_u64(&key("attention.head_count_kv"))? as i64,
            None => heads,
        };
        let head_dim = match self.metadata.get(&key("attention.key_length")) {
            Some(_) => self.get_u64(&key("attention.key_length"))? as i64,
            None if heads > 0 && hidden % heads == 0 => hidden / heads,
            None => {
                return Err(self.err(format!(
                    "`{}` does not divide by the head count",
                    key("embedding_length")
                )))
            }
        };
        let vocab = match self.metadata.get(&key("vocab_size")) {
            Some(_) => self.get_u64(&key("vocab_size"))? as i64,
            None => self.info("token_embd.weight")?.shape()[0],
        };
        let cfg = Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.get_u64(&key("feed_forward_length"))? as i64,
            num_layers: self.get_u64(&key("block_count"))? as usize,
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
            rms_eps: self.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: match self.metadata.get(&key("rope.freq_base")) {
                Some(_) => self.get_f64(&key("rope.freq_base"))?,
                None => 10_000.0,
            },
            tie_embeddings: !self.tensors.iter().any(|t| t.name == "output.weight"),
            qkv_bias: self.tensors.iter().any(|t| t.name == "blk.0.attn_q.bias"),
            max_position: self.get_u64(&key("context_length"))? as i64,
        };
        cfg.validate()
            .map_err(|e| self.err(format!("config from metadata: {e}")))?;
        Ok(cfg)
    }

    /// The tokenizer stored in the metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let model = self.get("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(self.err(format!(
                "`tokenizer.ggml.model` = `{model}`: only byte-level BPE (`gpt2`) is supported"
            )));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            let a = self
                .get(k)?
                .as_array()
                .ok_or_else(|| self.err(format!("metadata `{k}` is not an array")))?;
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(format!("metadata `{k}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types = match self.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .as_array()
                .ok_or_else(|| self.err("metadata `tokenizer.ggml.token_type` is not an array"))?
                .iter()
                .map(|t| {
                    t.as_f64()
                        .map(|x| x as i32)
                        .ok_or_else(|| self.err("`tokenizer.ggml.token_type` holds a non-integer"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let opt_id = |k: &str| -> Result<Option<i64>> {
            match self.metadata.get(k) {
                None => Ok(None),
                Some(_) => Ok(Some(self.get_u64(k)? as i64)),
            }
        };
        let pre = self
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let spec = BpeSpec {
            tokens,
            merges,
            token_types: types,
            bos: opt_id("tokenizer.ggml.bos_token_id")?,
            eos: opt_id("tokenizer.ggml.eos_token_id")?
                .ok_or_else(|| self.err("missing metadata key `tokenizer.ggml.eos_token_id`"))?,
            pad: opt_id("tokenizer.ggml.padding_token_id")?,
            add_bos: self
                .metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            // llama.cpp pre-tokenizers that cut digits one per piece; every pre-tokenizer is
            // otherwise approximated by GPT-2's byte-level regex (exact for `smollm`).
            split_digits: matches!(
                pre,
                "smollm"
                    | "starcoder"
                    | "refact"
                    | "qwen2"
                    | "command-r"
                    | "codeshell"
                    | "exaone"
                    | "minerva"
            ),
            chat_template: self
                .metadata
                .get("tokenizer.chat_template")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        Tokenizer::from_bpe(spec).map_err(|e| self.err(format!("tokenizer: {e}")))
    }

    /// Copies every tensor into `vs` under its HF name (creating missing variables, checking the
    /// shape of existing ones), un-permuting Q/K for `llama`. Every base-model parameter of
    /// `cfg` must be present in the file; unknown tensors are an error.
    pub fn load_into(&self, vs: &nn::VarStore, cfg: &Config) -> Result<()> {
        let unpermute = self.architecture()? == "llama";
        let mut seen = std::collections::HashSet::new();
        for info in &self.tensors {
            let hf = hf_name(&info.name).ok_or_else(|| {
                self.err(format!(
                    "tensor `{}` has no HF name in the table",
                    info.name
                ))
            })?;
            let mut t = self.tensor(&info.name)?;
            if unpermute {
                if hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias") {
                    t = unpermute_rows(&t, cfg.num_heads)
                        .map_err(|e| self.err(format!("tensor `{}`: {e}", info.name)))?;
                } else if hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias") {
                    t = unpermute_rows(&t, cfg.num_kv_heads)
                        .map_err(|e| self.err(format!("tensor `{}`: {e}", info.name)))?;
                }
            }
            set_var(vs, &hf, &t)
                .map_err(|e| self.err(format!("tensor `{}` → `{hf}`: {e}", info.name)))?;
            seen.insert(hf);
        }
        if let Some(missing) = cfg
            .parameter_names()
            .into_iter()
            .find(|n| !seen.contains(n))
        {
            let g = gguf_name(&missing).unwrap_or_default();
            return Err(self.err(format!("tensor `{g}` (HF `{missing}`) is missing")));
        }
        Ok(())
    }
}

/// Loads a GGUF checkpoint: its [`Config`], a VarStore on `device` holding every weight under
/// its HF name (f32, trainable), and its [`Tokenizer`]. Build the model on it with
/// `Llama::with_scope(&vs.root(), &cfg, &scope)`, which reuses these variables.
pub fn load_gguf(
    path: impl AsRef<Path>,
    device: Device,
) -> Result<(Config, nn::VarStore, Tokenizer)> {
    let g = Gguf::open(path)?;
    let cfg = g.config()?;
    let tok = g.tokenizer()?;
    if tok.vocab_size() as i64 > cfg.vocab_size {
        return Err(g.err(format!(
            "tokenizer has {} tokens but the model only {}",
            tok.vocab_size(),
            cfg.vocab_size
        )));
    }
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(Kind::Float);
    g.load_into(&vs, &cfg)?;
    Ok((cfg, vs, tok))
}
