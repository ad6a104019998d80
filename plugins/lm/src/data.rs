//! Text data for the LM task: JSONL readers (unlabeled text; labeled examples with configurable
//! field names), a seeded shuffling cursor, token packing with loss masks and batch tensors.
//!
//! Every reader reports a malformed line as `file:line: message` ([`vpt_sdk::Error::data`]).
//! Randomness is counter-based ([`SplitMix64`] streams), so a cursor's few integers are the whole state
//! needed for exact resume.

use serde::{Deserialize, Serialize};
use std::path::Path;
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Error, Result};

pub use crate::pack::{rows_to_tensors, Packer, Row, TokenDoc};

/// What the task needs from a tokenizer; implemented by the GGUF/HF tokenizer and by
/// [`ByteCodec`] (tests and the tiny random model).
pub trait Codec: Send {
    /// Token ids of `text`, without BOS/EOS added.
    fn encode(&self, text: &str) -> Result<Vec<i64>>;
    /// Text of `ids`.
    fn decode(&self, ids: &[i64]) -> Result<String>;
    /// End-of-sequence / end-of-turn id (used as a document separator and generation stop).
    fn eos_id(&self) -> i64;
    /// The chat-formatted prompt for one user turn, ending where the assistant's answer starts.
    fn chat_prompt(&self, user: &str) -> String;
}

/// A byte-level codec: ids 0..256 are bytes, 256 is EOS. For tests and `tiny_random`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteCodec;

impl ByteCodec {
    /// Its vocabulary size (256 bytes + EOS).
    pub const VOCAB: usize = 257;
}

impl Codec for ByteCodec {
    fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Ok(text.bytes().map(i64::from).collect())
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&i| (0..256).contains(&i))
            .map(|&i| i as u8)
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
    fn eos_id(&self) -> i64 {
        256
    }
    fn chat_prompt(&self, user: &str) -> String {
        format!("User: {user}\nAssistant: ")
    }
}

/// One unlabeled document.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Plain text; every token is a loss target.
    Text(String),
    /// A prompt and its response; the loss is on the response only.
    PromptResponse {
        /// Context tokens (no loss).
        prompt: String,
        /// Target tokens (loss).
        response: String,
    },
}

/// One labeled example (feedback or test): a prompt, its reference response and, for multiple
/// choice, the options (the response is one of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// The prompt (e.g. a word problem).
    pub prompt: String,
    /// The reference response (e.g. a worked solution ending in `#### N`).
    pub response: String,
    /// Multiple-choice options (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Example {
    /// An example without options.
    pub fn new(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Example {
            prompt: prompt.into(),
            response: response.into(),
            options: Vec::new(),
        }
    }
    /// Index of the response among the options, if it is one.
    pub fn answer_option(&self) -> Option<usize> {
        self.options.iter().position(|o| *o == self.response)
    }
}

/// JSON field names of a labeled JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// Field holding the prompt (a string).
    #[serde(default = "d_prompt")]
    pub prompt: String,
    /// Field holding the reference response: a string, or (with options) the index of the
    /// right option.
    #[serde(default = "d_response")]
    pub response: String,
    /// Field holding the multiple-choice options (an array of strings), when present.
    #[serde(default = "d_options")]
    pub options: String,
}

fn d_prompt() -> String {
    "prompt".into()
}
fn d_response() -> String {
    "response".into()
}
fn d_options() -> String {
    "options".into()
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            prompt: d_prompt(),
            response: d_response(),
            options: d_options(),
        }
    }
}

impl Fields {
    /// GSM8K's names: `question`, `answer`.
    pub fn gsm8k() -> Self {
        Fields {
            prompt: "question".into(),
            response: "answer".into(),
            options: d_options(),
        }
    }
}

