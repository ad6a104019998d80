//! Keeps freed tensor memory in the process instead of handing it back to the OS.
//!
//! glibc serves every allocation above 32 MiB with a fresh `mmap` and unmaps it on free, so a
//! step that allocates large tensors (LM logits and log-probabilities (N, V), candidate
//! embeddings (B, T, K, d), their gradients) page-faults all of them in again, every step:
//! measured in one process, a 151 MB gather took 0.06 s on fresh memory and 0.015 s into a
//! reused buffer. With `mmap` off for the heap and the trim threshold raised, freed blocks are
//! reused (`vpt bench` on the issue-10 command: baseline 5.70 → 5.55 s/step, V 6.53 → 5.97 s;
//! peak RSS about 5 % higher, as freed memory stays resident). `VPT_MALLOC=system` keeps
//! glibc's defaults. A no-op off glibc.

/// Applies the setting once, at start-up, before libtorch allocates.
pub fn keep_freed_memory() {
    if std::env::var("VPT_MALLOC").as_deref() == Ok("system") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        // large blocks come from the heap (glibc still maps where a heap cannot grow) …
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // … and stay there when freed
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
