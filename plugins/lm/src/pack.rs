//! Token packing: documents with per-token loss flags and source tags, packed into rows of T
//! next-token targets, and rows stacked into batch tensors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// Where an unlabeled token came from: the stream's sources, carried per token in every
/// unlabeled batch (`source`, (B,T) int64, the value below) so metrics can be split by source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Source {
    /// Math documents: GSM8K or other JSONL records, generated word problems.
    Math = 0,
    /// General prose (the Python docs).
    General = 1,
    /// Python source code.
    Code = 2,
}

impl Source {
    /// Every source, by value.
    pub const ALL: [Source; 3] = [Source::Math, Source::General, Source::Code];

    /// Its name in metrics (`alpha/math`, …).
    pub fn name(self) -> &'static str {
        match self {
            Source::Math => "math",
            Source::General => "general",
            Source::Code => "code",
        }
    }
}

/// Tokens of one document with per-token loss flags (`true` = predict this token) and source
/// tags ([`Source`] values). Stored compactly (see [`CompactDoc`]): it is the packer's buffer,
/// saved in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "CompactDoc", try_from = "CompactDoc")]
pub struct TokenDoc {
    /// Token ids.
    pub ids: Vec<i64>,
    /// Loss flag per token.
    pub loss: Vec<bool>,
    /// Source tag per token ([`Source`] as u8).
    pub source: Vec<u8>,
}

impl TokenDoc {
    /// The document with every token tagged `source`.
    pub fn tagged(mut self, source: Source) -> Self {
        self.source = vec![source as u8; self.ids.len()];
        self
    }
}

/// The saved form of a [`TokenDoc`]: the ids, the loss flags as run lengths (alternating,
/// starting with a run of `false`) and the source tags as `[tag, length]` runs (absent in
/// states saved before tags existed: all math), so a buffer costs a few bytes per token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactDoc {
    ids: Vec<i64>,
    loss_runs: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    source_runs: Vec<[u64; 2]>,
}

impl From<TokenDoc> for CompactDoc {
    fn from(d: TokenDoc) -> Self {
        let mut runs = vec![0u64];
        let mut cur = false;
        for &b in &d.loss {
            if b != cur {
                runs.push(0);
                cur = b;
            }
            *runs.last_mut().expect("starts non-empty") += 1;
        }
        let mut source_runs: Vec<[u64; 2]> = Vec::new();
        for &s in &d.source {
            match source_runs.last_mut() {
                Some(r) if r[0] == u64::from(s) => r[1] += 1,
                _ => source_runs.push([u64::from(s), 1]),
            }
        }
        CompactDoc {
            ids: d.ids,
            loss_runs: runs,
            source_runs,
        }
    }
}

impl TryFrom<CompactDoc> for TokenDoc {
    type Error = String;
    fn try_from(c: CompactDoc) -> std::result::Result<Self, String> {
        let mut loss = Vec::with_capacity(c.ids.len());
        for (i, &n) in c.loss_runs.iter().enumerate() {
            if n > (c.ids.len() - loss.len()) as u64 {
                return Err(format!("loss_runs cover more than the {} ids", c.ids.len()));
            }
            loss.resize(loss.len() + n as usize, i % 2 == 1);
        }
        if loss.len() != c.ids.len() {
            return Err(format!(
                "loss_runs cover {} of {} ids",
                loss.len(),
                c.ids.len()
            ));
        }
        let mut source = Vec::with_capacity(c.ids.len());
        for &[tag, n] in &c.source_runs {
            let ok = tag < Source::ALL.len() as u64 && n <= (c.ids.len() - source.len()) as u64;
            if !ok {
                return Err(format!(
                    "source_runs: bad run [{tag}, {n}] for {} ids",
                    c.ids.len()
                ));
            }
            source.resize(source.len() + n as usize, tag as u8);
        }
        if c.source_runs.is_empty() {
            source.resize(c.ids.len(), Source::Math as u8);
        } else if source.len() != c.ids.len() {
            return Err(format!(
                "source_runs cover {} of {} ids",
                source.len(),
                c.ids.len()
            ));
        }
        Ok(TokenDoc {
            ids: c.ids,
            loss,
            source,
        })
    }
}

/// Concatenates documents and cuts rows of `seq_len + 1` tokens (consecutive rows overlap by
/// one token so every token but the first is predicted once). Its buffer is part of the state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Packer {
    /// Tokens per row (T).
    pub seq_len: usize,
    /// Tokens not yet emitted.
    pub buf: TokenDoc,
}

