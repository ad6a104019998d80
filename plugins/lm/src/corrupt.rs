//! Wrong targets in the unlabeled stream (`unlabeled.corrupt`): a seeded fraction of the
//! loss-bearing targets replaced, uniformly among the vocabulary or, with `among = "numbers"`,
//! only number targets by another number token. Only the target is replaced (the same token as
//! the next input stays as it was), and each unlabeled batch carries the positions replaced
//! (`corrupt`, (B,T) float) so a diagnostic designer and the split metrics can read them.
//!
//! The draws of a row depend only on (seed, the row's index in the stream, position), so a
//! resumed run corrupts exactly the rows an uninterrupted one would.

use crate::data::{Codec, Row};
use crate::pack::Source;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Error, Result};

/// Which targets may be replaced, and by what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Among {
    /// Any loss-bearing target, replaced by another token drawn uniformly from the vocabulary.
    #[default]
    All,
    /// Only targets that are number tokens, replaced by another number token drawn uniformly.
    Numbers,
}

/// `unlabeled.corrupt`: wrong targets in the stream.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorruptConfig {
    /// Probability that an eligible target is replaced, in [0, 1].
    pub fraction: f64,
    /// `"all"` (any loss-bearing target, replaced uniformly among the vocabulary) or
    /// `"numbers"` (only number targets, replaced by another number token).
    #[serde(default)]
    pub among: Among,
    /// Seed of the draws (which targets, which replacements); independent of the run seed.
    #[serde(default)]
    pub seed: u64,
    /// Sources whose targets may be replaced (default: every source).
    #[serde(default = "all_sources")]
    pub sources: Vec<Source>,
}

fn all_sources() -> Vec<Source> {
    Source::ALL.to_vec()
}

/// Applies a [`CorruptConfig`] to packed rows.
pub struct Corrupter {
    cfg: CorruptConfig,
    vocab: i64,
    /// The number tokens, sorted (`among = "numbers"` only).
    numbers: Vec<i64>,
}

/// Whether a token's text is a number: digits only, surrounding whitespace aside.
pub fn is_number_text(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit())
}

impl Corrupter {
    /// A corrupter for a vocabulary of `vocab` ids read through `codec`; `field` names the
    /// config for errors.
    pub fn new(cfg: CorruptConfig, codec: &dyn Codec, vocab: i64, field: &str) -> Result<Self> {
        if !(0.0..=1.0).contains(&cfg.fraction) {
            return Err(Error::config(
                format!("{field}.fraction"),
                format!("must be in [0, 1], got {}", cfg.fraction),
            ));
        }
        if cfg.sources.is_empty() {
            return Err(Error::config(format!("{field}.sources"), "names no source"));
        }
        let numbers = match cfg.among {
            Among::All => Vec::new(),
            Among::Numbers => {
                let mut v = Vec::new();
                for id in 0..vocab {
                    if is_number_text(&codec.decode(&[id])?) {
                        v.push(id);
                    }
                }
                if v.len() < 2 {
                    return Err(Error::config(
                        format!("{field}.among"),
                        format!(
                            "the tokenizer has {} number tokens; \"numbers\" needs ≥ 2",
                            v.len()
                        ),
                    ));
                }
                v
            }
        };
        Ok(Corrupter {
            cfg,
            vocab,
            numbers,
        })
    }

