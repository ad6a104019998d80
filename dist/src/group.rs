//! `ProcessGroup`: a c10d process group (TCPStore rendezvous + Gloo or NCCL) and its collectives.
use std::ffi::{c_int, c_void, CString};
use std::ops::Range;
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::env::DistEnv;
use crate::error::{looks_like_timeout, Error, Result};
use crate::ffi;

/// The c10d backend of a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP: CPU tensors (any machine).
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank (`LOCAL_RANK` picks it).
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`: NCCL for CUDA when it is usable, else Gloo.
    pub fn for_device(device: Device) -> Backend {
        match device {
            Device::Cuda(_) if Backend::nccl_available() => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }

    /// Whether NCCL was compiled into this build and a CUDA device is present now.
    pub fn nccl_available() -> bool {
        // SAFETY: no arguments; the shim catches every exception.
        unsafe { ffi::vpt_dist_nccl_available() == 1 }
    }

    /// Why NCCL is or is not in this build (`"compiled"`, or the reason found at build time).
    pub fn nccl_build_status() -> &'static str {
        env!("VPT_DIST_NCCL_STATUS")
    }

    /// `"gloo"` or `"nccl"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    fn id(self) -> c_int {
        match self {
            Backend::Gloo => ffi::BACKEND_GLOO,
            Backend::Nccl => ffi::BACKEND_NCCL,
        }
    }
}

/// A c10d process group of `world_size` ranks. Collectives are blocking, in place, and must be
/// called in the same order with same-shaped tensors on every rank. Dropping the group shuts it
/// down. The group may move between threads but must not be used from two at once.
pub struct ProcessGroup {
    raw: NonNull<ffi::VptDistPg>,
    rank: usize,
    world: usize,
    backend: Backend,
}

// SAFETY: the C++ group is not tied to the thread that made it; `ProcessGroup` is not `Sync`,
// so collectives are never issued concurrently through one handle.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup({} rank {}/{})",
            self.backend.name(),
            self.rank,
            self.world
        )
    }
}

