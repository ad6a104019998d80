//! Building the task: loading θ and its tokenizer, then generating / reading every data set.

use super::config::{CausalLmConfig, ModelSource};
use super::{CausalLm, FeedbackSet, Stream};
use crate::corrupt::Corrupter;
use crate::data::{self, Codec, Cursor, Example, Fields, Packer, Record, Row};
use crate::general::{self, GeneralText};
use crate::labeled::{self, SetKind};
use crate::mathgen::MathSplits;
use crate::prefix_cache::PrefixCache;
use crate::scorer::Scorer;
use std::collections::HashSet;
use tch::{nn, Device};
use vpt_llama::Tokenizer;
use vpt_llama::{gguf, hf, Config, Llama, Scope};
use vpt_sdk::rng::fnv1a;
use vpt_sdk::{BuildContext, Error, InputPath, Result};

/// Reads a labeled JSONL set (`kind` ≠ generated) named by config `field`.
fn read_path(
    field: &str,
    kind: SetKind,
    path: &Option<InputPath>,
    fields: Option<&Fields>,
    scorer: Option<&Scorer>,
) -> Result<Vec<Example>> {
    let p = path
        .as_deref()
        .ok_or_else(|| Error::config(format!("{field}.path"), "missing path"))?;
    labeled::read_set(kind, p, fields, scorer)
}

/// Up to `n` rows of `seq_len` tokens packed from held-out paragraphs (`general_loss`,
/// `code_loss`).
fn heldout_rows(codec: &dyn Codec, paras: &[String], seq_len: usize, n: usize) -> Result<Vec<Row>> {
    let mut p = Packer::new(seq_len);
    let mut rows = Vec::new();
    for para in paras {
        if rows.len() >= n {
            break;
        }
        p.push(&data::tokenize_record(codec, &Record::Text(para.clone()))?);
        while let Some(r) = p.pop_row() {
            rows.push(r);
        }
    }
    rows.truncate(n);
    Ok(rows)
}

/// Loads θ and its tokenizer; the sizes of `lm` are checked against the model's before its
/// trainable part (LoRA adapters) is built.
fn load_model(
    lm: &CausalLmConfig,
    device: Device,
    seed: u64,
) -> Result<(nn::VarStore, Llama, Tokenizer)> {
    let (cfg, vs, tok): (Config, nn::VarStore, Tokenizer) = match &lm.model {
        ModelSource::Gguf(p) => gguf::load_gguf(p, device)?,
        ModelSource::Hf(d) => hf::load_hf(d, device)?,
        ModelSource::TinyRandom => {
            // The tiny model's init is a pure function of the run seed.
            tch::manual_seed(seed as i64);
            (Config::tiny(), nn::VarStore::new(device), Tokenizer::tiny())
        }
    };
    lm.validate_for_model(cfg.vocab_size, cfg.hidden_size)?;
    let model = Llama::with_scope(&vs.root(), &cfg, &lm.trainable)?;
    Ok((vs, model, tok))
}

