//! The Llama tensor-name mapping between GGUF (`blk.{i}.attn_q.weight`) and HF
//! (`model.layers.{i}.self_attn.q_proj.weight`) names, one table both ways, and llama.cpp's
//! Q/K row permutation: its converter permutes the rows of Q and K for `llama` so that its
//! interleaved RoPE matches HF's rotate-half; [`unpermute_rows`] undoes that so the model uses
//! HF layouts throughout.

use tch::Tensor;
use vpt_sdk::{Error, Result, TchContext};

/// Undoes llama.cpp's `permute(w, n_head)`: rows (n_head, hd/2, 2) → (n_head, 2, hd/2).
pub fn unpermute_rows(t: &Tensor, n_head: i64) -> Result<Tensor> {
    let size = t.size();
    let rows = size[0];
    if rows % (2 * n_head) != 0 {
        return Err(Error::msg(format!(
            "{rows} rows do not split into {n_head} heads of even width"
        )));
    }
    let rest: Vec<i64> = size[1..].to_vec();
    let mut s = vec![n_head, rows / n_head / 2, 2];
    s.extend(&rest);
    // (n_head, hd/2, 2, …) → (n_head, 2, hd/2, …) → (rows, …)
    t.f_reshape(s.as_slice())?
        .f_transpose(1, 2)?
        .f_reshape(size.as_slice())
        .op("unpermute")
}

/// The inverse of [`unpermute_rows`] (what llama.cpp's converter does), for tests and writers.
pub fn permute_rows(t: &Tensor, n_head: i64) -> Result<Tensor> {
    let size = t.size();
    let rows = size[0];
    let mut s = vec![n_head, 2, rows / n_head / 2];
    s.extend(&size[1..]);
    // (n_head, 2, hd/2, …) → (n_head, hd/2, 2, …) → (rows, …)
    t.f_reshape(s.as_slice())?
        .f_transpose(1, 2)?
        .f_reshape(size.as_slice())
        .op("permute")
}

/// Whole-model names: (GGUF, HF).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-block names: `blk.{i}.X` ↔ `model.layers.{i}.Y`.
const BLOCK_NAMES: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// The HF name of GGUF tensor `name`, from the one name table.
pub fn hf_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (i, tail) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let (_, hf) = BLOCK_NAMES.iter().find(|(g, _)| *g == tail)?;
    Some(format!("model.layers.{i}.{hf}"))
}

/// The GGUF name of HF parameter `name`, from the same table.
pub fn gguf_name(name: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, h)| *h == name) {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (i, tail) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let (g, _) = BLOCK_NAMES.iter().find(|(_, h)| *h == tail)?;
    Some(format!("blk.{i}.{g}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tch::{Device, Kind};

    #[test]
    fn names_table_round_trips() {
        for hf in (Config {
            tie_embeddings: false,
            qkv_bias: true,
            ..Config::tiny()
        })
        .parameter_names()
        {
            let g = gguf_name(&hf).unwrap_or_else(|| panic!("no GGUF name for {hf}"));
            assert_eq!(hf_name(&g).as_deref(), Some(hf.as_str()));
        }
        assert_eq!(
            hf_name("blk.7.attn_q.weight").unwrap(),
            "model.layers.7.self_attn.q_proj.weight"
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn permutation_round_trips() {
        let t = Tensor::arange(12 * 3, (Kind::Float, Device::Cpu)).view([12, 3]);
        let p = permute_rows(&t, 2).unwrap();
        assert!(p.not_equal_tensor(&t).any().int64_value(&[]) == 1);
        assert!(unpermute_rows(&p, 2).unwrap().equal(&t));
        // Head 0 rows (0..6) become (0, 3, 1, 4, 2, 5): interleaving the two halves.
        let rows: Vec<f32> = Vec::try_from(p.select(1, 0)).unwrap();
        assert_eq!(&rows[..6], &[0.0, 9.0, 3.0, 12.0, 6.0, 15.0]);
    }
}
