//! GGUF (v2/v3, little-endian) reader: metadata of every value type, the tensor directory,
//! alignment, and dequantisation to f32 of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
//! Q6_K; plus the loader that turns a llama.cpp `llama`/`qwen2` file into a [`Config`], a
//! VarStore under HF names and a [`Tokenizer`].
//!
//! Format reference: ggml `docs/gguf.md` and `ggml/src/ggml-quants.c` (`dequantize_row_*`).
//! GGUF dims list the fastest axis first (`ne[0]` = columns), so a torch shape is the reverse.
//! llama.cpp's converter permutes the rows of Q and K for `llama` so that its interleaved RoPE
//! matches HF's rotate-half; [`load_gguf`] undoes that permutation so [`crate::model`] uses HF
//! layouts throughout.
//!
//! API: [`Gguf::open`], [`Gguf::config`], [`Gguf::tokenizer`], [`Gguf::tensor`] (dequantised,
//! GGUF name), [`Gguf::load_into`] (fill a VarStore under HF names), [`load_gguf`] (all in one),
//! [`hf_name`] / [`gguf_name`] (the one name table).

use crate::model::Config;
use crate::tokenizer::{BpeSpec, Tokenizer};
use half::{bf16, f16};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};
use vpt_sdk::{Error, Result, TchContext};

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// type 0
    U8(u8),
    /// type 1
    I8(i8),
    /// type 2
    U16(u16),
    /// type 3
    I16(i16),
    /// type 4
    U32(u32),
    /// type 5
    I32(i32),
    /// type 6
    F32(f32),
    /// type 7
    Bool(bool),
    /// type 8
    Str(String),
    /// type 9 (homogeneous in practice; not enforced)
    Array(Vec<Value>),
    /// type 10
    U64(u64),
    /// type 11
    I64(i64),
    /// type 12
    F64(f64),
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, when it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows (ids from `ggml.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32
    F32,
    /// 1: f16
    F16,
    /// 2: blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = (q − 8)·d
    Q4_0,
    /// 3: blocks of 32: f16 d, f16 m, 16 bytes of 4-bit q; x = q·d + m
    Q4_1,
    /// 6: blocks of 32: f16 d, 32 high bits, 16 bytes of low nibbles; x = (q − 16)·d
    Q5_0,
    /// 7: blocks of 32: f16 d, f16 m, 32 high bits, 16 bytes of low nibbles; x = q·d + m
    Q5_1,
    /// 8: blocks of 32: f16 d, 32 i8 q; x = q·d
    Q8_0,
    /// 14: super-blocks of 256: 128 B low nibbles, 64 B high 2-bit pairs, 16 i8 scales, f16 d
    Q6K,
    /// 30: bfloat16
    BF16,
}

impl GgmlType {
    /// The type with ggml id `id`, if supported.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }
    /// The ggml id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }
    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q6K => (256, 210),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dims as stored: fastest axis first.
    pub dims: Vec<u64>,
    /// Raw ggml type id.
    pub type_id: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The torch shape (dims reversed).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened GGUF file held in memory.
#[derive(Debug)]
pub struct Gguf {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key → value, sorted by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section (`general.alignment`, default 32).
    pub alignment: u64,
    data_start: usize,
    bytes: Vec<u8>,
}

/// A little-endian cursor over the file bytes whose errors name the file and the position.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::msg(format!(
            "{}: GGUF byte {}: {what}",
            self.path.display(),
            self.pos
        ))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos.checked_add(n).is_none_or(|e| e > self.b.len()) {
            return Err(self.err(&format!(
                "truncated (wanted {n} more bytes, file has {})",
                self.b.len()
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.u64()?;
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(self.err(&format!("array length {n} exceeds the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            t => return Err(self.err(&format!("unknown metadata value type {t}"))),
        })
    }
}

impl Gguf {
    /// Reads and parses `path` (the whole file is held in memory).
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF `bytes`; `path` is only used in error messages.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Gguf> {
        let mut r = Reader {
            b: &bytes,
            pos: 0,
            path,
        };
        if r.take(4)? != b"GGUF" {
            return Err(r.err("not a GGUF file (magic is not `GGUF`)"));
        }
        let version = r.u32()?;
        if version != 2 && version != 3 {
            return Err(r.err(&format!(
                "unsupported GGUF version {version} (need 2 or 3; a huge number means a big-endian file)"
            )));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r
                .value(ty, 0)
                .map_err(|e| Error::msg(format!("{e} (metadata key `{key}`)")))?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()?;
            if nd > 4 {
                return Err(r.err(&format!("tensor `{name}` has {nd} dims (max 4)")));
            }
            let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let type_id = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                type_id,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v.as_u64().filter(|a| *a > 0).ok_or_else(|| {
                Error::msg(format!(
                    "{}: metadata `general.alignment` is not a positive integer",
                    path.display()
                ))
            })?,
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let g = Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_start: data_start as usize,
            bytes,
        };
        for t in &g.tensors {
            g.raw(t)?; // validates type, alignment and bounds up front
        }
        Ok(g)
    }

    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::msg(format!("{}: {what}", self.path.display()))
    }

    /// The metadata value under `key`, or an error naming the file and key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.err(format!("missing metadata key `{key}`")))
    }

    fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.err(format!("metadata `{key}` is not an unsigned integer")))
    }

    fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.err(format!("metadata `{key}` is not a number")))
    }

    /// The directory entry of tensor `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| self.err(format!("no tensor `{name}`")))
    }

    /// The type and bytes of one tensor, checked against the file.
    fn raw(&self, t: &TensorInfo) -> Result<(GgmlType, &[u8])> {
        let ty = GgmlType::from_id(t.type_id).ok_or_else(|| {
            self.err(format!(
                "tensor `{}`: unsupported ggml type {}",
                t.name, t.type_id
            ))
        })?;
        let (blk, bytes_per) = ty.block();
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if ne0 % blk as u64 != 0 {
            return Err(self.err(format!(
                "tensor `{}`: row length {ne0} is not a multiple of {blk} ({ty:?})",
                t.name
            )));
        }
        if t.offset.checked_rem(self.alignment) != Some(0) {
            return Err(self.err(format!(
                "tensor `{}`: offset {} is not {}-aligned",
                t.name, t.offset, self.alignment
            )));
        }
        let len = t.numel() / blk as u64 * bytes_per as u64;
        let start = self.data_start as u64 + t.offset;
        if start + len > self.bytes.len() as u64 {
            return Err(self.err(format!(
                "tensor `{}`: data [{start}, {}) runs past the end of the file",
                t.name,
                start + len
            )));
        }
        Ok((ty, &self.bytes[start as usize..(start + len) as usize]))
    }

    /// Tensor `name` (GGUF name) dequantised to f32, in torch shape (dims reversed), on CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let (ty, raw) = self.raw(info)?;
        let v = dequantize(ty, raw).map_err(|e| self.err(format!("tensor `{name}`: {e}")))?;
        Tensor::from_slice(&v)
            .f_view(info.shape().as_slice())
            .op(&format!("{}: tensor `{name}`", self.path.display()))
    }

    /// The architecture prefix of the metadata keys (`general.architecture`).
    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture")?
            .as_str()
            .ok_or_else(|| self.err("metadata `general.architecture` is not a string"))
    }

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

