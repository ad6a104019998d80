//! Labeled sets as data: where feedback and test examples come from (generated, generic JSONL
//! with configurable field names, or the GSM8K preset), and labeled JSONL used as unlabeled
//! prompt/response text with every held-out prompt removed.

use crate::data::{self, Example, Fields, Record};
use crate::scorer::{Scorer, ScorerConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use vpt_sdk::{Error, InputPath, Result};

/// Where a labeled set comes from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// Problems from [`crate::mathgen`] (never shared with the stream or the test set).
    Generated,
    /// A JSONL file of `{"prompt", "response"}` (names set by `fields`; optional `options`).
    Jsonl,
    /// The GSM8K preset: JSONL with `question`, `answer` ending in `#### N`, scored numerically.
    Gsm8kJsonl,
}

impl SetKind {
    /// Field names used when the config gives none.
    pub fn default_fields(self) -> Fields {
        match self {
            SetKind::Gsm8kJsonl => Fields::gsm8k(),
            _ => Fields::default(),
        }
    }
    /// Scorer used when the config gives none: GSM8K's for math, exact match otherwise.
    pub fn default_scorer(self) -> ScorerConfig {
        match self {
            SetKind::Jsonl => ScorerConfig::Exact,
            SetKind::Generated | SetKind::Gsm8kJsonl => ScorerConfig::gsm8k(),
        }
    }
}

/// Reads a JSONL set (`kind` ≠ generated) with `fields` (else the kind's), checking that
/// `scorer` (and, for the GSM8K preset, GSM8K's scorer) can score every example; errors name
/// `file:line`.
pub fn read_set(
    kind: SetKind,
    path: &Path,
    fields: Option<&Fields>,
    scorer: Option<&Scorer>,
) -> Result<Vec<Example>> {
    let default = kind.default_fields();
    let fields = fields.unwrap_or(&default);
    let rows = data::read_labeled_jsonl(path, fields)?;
    let preset = match kind {
        SetKind::Gsm8kJsonl => Some(Scorer::new(&ScorerConfig::gsm8k(), "gsm8k")?),
        _ => None,
    };
    for (line, ex) in &rows {
        for s in preset.iter().chain(scorer) {
            if let Some(why) = s.check(ex) {
                return Err(Error::data(path.display().to_string(), *line, why));
            }
        }
    }
    Ok(rows.into_iter().map(|(_, e)| e).collect())
}

/// One source of the unlabeled stream: a path to `{"text"}` / `{"prompt","response"}` JSONL, or
/// a labeled set read as prompt + response text (loss on the response only).
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum JsonlSource {
    /// `"path.jsonl"`: records `{"text"}` or `{"prompt","response"}`.
    Path(InputPath),
    /// `{ path = "…", kind = "gsm8k_jsonl" }` or `{ path = "…", fields = { prompt = "q", … } }`.
    Labeled(LabeledSource),
}

/// A string is a path, a table a [`LabeledSource`] (whose own errors, e.g. an unknown field,
/// reach the user instead of serde's "did not match any variant").
impl<'de> Deserialize<'de> for JsonlSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonlSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path string or a table { path, kind, fields }")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(JsonlSource::Path(v.into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                LabeledSource::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(JsonlSource::Labeled)
            }
        }
        d.deserialize_any(V)
    }
}

/// A labeled JSONL file used as unlabeled text (see [`JsonlSource::Labeled`]).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabeledSource {
    /// The JSONL file.
    pub path: InputPath,
    /// `jsonl` (default) or `gsm8k_jsonl`.
    #[serde(default = "d_jsonl")]
    pub kind: SetKind,
    /// Field names (default: the kind's).
    #[serde(default)]
    pub fields: Option<Fields>,
}

fn d_jsonl() -> SetKind {
    SetKind::Jsonl
}

/// The prompt text of a labeled example in the unlabeled stream.
pub fn stream_prompt(prompt: &str) -> String {
    format!("Question: {prompt}\nAnswer: ")
}

