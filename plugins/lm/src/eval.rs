//! Evaluation with per-example results: token-mean NLL per example (feedback NLL is their mean,
//! paper eq. 38), test scores by batched greedy decoding (exact / numeric scorers) or by
//! option log-likelihood (multiple choice), pass@k by sampling, and seeded bootstrap intervals.

use crate::data::{self, Codec, Example, Row};
use crate::scorer::Scorer;
use tch::{Device, Kind};
use vpt_llama::{Attention, Llama, Sampling};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Error, Result, TchContext};

/// Token-mean NLL of each row's masked targets, in batches of `batch` rows (no grad, fused
/// attention). A row with no target gets NaN.
pub fn row_nlls(model: &Llama, rows: &[Row], batch: usize, pad: i64) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch.max(1)) {
        let t = data::rows_to_tensors(&data::pad_rows(chunk.to_vec(), pad), model.device())?;
        let (ids, targets, mask) = (t.require("ids")?, t.require("targets")?, t.require("mask")?);
        let v = tch::no_grad(|| -> Result<Vec<f64>> {
            let hidden = model.forward_hidden(ids, Attention::Fused)?;
            let lp = model
                .logits(&hidden)?
                .f_log_softmax(-1, Kind::Float)?
                .f_gather(-1, &targets.f_unsqueeze(-1)?, false)?
                .f_squeeze_dim(-1)?; // (B, T)
            let mask = mask.f_to_kind(Kind::Double)?;
            let sum = lp
                .f_to_kind(Kind::Double)?
                .f_mul(&mask)?
                .f_sum_dim_intlist(-1i64, false, Kind::Double)?
                .f_neg()?;
            let count = mask.f_sum_dim_intlist(-1i64, false, Kind::Double)?;
            Vec::<f64>::try_from(&sum.f_div(&count)?.f_to(Device::Cpu)?).op("NLL to host")
        })?;
        out.extend(v);
    }
    Ok(out)
}

/// 1.0 / 0.0 per example: greedy answers decoded `batch` prompts at a time (prompts of similar
/// length together, so little padding), judged by `scorer` (exact or numeric).
pub fn generation_scores(
    model: &Llama,
    codec: &dyn Codec,
    examples: &[Example],
    scorer: &Scorer,
    max_new_tokens: usize,
    batch: usize,
) -> Result<Vec<f64>> {
    let eos = codec.eos_id();
    let prompts = examples
        .iter()
        .map(|ex| codec.encode(&codec.chat_prompt(&ex.prompt)))
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut out = vec![0.0; examples.len()];
    for chunk in order.chunks(batch.max(1)) {
        let group: Vec<Vec<i64>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let answers = model.generate_greedy_batch(&group, max_new_tokens, &[eos])?;
        for (&i, ids) in chunk.iter().zip(answers) {
            out[i] = f64::from(u8::from(
                scorer.is_correct(&codec.decode(&ids)?, &examples[i]),
            ));
        }
    }
    Ok(out)
}

/// 1.0 / 0.0 per multiple-choice example: right when the reference is the option of lowest
/// token-mean NLL after the prompt (rows of at most `max_len` tokens; the options of all examples
/// are scored `batch` rows at a time).
pub fn choice_scores(
    model: &Llama,
    codec: &dyn Codec,
    examples: &[Example],
    max_len: usize,
    batch: usize,
) -> Result<Vec<f64>> {
    let mut rows = Vec::new();
    let mut answers = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        answers.push(ex.answer_option().ok_or_else(|| {
            Error::msg(format!(
                "multiple-choice example {i} has no option equal to its response"
            ))
        })?);
        for o in &ex.options {
            rows.push(data::continuation_row(codec, &ex.prompt, o, max_len)?);
        }
    }
    let nll = row_nlls(model, &rows, batch, codec.eos_id())?;
    let mut at = 0;
    let mut out = Vec::with_capacity(examples.len());
    for (ex, answer) in examples.iter().zip(answers) {
        let options = &nll[at..at + ex.options.len()];
        at += ex.options.len();
        let best = options
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(j, _)| j);
        out.push(f64::from(u8::from(best == Some(answer))));
    }
    Ok(out)
}

/// Settings of [`pass_at_k`].
#[derive(Debug, Clone, Copy)]
pub struct PassAt {
    /// Longest generated answer in tokens.
    pub max_new_tokens: usize,
    /// Samples per problem.
    pub k: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Seed of the samplers (each sample gets its own stream).
    pub seed: u64,
}

