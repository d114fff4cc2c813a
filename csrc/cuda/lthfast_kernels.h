// lthfast CUDA kernels: host launchers. Plain CUDA (no torch headers), so the .cu compiles
// in seconds; csrc/cuda_ops.cpp binds them to Python as lthfast._cuda.
//
// Every launcher enqueues its work on `stream` and returns without synchronizing; n == 0
// launches nothing. Launch errors are left for the caller to read (cudaGetLastError).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace lthfast_cuda {

// Fused masked SGD, in place, elementwise over n entries, all buffers share one storage order:
//   g = grad + weight_decay * p;  b = momentum * b + g;  d = nesterov ? g + momentum * b : b;
//   p = p - lr * d;  then where keep[i]==0: p = 0 and b = 0 (a select, so NaN/inf in pruned entries become 0).
// Computes in float32; the bf16 variant loads/stores __nv_bfloat16 for p, grad, b.
// p, grad, b and keep must not overlap.
void masked_sgd_f32(float* p, const float* grad, float* b, const uint8_t* keep, int64_t n,
                    float lr, float momentum, float weight_decay, bool nesterov, cudaStream_t stream);
void masked_sgd_bf16(__nv_bfloat16* p, const __nv_bfloat16* grad, __nv_bfloat16* b, const uint8_t* keep,
                     int64_t n, float lr, float momentum, float weight_decay, bool nesterov,
                     cudaStream_t stream);

// Radix-select histogram for global magnitude pruning. For every i with keep[i] != 0:
//   bits = float bits of |w[i]| as uint32 (so bits are monotone in |w|, sign bit 0);
//   key  = largest ? (0x7FFFFFFFu - bits) : bits;
//   if (prefix < 0 || (key >> 16) == (uint32_t)prefix): bins[(key >> shift) & 0xFFFF] += 1
// shift is 16 (first pass, prefix = -1) or 0 (second pass, prefix = the chosen high 16 bits).
// bins has 65536 int32 entries and is zeroed by the caller; counts are added to it.
void key_histogram(const float* w, const uint8_t* keep, int64_t n, bool largest, int shift,
                   int32_t prefix, int32_t* bins, cudaStream_t stream);

}  // namespace lthfast_cuda