impl CausalLm {
    /// Builds the task (loads θ, generates / reads every data set).
    pub fn new(cfg: CausalLmConfig, ctx: &BuildContext) -> Result<Self> {
        cfg.validate()?;
        let device = ctx.device();
        let (vs, model, tok) = load_model(&cfg, device, ctx.seed)?;
        let trainable = model.apply_scope(&vs, &cfg.trainable)?;
        let layers = model.config().num_layers;
        let alignment_scope = match (&cfg.trainable, cfg.alignment_layers) {
            (s, None) => s.clone(),
            (Scope::All, Some(n)) | (Scope::LastN(_), Some(n)) => Scope::LastN(n),
            (Scope::LoraLastN { rank, alpha, .. }, Some(n)) => Scope::LoraLastN {
                layers: n,
                rank: *rank,
                alpha: *alpha,
            },
        };
        let trainable_layers = match &cfg.trainable {
            Scope::All => layers,
            Scope::LastN(n) | Scope::LoraLastN { layers: n, .. } => *n,
        };
        if cfg
            .alignment_layers
            .is_some_and(|n| n == 0 || n > trainable_layers)
        {
            return Err(Error::config(
                "task.config.alignment_layers",
                format!("must be in 1..={trainable_layers} (the trainable layers)"),
            ));
        }
        let alignment: Vec<String> = model
            .alignment_names(&alignment_scope)
            .into_iter()
            .filter(|n| trainable.iter().any(|(t, _)| t == n))
            .collect();
        if alignment.is_empty() {
            return Err(Error::config(
                "task.config.alignment_layers",
                "selects no trainable parameter",
            ));
        }
        let codec: Box<dyn Codec> = Box::new(tok);

        // Held-out generated sets first, so the stream can exclude them.
        let test_gen = MathSplits::new(cfg.data_seed, &cfg.eval.test.levels, 0, cfg.eval.test.size);
        let scorer = Scorer::new(&cfg.eval.test.scorer(), "task.config.eval.test.scorer")?;
        let test = match cfg.eval.test.kind {
            SetKind::Generated => test_gen.test.iter().map(|p| p.to_example()).collect(),
            kind => {
                let t = &cfg.eval.test;
                let mut v = read_path(
                    "task.config.eval.test",
                    kind,
                    &t.path,
                    t.fields.as_ref(),
                    Some(&scorer),
                )?;
                v.truncate(t.size);
                v
            }
        };
        let mut generated = vec![test_gen];
        let mut feedback = Vec::new();
        for (j, s) in cfg.feedback.iter().enumerate() {
            let all: Vec<Example> = match s.kind {
                SetKind::Generated => {
                    let seed = cfg.data_seed ^ fnv1a(s.name.as_bytes());
                    let m = MathSplits::new(seed, &s.levels, s.size + s.heldout, 0);
                    let v = m
                        .feedback
                        .iter()
                        .filter(|p| !generated[0].is_held_out(&p.question))
                        .map(|p| p.to_example())
                        .collect();
                    generated.push(m);
                    v
                }
                kind => read_path(
                    &format!("task.config.feedback[{j}]"),
                    kind,
                    &s.path,
                    s.fields.as_ref(),
                    None,
                )?,
            };
            // Held-out examples are a seeded sample; the rest (capped at `size`) feed the meta steps.
            let mut order = Cursor::new(cfg.data_seed ^ 0xFEED ^ j as u64, all.len());
            let idx: Vec<usize> = (0..all.len()).map(|_| order.next_index()).collect();
            let heldout: Vec<Example> = idx
                .iter()
                .take(s.heldout)
                .map(|&i| all[i].clone())
                .collect();
            let train: Vec<Example> = idx
                .iter()
                .skip(s.heldout)
                .take(s.size)
                .map(|&i| all[i].clone())
                .collect();
            if train.is_empty() {
                return Err(Error::config(
                    format!("task.config.feedback[{j}]"),
                    format!(
                        "set `{}` has {} examples, none left after holding out {}",
                        s.name,
                        all.len(),
                        s.heldout
                    ),
                ));
            }
            let cursor = Cursor::new(ctx.seed ^ fnv1a(s.name.as_bytes()), train.len());
            feedback.push(FeedbackSet {
                name: s.name.clone(),
                train,
                heldout,
                cursor,
            });
        }

        let general_needed = cfg.unlabeled.general_fraction > 0.0 || cfg.eval.general_rows > 0;
        let gen_text = if general_needed {
            let g = &cfg.general;
            general::load(&g.root, g.heldout_percent, g.min_chars, g.max_chars)?
        } else {
            GeneralText::default()
        };
        // No prompt of a feedback or test set may reach the learner through the stream.
        let held: HashSet<String> = feedback
            .iter()
            .flat_map(|f| f.train.iter().chain(&f.heldout))
            .chain(&test)
            .map(|e| e.prompt.clone())
            .collect();
        let math = cfg.unlabeled.generated_math.then(|| {
            let mut m = MathSplits::new(cfg.data_seed ^ 0x57AE, &cfg.unlabeled.levels, 0, 0);
            for g in &generated {
                m.exclude(g);
            }
            m.exclude_questions(&held);
            m
        });
        let mut jsonl = Vec::new();
        for (i, src) in cfg.unlabeled.jsonl.iter().enumerate() {
            let field = format!("task.config.unlabeled.jsonl[{i}]");
            let (records, _dropped) = labeled::read_stream_source(src, &held, &field)?;
            if records.is_empty() {
                return Err(Error::config(
                    field,
                    "no record left after removing the feedback and test prompts",
                ));
            }
            jsonl.extend(records);
        }
        let general_eval = heldout_rows(
            codec.as_ref(),
            &gen_text.heldout,
            cfg.seq_len,
            cfg.eval.general_rows,
        )?;
        let code_needed = cfg.unlabeled.code_fraction > 0.0 || cfg.eval.code_rows > 0;
        let code_text = if code_needed {
            let c = &cfg.code;
            crate::code::load(
                std::path::Path::new(&c.root),
                c.heldout_percent,
                c.min_chars,
                c.max_chars,
            )?
        } else {
            GeneralText::default()
        };
        let code_eval = heldout_rows(
            codec.as_ref(),
            &code_text.heldout,
            cfg.seq_len,
            cfg.eval.code_rows,
        )?;
        let corrupter = match &cfg.unlabeled.corrupt {
            Some(c) => Some(Corrupter::new(
                c.clone(),
                codec.as_ref(),
                model.config().vocab_size,
                "task.config.unlabeled.corrupt",
            )?),
            None => None,
        };
        let stream = Stream {
            math,
            math_next: 0,
            jsonl_cursor: (!jsonl.is_empty()).then(|| Cursor::new(ctx.seed ^ 0x15_0E, jsonl.len())),
            jsonl,
            general_cursor: (cfg.unlabeled.general_fraction > 0.0 && !gen_text.train.is_empty())
                .then(|| Cursor::new(ctx.seed ^ 0x6E_E7, gen_text.train.len())),
            general: gen_text.train,
            general_fraction: cfg.unlabeled.general_fraction,
            code_cursor: (cfg.unlabeled.code_fraction > 0.0 && !code_text.train.is_empty())
                .then(|| Cursor::new(ctx.seed ^ 0xC0_DE, code_text.train.len())),
            code: code_text.train,
            code_fraction: cfg.unlabeled.code_fraction,
            draws: 0,
            seed: ctx.seed,
            packer: Packer::new(cfg.seq_len),
            prompt_only_warned: false,
            rows: 0,
            corrupter,
        };
        let s_start = model.first_block_of(&alignment);
        let head = if model.config().tie_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let head_in_s = alignment.iter().any(|n| n == head);
        // S's input is a constant of each feedback example when nothing below S trains
        let trainable_names: Vec<String> = trainable.iter().map(|(n, _)| n.clone()).collect();
        let below_s_frozen = s_start.is_some_and(|s| {
            model
                .first_block_of(&trainable_names)
                .is_some_and(|b| b >= s)
        });
        let prefix_cache = (below_s_frozen && cfg.feedback_cache_mib > 0)
            .then(|| PrefixCache::new(cfg.feedback_cache_mib << 20));
        Ok(CausalLm {
            cfg,
            vs,
            model,
            codec,
            trainable,
            alignment,
            s_start,
            head_in_s,
            prefix_cache,
            stream,
            feedback,
            test,
            scorer,
            general_eval,
            code_eval,
            device,
            seed: ctx.seed,
        })
    }
}
