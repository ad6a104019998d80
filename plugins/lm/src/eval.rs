//! Evaluation helpers: numeric answer extraction (after `####`, else the last number) and
//! pass@k of a model's generated answers on GSM8K-format problems.

use crate::data::{Codec, QaExample, SplitMix};
use crate::model::{Llama, Sampling};
use vpt_sdk::Result;

fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s.chars().filter(|c| *c != ',' && *c != '$').collect();
    cleaned.trim().trim_end_matches('.').parse::<f64>().ok()
}

/// The number after the last `####` (GSM8K's final-answer marker), if any.
pub fn final_answer(text: &str) -> Option<f64> {
    let (_, tail) = text.rsplit_once("####")?;
    first_number(tail)
}

fn numbers(text: &str) -> Vec<f64> {
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

fn first_number(text: &str) -> Option<f64> {
    numbers(text).into_iter().next()
}

/// A model answer's number: after `####` when present, else the last number in the text.
pub fn extract_answer(text: &str) -> Option<f64> {
    match text.rsplit_once("####") {
        Some((_, tail)) => first_number(tail),
        None => numbers(text).into_iter().last(),
    }
}

/// True when `predicted` equals `reference` numerically (to 1e-6 relative).
pub fn answers_match(predicted: Option<f64>, reference: f64) -> bool {
    predicted.is_some_and(|p| (p - reference).abs() <= 1e-6 * reference.abs().max(1.0))
}

/// Settings of [`pass_at`].
#[derive(Debug, Clone, Copy)]
pub struct PassAt {
    /// Longest generated answer in tokens.
    pub max_new_tokens: usize,
    /// Samples per problem for pass@k (0 = greedy pass@1 only).
    pub k: usize,
    /// Sampling temperature for pass@k.
    pub temperature: f64,
    /// Seed of the samplers (each sample gets its own stream).
    pub seed: u64,
}

/// Fraction of `problems` solved by greedy decoding (pass@1) and, when `k > 0`, by any of `k`
/// temperature samples (pass@k). Answers are compared numerically.
pub fn pass_at(
    model: &Llama,
    codec: &dyn Codec,
    problems: &[QaExample],
    s: PassAt,
) -> Result<(f64, Option<f64>)> {
    let (mut hit1, mut hitk) = (0usize, 0usize);
    let eos = codec.eos_id();
    let solved = |ids: &[i64], reference: f64| -> Result<bool> {
        Ok(answers_match(
            extract_answer(&codec.decode(ids)?),
            reference,
        ))
    };
    for (i, ex) in problems.iter().enumerate() {
        let Some(reference) = final_answer(&ex.answer) else {
            return Err(vpt_sdk::Error::msg(format!(
                "test problem {i} has no `#### N` answer"
            )));
        };
        let prompt = codec.encode(&codec.chat_prompt(&ex.question))?;
        let greedy = model.generate(&prompt, s.max_new_tokens, Sampling::Greedy, &[eos])?;
        hit1 += usize::from(solved(&greedy, reference)?);
        let mut any = false;
        for j in 0..s.k {
            let seed = SplitMix::new(s.seed ^ 0x9A55, (i * 1000 + j) as u64).next_u64();
            let out = model.generate(
                &prompt,
                s.max_new_tokens,
                Sampling::Temperature {
                    t: s.temperature,
                    seed,
                },
                &[eos],
            )?;
            any |= solved(&out, reference)?;
        }
        hitk += usize::from(any);
    }
    let n = problems.len().max(1) as f64;
    Ok((hit1 as f64 / n, (s.k > 0).then_some(hitk as f64 / n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_extracted_numerically() {
        assert_eq!(extract_answer("so 3 + 4 = 7\n#### 1,234"), Some(1234.0));
        assert_eq!(extract_answer("The answer is $18."), Some(18.0));
        assert_eq!(extract_answer("from 5 to -3.5 degrees"), Some(-3.5));
        assert_eq!(extract_answer("no numbers"), None);
        assert_eq!(final_answer("x #### 42."), Some(42.0));
        assert!(answers_match(Some(72.0), 72.0));
        assert!(!answers_match(Some(71.0), 72.0));
        assert!(!answers_match(None, 72.0));
    }
}
