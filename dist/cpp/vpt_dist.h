// C API of the vpt-dist shim over PyTorch c10d (TCPStore + ProcessGroupGloo / ProcessGroupNCCL).
//
// Conventions (mirrored in dist/src/ffi.rs):
// - every function returns VPT_DIST_OK (0) or an error code, and never lets a C++ exception out;
//   on error the message (NUL-terminated, truncated to err_len) is written to err;
// - tensors are tch `C_tensor` pointers, i.e. `torch::Tensor*`, borrowed for the call; collectives
//   work in place and block until done (or until the group's timeout);
// - a vpt_dist_pg is owned by the caller and freed with vpt_dist_destroy.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VPT_DIST_OK 0
#define VPT_DIST_ERR_C10 1      /* c10::Error / c10::DistBackendError (incl. timeouts) */
#define VPT_DIST_ERR_STD 2      /* other std::exception */
#define VPT_DIST_ERR_UNKNOWN 3  /* anything else thrown */
#define VPT_DIST_ERR_ARG 4      /* bad argument (null pointer, unknown backend, ...) */
#define VPT_DIST_ERR_NO_BACKEND 5 /* backend not compiled in or no device for it */

#define VPT_DIST_BACKEND_GLOO 0
#define VPT_DIST_BACKEND_NCCL 1

typedef struct vpt_dist_pg vpt_dist_pg;

/* 1 when the NCCL backend was compiled in and CUDA is usable now, else 0. */
int vpt_dist_nccl_available(void);

/* Rendezvous through a TCPStore at host:port (rank 0 hosts it and waits for world_size-1 peers),
 * then builds the process group. timeout_ms bounds the rendezvous and every collective. */
int vpt_dist_create(int rank, int world_size, int local_rank, const char* host, uint16_t port,
                    int backend, int64_t timeout_ms, vpt_dist_pg** out, char* err, size_t err_len);

/* In-place sum over all ranks of a dense, contiguous tensor. */
int vpt_dist_all_reduce_sum(vpt_dist_pg* pg, void* tensor, char* err, size_t err_len);

/* In-place broadcast of a dense, contiguous tensor from rank `root`. */
int vpt_dist_broadcast(vpt_dist_pg* pg, void* tensor, int root, char* err, size_t err_len);

/* Blocks until every rank reached the barrier (or the timeout passed). */
int vpt_dist_barrier(vpt_dist_pg* pg, char* err, size_t err_len);

/* Shuts the group down and frees it; null is ignored. Never throws. */
void vpt_dist_destroy(vpt_dist_pg* pg);

#ifdef __cplusplus
}
#endif
