//! The unlabeled stream (generated math, JSONL records, general paragraphs and code chunks
//! mixed by a counter-based coin, packed into rows with each target's source, optionally with
//! wrong targets), the feedback sets and their saved cursor state.

use crate::corrupt::Corrupter;
use crate::data::{self, Codec, Cursor, CursorState, Example, Packer, Record, Row, TokenDoc};
use crate::mathgen::MathSplits;
use crate::pack::{Source, TaggedRow};
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
/// and code chunks (cursors), mixed by a counter-based coin, packed into rows.
pub(super) struct Stream {
    pub(super) math: Option<MathSplits>,
    pub(super) math_next: u64,
    pub(super) jsonl: Vec<Record>,
    pub(super) jsonl_cursor: Option<Cursor>,
    pub(super) general: Vec<String>,
    pub(super) general_cursor: Option<Cursor>,
    pub(super) general_fraction: f64,
    pub(super) code: Vec<String>,
    pub(super) code_cursor: Option<Cursor>,
    pub(super) code_fraction: f64,
    pub(super) draws: u64,
    pub(super) seed: u64,
    pub(super) packer: Packer,
    /// Whether the rows-without-loss warning ([`prompt_only_warning`]) was given (once a task).
    pub(super) prompt_only_warned: bool,
    /// Rows emitted so far (keys the corruption draws).
    pub(super) rows: u64,
    pub(super) corrupter: Option<Corrupter>,
}

/// One unlabeled row with its targets' sources and the targets replaced by the corruption.
pub(super) struct StreamRow {
    pub(super) row: Row,
    /// [`Source`] of each target (T).
    pub(super) source: Vec<u8>,
    /// 1.0 where the target was replaced (T).
    pub(super) corrupt: Vec<f32>,
}

/// Saved state of the stream and the feedback cursors.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedState {
    pub(super) math_next: u64,
    pub(super) jsonl: Option<CursorState>,
    pub(super) general: Option<CursorState>,
    #[serde(default)]
    pub(super) code: Option<CursorState>,
    pub(super) draws: u64,
    #[serde(default)]
    pub(super) rows: u64,
    pub(super) buffer: TokenDoc,
    pub(super) feedback: Vec<CursorState>,
}

impl Stream {
    /// The next document and its source.
    pub(super) fn next_record(&mut self) -> (Record, Source) {
        let mut coin = SplitMix64::stream(self.seed ^ 0x5EED_0001, self.draws);
        self.draws += 1;
        // one draw picks the source (none without general text or code: the math draws are
        // then those of a stream that never had them)
        if self.general_cursor.is_some() || self.code_cursor.is_some() {
            let u = coin.uniform();
            let code_cut = self.general_fraction + self.code_fraction;
            if let Some(c) = (self.general_cursor.as_mut()).filter(|_| u < self.general_fraction) {
                return (
                    Record::Text(self.general[c.next_index()].clone()),
                    Source::General,
                );
            }
            if let Some(c) = (self.code_cursor.as_mut()).filter(|_| u < code_cut) {
                return (
                    Record::Text(self.code[c.next_index()].clone()),
                    Source::Code,
                );
            }
        }
        self.next_math(&mut coin)
    }

    fn next_math(&mut self, coin: &mut SplitMix64) -> (Record, Source) {
        let use_jsonl = match (&self.math, &self.jsonl_cursor) {
            (Some(_), Some(_)) => coin.uniform() < 0.5,
            (None, Some(_)) => true,
            _ => false,
        };
        if use_jsonl {
            let c = self.jsonl_cursor.as_mut().expect("checked above");
            return (self.jsonl[c.next_index()].clone(), Source::Math);
        }
        if let Some(m) = &self.math {
            self.math_next += 1;
            return (
                Record::Text(m.train(self.math_next - 1).to_text()),
                Source::Math,
            );
        }
        // Validation guarantees general_fraction + code_fraction = 1 here (a draw at the float
        // edge lands here): the general text, else the code.
        match (self.general_cursor.as_mut(), self.code_cursor.as_mut()) {
            (Some(c), _) => (
                Record::Text(self.general[c.next_index()].clone()),
                Source::General,
            ),
            (None, Some(c)) => (
                Record::Text(self.code[c.next_index()].clone()),
                Source::Code,
            ),
            (None, None) => unreachable!("validation requires a source"),
        }
    }

    /// The sources this stream draws from.
    pub(super) fn sources(&self) -> Vec<Source> {
        let math = self.math.is_some() || self.jsonl_cursor.is_some();
        [
            (Source::Math, math),
            (Source::General, self.general_cursor.is_some()),
            (Source::Code, self.code_cursor.is_some()),
        ]
        .into_iter()
        .filter_map(|(s, on)| on.then_some(s))
        .collect()
    }

    /// The next `n` rows, tagged and (when configured) corrupted.
    pub(super) fn next_rows(&mut self, codec: &dyn Codec, n: usize) -> Result<Vec<StreamRow>> {
        let mut rows = Vec::with_capacity(n);
        while rows.len() < n {
            match self.packer.pop_tagged() {
                Some(TaggedRow { mut row, source }) => {
                    let corrupt = match &self.corrupter {
                        Some(c) => c.apply(self.rows, &mut row, &source),
                        None => vec![0.0; row.targets.len()],
                    };
                    self.rows += 1;
                    rows.push(StreamRow {
                        row,
                        source,
                        corrupt,
                    });
                }
                None => {
                    let (rec, source) = self.next_record();
                    self.packer
                        .push(&data::tokenize_record(codec, &rec)?.tagged(source));
                }
            }
        }
        if !self.prompt_only_warned {
            if let Some(w) = prompt_only_warning(rows.iter().map(|r| &r.row), self.packer.seq_len) {
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
pub(super) fn prompt_only_warning<'a>(
    rows: impl ExactSizeIterator<Item = &'a Row>,
    seq_len: usize,
) -> Option<String> {
    let total = rows.len();
    let empty = rows.filter(|r| r.mask.iter().all(|&m| m == 0.0)).count();
    if empty == 0 {
        return None;
    }
    let effect = if empty == total {
        "this batch's pretrain_loss is 0 and V is 0"
    } else {
        "those rows' pretrain_loss is 0 and they add nothing to V"
    };
    Some(format!(
        "[vpt-lm] warning: {empty} of the {} rows of an unlabeled batch carry no loss-bearing \
         token (all prompt): {effect}. Prompts of task.config.unlabeled.jsonl records are longer \
         than a row: raise task.config.seq_len (now {seq_len} tokens) or shorten the prompts \
         (this is said once)",
        total
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
