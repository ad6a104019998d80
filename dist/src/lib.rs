//! vpt-dist: data parallelism for vpt on PyTorch's own c10d (Gloo on CPU, NCCL on GPU).
//!
//! A small C++ shim (`cpp/vpt_dist.cpp`, compiled against the headers of the libtorch that tch
//! links) exposes a TCPStore rendezvous and a c10d process group through a C API; this crate
//! wraps it in [`ProcessGroup`]. Launch with the torchrun contract (see `dist/README.md`):
//!
//! ```no_run
//! # fn main() -> vpt_dist::Result<()> {
//! use std::time::Duration;
//! use vpt_dist::{Backend, ProcessGroup};
//! if let Some(pg) = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(300))? {
//!     let mut grads = vec![tch::Tensor::ones([3], (tch::Kind::Float, tch::Device::Cpu))];
//!     pg.all_reduce_grads(&mut grads)?; // mean over ranks, one collective
//! }
//! # Ok(()) }
//! ```
//!
//! Linking: the shim is a static library linked into this rlib, and it needs `libtorch_cpu`
//! and `libc10` (already linked by torch-sys). A final binary only needs libtorch's lib dir on
//! its rpath, as every vpt binary already sets in its build.rs.

mod env;
mod error;
mod ffi;
mod group;
mod shard;

pub use env::DistEnv;
pub use error::{Error, Result};
pub use group::{Backend, ProcessGroup};
pub use shard::{owns, shard_range};
