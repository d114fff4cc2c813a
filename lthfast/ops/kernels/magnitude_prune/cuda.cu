// magnitude_prune's CUDA kernel (see cuda.cuh for the contract): one pass of the radix
// select behind global magnitude pruning. Plain CUDA, no torch headers.
#include <cuda_runtime.h>

#include <cstdint>

#include "../cuda_common.cuh"
#include "cuda.cuh"

namespace lthfast_cuda {
namespace {

// Global atomics, aggregated per warp: the lanes of a warp that hit the same bin add their
// count with one atomic from their lowest lane. Magnitudes cluster in few high-16-bit bins,
// so without aggregation the first pass would serialize on those bins.
__global__ void __launch_bounds__(kThreads)
    key_histogram_kernel(const float* __restrict__ w, const uint8_t* __restrict__ keep, int64_t n,
                         bool largest, int shift, int32_t prefix, int32_t* __restrict__ bins) {
  const unsigned lane = threadIdx.x & 31u;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;  // a multiple of 32
  // `base` is the index of lane 0 of this warp, the same for all 32 lanes: every lane runs
  // the same iterations, so the warp is converged at the warp intrinsics below.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + (threadIdx.x & ~31u); base < n;
       base += stride) {
    const int64_t i = base + lane;
    bool counted = false;
    uint32_t bin = 0;
    if (i < n && keep[i] != 0) {
      const uint32_t bits = __float_as_uint(w[i]) & 0x7FFFFFFFu;  // the bits of |w[i]|
      const uint32_t key = largest ? 0x7FFFFFFFu - bits : bits;
      if (prefix < 0 || (key >> 16) == static_cast<uint32_t>(prefix)) {
        counted = true;
        bin = (key >> shift) & 0xFFFFu;
      }
    }
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
    const unsigned active = __ballot_sync(0xFFFFFFFFu, counted);
    if (counted) {
      const unsigned peers = __match_any_sync(active, bin);
      if (lane == static_cast<unsigned>(__ffs(peers) - 1)) atomicAdd(bins + bin, __popc(peers));
    }
#else  // no __match_any_sync before Volta
    if (counted) atomicAdd(bins + bin, 1);
#endif
  }
}

}  // namespace

void key_histogram(const float* w, const uint8_t* keep, int64_t n, bool largest, int shift,
                   int32_t prefix, int32_t* bins, cudaStream_t stream) {
  if (n <= 0) return;
  key_histogram_kernel<<<grid_for(n), kThreads, 0, stream>>>(w, keep, n, largest, shift, prefix, bins);
}

}  // namespace lthfast_cuda
