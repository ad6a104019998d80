//! The crate's error enum: every variant names the operation and, once a group exists, the rank.
use std::time::Duration;

/// Errors of vpt-dist.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable of the torchrun contract is missing or malformed.
    #[error("distributed launch: environment variable {var} {reason} (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)")]
    Env {
        /// The variable, e.g. `MASTER_PORT`.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument of a call is invalid (rank out of range, empty address, ...).
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation, e.g. `ProcessGroup::new`.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The requested backend is not usable in this build or on this machine.
    #[error("rank {rank}: {backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// This process's rank.
        rank: usize,
        /// `gloo` or `nccl`.
        backend: &'static str,
        /// Why (e.g. not compiled in, no CUDA device).
        reason: String,
    },
    /// Rendezvous or process-group construction failed (peer never came, port taken, ...).
    #[error("rank {rank}/{world}: could not form the process group at {addr}:{port} within {timeout:?}: {message}")]
    Init {
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// MASTER_ADDR.
        addr: String,
        /// MASTER_PORT.
        port: u16,
        /// The rendezvous timeout.
        timeout: Duration,
        /// The message from c10d.
        message: String,
    },
    /// A collective failed: a peer died or hung past the timeout, or the tensor was unusable.
    #[error("rank {rank}/{world}: {op} failed{}: {message}", if *.timed_out { " (timeout or lost peer)" } else { "" })]
    Collective {
        /// The collective, e.g. `all_reduce_sum`.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// Whether c10d reported a timeout or a closed connection (a dead or stuck peer).
        timed_out: bool,
        /// The message from c10d.
        message: String,
    },
    /// A tensor operation around a collective (flatten, copy back) failed.
    #[error("rank {rank}: {op}: {source}")]
    Torch {
        /// The operation, e.g. `all_reduce_grads: flatten`.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The tch error.
        #[source]
        source: tch::TchError,
    },
}

/// Result alias of vpt-dist.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether a c10d/gloo message says a peer timed out or went away.
pub(crate) fn looks_like_timeout(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "timed out",
        "timeout",
        "connection closed",
        "connection reset",
        "broken pipe",
        "peer",
    ]
    .iter()
    .any(|k| m.contains(k))
}