/// The non-blank lines of `path` with their 1-based numbers; a line that is not UTF-8 is an
/// error naming file:line. A leading UTF-8 byte-order mark is skipped; a file that is not a
/// regular file (a named pipe would block forever) is refused, naming it.
fn read_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    vpt_sdk::checks::regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut out = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            Error::data(
                path.display().to_string(),
                i + 1,
                format!("not valid UTF-8 (at byte {} of the line)", e.valid_up_to()),
            )
        })?;
        if !line.trim().is_empty() {
            out.push((i + 1, line.to_string()));
        }
    }
    Ok(out)
}

fn string_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    file: &str,
    line: usize,
) -> Result<Option<String>> {
    match obj.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Error::data(
            file,
            line,
            format!("field `{key}` must be a string, got {v}"),
        )),
    }
}

fn parse_object(
    file: &str,
    line: usize,
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(Error::data(file, line, "expected a JSON object")),
        Err(e) => Err(Error::data(file, line, format!("invalid JSON: {e}"))),
    }
}

/// Reads unlabeled JSONL: each line `{"text": ...}` or `{"prompt": ..., "response": ...}`.
pub fn read_unlabeled_jsonl(path: &Path) -> Result<Vec<Record>> {
    let file = path.display().to_string();
    let mut out = Vec::new();
    for (line, text) in read_lines(path)? {
        let obj = parse_object(&file, line, &text)?;
        let t = string_field(&obj, "text", &file, line)?;
        let p = string_field(&obj, "prompt", &file, line)?;
        let r = string_field(&obj, "response", &file, line)?;
        out.push(match (t, p, r) {
            (Some(t), None, None) => Record::Text(t),
            (None, Some(prompt), Some(response)) => Record::PromptResponse { prompt, response },
            _ => {
                return Err(Error::data(
                    &file,
                    line,
                    "expected either {\"text\": ...} or {\"prompt\": ..., \"response\": ...}",
                ))
            }
        });
    }
    if out.is_empty() {
        return Err(Error::data(&file, 1, "no records"));
    }
    Ok(out)
}

/// Reads labeled JSONL with the field names `fields`; each example's line number is returned
/// with it (for errors that name `file:line`).
pub fn read_labeled_jsonl(path: &Path, fields: &Fields) -> Result<Vec<(usize, Example)>> {
    let file = path.display().to_string();
    let mut out = Vec::new();
    for (line, text) in read_lines(path)? {
        let obj = parse_object(&file, line, &text)?;
        let prompt = string_field(&obj, &fields.prompt, &file, line)?.ok_or_else(|| {
            Error::data(&file, line, format!("missing field `{}`", fields.prompt))
        })?;
        let options = match obj.get(&fields.options) {
            None => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Error::data(
                        &file,
                        line,
                        format!("field `{}` must be an array of strings", fields.options),
                    )
                })?,
            Some(v) => {
                return Err(Error::data(
                    &file,
                    line,
                    format!(
                        "field `{}` must be an array of strings, got {v}",
                        fields.options
                    ),
                ))
            }
        };
        let response = match obj.get(&fields.response) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) if !options.is_empty() => n
                .as_u64()
                .and_then(|i| options.get(i as usize))
                .cloned()
                .ok_or_else(|| {
                    Error::data(
                        &file,
                        line,
                        format!("`{}` = {n} is not an option index", fields.response),
                    )
                })?,
            Some(v) => {
                return Err(Error::data(
                    &file,
                    line,
                    format!(
                        "field `{}` must be a string (or an option index), got {v}",
                        fields.response
                    ),
                ))
            }
            None => {
                return Err(Error::data(
                    &file,
                    line,
                    format!("missing field `{}`", fields.response),
                ))
            }
        };
        out.push((
            line,
            Example {
                prompt,
                response,
                options,
            },
        ));
    }
    if out.is_empty() {
        return Err(Error::data(&file, 1, "no examples"));
    }
    Ok(out)
}

