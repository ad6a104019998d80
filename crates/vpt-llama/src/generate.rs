//! Generation with a KV cache: [`Llama::generate`] (greedy or temperature sampling, one
//! prompt) and [`Llama::generate_greedy_batch`] (left-padded prompts decoded together).

use crate::model::{Attention, Llama};
use tch::{Device, Kind, Tensor};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Error, Result, TchContext};

/// How [`Llama::generate`] picks the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The arg-max token (first on ties).
    Greedy,
    /// Sample from softmax(logits / t) with a private RNG seeded by `seed` (the shared torch RNG
    /// is not touched).
    Temperature {
        /// Temperature, > 0.
        t: f64,
        /// Seed of the private RNG.
        seed: u64,
    },
}

impl Llama {
    /// Generates up to `max_new` tokens after `prompt` (no grad, KV cache, fused attention) and
    /// returns only the new tokens. Stops before emitting any token in `stop`, or when the
    /// sequence would pass `max_position`.
    pub fn generate(
        &self,
        prompt: &[i64],
        max_new: usize,
        sampling: Sampling,
        stop: &[i64],
    ) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::msg("generate: empty prompt"));
        }
        if let Sampling::Temperature { t, .. } = sampling {
            if !(t > 0.0 && t.is_finite()) {
                return Err(Error::config(
                    "sampling.t",
                    format!("temperature must be positive, got {t}"),
                ));
            }
        }
        let mut rng = match sampling {
            Sampling::Temperature { seed, .. } => SplitMix64::new(seed),
            Sampling::Greedy => SplitMix64::new(0),
        };
        tch::no_grad(|| {
            let mut cache: Vec<Option<(Tensor, Tensor)>> =
                (0..self.config().num_layers).map(|_| None).collect();
            let mut input = prompt.to_vec();
            let mut pos = 0i64;
            let mut out = Vec::new();
            while out.len() < max_new && pos + input.len() as i64 <= self.config().max_position {
                let t = input.len() as i64;
                let ids = Tensor::from_slice(&input)
                    .f_view([1, t])?
                    .f_to(self.device())?;
                let h = self.forward_at(&ids, Attention::Fused, Some(&mut cache), pos)?; // (1, t, d)
                pos += t;
                let last = self.logits(&h.f_narrow(1, t - 1, 1)?)?; // (1, 1, V)
                let logits = Vec::<f64>::try_from(
                    &last
                        .f_view([-1])?
                        .f_to_kind(Kind::Double)?
                        .f_to(Device::Cpu)?,
                )
                .op("logits to host")?;
                let next = match sampling {
                    Sampling::Greedy => argmax(&logits),
                    Sampling::Temperature { t, .. } => sample(&logits, t, rng.uniform()),
                };
                if stop.contains(&next) {
                    break;
                }
                out.push(next);
                input = vec![next];
            }
            Ok(out)
        })
    }

    /// Greedy continuations of several prompts decoded together (no grad, KV cache, fused
    /// attention): prompts are left-padded to a common length and the padding is masked; RoPE
    /// scores depend only on relative positions, so each row decodes as it would alone (up to
    /// float rounding). Returns each prompt's new tokens; a row stops before emitting any token in
    /// `stop`, all rows stop at `max_new` or when the batch would pass `max_position`.
    pub fn generate_greedy_batch(
        &self,
        prompts: &[Vec<i64>],
        max_new: usize,
        stop: &[i64],
    ) -> Result<Vec<Vec<i64>>> {
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(Error::msg(format!(
                "generate_greedy_batch: prompt {i} is empty"
            )));
        }
        let b = prompts.len();
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
        if b == 0 || max_new == 0 {
            return Ok(out);
        }
        let filler = stop.first().copied().unwrap_or(0);
        let mut ids = Vec::with_capacity(b * len);
        let mut pad = Vec::with_capacity(b * len);
        for p in prompts {
            let n = len - p.len();
            ids.extend(std::iter::repeat_n(filler, n).chain(p.iter().copied()));
            pad.extend((0..len).map(|j| j < n));
        }
        let (b, len) = (b as i64, len as i64);
        tch::no_grad(|| {
            let mut cache: Vec<Option<(Tensor, Tensor)>> =
                (0..self.config().num_layers).map(|_| None).collect();
            let mut key_pad = Tensor::from_slice(&pad)
                .f_view([b, len])?
                .f_to(self.device())?; // (B, S) true = padding
            let mut input = Tensor::from_slice(&ids)
                .f_view([b, len])?
                .f_to(self.device())?;
            let mut pos = 0i64;
            let mut done = vec![false; b as usize];
            loop {
                let t = input.size()[1];
                if pos + t > self.config().max_position {
                    break;
                }
                let h = self.forward_padded(
                    &input,
                    Attention::Fused,
                    Some(&mut cache),
                    pos,
                    Some(&key_pad),
                )?; // (B, t, d)
                pos += t;
                let last = self.logits(&h.f_narrow(1, t - 1, 1)?)?; // (B, 1, V)
                                                                    // One device→host copy per step: the arg-max of each row.
                let next = Vec::<i64>::try_from(
                    &last.f_argmax(-1, false)?.f_view([-1])?.f_to(Device::Cpu)?,
                )
                .op("next tokens to host")?;
                for (i, &tok) in next.iter().enumerate() {
                    if done[i] {
                        continue;
                    }
                    if stop.contains(&tok) {
                        done[i] = true;
                    } else {
                        out[i].push(tok);
                        done[i] = out[i].len() >= max_new;
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
                let fed: Vec<i64> = next
                    .iter()
                    .zip(&done)
                    .map(|(&tok, &d)| if d { filler } else { tok })
                    .collect();
                input = Tensor::from_slice(&fed)
                    .f_view([b, 1])?
                    .f_to(self.device())?;
                key_pad = Tensor::f_cat(
                    &[
                        key_pad,
                        Tensor::f_zeros([b, 1], (Kind::Bool, self.device()))?,
                    ],
                    1,
                )?;
            }
            Ok(out)
        })
    }
}

/// Index of the largest value (first on ties).
fn argmax(v: &[f64]) -> i64 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as i64
}

/// Draws from softmax(logits / t) with the uniform number `u` in [0, 1).
fn sample(logits: &[f64], t: f64, u: f64) -> i64 {
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|l| ((l - m) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    for (i, x) in w.iter().enumerate() {
        acc += x / total;
        if u < acc {
            return i as i64;
        }
    }
    argmax(logits)
}