/// Reads one stream source, dropping every record whose prompt is in `held` (the prompts of the
/// feedback and test sets), so no feedback or test example reaches the learner. Returns the kept
/// records and how many were dropped.
pub fn read_stream_source(
    src: &JsonlSource,
    held: &HashSet<String>,
    field: &str,
) -> Result<(Vec<Record>, usize)> {
    let (all, n): (Vec<Record>, usize) = match src {
        JsonlSource::Path(p) => {
            let v = data::read_unlabeled_jsonl(p)?;
            let n = v.len();
            let kept = v
                .into_iter()
                .filter(|r| match r {
                    Record::PromptResponse { prompt, .. } => !held.contains(prompt),
                    Record::Text(_) => true,
                })
                .collect();
            (kept, n)
        }
        JsonlSource::Labeled(l) => {
            if l.kind == SetKind::Generated {
                return Err(Error::config(
                    format!("{field}.kind"),
                    "a stream source is a file: `jsonl` or `gsm8k_jsonl`",
                ));
            }
            let v = read_set(l.kind, &l.path, l.fields.as_ref(), None)?;
            let n = v.len();
            let kept = v
                .into_iter()
                .filter(|e| !held.contains(&e.prompt))
                .map(|e| Record::PromptResponse {
                    prompt: stream_prompt(&e.prompt),
                    response: e.response,
                })
                .collect();
            (kept, n)
        }
    };
    let dropped = n - all.len();
    Ok((all, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm8k(name: &str) -> std::path::PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gsm8k/")).join(name)
    }

    #[test]
    fn gsm8k_preset_is_a_jsonl_set_with_its_fields_and_check() {
        let a = read_set(SetKind::Gsm8kJsonl, &gsm8k("test.jsonl"), None, None).unwrap();
        let b = read_set(
            SetKind::Jsonl,
            &gsm8k("test.jsonl"),
            Some(&Fields::gsm8k()),
            None,
        )
        .unwrap();
        assert_eq!(a.len(), 1319);
        assert_eq!(a, b);
        // A file that is not GSM8K-shaped fails the preset's check, naming file:line.
        let dir = std::env::temp_dir().join(format!("vpt-lm-labeled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.jsonl");
        std::fs::write(&p, "{\"question\": \"q\", \"answer\": \"4\\n#### 4\"}\n{\"question\": \"q\", \"answer\": \"four\"}\n").unwrap();
        let err = read_set(SetKind::Gsm8kJsonl, &p, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("g.jsonl:2:"), "{err}");
        assert!(read_set(SetKind::Jsonl, &p, Some(&Fields::gsm8k()), None).is_ok());
    }

    #[test]
    fn stream_sources_parse_from_a_string_or_a_table() {
        let v: Vec<JsonlSource> = serde_json::from_value(serde_json::json!([
            "a.jsonl",
            {"path": "b.jsonl", "kind": "gsm8k_jsonl"}
        ]))
        .unwrap();
        assert_eq!(v[0], JsonlSource::Path("a.jsonl".into()));
        assert!(matches!(&v[1], JsonlSource::Labeled(l) if l.kind == SetKind::Gsm8kJsonl));
        let err =
            serde_json::from_value::<JsonlSource>(serde_json::json!({"path": "b", "kindd": 1}))
                .unwrap_err()
                .to_string();
        assert!(err.contains("kindd"), "{err}");
        assert!(serde_json::from_value::<JsonlSource>(serde_json::json!(3)).is_err());
    }

    #[test]
    fn stream_sources_drop_held_prompts() {
        let all = read_set(SetKind::Gsm8kJsonl, &gsm8k("train.jsonl"), None, None).unwrap();
        let held: HashSet<String> = all.iter().take(100).map(|e| e.prompt.clone()).collect();
        let src = JsonlSource::Labeled(LabeledSource {
            path: gsm8k("train.jsonl").into(),
            kind: SetKind::Gsm8kJsonl,
            fields: None,
        });
        let (recs, dropped) = read_stream_source(&src, &held, "f").unwrap();
        assert!(dropped >= 100);
        assert_eq!(recs.len() + dropped, all.len());
        for r in &recs {
            let Record::PromptResponse { prompt, response } = r else {
                panic!("expected prompt/response records")
            };
            assert!(prompt.starts_with("Question: ") && response.contains("####"));
            let q = prompt
                .strip_prefix("Question: ")
                .and_then(|p| p.strip_suffix("\nAnswer: "))
                .unwrap();
            assert!(!held.contains(q));
        }
    }
}
