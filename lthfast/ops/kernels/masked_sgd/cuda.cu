// masked_sgd_'s CUDA kernels (see cuda.cuh for the contracts): torch.optim.SGD's update fused
// with the keep-mask, one pass over memory, with one lr or one lr per member.
// Plain CUDA, no torch headers. No fast math anywhere: the arithmetic uses explicitly
// rounded float ops (no FMA contraction), like the CPU extension (built without FMA); the
// torch reference may use FMA, so tests compare to it within float tolerance.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../cuda_common.cuh"
#include "cuda.cuh"

namespace lthfast_cuda {
namespace {

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

// Learning rates of V consecutive entries first, first + 1, ...: the same value for all.
struct OneLr {
  float value;
  template <int V>
  __device__ __forceinline__ void fill(int64_t /*first*/, float (&out)[V]) const {
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = value;
  }
};

// lr[i / segment]: one learning rate per member of `segment` consecutive entries. One
// division per call; a member boundary inside the V entries moves to the next lr (several
// times when segment < V).
struct MemberLr {
  const float* __restrict__ lr;
  int64_t segment;
  template <int V>
  __device__ __forceinline__ void fill(int64_t first, float (&out)[V]) const {
    int64_t member = first / segment;
    int64_t next = (member + 1) * segment;
    float current = lr[member];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (first + j == next) {
        ++member;
        next += segment;
        current = lr[member];
      }
      out[j] = current;
    }
  }
};

// V consecutive entries moved as one aligned vector (16 bytes of T; V bytes of keep).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Grid-stride over packs of V entries, then the last n % V entries one by one (V == 1 is the
// plain scalar kernel, used when a pointer is not aligned for vector access).
template <typename T, int V, bool kNesterov, typename Lr>
__global__ void __launch_bounds__(kThreads)
    masked_sgd_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ b,
                      const uint8_t* __restrict__ keep, int64_t n, Lr lr, float momentum,
                      float weight_decay) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t packs = n / V;
  for (int64_t i = tid; i < packs; i += stride) {
    Pack<T, V> pp = reinterpret_cast<const Pack<T, V>*>(p)[i];
    const Pack<T, V> gg = reinterpret_cast<const Pack<T, V>*>(g)[i];
    Pack<T, V> bb = reinterpret_cast<const Pack<T, V>*>(b)[i];
    const Pack<uint8_t, V> kk = reinterpret_cast<const Pack<uint8_t, V>*>(keep)[i];
    float rates[V];
    lr.fill(i * V, rates);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      sgd_entry<T, kNesterov>(pp.v[j], gg.v[j], bb.v[j], kk.v[j], rates[j], momentum, weight_decay);
    }
    reinterpret_cast<Pack<T, V>*>(p)[i] = pp;
    reinterpret_cast<Pack<T, V>*>(b)[i] = bb;
  }
  for (int64_t i = packs * V + tid; i < n; i += stride) {
    float rate[1];
    lr.fill(i, rate);
    sgd_entry<T, kNesterov>(p[i], g[i], b[i], keep[i], rate[0], momentum, weight_decay);
  }
}

template <typename T, int V, bool kNesterov, typename Lr>
void launch_sgd(T* p, const T* g, T* b, const uint8_t* keep, int64_t n, Lr lr, float momentum,
                float weight_decay, cudaStream_t stream) {
  masked_sgd_kernel<T, V, kNesterov, Lr><<<grid_for((n + V - 1) / V), kThreads, 0, stream>>>(
      p, g, b, keep, n, lr, momentum, weight_decay);
}

template <typename T, typename Lr>
void masked_sgd(T* p, const T* g, T* b, const uint8_t* keep, int64_t n, Lr lr, float momentum,
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

}  // namespace

void masked_sgd_f32(float* p, const float* grad, float* b, const uint8_t* keep, int64_t n, float lr,
                    float momentum, float weight_decay, bool nesterov, cudaStream_t stream) {
  masked_sgd<float>(p, grad, b, keep, n, OneLr{lr}, momentum, weight_decay, nesterov, stream);
}

void masked_sgd_bf16(__nv_bfloat16* p, const __nv_bfloat16* grad, __nv_bfloat16* b, const uint8_t* keep,
                     int64_t n, float lr, float momentum, float weight_decay, bool nesterov,
                     cudaStream_t stream) {
  masked_sgd<__nv_bfloat16>(p, grad, b, keep, n, OneLr{lr}, momentum, weight_decay, nesterov, stream);
}

void masked_sgd_member_lr_f32(float* p, const float* grad, float* b, const uint8_t* keep, int64_t n,
                              const float* lr, int64_t segment, float momentum, float weight_decay,
                              bool nesterov, cudaStream_t stream) {
  masked_sgd<float>(p, grad, b, keep, n, MemberLr{lr, segment}, momentum, weight_decay, nesterov, stream);
}

void masked_sgd_member_lr_bf16(__nv_bfloat16* p, const __nv_bfloat16* grad, __nv_bfloat16* b,
                               const uint8_t* keep, int64_t n, const float* lr, int64_t segment, float momentum,
                               float weight_decay, bool nesterov, cudaStream_t stream) {
  masked_sgd<__nv_bfloat16>(p, grad, b, keep, n, MemberLr{lr, segment}, momentum, weight_decay, nesterov,
                            stream);
}

}  // namespace lthfast_cuda
