//! A Llama / Qwen2-family causal LM in tch and its checkpoints: the model ([`model`], with its
//! [`config`], training [`lora`] scopes and KV-cache [`generate`]ion), GGUF files ([`gguf`]:
//! reader, dequantisation, name mapping, loader, writer), Hugging Face directories ([`hf`]) and
//! the byte-level BPE [`tokenizer`].
pub mod config;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod lora;
pub mod model;
pub mod store;
pub mod tokenizer;

pub use config::Config;
pub use generate::Sampling;
pub use lora::Scope;
pub use model::{Attention, Llama};
pub use tokenizer::Tokenizer;
