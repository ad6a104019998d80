//! A bounded cache of the input of S for feedback examples.
//!
//! When no parameter below S is trainable, the hidden states entering S's first block are a
//! constant of each feedback example, so g_down needs only S and the head once an example has
//! been seen. The cache keeps, per example (set, index), the detached input of S at the
//! example's first `len` positions, `len` = its last loss-bearing position + 1: causal attention
//! makes the hidden states there independent of anything later (the batch's padding included),
//! and no later position carries loss. Rows are reassembled into a batch of any padded length
//! with zeros after `len`; those positions reach neither the loss nor, through causal attention,
//! any loss-bearing position, so the loss and its gradient are those of the uncached pass.
//!
//! The cache is filled as examples are drawn (first come, until `budget` bytes are held) and is
//! only built when the caller has established that every parameter below S is frozen.

use std::collections::HashMap;
use tch::{Kind, Tensor};
use vpt_sdk::{Result, TchContext};

/// An example's identity: (feedback set, index in its training split).
pub type ExampleKey = (u32, i64);

/// Detached inputs of S per feedback example, at most `budget` bytes in all.
pub struct PrefixCache {
    budget: usize,
    used: usize,
    rows: HashMap<ExampleKey, Tensor>,
    hits: u64,
    misses: u64,
}

impl PrefixCache {
    /// An empty cache that holds at most `budget` bytes of hidden states.
    pub fn new(budget: usize) -> Self {
        PrefixCache {
            budget,
            used: 0,
            rows: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Forgets every row (θ below S may have changed).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.used = 0;
    }

    /// Bytes of hidden states held.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// (hits, misses) of rows so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The input of S (B,T,d) for a batch of `keys` (B) whose row b needs its first `lens[b]`
    /// positions (≤ T): cached rows as they are, the others from `compute(rows)`, which must
    /// return the detached input of S (R,T,d) of the batch rows `rows` (in that order); those are
    /// cached while the budget lasts. Positions at or after a row's `len` are zero.
    pub fn s_input(
        &mut self,
        keys: &[ExampleKey],
        lens: &[i64],
        t: i64,
        compute: impl FnOnce(&[i64]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let missing: Vec<i64> = (0..keys.len() as i64)
            .filter(|&b| !self.rows.contains_key(&keys[b as usize]))
            .collect();
        self.hits += (keys.len() - missing.len()) as u64;
        self.misses += missing.len() as u64;
        let fresh = if missing.is_empty() {
            None
        } else {
            Some(compute(&missing)?)
        };
        let mut parts = Vec::with_capacity(keys.len());
        let mut fresh_rows = HashMap::new();
        for (j, &b) in missing.iter().enumerate() {
            let row = fresh
                .as_ref()
                .expect("computed when rows are missing")
                .f_select(0, j as i64)?
                .f_narrow(0, 0, lens[b as usize])?
                .f_detach()?;
            fresh_rows.insert(b, row);
        }
        for (b, key) in keys.iter().enumerate() {
            let row = match fresh_rows.remove(&(b as i64)) {
                Some(row) => {
                    let bytes = row.numel() * row.kind().elt_size_in_bytes();
                    if self.used + bytes <= self.budget && !self.rows.contains_key(key) {
                        // a compact copy: the slice would keep the whole computed batch alive
                        let own = row.f_contiguous()?.copy();
                        self.used += bytes;
                        self.rows.insert(*key, own);
                    }
                    row
                }
                None => self.rows[key].shallow_clone(),
            };
            parts.push(pad_positions(&row, t)?);
        }
        Tensor::f_stack(&parts, 0).op("prefix batch")
    }
}

/// `row` (L,d) followed by zeros up to T positions: (T,d).
fn pad_positions(row: &Tensor, t: i64) -> Result<Tensor> {
    let (l, d) = (row.size()[0], row.size()[1]);
    if l >= t {
        return row.f_narrow(0, 0, t).op("prefix positions");
    }
    let zeros = Tensor::f_zeros([t - l, d], (row.kind(), row.device()))?;
    Tensor::f_cat(&[row, &zeros], 0).op("prefix padding")
}

/// Per row of `mask` (B,T), the number of leading positions that matter for its loss: the last
/// position with mask ≠ 0, plus one (0 for a row without loss).
pub fn loss_lengths(mask: &Tensor) -> Result<Vec<i64>> {
    let t = mask.size()[1];
    // position index + 1 where the mask is on, 0 elsewhere; the row maximum is the length
    let pos = Tensor::f_arange_start(1, t + 1, (Kind::Int64, mask.device()))?;
    let on = mask.f_ne(0.0)?.f_to_kind(Kind::Int64)?;
    let lens = (on * pos.f_unsqueeze(0)?).f_amax(-1i64, false)?;
    Vec::<i64>::try_from(&lens).map_err(|e| vpt_sdk::Error::msg(format!("loss lengths: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_lengths_end_at_the_last_loss_position() {
        let mask =
            Tensor::from_slice(&[0f32, 1., 1., 0., 0., 0., 1., 0., 0., 0., 0., 0.]).reshape([3, 4]);
        assert_eq!(loss_lengths(&mask).unwrap(), vec![3, 3, 0]);
    }

    #[test]
    fn rows_are_computed_once_kept_within_budget_and_padded_with_zeros() {
        let d = 3;
        let full = Tensor::randn([2, 5, d], (Kind::Float, tch::Device::Cpu));
        // room for one 4-position row only
        let mut c = PrefixCache::new(4 * d as usize * 4);
        let keys = [(0, 7), (0, 9)];
        let a = c
            .s_input(&keys, &[4, 2], 5, |rows| {
                assert_eq!(rows, &[0, 1]);
                Ok(full.shallow_clone())
            })
            .unwrap();
        assert_eq!(a.size(), vec![2, 5, d]);
        assert!(a.get(0).narrow(0, 0, 4).equal(&full.get(0).narrow(0, 0, 4)));
        assert!(a.get(1).narrow(0, 0, 2).equal(&full.get(1).narrow(0, 0, 2)));
        assert_eq!(
            a.get(1)
                .narrow(0, 2, 3)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
        assert_eq!(c.bytes(), 4 * d as usize * 4);
        // (0,7) is cached; (0,9) did not fit and is computed again, alone; T may differ
        let b = c
            .s_input(&[(0, 9), (0, 7)], &[2, 4], 4, |rows| {
                assert_eq!(rows, &[0]);
                Ok(full.get(1).narrow(0, 0, 4).unsqueeze(0))
            })
            .unwrap();
        assert!(b.get(1).equal(&full.get(0).narrow(0, 0, 4)));
        assert!(b.get(0).narrow(0, 0, 2).equal(&full.get(1).narrow(0, 0, 2)));
        assert_eq!(c.counts(), (1, 3));
        c.clear();
        assert_eq!(c.bytes(), 0);
    }
}
