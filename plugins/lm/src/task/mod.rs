//! The `causal_lm` task: a Llama-family learner θ continued-pretrained on an unlabeled text
//! stream (GSM8K or other JSONL, generated math, Python-doc general text), with feedback and
//! test sets given as data (`crate::labeled`; L_down = NLL of the response tokens, test sets
//! scored by `crate::scorer`) and top-K soft targets as its construction.
//!
//! Losses: the baseline is one-hot next-token CE; with `lm.soft_targets/v1` it is
//! −Σ_k q_k log p_θ(cand_k) on the K candidates. Both are masked token means per example (B,).
//! The host says how a loss is differentiated: the fused attention kernel everywhere, except
//! on the `Twice` (create_graph) pass through S, which uses math attention and the
//! reformulated loss of [`crate::loss::soft_ce_twice`]. Layers below S are constants for ∇_S:
//! the meta step and L_down run them without grad (or reuse the learner forward's detached
//! input of S), and the head runs only at loss-bearing positions.

mod build;
pub mod config;
mod forward;
mod inputs;
#[cfg(test)]
mod regime_tests;
mod split;
mod stream;
#[cfg(test)]
mod tests;

pub use config::*;
use stream::{expect_source, FeedbackSet, SavedState, Stream};

use crate::data::{self, Codec, Cursor, Example, Row};
use crate::designer::LmDesignContext;
use crate::eval::{self as ev, PassAt};
use crate::loss::{soft_ce_logp, LossRows};
use crate::prefix_cache::PrefixCache;
use crate::scorer::Scorer;
use tch::{nn, Device, Tensor};
use vpt_llama::{Attention, Llama};
use vpt_sdk::{
    kinds, Batch, BatchSource, BuildContext, Construction, Differentiation, Error, ExportRequest,
    FeedbackSetInfo, Forward, KindSpec, MetaBatch, Metrics, PretrainLoss, Result, State, Task,
    TaskFactory, TaskInfo, TchContext, TensorMap,
};

/// The `causal_lm` task.
pub struct CausalLm {
    cfg: CausalLmConfig,
    vs: nn::VarStore,
    model: Llama,
    codec: Box<dyn Codec>,
    trainable: Vec<(String, Tensor)>,
    alignment: Vec<String>,
    /// The first block of S when S lies in blocks only (the blocks below are constants for
    /// ∇_S); `None` when S reaches the embedding.
    s_start: Option<usize>,
    /// Whether the output embedding is in S (its gradient is wanted on the `Twice` pass).
    head_in_s: bool,
    /// Feedback examples' inputs of S, when every parameter below S is frozen.
    prefix_cache: Option<PrefixCache>,
    stream: Stream,
    feedback: Vec<FeedbackSet>,
    test: Vec<Example>,
    scorer: Scorer,
    general_eval: Vec<Row>,
    code_eval: Vec<Row>,
    device: Device,
    seed: u64,
}

impl TaskFactory for CausalLm {
    const NAME: &'static str = "causal_lm";
    const DESCRIPTION: &'static str =
        "causal LM continued pretraining (GSM8K / JSONL / generated math + Python docs) with feedback and test sets as data and top-K soft targets";
    const CONSUMES: &'static [KindSpec] = &[kinds::LM_SOFT_TARGETS];
    const DESIGN_INPUTS: &'static [vpt_sdk::TensorSpec] = inputs::DESIGN_INPUTS;
    const EXPORTS: &'static [(&'static str, &'static [&'static str])] = crate::export::FORMATS;
    type Config = CausalLmConfig;
    fn build(config: Self::Config, ctx: &BuildContext) -> Result<Box<dyn Task>> {
        Ok(Box::new(CausalLm::new(config, ctx)?))
    }
}

impl Task for CausalLm {
    fn info(&self) -> TaskInfo {
        let ctx = LmDesignContext {
            d_model: self.model.config().hidden_size,
            k: self.cfg.top_k,
            feature_dim: self.model.config().hidden_size + 1,
        };
        TaskInfo {
            alignment: self.alignment.clone(),
            domains: vec!["text".into()],
            feedback_sets: self
                .feedback
                .iter()
                .map(|f| FeedbackSetInfo {
                    name: f.name.clone(),
                    domain: 0,
                })
                .collect(),
            designer_context: serde_json::to_value(ctx).expect("context serialises"),
            batch_size: self.cfg.batch_size,
        }
    }

    fn parameters(&self) -> Result<TensorMap> {
        Ok(self
            .trainable
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect())
    }

