// lthfast CUDA kernels (see lthfast_kernels.h for the contracts):
//   masked_sgd_f32 / masked_sgd_bf16   torch.optim.SGD's update fused with the keep-mask
//   key_histogram                      one pass of the radix select behind magnitude pruning
// Plain CUDA, no torch headers. No fast math anywhere: the SGD arithmetic uses explicitly
// rounded float ops (no FMA contraction), like the CPU extension (built without FMA); the
// torch reference may use FMA, so tests compare to it within float tolerance.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lthfast_kernels.h"

namespace lthfast_cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size (key_histogram relies on it)

// Blocks for a grid-stride loop over `work` items: no more than the work needs, and no more
// than a few waves' worth (8 blocks of 256 threads per SM is full occupancy on sm_80/sm_90).
int grid_for(int64_t work) {
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

// ----------------------------------------------------------------------------- masked SGD

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);  // round to nearest even, as torch's .to(torch.bfloat16)
}

// One entry of the update. __fmul_rn / __fadd_rn round every operation on its own (nvcc
// would otherwise contract a * b + c into an FMA), matching the CPU extension's arithmetic.
template <typename T, bool kNesterov>
__device__ __forceinline__ void sgd_entry(T& p, T g, T& b, uint8_t keep, float lr, float momentum,
                                          float weight_decay) {
  const float param = to_float(p);
  const float grad = __fadd_rn(to_float(g), __fmul_rn(weight_decay, param));
  const float buf = __fadd_rn(__fmul_rn(momentum, to_float(b)), grad);
  const float step = kNesterov ? __fadd_rn(grad, __fmul_rn(momentum, buf)) : buf;
  const float updated = __fsub_rn(param, __fmul_rn(lr, step));
  // A select, not a multiply: NaN or inf in a pruned entry still becomes exactly zero.
  p = keep ? from_float<T>(updated) : from_float<T>(0.0f);
  b = keep ? from_float<T>(buf) : from_float<T>(0.0f);
}

// V consecutive entries moved as one aligned vector (16 bytes of T; V bytes of keep).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Grid-stride over packs of V entries, then the last n % V entries one by one (V == 1 is the
// plain scalar kernel, used when a pointer is not aligned for vector access).
template <typename T, int V, bool kNesterov>
__global__ void __launch_bounds__(kThreads)
    masked_sgd_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ b,
                      const uint8_t* __restrict__ keep, int64_t n, float lr, float momentum,
                      float weight_decay) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t i = tid; i < packs; i += stride) {
    Pack<T, V> pp = reinterpret_cast<const Pack<T, V>*>(p)[i];
    const Pack<T, V> gg = reinterpret_cast<const Pack<T, V>*>(g)[i];
    Pack<T, V> bb = reinterpret_cast<const Pack<T, V>*>(b)[i];
    const Pack<uint8_t, V> kk = reinterpret_cast<const Pack<uint8_t, V>*>(keep)[i];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      sgd_entry<T, kNesterov>(pp.v[j], gg.v[j], bb.v[j], kk.v[j], lr, momentum, weight_decay);
    }
    reinterpret_cast<Pack<T, V>*>(p)[i] = pp;
    reinterpret_cast<Pack<T, V>*>(b)[i] = bb;
  }
  for (int64_t i = packs * V + tid; i < n; i += stride) {
    sgd_entry<T, kNesterov>(p[i], g[i], b[i], keep[i], lr, momentum, weight_decay);
  }
}

template <typename T, int V, bool kNesterov>
void launch_sgd(T* p, const T* g, T* b, const uint8_t* keep, int64_t n, float lr, float momentum,
                float weight_decay, cudaStream_t stream) {
  masked_sgd_kernel<T, V, kNesterov><<<grid_for((n + V - 1) / V), kThreads, 0, stream>>>(
      p, g, b, keep, n, lr, momentum, weight_decay);
}

template <typename T>
void masked_sgd(T* p, const T* g, T* b, const uint8_t* keep, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int V = 16 / sizeof(T);  // 4 floats or 8 bfloat16 per 16-byte access
  const uintptr_t data = reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g) |
                         reinterpret_cast<uintptr_t>(b);
  const bool vector = data % (sizeof(T) * V) == 0 && reinterpret_cast<uintptr_t>(keep) % V == 0;
  if (vector) {
    if (nesterov) launch_sgd<T, V, true>(p, g, b, keep, n, lr, momentum, weight_decay, stream);
    else launch_sgd<T, V, false>(p, g, b, keep, n, lr, momentum, weight_decay, stream);
  } else {
    if (nesterov) launch_sgd<T, 1, true>(p, g, b, keep, n, lr, momentum, weight_decay, stream);
    else launch_sgd<T, 1, false>(p, g, b, keep, n, lr, momentum, weight_decay, stream);
  }
}

// ----------------------------------------------------------------------------- key histogram

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

void masked_sgd_f32(float* p, const float* grad, float* b, const uint8_t* keep, int64_t n, float lr,
                    float momentum, float weight_decay, bool nesterov, cudaStream_t stream) {
  masked_sgd<float>(p, grad, b, keep, n, lr, momentum, weight_decay, nesterov, stream);
}

void masked_sgd_bf16(__nv_bfloat16* p, const __nv_bfloat16* grad, __nv_bfloat16* b, const uint8_t* keep,
                     int64_t n, float lr, float momentum, float weight_decay, bool nesterov,
                     cudaStream_t stream) {
  masked_sgd<__nv_bfloat16>(p, grad, b, keep, n, lr, momentum, weight_decay, nesterov, stream);
}

void key_histogram(const float* w, const uint8_t* keep, int64_t n, bool largest, int shift,
                   int32_t prefix, int32_t* bins, cudaStream_t stream) {
  if (n <= 0) return;
  key_histogram_kernel<<<grid_for(n), kThreads, 0, stream>>>(w, keep, n, largest, shift, prefix, bins);
}

}  // namespace lthfast_cuda
