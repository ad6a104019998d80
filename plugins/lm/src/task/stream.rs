//! The unlabeled stream (generated math, JSONL records and general paragraphs mixed by a
//! counter-based coin and packed into rows), the feedback sets and their saved cursor state.

use crate::data::{self, Codec, Cursor, CursorState, Example, Packer, Record, Row, TokenDoc};
use crate::mathgen::MathSplits;
use serde::{Deserialize, Serialize};
use vpt_llama::Tokenizer;
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Batch, BatchSource, Error, Result};

impl Codec for Tokenizer {
    fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Tokenizer::encode(self, text, false)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        Tokenizer::decode(self, ids)
    }
    fn eos_id(&self) -> i64 {
        Tokenizer::eos_id(self)
    }
    fn chat_prompt(&self, user: &str) -> String {
        Tokenizer::chat_prompt(self, user)
    }
}

/// One feedback set, split into the part the meta steps see and a held-out part.
pub(super) struct FeedbackSet {
    pub(super) name: String,
    pub(super) train: Vec<Example>,
    pub(super) heldout: Vec<Example>,
    pub(super) cursor: Cursor,
}

/// The unlabeled stream: generated math (counter), JSONL records (cursor), general paragraphs
/// (cursor), mixed by a counter-based coin, packed into rows.
pub(super) struct Stream {
    pub(super) math: Option<MathSplits>,
    pub(super) math_next: u64,
    pub(super) jsonl: Vec<Record>,
    pub(super) jsonl_cursor: Option<Cursor>,
    pub(super) general: Vec<String>,
    pub(super) general_cursor: Option<Cursor>,
    pub(super) general_fraction: f64,
    pub(super) draws: u64,
    pub(super) seed: u64,
    pub(super) packer: Packer,
    /// Whether the rows-without-loss warning ([`prompt_only_warning`]) was given (once a task).
    pub(super) prompt_only_warned: bool,
}

/// Saved state of the stream and the feedback cursors.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedState {
    pub(super) math_next: u64,
    pub(super) jsonl: Option<CursorState>,
    pub(super) general: Option<CursorState>,
    pub(super) draws: u64,
    pub(super) buffer: TokenDoc,
    pub(super) feedback: Vec<CursorState>,
}

impl Stream {
    pub(super) fn next_record(&mut self) -> Record {
        let mut coin = SplitMix64::stream(self.seed ^ 0x5EED_0001, self.draws);
        self.draws += 1;
        let general = self.general_cursor.is_some() && coin.uniform() < self.general_fraction;
        if general {
            let c = self.general_cursor.as_mut().expect("checked above");
            return Record::Text(self.general[c.next_index()].clone());
        }
        let use_jsonl = match (&self.math, &self.jsonl_cursor) {
            (Some(_), Some(_)) => coin.uniform() < 0.5,
            (None, Some(_)) => true,
            _ => false,
        };
        if use_jsonl {
            let c = self.jsonl_cursor.as_mut().expect("checked above");
            return self.jsonl[c.next_index()].clone();
        }
        match &self.math {
            Some(m) => {
                self.math_next += 1;
                Record::Text(m.train(self.math_next - 1).to_text())
            }
            // Validation guarantees general_fraction = 1 here.
            None => Record::Text(
                self.general[self
                    .general_cursor
                    .as_mut()
                    .expect("general on")
                    .next_index()]
                .clone(),
            ),
        }
    }

    pub(super) fn next_rows(&mut self, codec: &dyn Codec, n: usize) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            match self.packer.pop_row() {
                Some(r) => rows.push(r),
                None => {
                    let rec = self.next_record();
                    self.packer.push(&data::tokenize_record(codec, &rec)?);
                }
            }
        }
        if !self.prompt_only_warned {
            if let Some(w) = prompt_only_warning(&rows, self.packer.seq_len) {
                eprintln!("{w}");
                self.prompt_only_warned = true;
            }
        }
        Ok(rows)
    }
}

/// The warning for unlabeled `rows` of which some carry no loss-bearing target (every target is
/// prompt: a `{"prompt","response"}` record whose prompt is longer than a row); `None` when every
/// row has one.
pub(super) fn prompt_only_warning(rows: &[Row], seq_len: usize) -> Option<String> {
    let empty = rows
        .iter()
        .filter(|r| r.mask.iter().all(|&m| m == 0.0))
        .count();
    if empty == 0 {
        return None;
    }
    let effect = if empty == rows.len() {
        "this batch's pretrain_loss is 0 and V is 0"
    } else {
        "those rows' pretrain_loss is 0 and they add nothing to V"
    };
    Some(format!(
        "[vpt-lm] warning: {empty} of the {} rows of an unlabeled batch carry no loss-bearing \
         token (all prompt): {effect}. Prompts of task.config.unlabeled.jsonl records are longer \
         than a row: raise task.config.seq_len (now {seq_len} tokens) or shorten the prompts \
         (this is said once)",
        rows.len()
    ))
}

/// Checks `batch` comes from the unlabeled stream (`unlabeled`) or a feedback set; `what` names
/// the caller.
pub(super) fn expect_source(batch: &Batch, unlabeled: bool, what: &str) -> Result<()> {
    match (batch.source, unlabeled) {
        (BatchSource::Unlabeled { .. }, true) | (BatchSource::Feedback { .. }, false) => Ok(()),
        (s, _) => Err(Error::msg(format!("{what}: got a batch from {s:?}"))),
    }
}