    fn next_batch(&mut self, source: BatchSource) -> Result<Batch> {
        match source {
            BatchSource::Unlabeled { domain: 0 } => {
                let rows = (self.stream).next_rows(self.codec.as_ref(), self.cfg.batch_size)?;
                self.unlabeled_batch(source, rows)
            }
            BatchSource::Feedback { set } => {
                let fs = self.feedback.get_mut(set as usize).ok_or_else(|| {
                    Error::msg(format!(
                        "no feedback set {set} (have {})",
                        self.cfg.feedback.len()
                    ))
                })?;
                let index: Vec<i64> = (0..self.cfg.feedback_batch_size)
                    .map(|_| fs.cursor.next_index() as i64)
                    .collect();
                let picks: Vec<Example> = index
                    .iter()
                    .map(|&i| fs.train[i as usize].clone())
                    .collect();
                let rows = data::pad_rows(self.feedback_rows(&picks)?, self.codec.eos_id());
                // `example`: each row's index in its set's training split (the prefix cache key)
                let tensors = data::rows_to_tensors(&rows, self.device)?
                    .with("example", Tensor::f_from_slice(&index)?.f_to(self.device)?);
                Ok(Batch { source, tensors })
            }
            s => Err(Error::msg(format!(
                "causal_lm has one unlabeled domain; got {s:?}"
            ))),
        }
    }

    fn design_inputs(&mut self, batch: &Batch) -> Result<TensorMap> {
        expect_source(batch, true, "design_inputs")?;
        let ids = batch.tensors.require("ids")?;
        tch::no_grad(|| {
            let hidden = self.model.forward_hidden(ids, Attention::Fused)?; // (B,T,d)
            let at_loss = self.loss_positions(batch, &hidden)?;
            self.design_inputs_of(batch, &hidden, at_loss.cand, at_loss.cand_lp)
        })
    }

    fn pretrain_forward(&mut self, batch: &Batch) -> Result<Forward> {
        expect_source(batch, true, "pretrain_forward")?;
        let ids = batch.tensors.require("ids")?;
        // Differentiated once by the learner step: fused attention. The input of S, detached,
        // lets the meta step's Twice pass start at S (θ does not change in between).
        let split = self.s_start.unwrap_or(0);
        let (s_in, hidden) = self.model.forward_split(ids, Attention::Fused, split)?;
        // The head (with a graph) only where the loss is, as the baseline's; the candidates
        // from the same log-probabilities.
        let at_loss = self.loss_positions(batch, &hidden)?;
        let design_inputs = tch::no_grad(|| {
            self.design_inputs_of(batch, &hidden.f_detach()?, at_loss.cand, at_loss.cand_lp)
        })?;
        let mut state = TensorMap::new().with("loss_logp", at_loss.logp);
        if self.s_start.is_some() {
            state.insert("s_input", s_in.f_detach()?);
        }
        Ok(Forward {
            design_inputs,
            state,
        })
    }

