//! Scorers of a labeled test set: whether the model's answer to one [`Example`] is right.
//!
//! - `exact`: the generated text equals the reference after [`normalise`];
//! - `numeric`: a number extracted by a regex (its last match, first capture group) equals the
//!   reference's number, to 1e-6 relative (GSM8K: [`GSM8K_PATTERN`], falling back to the last
//!   number of a model answer that has no `#### N`);
//! - `choice`: multiple choice, right when the reference is the option of highest per-token
//!   log-likelihood after the prompt (no generation; scored in [`crate::eval`]).

use crate::data::Example;
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vpt_sdk::{Error, Result};

/// GSM8K's final-answer marker: `#### N`.
pub const GSM8K_PATTERN: &str = r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)";

/// How a test set is scored (a config value).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScorerConfig {
    /// Greedy answer equals the reference after normalisation (case, whitespace, trailing
    /// punctuation): `scorer = "exact"`.
    Exact,
    /// A number extracted by `pattern` from the greedy answer equals the one extracted from the
    /// reference (a reference with no match must itself be a number):
    /// `scorer = { numeric = { pattern = "answer is (\\d+)" } }`.
    Numeric {
        /// Regex; the last match counts, through its first capture group when it has one.
        pattern: String,
        /// Use the answer's last number when `pattern` does not match it.
        #[serde(default = "d_true")]
        fallback_last_number: bool,
    },
    /// Multiple choice by log-likelihood of the options (no generation): `scorer = "choice"`.
    Choice,
}

fn d_true() -> bool {
    true
}

impl ScorerConfig {
    /// The GSM8K preset: `#### N`, else the answer's last number.
    pub fn gsm8k() -> Self {
        ScorerConfig::Numeric {
            pattern: GSM8K_PATTERN.into(),
            fallback_last_number: true,
        }
    }
}

/// A compiled [`ScorerConfig`].
#[derive(Debug, Clone)]
pub enum Scorer {
    /// See [`ScorerConfig::Exact`].
    Exact,
    /// See [`ScorerConfig::Numeric`].
    Numeric {
        /// The compiled pattern.
        pattern: Regex,
        /// See [`ScorerConfig::Numeric`].
        fallback_last_number: bool,
    },
    /// See [`ScorerConfig::Choice`].
    Choice,
}

impl Scorer {
    /// Compiles `cfg`; `field` names it in errors.
    pub fn new(cfg: &ScorerConfig, field: &str) -> Result<Self> {
        Ok(match cfg {
            ScorerConfig::Exact => Scorer::Exact,
            ScorerConfig::Choice => Scorer::Choice,
            ScorerConfig::Numeric {
                pattern,
                fallback_last_number,
            } => Scorer::Numeric {
                pattern: Regex::new(pattern).map_err(|e| {
                    Error::config(format!("{field}.numeric.pattern"), e.to_string())
                })?,
                fallback_last_number: *fallback_last_number,
            },
        })
    }

    /// Whether this scorer generates answers (all but `choice`).
    pub fn generates(&self) -> bool {
        !matches!(self, Scorer::Choice)
    }

    /// Why `ex` cannot be scored (no reference number, reference not among the options), if so.
    pub fn check(&self, ex: &Example) -> Option<String> {
        match self {
            Scorer::Exact if normalise(&ex.response).is_empty() => {
                Some("empty reference response".into())
            }
            Scorer::Numeric { .. } if self.reference_number(&ex.response).is_none() => Some(
                "no reference number (the pattern does not match and the response is not a number)"
                    .into(),
            ),
            Scorer::Choice if ex.answer_option().is_none() => Some(format!(
                "multiple choice needs options containing the response; got {} options",
                ex.options.len()
            )),
            _ => None,
        }
    }

    fn extract(&self, text: &str) -> Option<f64> {
        let Scorer::Numeric { pattern, .. } = self else {
            return None;
        };
        let caps = pattern.captures_iter(text).last()?;
        parse_number(caps.get(1).or_else(|| caps.get(0))?.as_str())
    }

    fn reference_number(&self, response: &str) -> Option<f64> {
        self.extract(response).or_else(|| parse_number(response))
    }