/// One packed row: inputs, next-token targets and the target loss mask, each of length T.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Input ids (T).
    pub ids: Vec<i64>,
    /// Next-token targets (T).
    pub targets: Vec<i64>,
    /// 1.0 where the target counts in the loss (T).
    pub mask: Vec<f32>,
}

/// A packed row with the source tag of each target (T).
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedRow {
    /// The row.
    pub row: Row,
    /// [`Source`] of each target (T).
    pub source: Vec<u8>,
}

impl Packer {
    /// An empty packer.
    pub fn new(seq_len: usize) -> Self {
        Packer {
            seq_len,
            buf: TokenDoc::default(),
        }
    }
    /// Appends a document (untagged documents count as math).
    pub fn push(&mut self, doc: &TokenDoc) {
        self.buf.ids.extend(&doc.ids);
        self.buf.loss.extend(&doc.loss);
        self.buf.source.extend(&doc.source);
        self.buf
            .source
            .resize(self.buf.ids.len(), Source::Math as u8);
    }
    /// The next full row, if the buffer holds one.
    pub fn pop_row(&mut self) -> Option<Row> {
        self.pop_tagged().map(|t| t.row)
    }
    /// The next full row with its targets' source tags, if the buffer holds one.
    pub fn pop_tagged(&mut self) -> Option<TaggedRow> {
        let t = self.seq_len;
        if self.buf.ids.len() < t + 1 {
            return None;
        }
        let row = Row {
            ids: self.buf.ids[..t].to_vec(),
            targets: self.buf.ids[1..=t].to_vec(),
            mask: self.buf.loss[1..=t]
                .iter()
                .map(|&b| f32::from(u8::from(b)))
                .collect(),
        };
        let source = self.buf.source[1..=t].to_vec();
        self.buf.ids.drain(..t);
        self.buf.loss.drain(..t);
        self.buf.source.drain(..t);
        Some(TaggedRow { row, source })
    }
}

/// Stacks rows into batch tensors `ids`, `targets` (B,T) int64 and `mask` (B,T) float.
pub fn rows_to_tensors(rows: &[Row], device: Device) -> Result<vpt_sdk::TensorMap> {
    let b = rows.len() as i64;
    let t = rows.first().map_or(0, |r| r.ids.len()) as i64;
    let cat_i = |f: fn(&Row) -> &Vec<i64>| -> Result<Tensor> {
        let flat: Vec<i64> = rows.iter().flat_map(|r| f(r).iter().copied()).collect();
        Tensor::from_slice(&flat)
            .f_reshape([b, t])?
            .f_to(device)
            .op("batch to device")
    };
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.mask.iter().copied()).collect();
    let mask = Tensor::from_slice(&flat)
        .f_reshape([b, t])?
        .f_to(device)
        .op("mask to device")?;
    Ok(vpt_sdk::TensorMap::new()
        .with("ids", cat_i(|r| &r.ids)?)
        .with("targets", cat_i(|r| &r.targets)?)
        .with("mask", mask.f_to_kind(Kind::Float)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_tags_follow_their_tokens_and_survive_the_saved_form() {
        let doc = |ids: &[i64], s: Source| {
            TokenDoc {
                ids: ids.to_vec(),
                loss: vec![true; ids.len()],
                source: vec![],
            }
            .tagged(s)
        };
        let mut p = Packer::new(3);
        p.push(&doc(&[1, 2], Source::Math));
        p.push(&doc(&[3, 4, 5], Source::Code));
        p.push(&doc(&[6, 7], Source::General));
        let r = p.pop_tagged().unwrap();
        assert_eq!(r.row.targets, vec![2, 3, 4]);
        assert_eq!(r.source, vec![0, 2, 2]);
        let json = serde_json::to_string(&p.buf).unwrap();
        let back: TokenDoc = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p.buf);
        let r = p.pop_tagged().unwrap();
        assert_eq!(r.row.targets, vec![5, 6, 7]);
        assert_eq!(r.source, vec![2, 1, 1]);
        // a buffer saved before tags existed reads as math
        let old: TokenDoc = serde_json::from_str(r#"{"ids":[1,2],"loss_runs":[0,2]}"#).unwrap();
        assert_eq!(old.source, vec![0, 0]);
        let bad = r#"{"ids":[1,2],"loss_runs":[0,2],"source_runs":[[7,2]]}"#;
        assert!(serde_json::from_str::<TokenDoc>(bad).is_err());
    }
}