    fn pretrain_loss(
        &mut self,
        batch: &Batch,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<Tensor> {
        expect_source(batch, true, "pretrain_loss")?;
        let (cand, q) = self.targets_of(batch, construction)?;
        let hidden = self.hidden_for(batch.tensors.require("ids")?, diff)?;
        self.soft_ce_hidden(&hidden, batch.tensors.require("mask")?, &cand, &q, diff)
    }

    fn pretrain_loss_from_forward(
        &mut self,
        batch: &Batch,
        state: &TensorMap,
        construction: &Construction,
        diff: Differentiation,
    ) -> Result<PretrainLoss> {
        expect_source(batch, true, "pretrain_loss")?;
        let (cand, q) = self.targets_of(batch, construction)?;
        let mask = batch.tensors.require("mask")?;
        // the learner step's side outputs: where the designer puts mass (split.rs)
        let side = match diff {
            Differentiation::Once => split::side_outputs(batch, construction, &q)?,
            Differentiation::Twice => TensorMap::new(),
        };
        let per_example = match (
            diff,
            state.get("loss_logp"),
            state.get("s_input"),
            self.s_start,
        ) {
            // the learner step: the forward's own log p (N,V) at the loss-bearing positions
            (Differentiation::Once, Some(logp), _, _) => {
                let rows = LossRows::new(mask)?;
                let per = soft_ce_logp(logp, &rows.select(&cand)?, &rows.select(&q)?)?; // (N,)
                rows.per_example(&per)
            }
            // the meta step: S from its detached input, math attention, no vocabulary graph
            (Differentiation::Twice, _, Some(s_in), Some(start)) => {
                let hidden = self.model.forward_from(s_in, start, Attention::Math)?;
                self.soft_ce_hidden(&hidden, mask, &cand, &q, diff)
            }
            _ => self.pretrain_loss(batch, construction, diff),
        }?;
        Ok(PretrainLoss { per_example, side })
    }

    fn after_step(&mut self, _step: u64, side: &[TensorMap]) -> Result<Metrics> {
        split::step_metrics(
            side,
            &self.stream.sources(),
            self.stream.corrupter.is_some(),
        )
    }

    fn meta_batch(
        &mut self,
        batch: &Batch,
        forward: &Forward,
        size: MetaBatch,
    ) -> Result<(Batch, Forward)> {
        // Every tensor is (B, …); those with a time axis are (B, T, …). Causal attention makes
        // the first positions of the forward's tensors exactly those of a shorter sequence.
        let t = batch.tensors.require("ids")?.size()[1];
        let len = size.max_len.map_or(t, |l| (l as i64).clamp(2, t));
        let cut = |map: &TensorMap, timed: &[&str]| -> Result<TensorMap> {
            let mut out = vpt_sdk::narrow_rows(map, size.rows as i64)?;
            for name in timed {
                if let Some(x) = out.remove(name) {
                    out.insert(*name, x.f_narrow(1, 0, len)?);
                }
            }
            Ok(out)
        };
        let sliced = Batch {
            source: batch.source,
            tensors: cut(
                &batch.tensors,
                &["ids", "targets", "mask", "source", "corrupt"],
            )?,
        };
        // the design inputs with a time axis, read off their declaration (B,T,…)
        let timed: Vec<&str> = inputs::DESIGN_INPUTS
            .iter()
            .filter(|spec| spec.dims().get(1) == Some(&"T"))
            .map(|spec| spec.name.as_ref())
            .collect();
        // the loss log p are (N,V) by loss-bearing position, not by row: the meta step's
        // Twice pass starts from `s_input` and never reads them
        let state: TensorMap = (forward.state.iter())
            .filter(|(name, _)| *name != "loss_logp")
            .map(|(name, t)| (name.to_string(), t.shallow_clone()))
            .collect();
        Ok((
            sliced,
            Forward {
                design_inputs: cut(&forward.design_inputs, &timed)?,
                state: cut(&state, &["s_input"])?,
            },
        ))
    }

    fn feedback_loss(&mut self, batch: &Batch) -> Result<Tensor> {
        expect_source(batch, false, "feedback_loss")?;
        let (ids, targets, mask) = (
            batch.tensors.require("ids")?,
            batch.tensors.require("targets")?,
            batch.tensors.require("mask")?,
        );
        // L_down is differentiated once, on S only: the blocks below S without grad, the
        // fused kernel everywhere, the head only at the answer tokens.
        let hidden = match self.s_start {
            Some(start) => {
                let s_in = self.feedback_s_input(batch, start)?;
                self.model.forward_from(&s_in, start, Attention::Fused)?
            }
            None => self.model.forward_hidden(ids, Attention::Fused)?,
        };
        let rows = LossRows::new(mask)?;
        let logits = self.model.logits(&rows.select(&hidden)?)?; // (N,V)
        let lp = logits.f_log_softmax(-1, logits.kind())?.f_gather(
            -1,
            &rows.select(&targets.f_unsqueeze(-1)?)?,
            false,
        )?; // (N,1)
        lp.f_mean(lp.kind())?.f_neg().op("mean NLL")
    }

    fn evaluate(&mut self, limit: Option<u64>) -> Result<Metrics> {
        let cap = |n: usize| limit.map_or(n, |l| n.min(l as usize));
        let eos = self.codec.eos_id();
        let mut m = Metrics::new();
        // Feedback NLL: per held-out example, the token mean over its response; a set's value is
        // the mean over its examples (paper eq. 38), `feedback_loss` the mean over sets.
        let mut groups = Vec::new();
        for fs in &self.feedback {
            let rows = self.feedback_rows(&fs.heldout[..cap(fs.heldout.len())])?;
            if rows.is_empty() {
                continue;
            }
            let nll = ev::row_nlls(&self.model, &rows, self.cfg.feedback_batch_size, eos)?;
            self.insert_with_ci(
                &mut m,
                &format!("feedback_loss/{}", fs.name),
                std::slice::from_ref(&nll),
            );
            groups.push(nll);
        }
        self.insert_with_ci(&mut m, "feedback_loss", &groups);
        let n_gen = cap(self.general_eval.len());
        let general = ev::row_nlls(
            &self.model,
            &self.general_eval[..n_gen],
            self.cfg.batch_size,
            eos,
        )?;
        self.insert_with_ci(&mut m, "general_loss", &[general]);
        if !self.code_eval.is_empty() {
            let n_code = cap(self.code_eval.len());
            let code = ev::row_nlls(
                &self.model,
                &self.code_eval[..n_code],
                self.cfg.batch_size,
                eos,
            )?;
            self.insert_with_ci(&mut m, "code_loss", &[code]);
        }
        for suffix in ["", ".ci_lo", ".ci_hi"] {
            if let Some(v) = m.get(&format!("general_loss{suffix}")).copied() {
                m.insert(format!("general_ppl{suffix}"), v.exp());
            }
        }
        let test = &self.test[..cap(self.test.len())];
        if !test.is_empty() {
            let e = &self.cfg.eval;
            let codec = self.codec.as_ref();
            let (name, scores) = if self.scorer.generates() {
                let s = ev::generation_scores(
                    &self.model,
                    codec,
                    test,
                    &self.scorer,
                    e.max_new_tokens,
                    e.batch_size,
                )?;
                ("pass@1", s)
            } else {
                let s = ev::choice_scores(
                    &self.model,
                    codec,
                    test,
                    self.cfg.feedback_max_len,
                    e.batch_size,
                )?;
                ("choice_accuracy", s)
            };
            self.insert_with_ci(&mut m, name, &[scores]);
            if e.pass_k > 0 && self.scorer.generates() {
                let settings = PassAt {
                    max_new_tokens: e.max_new_tokens,
                    k: e.pass_k,
                    temperature: e.temperature,
                    seed: self.seed,
                };
                let s = tch::no_grad(|| {
                    ev::pass_at_k(&self.model, codec, test, &self.scorer, settings)
                })?;
                self.insert_with_ci(&mut m, &format!("pass@{}", e.pass_k), &[s]);
            }
        }
        Ok(m)
    }

    fn state(&self) -> Result<State> {
        let s = SavedState {
            math_next: self.stream.math_next,
            jsonl: self.stream.jsonl_cursor.as_ref().map(Cursor::state),
            general: self.stream.general_cursor.as_ref().map(Cursor::state),
            code: self.stream.code_cursor.as_ref().map(Cursor::state),
            draws: self.stream.draws,
            rows: self.stream.rows,
            buffer: self.stream.packer.buf.clone(),
            feedback: self.feedback.iter().map(|f| f.cursor.state()).collect(),
        };
        Ok(State {
            json: serde_json::to_value(s).map_err(|e| Error::msg(format!("task state: {e}")))?,
            tensors: TensorMap::new(),
        })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let s: SavedState = serde_json::from_value(state.json)
            .map_err(|e| Error::msg(format!("causal_lm state does not match this version: {e}")))?;
        if s.feedback.len() != self.feedback.len() {
            return Err(Error::msg(format!(
                "causal_lm state has {} feedback cursors, the config has {} sets",
                s.feedback.len(),
                self.feedback.len()
            )));
        }
        let vocab = self.model.config().vocab_size;
        if let Some(id) = s.buffer.ids.iter().find(|&&id| id < 0 || id >= vocab) {
            return Err(Error::config(
                "buffer",
                format!("token id {id} is outside the vocabulary (0..{vocab})"),
            ));
        }
        self.stream.math_next = s.math_next;
        self.stream.draws = s.draws;
        self.stream.rows = s.rows;
        self.stream.packer.buf = s.buffer;
        if let (Some(c), Some(st)) = (self.stream.jsonl_cursor.as_mut(), s.jsonl) {
            c.restore(st);
        }
        if let (Some(c), Some(st)) = (self.stream.general_cursor.as_mut(), s.general) {
            c.restore(st);
        }
        if let (Some(c), Some(st)) = (self.stream.code_cursor.as_mut(), s.code) {
            c.restore(st);
        }
        for (f, st) in self.feedback.iter_mut().zip(s.feedback) {
            f.cursor.restore(st);
        }
        if let Some(c) = self.prefix_cache.as_mut() {
            c.clear(); // θ is restored too: start from it
        }
        Ok(())
    }

    fn export(&self, request: &ExportRequest) -> Result<Vec<std::path::PathBuf>> {
        crate::export::export(
            &self.cfg.model,
            &self.cfg.trainable,
            self.model.config(),
            &self.vs,
            request,
        )
    }
}