/// Stores `t` as variable `name` (dot-joined) of `vs`: copies into an existing variable of the
/// same shape, or creates a trainable one.
pub fn set_var(vs: &nn::VarStore, name: &str, t: &Tensor) -> Result<()> {
    let parts: Vec<&str> = name.split('.').collect();
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| Error::msg("empty variable name"))?;
    let mut p = vs.root();
    for d in dirs {
        p = p.sub(*d);
    }
    match p.get(last) {
        Some(mut v) => {
            if v.size() != t.size() {
                return Err(Error::Tensor {
                    name: name.into(),
                    message: format!("store holds {:?}, the file has {:?}", v.size(), t.size()),
                });
            }
            tch::no_grad(|| v.f_copy_(t)).op(name)?;
        }
        None => {
            let t = t.f_to_kind(vs.kind())?.f_to(vs.device())?;
            let _ = p.f_var_copy(last, &t).op(name)?;
        }
    }
    Ok(())
}

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

/// Dequantises `raw` bytes of type `ty` to f32 (row-major, blocks along the fastest axis).
pub fn dequantize(ty: GgmlType, raw: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let (blk, bytes) = ty.block();
    if raw.len().checked_rem(bytes) != Some(0) {
        return Err(format!(
            "{} bytes is not a whole number of {ty:?} blocks of {bytes} bytes",
            raw.len()
        ));
    }
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut out = Vec::with_capacity(raw.len() / bytes * blk);
    for b in raw.chunks_exact(bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16_at(b, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, h) = if ty == GgmlType::Q5_0 {
                    (f16_at(b, 0), 0.0, 2)
                } else {
                    (f16_at(b, 0), f16_at(b, 2), 4)
                };
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                let qs = &b[h + 4..h + 20];
                let off = if ty == GgmlType::Q5_0 { 16 } else { 0 };
                let lo = |j: usize| (((qs[j] & 0x0F) as u32) | (((qh >> j) & 1) << 4)) as i32 - off;
                let hi =
                    |j: usize| (((qs[j] >> 4) as u32) | (((qh >> (j + 16)) & 1) << 4)) as i32 - off;
                out.extend((0..16).map(|j| lo(j) as f32 * d + m));
                out.extend((0..16).map(|j| hi(j) as f32 * d + m));
            }
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|q| *q as i8 as f32 * d));
            }
            GgmlType::Q6K => {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                let mut y = [0f32; 256];
                for half in 0..2 {
                    let (ql, qh, sc, y) = (
                        &ql[64 * half..],
                        &qh[32 * half..],
                        &sc[8 * half..],
                        &mut y[128 * half..],
                    );
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * sc[is + k] as i8 as f32;
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(2) * q2 as f32;
                        y[l + 64] = s(4) * q3 as f32;
                        y[l + 96] = s(6) * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attention, Llama};

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5; byte j holds low nibble j (elements 0..16) and high nibble 15 − j (16..32).
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.5));
        b.extend((0..16u8).map(|j| (j * 7 % 16) | ((j % 5) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b).unwrap();
        for j in 0..16u8 {
            assert_eq!(v[j as usize], (j * 7 % 16) as f32 * 0.25 - 1.5);
            assert_eq!(v[j as usize + 16], (j % 5) as f32 * 0.25 - 1.5);
        }
        // Two blocks in a row dequantise independently.
        let mut two = b.clone();
        two.extend(&b);
        assert_eq!(dequantize(GgmlType::Q4_1, &two).unwrap()[32..], v[..]);
        assert!(dequantize(GgmlType::Q4_1, &b[..19]).is_err());
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(0.125).to_vec();
        b.extend((0..32i32).map(|j| (j * 9 - 128) as i8 as u8));
        let v = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(v.len(), 32);
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, ((j as i32 * 9 - 128) as i8) as f32 * 0.125);
        }
    }

    #[test]
    fn q5_blocks_by_hand() {
        // qh bit j is the 5th bit of element j; element j < 16 from the low nibble of qs[j],
        // element j + 16 from the high nibble.
        let qh: u32 = 0xA5C3_0F71;
        let qs: Vec<u8> = (0..16u8).map(|j| (j ^ 0x9) | ((j * 3 % 16) << 4)).collect();
        let q = |i: usize| -> i32 {
            let nib = if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 } as u32;
            (nib | (((qh >> i) & 1) << 4)) as i32
        };
        let mut b0 = h(2.0).to_vec();
        b0.extend(qh.to_le_bytes());
        b0.extend(&qs);
        let v0 = dequantize(GgmlType::Q5_0, &b0).unwrap();
        let mut b1 = h(2.0).to_vec();
        b1.extend(h(0.5));
        b1.extend(qh.to_le_bytes());
        b1.extend(&qs);
        let v1 = dequantize(GgmlType::Q5_1, &b1).unwrap();
        for i in 0..32 {
            assert_eq!(v0[i], (q(i) - 16) as f32 * 2.0, "q5_0 {i}");
            assert_eq!(v1[i], q(i) as f32 * 2.0 + 0.5, "q5_1 {i}");
        }
    }

    #[test]
    fn q6_k_block_by_hand() {
        // Element e = 128·half + 32·quarter + l, l < 32: its low nibble is ql[64·half + l + 32·(quarter & 1)]
        // (low nibble for quarters 0/1, high for 2/3), its high 2 bits qh[32·half + l] >> 2·quarter,
        // its scale sc[8·half + l/16 + 2·quarter].
        let ql: Vec<u8> = (0..128u32).map(|i| (i * 37 % 256) as u8).collect();
        let qh: Vec<u8> = (0..64u32).map(|i| (i * 91 % 256) as u8).collect();
        let sc: Vec<i8> = (0..16i32).map(|i| (i * 13 - 100) as i8).collect();
        let d = 0.0625f32;
        let mut b = ql.clone();
        b.extend(&qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(d));
        assert_eq!(b.len(), 210);
        let v = dequantize(GgmlType::Q6K, &b).unwrap();
        assert_eq!(v.len(), 256);
        for (e, x) in v.iter().enumerate() {
            let (half, quarter, l) = (e / 128, (e % 128) / 32, e % 32);
            let byte = ql[64 * half + l + 32 * (quarter & 1)];
            let lo = if quarter < 2 { byte & 0xF } else { byte >> 4 };
            let hi = (qh[32 * half + l] >> (2 * quarter)) & 3;
            let q = (lo | (hi << 4)) as i32 - 32;
            let s = sc[8 * half + l / 16 + 2 * quarter] as f32;
            assert_eq!(*x, d * s * q as f32, "element {e}");
        }
    }

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

    /// A minimal GGUF v3 writer: metadata, tensor infos, aligned data.
    struct Writer {
        kv: Vec<u8>,
        n_kv: u64,
        infos: Vec<u8>,
        data: Vec<u8>,
        n_t: u64,
        align: usize,
    }

    impl Writer {
        fn new(align: usize) -> Self {
            Writer {
                kv: vec![],
                n_kv: 0,
                infos: vec![],
                data: vec![],
                n_t: 0,
                align,
            }
        }
        fn s(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn key(&mut self, k: &str, ty: u32) {
            Self::s(&mut self.kv, k);
            self.kv.extend(ty.to_le_bytes());
            self.n_kv += 1;
        }
        fn u32(&mut self, k: &str, v: u32) {
            self.key(k, 4);
            self.kv.extend(v.to_le_bytes());
        }
        fn f32(&mut self, k: &str, v: f32) {
            self.key(k, 6);
            self.kv.extend(v.to_le_bytes());
        }
        fn str(&mut self, k: &str, v: &str) {
            self.key(k, 8);
            Self::s(&mut self.kv, v);
        }
        fn strs(&mut self, k: &str, v: &[String]) {
            self.key(k, 9);
            self.kv.extend(8u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for s in v {
                Self::s(&mut self.kv, s);
            }
        }
        fn i32s(&mut self, k: &str, v: &[i32]) {
            self.key(k, 9);
            self.kv.extend(5u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for x in v {
                self.kv.extend(x.to_le_bytes());
            }
        }
        fn tensor(&mut self, name: &str, shape: &[i64], ty: GgmlType, bytes: &[u8]) {
            while self.data.len().checked_rem(self.align) != Some(0) {
                self.data.push(0);
            }
            Self::s(&mut self.infos, name);
            self.infos.extend((shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                self.infos.extend((*d as u64).to_le_bytes());
            }
            self.infos.extend(ty.id().to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend(bytes);
            self.n_t += 1;
        }
        fn finish(mut self) -> Vec<u8> {
            if self.align != 32 {
                let a = self.align as u32;
                self.u32("general.alignment", a);
            }
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_t.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kv);
            out.extend(&self.infos);
            while out.len().checked_rem(self.align) != Some(0) {
                out.push(0);
            }
            out.extend(&self.data);
            out
        }
    }

    /// Q8_0-quantises rows of `v` (row length a multiple of 32).
    fn quantize_q8_0(v: &[f32]) -> Vec<u8> {
        let mut out = vec![];
        for blk in v.chunks(32) {
            let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
            let d = amax / 127.0;
            let dh = f16::from_f32(d);
            out.extend(dh.to_le_bytes());
            let inv = if d > 0.0 { 1.0 / dh.to_f32() } else { 0.0 };
            out.extend(
                blk.iter()
                    .map(|x| (x * inv).round().clamp(-128.0, 127.0) as i8 as u8),
            );
        }
        out
    }

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
        let mut w = Writer::new(64);
        w.str("general.architecture", "llama");
        w.u32("llama.block_count", cfg.num_layers as u32);
        w.u32("llama.context_length", cfg.max_position as u32);
        w.u32("llama.embedding_length", cfg.hidden_size as u32);
        w.u32("llama.feed_forward_length", cfg.intermediate_size as u32);
        w.u32("llama.attention.head_count", cfg.num_heads as u32);
        w.u32("llama.attention.head_count_kv", cfg.num_kv_heads as u32);
        w.f32("llama.rope.freq_base", cfg.rope_theta as f32);
        w.f32("llama.attention.layer_norm_rms_epsilon", cfg.rms_eps as f32);
        w.str("tokenizer.ggml.model", "gpt2");
        w.str("tokenizer.ggml.pre", "smollm");
        let tokens: Vec<String> = (0..300)
            .map(|i| tok.inner().id_to_token(i).unwrap())
            .collect();
        w.strs("tokenizer.ggml.tokens", &tokens);
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
        w.strs("tokenizer.ggml.merges", &merges);
        let mut types = vec![1i32; 300];
        types[..3].fill(3);
        w.i32s("tokenizer.ggml.token_type", &types);
        w.u32("tokenizer.ggml.eos_token_id", 2);
        w.u32("tokenizer.ggml.bos_token_id", 1);
        w.str(
            "tokenizer.chat_template",
            "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}",
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
            let (ty, bytes) = if t.dim() == 1 {
                (
                    GgmlType::F32,
                    flat.iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )
            } else if name.contains("embed") {
                (
                    GgmlType::F16,
                    flat.iter()
                        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                        .collect(),
                )
            } else {
                (GgmlType::Q8_0, quantize_q8_0(&flat))
            };
            // What the loader should give back: the dequantised file tensor, un-permuted.
            let back =
                Tensor::from_slice(&dequantize(ty, &bytes).unwrap()).view(t.size().as_slice());
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
            w.tensor(&g, &t.size(), ty, &bytes);
        }
        let path = std::env::temp_dir().join(format!("vpt-gguf-{}.gguf", std::process::id()));
        std::fs::write(&path, w.finish()).unwrap();

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
        let mut bytes = std::fs::read(&path).unwrap();
        let cut = bytes.len() - 100;
        bytes.truncate(cut);
        let e = Gguf::parse(&path, bytes).unwrap_err().to_string();
        assert!(
            e.contains(".gguf") && e.contains("runs past the end"),
            "{e}"
        );
        let e = g.tensor("blk.9.attn_q.weight").unwrap_err().to_string();
        assert!(
            e.contains(".gguf") && e.contains("blk.9.attn_q.weight"),
            "{e}"
        );
        let e = Gguf::parse(&path, b"GGUF\x01\0\0\0".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 1"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}

/// Checks on the real default model; each test skips (prints a line) when `VPT_SMOLLM2_GGUF`
/// is unset.
#[cfg(test)]
mod smollm2 {
    use super::*;
    use crate::data::Fields;
    use crate::model::{Attention, Llama, Sampling};
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
        let first = crate::data::read_labeled_jsonl(Path::new(gsm8k), &Fields::gsm8k()).unwrap();
        let (q, a) = (first[0].1.prompt.clone(), first[0].1.response.clone());
        let (plain, n) = nll(&m, &tok, "<|im_start|>", &a);
        let (chat, _) = nll(&m, &tok, &tok.chat_prompt(&q), &a);
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
