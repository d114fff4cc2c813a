// Launch helpers shared by the ops' CUDA kernels (lthfast/ops/kernels/*/cuda.cu). Plain CUDA,
// no torch headers, so that each .cu compiles in seconds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace lthfast_cuda {

constexpr int kThreads = 256;  // a multiple of the warp size (key_histogram relies on it)

// Blocks for a grid-stride loop over `work` items: no more than the work needs, and no more
// than a few waves' worth (8 blocks of 256 threads per SM is full occupancy on sm_80/sm_90).
inline int grid_for(int64_t work) {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) {
    sms = 132;  // an H100's count; any positive value is correct, only speed depends on it
  }
  const int64_t wanted = (work + kThreads - 1) / kThreads;
  const int64_t cap = static_cast<int64_t>(sms) * 8;
  return static_cast<int>(wanted < 1 ? 1 : (wanted < cap ? wanted : cap));
}

}  // namespace lthfast_cuda