/// A seeded shuffling cursor over `0..n`: each epoch is a fresh permutation of (seed, epoch).
/// `(epoch, pos)` is its whole state.
#[derive(Debug, Clone)]
pub struct Cursor {
    seed: u64,
    n: usize,
    epoch: u64,
    pos: usize,
    perm: Vec<usize>,
}

/// Saved position of a [`Cursor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    /// Completed passes.
    pub epoch: u64,
    /// Position inside the current pass.
    pub pos: usize,
}

impl Cursor {
    /// A cursor over `0..n` (n ≥ 1) shuffled by `seed`.
    pub fn new(seed: u64, n: usize) -> Self {
        let mut c = Cursor {
            seed,
            n,
            epoch: 0,
            pos: 0,
            perm: Vec::new(),
        };
        c.reshuffle();
        c
    }
    fn reshuffle(&mut self) {
        let mut rng = SplitMix64::stream(self.seed, self.epoch);
        self.perm = (0..self.n).collect();
        for i in (1..self.n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            self.perm.swap(i, j);
        }
    }
    /// The next index.
    pub fn next_index(&mut self) -> usize {
        if self.pos >= self.n {
            self.epoch += 1;
            self.pos = 0;
            self.reshuffle();
        }
        self.pos += 1;
        self.perm[self.pos - 1]
    }
    /// Its state.
    pub fn state(&self) -> CursorState {
        CursorState {
            epoch: self.epoch,
            pos: self.pos,
        }
    }
    /// Restores a state saved by [`state`](Self::state).
    pub fn restore(&mut self, s: CursorState) {
        self.epoch = s.epoch;
        self.pos = s.pos.min(self.n);
        self.reshuffle();
    }
}

/// Documents longer than this (in bytes of text) are cut to it before tokenising, which bounds
/// the tokenizer's memory and the packer's buffer (and so the checkpointed state).
pub const MAX_DOC_BYTES: usize = 1 << 20;

/// `text` cut to at most [`MAX_DOC_BYTES`] at a character boundary; says so on stderr once per
/// process.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_DOC_BYTES {
        return text;
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "[vpt-lm] a document of {} bytes was cut to its first {MAX_DOC_BYTES} bytes \
             (longer documents are cut; this is said once)",
            text.len()
        )
    });
    let mut end = MAX_DOC_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Tokenises a record; the EOS separator is appended (a target when the response/text is).
/// Each text is cut to [`MAX_DOC_BYTES`] first.
pub fn tokenize_record(codec: &dyn Codec, record: &Record) -> Result<TokenDoc> {
    let (ctx, tgt) = match record {
        Record::Text(t) => (Vec::new(), codec.encode(bounded(t))?),
        Record::PromptResponse { prompt, response } => (
            codec.encode(bounded(prompt))?,
            codec.encode(bounded(response))?,
        ),
    };
    let mut doc = TokenDoc {
        ids: ctx,
        ..TokenDoc::default()
    };
    doc.loss = vec![false; doc.ids.len()];
    doc.ids.extend(&tgt);
    doc.ids.push(codec.eos_id());
    doc.loss.resize(doc.ids.len(), true);
    Ok(doc)
}

/// The teacher-forced row of `continuation` after the chat-formatted `prompt`: prompt (no loss)
/// then continuation + EOS (loss), keeping the last `max_len + 1` tokens when longer.
pub fn continuation_row(
    codec: &dyn Codec,
    prompt: &str,
    continuation: &str,
    max_len: usize,
) -> Result<Row> {
    let prompt = codec.encode(&codec.chat_prompt(prompt))?;
    let answer = codec.encode(continuation)?;
    let mut ids = prompt;
    let mut loss = vec![false; ids.len()];
    ids.extend(&answer);
    ids.push(codec.eos_id());
    loss.resize(ids.len(), true);
    let start = ids.len().saturating_sub(max_len + 1);
    let (ids, loss) = (&ids[start..], &loss[start..]);
    Ok(Row {
        ids: ids[..ids.len() - 1].to_vec(),
        targets: ids[1..].to_vec(),
        mask: loss[1..].iter().map(|&b| f32::from(u8::from(b))).collect(),
    })
}