    /// Replaces the targets of `row` (the `index`-th row of the stream; `source` its targets'
    /// tags) that the draws pick; returns 1.0 at each replaced position (T).
    pub fn apply(&self, index: u64, row: &mut Row, source: &[u8]) -> Vec<f32> {
        let mut rng = SplitMix64::stream(self.cfg.seed ^ 0xC022_0B7E, index);
        let mut out = vec![0.0f32; row.targets.len()];
        for (p, hit) in out.iter_mut().enumerate() {
            // two draws per position, whether or not it is eligible: the draws of a position
            // never depend on the others
            let (coin, pick) = (rng.uniform(), rng.next_u64());
            let target = row.targets[p];
            let tag_ok = source
                .get(p)
                .is_some_and(|&s| self.cfg.sources.iter().any(|x| *x as u8 == s));
            if row.mask[p] == 0.0 || !tag_ok || coin >= self.cfg.fraction {
                continue;
            }
            let new = match self.cfg.among {
                Among::All => {
                    let v = (pick % (self.vocab as u64 - 1)) as i64;
                    v + i64::from(v >= target) // uniform among the other tokens
                }
                Among::Numbers => {
                    let Ok(at) = self.numbers.binary_search(&target) else {
                        continue;
                    };
                    let v = (pick % (self.numbers.len() as u64 - 1)) as usize;
                    self.numbers[v + usize::from(v >= at)]
                }
            };
            row.targets[p] = new;
            *hit = 1.0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ByteCodec;

    fn cfg(fraction: f64, among: Among, seed: u64) -> CorruptConfig {
        CorruptConfig {
            fraction,
            among,
            seed,
            sources: all_sources(),
        }
    }

    fn row(n: usize) -> (Row, Vec<u8>) {
        let targets: Vec<i64> = (0..n)
            .map(|i| i64::from(b"ab 12 cd 345 "[i % 13]))
            .collect();
        // every fourth position is a prompt token (no loss)
        let mask = (0..n).map(|i| f32::from(u8::from(i % 4 != 0))).collect();
        let source = (0..n).map(|i| (i % 3 == 2) as u8 * 2).collect(); // math, math, code, …
        (
            Row {
                ids: targets.clone(),
                targets,
                mask,
            },
            source,
        )
    }

    #[test]
    fn corruption_hits_the_fraction_only_loss_bearing_targets_and_is_seeded() {
        let c = Corrupter::new(cfg(0.25, Among::All, 5), &ByteCodec, 257, "f").unwrap();
        let (mut total, mut hit) = (0usize, 0usize);
        for index in 0..200 {
            let (mut r, s) = row(64);
            let orig = r.targets.clone();
            let m = c.apply(index, &mut r, &s);
            for (p, &mp) in m.iter().enumerate() {
                let changed = r.targets[p] != orig[p];
                assert_eq!(
                    changed,
                    mp == 1.0,
                    "mask marks exactly the replaced targets"
                );
                assert!(!changed || r.mask[p] == 1.0, "a prompt target was replaced");
                assert!((0..257).contains(&r.targets[p]));
            }
            assert_eq!(r.ids, orig, "inputs are untouched");
            total += r.mask.iter().filter(|&&x| x > 0.0).count();
            hit += m.iter().filter(|&&x| x > 0.0).count();
        }
        let frac = hit as f64 / total as f64;
        assert!((frac - 0.25).abs() < 0.02, "fraction {frac}");
        // same seed and row index: same draws; another seed or row: others
        let run = |seed: u64, index: u64| {
            let c = Corrupter::new(cfg(0.25, Among::All, seed), &ByteCodec, 257, "f").unwrap();
            let (mut r, s) = row(64);
            c.apply(index, &mut r, &s);
            r.targets
        };
        assert_eq!(run(5, 3), run(5, 3));
        assert_ne!(run(5, 3), run(6, 3));
        assert_ne!(run(5, 3), run(5, 4));
    }

    #[test]
    fn numbers_only_replace_numbers_by_numbers_and_sources_filter() {
        let c = Corrupter::new(cfg(1.0, Among::Numbers, 1), &ByteCodec, 257, "f").unwrap();
        let (mut r, s) = row(64);
        let orig = r.targets.clone();
        let m = c.apply(0, &mut r, &s);
        let digit = |t: i64| (i64::from(b'0')..=i64::from(b'9')).contains(&t);
        for (p, &mp) in m.iter().enumerate() {
            let eligible = r.mask[p] == 1.0 && digit(orig[p]);
            assert_eq!(mp == 1.0, eligible, "position {p}");
            if eligible {
                assert!(digit(r.targets[p]) && r.targets[p] != orig[p]);
            } else {
                assert_eq!(r.targets[p], orig[p]);
            }
        }
        // only code targets when asked
        let mut only_code = cfg(1.0, Among::All, 1);
        only_code.sources = vec![Source::Code];
        let c = Corrupter::new(only_code, &ByteCodec, 257, "f").unwrap();
        let (mut r, s) = row(64);
        let m = c.apply(0, &mut r, &s);
        for (p, &mp) in m.iter().enumerate() {
            assert_eq!(mp == 1.0, r.mask[p] == 1.0 && s[p] == 2, "position {p}");
        }
        let err = Corrupter::new(
            cfg(1.5, Among::All, 1),
            &ByteCodec,
            257,
            "task.config.unlabeled.corrupt",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("task.config.unlabeled.corrupt.fraction"),
            "{err}"
        );
    }
}
