//! The LM tokenizer: a `tokenizers::Tokenizer` (byte-level BPE) plus the ids and chat format
//! the tasks need. Built from GGUF metadata ([`BpeSpec`], see `crate::gguf`) or from an HF
//! `tokenizer.json` ([`Tokenizer::from_file`]).
//!
//! SmolLM2's pre-tokenizer (llama.cpp `tokenizer.ggml.pre = "smollm"`, HF tokenizer.json) is
//! `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space = false)]`: every digit is its
//! own token. Control tokens (`<|im_start|>`, …) are added as special tokens, so they are
//! recognised inside text. [`Tokenizer::chat_prompt`] writes ChatML, with the default system
//! turn when the model's chat template has one (SmolLM2's does).

use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;
use vpt_sdk::{Error, Result};

/// What a GGUF file says about its byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct BpeSpec {
    /// Tokens by id, in byte-level form (`Ġthe`).
    pub tokens: Vec<String>,
    /// Merges in rank order, `"a b"`.
    pub merges: Vec<String>,
    /// llama.cpp token types by id: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte.
    pub token_types: Vec<i32>,
    /// Beginning-of-sequence id.
    pub bos: Option<i64>,
    /// End-of-sequence id (for SmolLM2-Instruct: `<|im_end|>`).
    pub eos: i64,
    /// Padding id.
    pub pad: Option<i64>,
    /// Whether `encode(.., add_special = true)` prepends BOS.
    pub add_bos: bool,
    /// Split digits one by one before byte-level BPE.
    pub split_digits: bool,
    /// The Jinja chat template, if any.
    pub chat_template: Option<String>,
}

/// A byte-level BPE tokenizer with its special ids and chat format.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<i64>,
    eos: i64,
    pad: Option<i64>,
    add_bos: bool,
    system_prompt: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("system_prompt", &self.system_prompt)
            .finish()
    }
}

/// GPT-2's byte → printable-char table (`bytes_to_unicode`).
pub fn byte_to_char() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable.contains(&b) {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    table
}

/// The default system turn inside a ChatML Jinja template (`<|im_start|>system\n…<|im_end|>`).
fn default_system(template: &str) -> Option<String> {
    for nl in ["\n", "\\n"] {
        let start = format!("<|im_start|>system{nl}");
        if let Some(i) = template.find(&start) {
            let rest = &template[i + start.len()..];
            // The literal text up to <|im_end|>, unless it is a Jinja expression (the user's own).
            let end = rest.find("<|im_end|>")?;
            let text = &rest[..end];
            if !text.contains('{') && !text.contains('\'') && !text.is_empty() {
                return Some(text.to_string());
            }
        }
    }
    None
}

fn tk_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::msg(format!("tokenizer: {what}: {e}"))
}