impl ProcessGroup {
    /// Forms the group from the torchrun environment ([`DistEnv::from_env`]). `Ok(None)` for a
    /// single-process run (`WORLD_SIZE` unset or 1). `timeout` bounds the rendezvous and every
    /// later collective.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<Option<ProcessGroup>> {
        match DistEnv::from_env()? {
            None => Ok(None),
            Some(env) => Self::from_dist_env(&env, backend, timeout).map(Some),
        }
    }

    /// Forms the group described by `env`.
    pub fn from_dist_env(
        env: &DistEnv,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        Self::create(
            env.rank,
            env.world_size,
            env.local_rank,
            &env.master_addr,
            env.master_port,
            backend,
            timeout,
        )
    }

    /// Forms a group of `world` ranks: rank 0 hosts a TCPStore on `addr:port` and waits for the
    /// others; every rank blocks until all have joined or `timeout` passes. The local rank (CUDA
    /// device for NCCL) is taken to be `rank`; use [`ProcessGroup::from_dist_env`] to set it.
    pub fn new(
        rank: usize,
        world: usize,
        addr: &str,
        port: u16,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        Self::create(rank, world, rank, addr, port, backend, timeout)
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        rank: usize,
        world: usize,
        local_rank: usize,
        addr: &str,
        port: u16,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        let invalid = |reason: String| Error::InvalidArgument {
            op: "ProcessGroup::new",
            reason,
        };
        if world == 0 || rank >= world {
            return Err(invalid(format!(
                "rank {rank} is not in a world of size {world}"
            )));
        }
        let to_int = |what: &str, v: usize| {
            c_int::try_from(v).map_err(|_| invalid(format!("{what} {v} does not fit a C int")))
        };
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        if timeout_ms <= 0 {
            return Err(invalid(format!(
                "timeout {timeout:?} must be at least 1 ms"
            )));
        }
        let host = CString::new(addr.trim())
            .map_err(|_| invalid(format!("address {addr:?} contains a NUL byte")))?;
        if host.as_bytes().is_empty() {
            return Err(invalid("address is empty".into()));
        }
        if backend == Backend::Nccl && Backend::nccl_build_status() != "compiled" {
            return Err(Error::BackendUnavailable {
                rank,
                backend: backend.name(),
                reason: format!(
                    "not compiled into vpt-dist: {}",
                    Backend::nccl_build_status()
                ),
            });
        }
        let (c_rank, c_world, c_local) = (
            to_int("rank", rank)?,
            to_int("world", world)?,
            to_int("local rank", local_rank)?,
        );
        let mut raw: *mut ffi::VptDistPg = std::ptr::null_mut();
        let res = ffi::call(|err, len| {
            // SAFETY: `host` is a valid C string for the call; `raw` is a valid out pointer.
            unsafe {
                ffi::vpt_dist_create(
                    c_rank,
                    c_world,
                    c_local,
                    host.as_ptr(),
                    port,
                    backend.id(),
                    timeout_ms,
                    &mut raw,
                    err,
                    len,
                )
            }
        });
        match res {
            Ok(()) => {
                let raw = NonNull::new(raw).ok_or_else(|| invalid("shim returned null".into()))?;
                Ok(ProcessGroup {
                    raw,
                    rank,
                    world,
                    backend,
                })
            }
            Err((code, reason)) if code == ffi::ERR_NO_BACKEND => Err(Error::BackendUnavailable {
                rank,
                backend: backend.name(),
                reason,
            }),
            Err((_, message)) => Err(Error::Init {
                rank,
                world,
                addr: addr.to_string(),
                port,
                timeout,
                message,
            }),
        }
    }

    /// This process's rank, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The backend this group runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This rank's contiguous slice of `0..len` (see [`crate::shard_range`]).
    pub fn shard_range(&self, len: usize) -> Range<usize> {
        crate::shard::shard_range(len, self.rank, self.world)
    }

    /// Sums `tensor` over all ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<()> {
        self.in_place("all_reduce_sum", tensor, |pg, ptr, err, len| {
            // SAFETY: `pg` is live, `ptr` points to a live contiguous tensor for the call.
            unsafe { ffi::vpt_dist_all_reduce_sum(pg, ptr, err, len) }
        })
    }

    /// Averages `tensor` over all ranks, in place (sum, then divide by the world size).
    pub fn all_reduce_mean(&self, tensor: &mut Tensor) -> Result<()> {
        self.all_reduce_sum(tensor)?;
        self.scale(tensor, "all_reduce_mean")
    }

    /// Copies rank `root`'s `tensor` into every rank's `tensor`, in place.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        if root >= self.world {
            return Err(Error::InvalidArgument {
                op: "broadcast",
                reason: format!(
                    "root {root} is not a rank of a world of size {}",
                    self.world
                ),
            });
        }
        let root = root as c_int; // < world, which fits a C int (checked in `new`)
        self.in_place("broadcast", tensor, |pg, ptr, err, len| {
            // SAFETY: as in `all_reduce_sum`.
            unsafe { ffi::vpt_dist_broadcast(pg, ptr, root, err, len) }
        })
    }

    /// Blocks until every rank has reached the barrier.
    pub fn barrier(&self) -> Result<()> {
        let raw = self.raw.as_ptr();
        // SAFETY: `raw` is live for `self`'s lifetime.
        ffi::call(|err, len| unsafe { ffi::vpt_dist_barrier(raw, err, len) })
            .map_err(|(_, m)| self.collective_error("barrier", m))
    }

    /// Averages gradients over all ranks, in place, with one all-reduce per (dtype, device)
    /// group: the tensors are flattened into one buffer, reduced, divided by the world size and
    /// copied back. With equal-sized shards of a mean loss this equals the gradient of the
    /// combined batch. Every tensor must be defined (zero unused gradients first) and the list
    /// must have the same shapes in the same order on every rank.
    pub fn all_reduce_grads(&self, grads: &mut [Tensor]) -> Result<()> {
        self.flat_collective("all_reduce_grads", grads, |pg, flat| {
            pg.all_reduce_sum(flat)?;
            pg.scale(flat, "all_reduce_grads")
        })
    }

    /// Sums the tensors over all ranks, in place, with one all-reduce per (dtype, device) group.
    pub fn all_reduce_sum_many(&self, tensors: &mut [Tensor]) -> Result<()> {
        self.flat_collective("all_reduce_sum_many", tensors, |pg, flat| {
            pg.all_reduce_sum(flat)
        })
    }

    /// Copies rank 0's values of `params` into every rank's `params` (in place, no autograd),
    /// with one broadcast per (dtype, device) group; call once after building the model so all
    /// ranks start from the same θ and φ.
    pub fn broadcast_params(&self, params: &mut [Tensor]) -> Result<()> {
        self.flat_collective("broadcast_params", params, |pg, flat| pg.broadcast(flat, 0))
    }

    /// Divides `tensor` by the world size in place.
    fn scale(&self, tensor: &mut Tensor, op: &'static str) -> Result<()> {
        let world = self.world as f64;
        tch::no_grad(|| tensor.f_div_scalar_(world).map(drop))
            .map_err(|source| self.torch(op, source))?;
        Ok(())
    }

    /// Runs an in-place collective on `tensor`, through a contiguous copy when it is not
    /// contiguous (c10d requires dense, contiguous tensors).
    fn in_place(
        &self,
        op: &'static str,
        tensor: &mut Tensor,
        f: impl FnOnce(*mut ffi::VptDistPg, *mut c_void, *mut std::ffi::c_char, usize) -> c_int,
    ) -> Result<()> {
        if !tensor.defined() {
            return Err(Error::InvalidArgument {
                op,
                reason: "tensor is undefined".into(),
            });
        }
        let raw = self.raw.as_ptr();
        if tensor.is_contiguous() {
            let ptr = tensor.as_mut_ptr().cast::<c_void>();
            return ffi::call(|err, len| f(raw, ptr, err, len))
                .map_err(|(_, m)| self.collective_error(op, m));
        }
        let mut buf = tch::no_grad(|| tensor.f_contiguous()).map_err(|e| self.torch(op, e))?;
        let ptr = buf.as_mut_ptr().cast::<c_void>();
        ffi::call(|err, len| f(raw, ptr, err, len))
            .map_err(|(_, m)| self.collective_error(op, m))?;
        tch::no_grad(|| tensor.f_copy_(&buf)).map_err(|e| self.torch(op, e))
    }

    /// Flattens `tensors` into one buffer per (dtype, device), runs `f` on each buffer, and
    /// copies the results back (no autograd).
    fn flat_collective(
        &self,
        op: &'static str,
        tensors: &mut [Tensor],
        f: impl Fn(&ProcessGroup, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        if let Some(i) = tensors.iter().position(|t| !t.defined()) {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("tensor {i} is undefined (zero unused gradients first)"),
            });
        }
        for group in group_by_kind_device(tensors) {
            tch::no_grad(|| -> Result<()> {
                let flats: Vec<Tensor> = group
                    .iter()
                    .map(|&i| tensors[i].f_reshape([-1])) // (numel,)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| self.torch(op, e))?;
                let mut buf = Tensor::f_cat(&flats, 0).map_err(|e| self.torch(op, e))?; // (Σ numel,)
                f(self, &mut buf)?;
                let sizes: Vec<i64> = flats.iter().map(|t| t.size()[0]).collect();
                let pieces = buf
                    .f_split_with_sizes(&sizes, 0)
                    .map_err(|e| self.torch(op, e))?;
                for (&i, piece) in group.iter().zip(pieces) {
                    let piece = piece
                        .f_view_as(&tensors[i])
                        .map_err(|e| self.torch(op, e))?;
                    tensors[i].f_copy_(&piece).map_err(|e| self.torch(op, e))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn collective_error(&self, op: &'static str, message: String) -> Error {
        Error::Collective {
            op,
            rank: self.rank,
            world: self.world,
            timed_out: looks_like_timeout(&message),
            message,
        }
    }

    fn torch(&self, op: &'static str, source: tch::TchError) -> Error {
        Error::Torch {
            op,
            rank: self.rank,
            source,
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `vpt_dist_create` and is destroyed exactly once, here.
        unsafe { ffi::vpt_dist_destroy(self.raw.as_ptr()) }
    }
}

/// Indices of `tensors` grouped by (dtype, device), groups in order of first appearance.
fn group_by_kind_device(tensors: &[Tensor]) -> Vec<Vec<usize>> {
    let mut keys: Vec<(Kind, Device)> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let key = (t.kind(), t.device());
        match keys.iter().position(|k| *k == key) {
            Some(g) => groups[g].push(i),
            None => {
                keys.push(key);
                groups.push(vec![i]);
            }
        }
    }
    groups
}