    /// Whether the generated `answer` is right for `ex` (`choice` scores elsewhere: false).
    pub fn is_correct(&self, answer: &str, ex: &Example) -> bool {
        match self {
            Scorer::Exact => normalise(answer) == normalise(&ex.response),
            Scorer::Numeric {
                fallback_last_number,
                ..
            } => {
                let got = self.extract(answer).or_else(|| {
                    fallback_last_number
                        .then(|| numbers(answer).into_iter().last())
                        .flatten()
                });
                match (got, self.reference_number(&ex.response)) {
                    (Some(p), Some(r)) => (p - r).abs() <= 1e-6 * r.abs().max(1.0),
                    _ => false,
                }
            }
            Scorer::Choice => false,
        }
    }
}

/// Lower case, whitespace runs collapsed to one space, trimmed, trailing `.`/`!`/`?` removed.
pub fn normalise(text: &str) -> String {
    let joined = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    joined.trim_end_matches(['.', '!', '?']).trim().to_string()
}

/// A number written with optional `$`, thousands commas and a trailing period.
pub fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s.chars().filter(|c| *c != ',' && *c != '$').collect();
    cleaned.trim().trim_end_matches('.').parse::<f64>().ok()
}

/// Every number in `text`, in order (`-3.5`, `1,234`).
pub fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<f64>| {
        let t = cur.trim_end_matches([',', '.']);
        if t.chars().any(|c| c.is_ascii_digit()) {
            if let Some(v) = parse_number(t) {
                out.push(v);
            }
        }
        cur.clear();
    };
    for c in text.chars() {
        let continues = c.is_ascii_digit() || ((c == ',' || c == '.') && !cur.is_empty());
        if continues || (c == '-' && cur.is_empty()) {
            cur.push(c);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(response: &str) -> Example {
        Example::new("q", response)
    }

    #[test]
    fn gsm8k_preset_reads_the_marker_else_the_last_number() {
        let s = Scorer::new(&ScorerConfig::gsm8k(), "t").unwrap();
        let r = ex("2+2 = <<2+2=4>>4\n#### 1,234");
        assert!(s.check(&r).is_none());
        assert!(s.is_correct("so 3 + 4 = 7\n#### 1,234", &r));
        assert!(s.is_correct("The answer is $1234.", &r));
        assert!(!s.is_correct("#### 1,235", &r));
        assert!(!s.is_correct("no numbers", &r));
        assert!(s.is_correct("from 5 to -3.5 degrees", &ex("#### -3.5")));
        assert!(s.check(&ex("no answer here")).is_some());
        // A bare-number reference works without the marker.
        assert!(s.check(&ex("42")).is_none() && s.is_correct("#### 42", &ex("42")));
    }

    #[test]
    fn numeric_uses_the_configured_pattern_and_its_fallback() {
        let cfg = ScorerConfig::Numeric {
            pattern: r"answer is (-?\d+)".into(),
            fallback_last_number: false,
        };
        let s = Scorer::new(&cfg, "t").unwrap();
        let r = ex("7");
        assert!(s.is_correct("1 then 2, the answer is 7", &r));
        assert!(!s.is_correct("the answer is 8; or 7", &r));
        assert!(!s.is_correct("it is 7", &r), "fallback is off");
        let bad = ScorerConfig::Numeric {
            pattern: "(".into(),
            fallback_last_number: true,
        };
        let err = Scorer::new(&bad, "task.config.eval.test.scorer")
            .unwrap_err()
            .to_string();
        assert!(err.contains("eval.test.scorer.numeric.pattern"), "{err}");
    }

    #[test]
    fn exact_match_normalises_case_space_and_final_punctuation() {
        let s = Scorer::new(&ScorerConfig::Exact, "t").unwrap();
        assert!(s.is_correct("  The   Cat sat.", &ex("the cat sat")));
        assert!(!s.is_correct("the cat sat down", &ex("the cat sat")));
        assert!(s.check(&ex("  ")).is_some());
        assert_eq!(normalise("A\n b?!"), "a b");
    }

    #[test]
    fn choice_needs_the_response_among_the_options() {
        let s = Scorer::new(&ScorerConfig::Choice, "t").unwrap();
        assert!(!s.generates());
        let mut e = ex("b");
        assert!(s.check(&e).is_some());
        e.options = vec!["a".into(), "b".into()];
        assert!(s.check(&e).is_none());
        assert_eq!(e.answer_option(), Some(1));
    }
}