impl Tokenizer {
    /// Builds a tokenizer from a GGUF-style BPE description.
    pub fn from_bpe(spec: BpeSpec) -> Result<Tokenizer> {
        let n = spec.tokens.len();
        if spec.token_types.len() != n {
            return Err(Error::msg(format!(
                "{} token types for {n} tokens",
                spec.token_types.len()
            )));
        }
        for (name, id) in [
            ("bos", spec.bos),
            ("eos", Some(spec.eos)),
            ("pad", spec.pad),
        ] {
            if let Some(id) = id {
                if id < 0 || id as usize >= n {
                    return Err(Error::msg(format!(
                        "{name} id {id} is outside the vocabulary of {n}"
                    )));
                }
            }
        }
        let vocab: serde_json::Map<String, Value> = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        if vocab.len() != n {
            return Err(Error::msg("duplicate tokens in the vocabulary"));
        }
        let added: Vec<Value> = spec
            .tokens
            .iter()
            .zip(&spec.token_types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == 3 || **ty == 4)
            .map(|(i, (t, ty))| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": *ty == 3})
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre = if spec.split_digits {
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]})
        } else {
            byte_level.clone()
        };
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre,
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": spec.merges},
        });
        let inner = tokenizers::Tokenizer::from_str(&doc.to_string())
            .map_err(|e| tk_err("building BPE", e))?;
        Ok(Tokenizer {
            inner,
            bos: spec.bos,
            eos: spec.eos,
            pad: spec.pad,
            add_bos: spec.add_bos,
            system_prompt: spec.chat_template.as_deref().and_then(default_system),
        })
    }

    /// Loads an HF `tokenizer.json`; reads `tokenizer_config.json` beside it (if present) for
    /// `eos_token`, `bos_token`, `add_bos_token` and `chat_template`. Without it, EOS is the
    /// first of `<|im_end|>`, `<|endoftext|>`, `</s>` the vocabulary has.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let cfg_path = path.with_file_name("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| Error::msg(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => Value::Null,
        };
        let token_field = |k: &str| -> Option<String> {
            match &cfg[k] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
                _ => None,
            }
        };
        let id_of = |t: &str| inner.token_to_id(t).map(|i| i as i64);
        let eos = match token_field("eos_token") {
            Some(t) => id_of(&t).ok_or_else(|| {
                Error::msg(format!(
                    "{}: eos_token `{t}` is not in the vocabulary",
                    cfg_path.display()
                ))
            })?,
            None => ["<|im_end|>", "<|endoftext|>", "</s>"]
                .iter()
                .find_map(|t| id_of(t))
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{}: no EOS token found (add tokenizer_config.json)",
                        path.display()
                    ))
                })?,
        };
        Ok(Tokenizer {
            bos: token_field("bos_token").and_then(|t| id_of(&t)),
            pad: token_field("pad_token").and_then(|t| id_of(&t)),
            add_bos: cfg["add_bos_token"].as_bool().unwrap_or(false),
            system_prompt: cfg["chat_template"].as_str().and_then(default_system),
            eos,
            inner,
        })
    }

    /// A 300-token byte-level BPE (3 ChatML specials, 256 bytes, 41 merges) matching
    /// [`crate::model::Config::tiny`], for tests.
    pub fn tiny() -> Tokenizer {
        let bytes = byte_to_char();
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        tokens.extend(bytes.iter().map(|c| c.to_string()));
        let pairs = [
            "Ġ t", "h e", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġt he", "e n", "a t", "o r",
            "Ġ s", "e s", "Ġ w", "Ġ o", "i s", "Ġ c", "a l", "Ġ f", "Ġ b", "i t", "e d", "a r",
            "Ġ p", "o u", "Ġ m", "l e", "i c", "Ġ d", "in g", "Ġ h", "Ġo f", "Ġ in", "a s", "Ġt o",
            "Ġa n", "Ġan d", "Ġ is", "Ġ =", "Ġ +",
        ];
        for p in pairs {
            tokens.push(p.replace(' ', ""));
        }
        let mut types = vec![1; tokens.len()];
        types[..3].fill(3);
        Tokenizer::from_bpe(BpeSpec {
            tokens,
            merges: pairs.iter().map(|s| s.to_string()).collect(),
            token_types: types,
            bos: Some(1),
            eos: 2,
            pad: Some(0),
            add_bos: false,
            split_digits: true,
            chat_template: None,
        })
        .expect("the tiny tokenizer is well formed")
    }

    /// Token ids of `text`; special tokens written in the text are recognised. With
    /// `add_special`, BOS is prepended when the model asks for it (`add_bos`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tk_err("encode", e))?;
        let mut ids: Vec<i64> = Vec::with_capacity(enc.len() + 1);
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                ids.push(b);
            }
        }
        ids.extend(enc.get_ids().iter().map(|&i| i as i64));
        Ok(ids)
    }

    /// The text of `ids` (special tokens kept as text).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| {
                u32::try_from(i)
                    .map_err(|_| Error::msg(format!("tokenizer: decode: negative id {i}")))
            })
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, false)
            .map_err(|e| tk_err("decode", e))
    }

    /// End-of-sequence id (the chat end-of-turn token for instruct models).
    pub fn eos_id(&self) -> i64 {
        self.eos
    }

    /// Beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<i64> {
        self.bos
    }

    /// Padding id (falls back to EOS).
    pub fn pad_id(&self) -> i64 {
        self.pad.unwrap_or(self.eos)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string (byte-level form), if any.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// The model's default system message (from its chat template), if any.
    pub fn system_prompt(&self) -> Option<&str> {
        self.system_prompt.as_deref()
    }

    /// A ChatML prompt for one user turn, ending where the assistant's answer starts:
    /// `[<|im_start|>system\n{default}<|im_end|>\n]<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`.
    pub fn chat_prompt(&self, user: &str) -> String {
        let system = match &self.system_prompt {
            Some(s) => format!("<|im_start|>system\n{s}<|im_end|>\n"),
            None => String::new(),
        };
        format!("{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Writes the tokenizer as an HF `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner
            .save(path, false)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_varied_text() {
        let t = Tokenizer::tiny();
        assert_eq!(t.vocab_size(), 300);
        for s in [
            "the cat is on the mat",
            "  leading and trailing spaces  ",
            "Numbers 12345 and 3.14159, x = y + 2",
            "Unicode: naïve café — 東京 🚀 ∑x²",
            "line one\nline two\ttab",
            "",
        ] {
            let ids = t.encode(s, true).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), s, "round trip of {s:?}");
        }
    }

    #[test]
    fn digits_split_singly_and_merges_apply() {
        let t = Tokenizer::tiny();
        let ids = t.encode("12345", false).unwrap();
        assert_eq!(ids.len(), 5);
        let the = t.token_to_id("Ġthe").unwrap();
        assert_eq!(t.encode(" the", false).unwrap(), vec![the]);
        // Without digit splitting, "12" would still be 2 bytes here, so check the pre-tokenizer
        // kept " 7" apart from "7": the space is its own piece before a digit.
        let ids = t.encode(" 77", false).unwrap();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn special_tokens_are_recognised_in_text() {
        let t = Tokenizer::tiny();
        let p = t.chat_prompt("hi");
        assert_eq!(p, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let ids = t.encode(&p, false).unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
        assert_eq!(t.decode(&ids).unwrap(), p);
        assert_eq!(t.eos_id(), 2);
    }

    #[test]
    fn default_system_turn_comes_from_the_template() {
        let tmpl = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}";
        assert_eq!(
            default_system(tmpl).as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(
            default_system("{{'<|im_start|>system\n' + message['content'] + '<|im_end|>'}}"),
            None
        );
    }

    #[test]
    fn save_and_from_file_round_trip() {
        let t = Tokenizer::tiny();
        let dir = std::env::temp_dir().join(format!("vpt-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        t.save(&p).unwrap();
        let u = Tokenizer::from_file(&p).unwrap();
        let s = "<|im_start|>user\nthe 42 cats<|im_end|>";
        assert_eq!(t.encode(s, false).unwrap(), u.encode(s, false).unwrap());
        assert_eq!(u.eos_id(), 2);
        let err = Tokenizer::from_file(dir.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
