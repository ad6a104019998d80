//! GGUF (v2/v3, little-endian) support, split by job as candle does:
//! - [`reader`]: header, metadata and tensor directory; tensors read on demand by seeking;
//! - [`dequant`]: ggml types and dequantisation to f32 (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
//!   Q8_0, Q6_K);
//! - [`names`]: the GGUF ↔ HF Llama tensor-name table and llama.cpp's Q/K row permutation;
//! - [`llama`]: a `llama` / `qwen2` file as a [`crate::config::Config`], a VarStore under HF
//!   names and a [`crate::tokenizer::Tokenizer`] ([`load_gguf`]);
//! - [`writer`]: the GGUF v3 writer (F32 / F16 / Q8_0 encoders).
//!
//! Format reference: ggml `docs/gguf.md` and `ggml/src/ggml-quants.c`.

pub mod dequant;
pub mod llama;
pub mod names;
pub mod reader;
pub mod writer;

pub use dequant::{dequantize, GgmlType};
pub use llama::load_gguf;
pub use names::{gguf_name, hf_name, permute_rows, unpermute_rows};
pub use reader::{Gguf, TensorInfo, Value};
pub use writer::{encode, quantize_q8_0, GgufWriter};

#[cfg(test)]
mod tests;
