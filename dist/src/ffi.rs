//! Raw declarations of the C API in `cpp/vpt_dist.h` (the only `extern` block of the crate).
use std::ffi::{c_char, c_int, c_void};

/// Success.
pub const OK: c_int = 0;
/// The backend was not compiled in, or its device is missing.
pub const ERR_NO_BACKEND: c_int = 5;
/// Backend id of Gloo.
pub const BACKEND_GLOO: c_int = 0;
/// Backend id of NCCL.
pub const BACKEND_NCCL: c_int = 1;

/// Opaque C++ process group (store + c10d backend).
#[repr(C)]
pub struct VptDistPg {
    _private: [u8; 0],
}

extern "C" {
    pub fn vpt_dist_nccl_available() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn vpt_dist_create(
        rank: c_int,
        world_size: c_int,
        local_rank: c_int,
        host: *const c_char,
        port: u16,
        backend: c_int,
        timeout_ms: i64,
        out: *mut *mut VptDistPg,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn vpt_dist_all_reduce_sum(
        pg: *mut VptDistPg,
        tensor: *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn vpt_dist_broadcast(
        pg: *mut VptDistPg,
        tensor: *mut c_void,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn vpt_dist_barrier(pg: *mut VptDistPg, err: *mut c_char, err_len: usize) -> c_int;
    pub fn vpt_dist_destroy(pg: *mut VptDistPg);
}

/// Size of the error-message buffer handed to every call.
pub const ERR_LEN: usize = 4096;

/// Runs `f` with a fresh error buffer; returns `Ok(())` on [`OK`], else the code and message.
pub fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), (c_int, String)> {
    let mut buf = vec![0u8; ERR_LEN];
    let code = f(buf.as_mut_ptr().cast(), buf.len());
    if code == OK {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Err((
        code,
        String::from_utf8_lossy(&buf[..end]).trim().to_string(),
    ))
}
