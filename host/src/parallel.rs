//! Data parallelism on PyTorch's c10d (through vpt-dist), following DESIGN §5: learner
//! gradients are averaged; in the meta step the detached g_down is averaged once, each rank
//! takes its local alignment with its own g_pre, and ∇φ is averaged — exact, with no
//! differentiable collective.

use crate::{Error, Result};
use std::time::Duration;
use tch::Tensor;
use vpt_dist::{Backend, ProcessGroup};
use vpt_sdk::TensorMap;

/// Seconds a collective may wait for a peer (`VPT_DIST_TIMEOUT` overrides). Generous, because
/// rank 0 evaluates and checkpoints while the others wait; a peer that dies is reported at once
/// (its connection closes), not after the timeout.
const DEFAULT_TIMEOUT_SECS: u64 = 1800;

/// A data-parallel group of ranks.
pub struct DataParallel {
    pg: ProcessGroup,
}

fn dist_err(op: &str) -> impl Fn(vpt_dist::Error) -> Error + '_ {
    move |e| Error::Msg(format!("data parallel {op}: {e}"))
}

impl DataParallel {
    /// Forms the group from the torchrun environment; `None` when `WORLD_SIZE` is unset or 1.
    pub fn from_env(device: &str) -> Result<Option<DataParallel>> {
        let secs = std::env::var("VPT_DIST_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        let backend = if device.starts_with("cuda") {
            Backend::Nccl
        } else {
            Backend::Gloo
        };
        let pg =
            ProcessGroup::from_env(backend, Duration::from_secs(secs)).map_err(dist_err("init"))?;
        Ok(pg.map(|pg| DataParallel { pg }))
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.pg.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.pg.world_size()
    }

    /// Averages tensors across ranks in place (one flattened collective).
    pub fn mean(&self, ts: &mut [Tensor]) -> Result<()> {
        self.pg.all_reduce_grads(ts).map_err(dist_err("all_reduce"))
    }

    /// The mean of a scalar across ranks.
    pub fn mean_scalar(&self, x: f64) -> Result<f64> {
        let mut t = [Tensor::from_slice(&[x])];
        self.mean(&mut t)?;
        Ok(t[0].double_value(&[0]))
    }

    /// Copies rank 0's values of `params` to every rank.
    pub fn broadcast(&self, params: &TensorMap) -> Result<()> {
        let mut ts: Vec<Tensor> = params.tensors().map(Tensor::shallow_clone).collect();
        self.pg
            .broadcast_params(&mut ts)
            .map_err(dist_err("broadcast"))
    }
}

/// Averages `ts` across ranks when data-parallel; a no-op otherwise.
pub fn mean_across(dp: Option<&DataParallel>, ts: &mut [Tensor]) -> Result<()> {
    match dp {
        Some(dp) => dp.mean(ts),
        None => Ok(()),
    }
}