/// 1.0 / 0.0 per example: whether any of `k` temperature samples is right under `scorer`.
pub fn pass_at_k(
    model: &Llama,
    codec: &dyn Codec,
    examples: &[Example],
    scorer: &Scorer,
    s: PassAt,
) -> Result<Vec<f64>> {
    let eos = codec.eos_id();
    let mut out = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let prompt = codec.encode(&codec.chat_prompt(&ex.prompt))?;
        let mut any = false;
        for j in 0..s.k {
            let seed = SplitMix64::stream(s.seed ^ 0x9A55, (i * 1000 + j) as u64).next_u64();
            let sampling = Sampling::Temperature {
                t: s.temperature,
                seed,
            };
            let ids = model.generate(&prompt, s.max_new_tokens, sampling, &[eos])?;
            any |= scorer.is_correct(&codec.decode(&ids)?, ex);
            if any {
                break;
            }
        }
        out.push(f64::from(u8::from(any)));
    }
    Ok(out)
}

/// Mean of `xs` (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The statistic of [`bootstrap_ci`]: the mean over groups of each group's mean.
pub fn mean_of_means(groups: &[Vec<f64>]) -> f64 {
    mean(&groups.iter().map(|g| mean(g)).collect::<Vec<_>>())
}

/// 95 % percentile-bootstrap interval of [`mean_of_means`]: `resamples` draws, each group
/// resampled with replacement over its own examples; deterministic in `seed`. Empty groups are
/// skipped; `(NaN, NaN)` when none is left.
pub fn bootstrap_ci(groups: &[Vec<f64>], seed: u64, resamples: usize) -> (f64, f64) {
    let groups: Vec<&Vec<f64>> = groups.iter().filter(|g| !g.is_empty()).collect();
    if groups.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut stats: Vec<f64> = (0..resamples as u64)
        .map(|r| {
            let mut rng = SplitMix64::stream(seed ^ 0xB007_57A9, r);
            let means: Vec<f64> = groups
                .iter()
                .map(|g| {
                    let n = g.len() as u64;
                    (0..n)
                        .map(|_| g[(rng.next_u64() % n) as usize])
                        .sum::<f64>()
                        / n as f64
                })
                .collect();
            mean(&means)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ByteCodec;
    use crate::scorer::ScorerConfig;
    use tch::nn;
    use vpt_llama::Config;

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let xs: Vec<f64> = (0..200).map(|i| f64::from(i % 7 == 0)).collect();
        let (lo, hi) = bootstrap_ci(std::slice::from_ref(&xs), 1, 1000);
        let m = mean(&xs);
        assert!(lo < m && m < hi, "{lo} {m} {hi}");
        // Binomial standard error ≈ 0.024: the 95 % interval is about ±0.047 wide.
        assert!((hi - lo) > 0.05 && (hi - lo) < 0.15, "{lo} {hi}");
        assert_eq!(bootstrap_ci(std::slice::from_ref(&xs), 1, 1000), (lo, hi));
        assert_ne!(bootstrap_ci(std::slice::from_ref(&xs), 2, 1000), (lo, hi));
        // Constant data has a zero-width interval; two groups use the mean of means.
        assert_eq!(bootstrap_ci(&[vec![2.0; 9]], 0, 50), (2.0, 2.0));
        let (lo, hi) = bootstrap_ci(&[vec![1.0; 5], vec![3.0; 50]], 0, 50);
        assert_eq!((lo, hi), (2.0, 2.0));
        assert_eq!(mean_of_means(&[vec![1.0; 5], vec![3.0; 50]]), 2.0);
        assert!(bootstrap_ci(&[vec![]], 0, 50).0.is_nan());
    }

    fn tiny() -> (nn::VarStore, Llama) {
        tch::set_num_threads(2);
        tch::manual_seed(0);
        let mut cfg = Config::tiny();
        cfg.vocab_size = ByteCodec::VOCAB as i64;
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Llama::new(&vs.root(), &cfg);
        (vs, m)
    }

    #[test]
    fn row_nlls_are_per_example_token_means() {
        let (_vs, m) = tiny();
        let a =
            data::example_row(&ByteCodec, &Example::new("q", "a much longer answer"), 99).unwrap();
        let b = data::example_row(&ByteCodec, &Example::new("q", "ab"), 99).unwrap();
        let both = row_nlls(&m, &[a.clone(), b.clone()], 2, 256).unwrap();
        let one = [
            row_nlls(&m, &[a], 1, 256).unwrap()[0],
            row_nlls(&m, &[b], 1, 256).unwrap()[0],
        ];
        // Padding does not change a row's value, and each is a token mean (≈ ln V at init).
        for (x, y) in both.iter().zip(one) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            assert!((x - (257f64).ln()).abs() < 1.0, "{x}");
        }
    }

    #[test]
    fn scores_follow_the_model() {
        let (_vs, m) = tiny();
        let codec = ByteCodec;
        // What the model says greedily is, by construction, the right answer under exact match.
        let prompts = ["hi", "a longer prompt"];
        let mut examples = Vec::new();
        for p in prompts {
            let ids = codec.encode(&codec.chat_prompt(p)).unwrap();
            let out = m.generate(&ids, 5, Sampling::Greedy, &[256]).unwrap();
            examples.push(Example::new(p, codec.decode(&out).unwrap()));
        }
        examples.push(Example::new("x", "certainly not this"));
        let exact = Scorer::new(&ScorerConfig::Exact, "t").unwrap();
        let got = generation_scores(&m, &codec, &examples, &exact, 5, 16).unwrap();
        assert_eq!(got, vec![1.0, 1.0, 0.0]);
        // Multiple choice picks the option of lowest NLL: make the reference that one.
        let opts = vec!["aaaa".to_string(), "zq".to_string(), "0 1".to_string()];
        let rows: Vec<Row> = opts
            .iter()
            .map(|o| data::continuation_row(&codec, "pick", o, 99).unwrap())
            .collect();
        let nll = row_nlls(&m, &rows, 3, 256).unwrap();
        let best = (0..3).min_by(|&i, &j| nll[i].total_cmp(&nll[j])).unwrap();
        let worst = (0..3).max_by(|&i, &j| nll[i].total_cmp(&nll[j])).unwrap();
        let mut mc = Example::new("pick", opts[best].clone());
        mc.options = opts.clone();
        let mut wrong = mc.clone();
        wrong.response = opts[worst].clone();
        assert_eq!(
            choice_scores(&m, &codec, &[mc, wrong], 99, 4).unwrap(),
            vec![1.0, 0.0]
        );
    }

    /// On the real model (skipped when `VPT_SMOLLM2_GGUF` is unset, like the other SmolLM2
    /// tests): batched decoding of 16 GSM8K test prompts gives the one-at-a-time answers, and
    /// prints both throughputs (the before/after of batched evaluation).
    #[test]
    fn smollm2_batched_greedy_agrees_and_reports_tokens_per_second() {
        let Ok(path) = std::env::var("VPT_SMOLLM2_GGUF") else {
            eprintln!("skipping: VPT_SMOLLM2_GGUF is unset");
            return;
        };
        tch::set_num_threads(2);
        let (cfg, vs, tok) = vpt_llama::gguf::load_gguf(&path, Device::Cpu).unwrap();
        let m = Llama::new(&vs.root(), &cfg);
        let test = crate::labeled::read_set(
            crate::labeled::SetKind::Gsm8kJsonl,
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../data/gsm8k/test.jsonl"
            )),
            None,
            None,
        )
        .unwrap();
        let prompts: Vec<Vec<i64>> = test[..16]
            .iter()
            .map(|e| tok.encode(&tok.chat_prompt(&e.prompt), false).unwrap())
            .collect();
        let (max_new, eos) = (48, tok.eos_id());
        let t0 = std::time::Instant::now();
        let alone: Vec<Vec<i64>> = prompts
            .iter()
            .map(|p| m.generate(p, max_new, Sampling::Greedy, &[eos]).unwrap())
            .collect();
        let t_alone = t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let batch = m.generate_greedy_batch(&prompts, max_new, &[eos]).unwrap();
        let t_batch = t0.elapsed().as_secs_f64();
        let n: usize = alone.iter().map(Vec::len).sum();
        let same = alone.iter().zip(&batch).filter(|(a, b)| a == b).count();
        eprintln!(
            "greedy decoding, 16 GSM8K prompts × ≤{max_new} tokens, {} threads: one at a time \
             {:.1} tokens/s, batched {:.1} tokens/s ({:.2}×); {same}/16 identical",
            tch::get_num_threads(),
            n as f64 / t_alone,
            batch.iter().map(Vec::len).sum::<usize>() as f64 / t_batch,
            t_alone / t_batch
        );
        // f32 rounding differs between padded and unpadded shapes; a near-tie may flip late.
        assert!(same >= 14, "only {same}/16 batched answers match");
        for (a, b) in alone.iter().zip(&batch) {
            assert_eq!(a[..8], b[..8], "answers diverge early");
        }
    }
}