/// The teacher-forced row of an example: its response after its prompt (the feedback loss is on
/// the response tokens).
pub fn example_row(codec: &dyn Codec, ex: &Example, max_len: usize) -> Result<Row> {
    continuation_row(codec, &ex.prompt, &ex.response, max_len)
}

/// Right-pads rows to a common length with `pad` (mask 0).
pub fn pad_rows(mut rows: Vec<Row>, pad: i64) -> Vec<Row> {
    let len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    for r in &mut rows {
        r.ids.resize(len, pad);
        r.targets.resize(len, pad);
        r.mask.resize(len, 0.0);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn non_utf8_lines_are_named_by_file_and_line() {
        let p = std::env::temp_dir().join(format!("vpt-lm-utf8-{}.jsonl", std::process::id()));
        std::fs::write(&p, b"{\"text\": \"ok\"}\n{\"text\": \"\xff\xfe\"}\n").unwrap();
        let e = read_unlabeled_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("UTF-8"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn long_documents_are_bounded_and_the_buffer_saves_compactly() {
        let codec = ByteCodec;
        let big = "é".repeat(MAX_DOC_BYTES); // 2 bytes per char: the cut must respect them
        let doc = tokenize_record(&codec, &Record::Text(big)).unwrap();
        assert_eq!(doc.ids.len(), MAX_DOC_BYTES + 1);
        let mut p = Packer::new(4);
        p.push(
            &tokenize_record(
                &codec,
                &Record::PromptResponse {
                    prompt: "ab".into(),
                    response: "cd".into(),
                },
            )
            .unwrap(),
        );
        p.push(&doc);
        let json = serde_json::to_string(&p.buf).unwrap();
        assert!(json.len() < 5 * p.buf.ids.len(), "{} bytes", json.len());
        let back: TokenDoc = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p.buf);
        let bad = r#"{"ids":[1,2],"loss_runs":[1,5]}"#;
        assert!(serde_json::from_str::<TokenDoc>(bad).is_err());
    }
    use std::io::Write;

    fn tmp_file(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vpt-lm-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn unlabeled_jsonl_parses_both_shapes_and_names_bad_line() {
        let p = tmp_file(
            "u.jsonl",
            "{\"text\": \"hello\"}\n\n{\"prompt\": \"a\", \"response\": \"b\"}\n",
        );
        let recs = read_unlabeled_jsonl(&p).unwrap();
        assert_eq!(recs[0], Record::Text("hello".into()));
        assert_eq!(
            recs[1],
            Record::PromptResponse {
                prompt: "a".into(),
                response: "b".into()
            }
        );
        let bad = tmp_file("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 3}\n");
        let err = read_unlabeled_jsonl(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl:2:") && err.contains("`text`"),
            "{err}"
        );
        let bad = tmp_file("bad2.jsonl", "{\"text\": \"ok\"}\n\nnot json\n");
        let err = read_unlabeled_jsonl(&bad).unwrap_err().to_string();
        assert!(err.contains("bad2.jsonl:3: invalid JSON"), "{err}");
    }

    #[test]
    fn labeled_jsonl_reads_configured_fields_and_options() {
        let p = tmp_file(
            "l.jsonl",
            "{\"q\": \"2+2?\", \"a\": \"4\"}\n{\"q\": \"pick\", \"a\": 1, \"o\": [\"x\", \"y\"]}\n",
        );
        let f = Fields {
            prompt: "q".into(),
            response: "a".into(),
            options: "o".into(),
        };
        let v = read_labeled_jsonl(&p, &f).unwrap();
        assert_eq!(v[0], (1, Example::new("2+2?", "4")));
        assert_eq!(v[1].1.response, "y");
        assert_eq!(v[1].1.answer_option(), Some(1));
        let err = read_labeled_jsonl(&p, &Fields::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("l.jsonl:1:") && err.contains("`prompt`"),
            "{err}"
        );
        let bad = tmp_file("l2.jsonl", "{\"q\": \"pick\", \"a\": 5, \"o\": [\"x\"]}\n");
        let err = read_labeled_jsonl(&bad, &f).unwrap_err().to_string();
        assert!(
            err.contains("l2.jsonl:1:") && err.contains("option index"),
            "{err}"
        );
    }

    #[test]
    fn vendored_gsm8k_reads_in_full() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k"));
        for (name, n) in [("train.jsonl", 7473), ("test.jsonl", 1319)] {
            let v = read_labeled_jsonl(&dir.join(name), &Fields::gsm8k()).unwrap();
            assert_eq!(v.len(), n, "{name}");
            assert!(v.iter().all(|(_, e)| e.response.contains("####")));
        }
    }

    #[test]
    fn cursor_is_a_permutation_and_resumes_exactly() {
        let mut c = Cursor::new(7, 10);
        let first: Vec<usize> = (0..10).map(|_| c.next_index()).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, (0..10).collect::<Vec<_>>());
        let _ = c.next_index();
        let saved = c.state();
        let ahead: Vec<usize> = (0..15).map(|_| c.next_index()).collect();
        let mut d = Cursor::new(7, 10);
        d.restore(saved);
        assert_eq!(ahead, (0..15).map(|_| d.next_index()).collect::<Vec<_>>());
        assert_ne!(first, Cursor::new(8, 10).perm);
    }

    #[test]
    fn packing_shifts_targets_and_masks_prompts() {
        let codec = ByteCodec;
        let rec = Record::PromptResponse {
            prompt: "ab".into(),
            response: "cd".into(),
        };
        let doc = tokenize_record(&codec, &rec).unwrap();
        assert_eq!(doc.ids, vec![97, 98, 99, 100, 256]);
        assert_eq!(doc.loss, vec![false, false, true, true, true]);
        let mut p = Packer::new(3);
        p.push(&doc);
        let r = p.pop_row().unwrap();
        assert_eq!(r.ids, vec![97, 98, 99]);
        assert_eq!(r.targets, vec![98, 99, 100]);
        assert_eq!(r.mask, vec![0.0, 1.0, 1.0]);
        assert!(p.pop_row().is_none());
        p.push(&tokenize_record(&codec, &Record::Text("xy".into())).unwrap());
        let r = p.pop_row().unwrap();
        assert_eq!(r.ids, vec![100, 256, 120]);
        assert_eq!(r.targets, vec![256, 120, 121]);
        assert_eq!(r.mask, vec![1.0, 1.0, 1.0]);
        let t = rows_to_tensors(&[r.clone(), r], Device::Cpu).unwrap();
        assert_eq!(t.require("ids").unwrap().size(), vec![2, 3]);
        assert_eq!(t.require("mask").unwrap().kind(), Kind::Float);
    }

    #[test]
    fn example_rows_mask_the_prompt_and_keep_the_answer_when_truncated() {
        let ex = Example::new("q?", "#### 7");
        let r = example_row(&ByteCodec, &ex, 1000).unwrap();
        let prompt_len = ByteCodec.chat_prompt("q?").len();
        let n_loss = r.mask.iter().filter(|&&m| m > 0.0).count();
        assert_eq!(n_loss, "#### 7".len() + 1);
        assert_eq!(r.ids.len(), prompt_len + "#### 7".len());
        let short = example_row(&ByteCodec, &ex, 4).unwrap();
        assert_eq!(short.ids.len(), 4);
        assert_eq!(*short.targets.last().unwrap(), 256);
        let padded = pad_rows(vec![r, short], 256);
        assert_eq!(padded[1].ids.len(), padded[0].ids.len());
        assert_eq!(padded[1].mask.iter().filter(|&&m| m > 0.0).count(), 4);
    }
}
