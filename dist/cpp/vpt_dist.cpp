// vpt-dist shim: a C API over PyTorch c10d, compiled against the headers of the libtorch that tch
// links, so tensors cross as plain `torch::Tensor*` (tch's C_tensor) with no copy.
// Every entry point catches every C++ exception and reports it as a code + message (see
// vpt_dist.h); nothing is thrown across the FFI boundary.
#include "vpt_dist.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <ATen/ATen.h>

#ifdef VPT_DIST_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct vpt_dist_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int backend_kind;
  int local_rank;
};

namespace {

void write_err(char* err, size_t err_len, const std::string& msg) {
  if (err == nullptr || err_len == 0) return;
  size_t n = std::min(msg.size(), err_len - 1);
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Runs `body`, converting any exception into an error code and message.
template <typename F>
int guarded(char* err, size_t err_len, F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    // what_without_backtrace: the C++ backtrace is noise for a user reading a Rust error.
    write_err(err, err_len, e.what_without_backtrace());
    return VPT_DIST_ERR_C10;
  } catch (const std::exception& e) {
    write_err(err, err_len, e.what());
    return VPT_DIST_ERR_STD;
  } catch (...) {
    write_err(err, err_len, "unknown C++ exception");
    return VPT_DIST_ERR_UNKNOWN;
  }
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The Gloo transport device, following torch's rules: GLOO_SOCKET_IFNAME names an interface;
// otherwise a loopback master means a single-host run (bind loopback); otherwise the default
// device (this host's resolved address, falling back to loopback).
std::shared_ptr<gloo::transport::Device> gloo_device(const std::string& host) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (is_loopback(host)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

at::Tensor& checked_tensor(void* tensor, const char* op) {
  TORCH_CHECK_VALUE(tensor != nullptr, op, ": null tensor pointer");
  at::Tensor& t = *static_cast<at::Tensor*>(tensor);
  TORCH_CHECK_VALUE(t.defined(), op, ": undefined tensor");
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": tensor must be contiguous");
  return t;
}

// Waits for a collective; Work::wait throws the backend's error (peer gone, timeout, ...).
void wait(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  work->wait(timeout);
}

}  // namespace

extern "C" {

int vpt_dist_nccl_available(void) {
#ifdef VPT_DIST_NCCL
  try {
    return at::hasCUDA() && c10::cuda::device_count() > 0 ? 1 : 0;
  } catch (...) {
    return 0;
  }
#else
  return 0;
#endif
}

int vpt_dist_create(int rank, int world_size, int local_rank, const char* host, uint16_t port,
                    int backend, int64_t timeout_ms, vpt_dist_pg** out, char* err,
                    size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    if (out == nullptr || host == nullptr || world_size < 1 || rank < 0 || rank >= world_size ||
        timeout_ms <= 0) {
      write_err(err, err_len, "vpt_dist_create: invalid arguments");
      return VPT_DIST_ERR_ARG;
    }
    *out = nullptr;
    std::chrono::milliseconds timeout(timeout_ms);

    c10d::TCPStoreOptions store_opts;
    store_opts.port = port;
    store_opts.isServer = rank == 0;
    store_opts.numWorkers = static_cast<size_t>(world_size);
    store_opts.waitWorkers = true;
    store_opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), store_opts);

    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == VPT_DIST_BACKEND_GLOO) {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(gloo_device(host));
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, opts);
    } else if (backend == VPT_DIST_BACKEND_NCCL) {
#ifdef VPT_DIST_NCCL
      if (!vpt_dist_nccl_available()) {
        write_err(err, err_len, "NCCL backend: no CUDA device is available");
        return VPT_DIST_ERR_NO_BACKEND;
      }
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, opts);
#else
      write_err(err, err_len, "NCCL backend was not compiled into vpt-dist");
      return VPT_DIST_ERR_NO_BACKEND;
#endif
    } else {
      write_err(err, err_len, "vpt_dist_create: unknown backend id " + std::to_string(backend));
      return VPT_DIST_ERR_ARG;
    }
    *out = new vpt_dist_pg{std::move(store), std::move(pg), timeout, backend, local_rank};
    return VPT_DIST_OK;
  });
}

int vpt_dist_all_reduce_sum(vpt_dist_pg* pg, void* tensor, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    TORCH_CHECK_VALUE(pg != nullptr, "all_reduce: null process group");
    std::vector<at::Tensor> tensors{checked_tensor(tensor, "all_reduce")};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = pg->timeout;
    wait(pg->backend->allreduce(tensors, opts), pg->timeout);
    return VPT_DIST_OK;
  });
}

int vpt_dist_broadcast(vpt_dist_pg* pg, void* tensor, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    TORCH_CHECK_VALUE(pg != nullptr, "broadcast: null process group");
    TORCH_CHECK_VALUE(root >= 0 && root < pg->backend->getSize(), "broadcast: root ", root,
                      " is not a rank of a group of size ", pg->backend->getSize());
    std::vector<at::Tensor> tensors{checked_tensor(tensor, "broadcast")};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = pg->timeout;
    wait(pg->backend->broadcast(tensors, opts), pg->timeout);
    return VPT_DIST_OK;
  });
}

int vpt_dist_barrier(vpt_dist_pg* pg, char* err, size_t err_len) {
  return guarded(err, err_len, [&]() -> int {
    TORCH_CHECK_VALUE(pg != nullptr, "barrier: null process group");
    c10d::BarrierOptions opts;
    opts.timeout = pg->timeout;
    if (pg->backend_kind == VPT_DIST_BACKEND_NCCL) {
      opts.device_ids = {pg->local_rank};
    }
    wait(pg->backend->barrier(opts), pg->timeout);
    return VPT_DIST_OK;
  });
}

void vpt_dist_destroy(vpt_dist_pg* pg) {
  if (pg == nullptr) return;
  try {
    // NCCL wants an explicit shutdown before destruction; Gloo's destructor joins its threads.
    pg->backend->shutdown();
  } catch (...) {
  }
  try {
    delete pg;
  } catch (...) {
  }
}

}  // extern "C"
