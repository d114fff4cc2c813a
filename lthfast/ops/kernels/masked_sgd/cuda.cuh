// masked_sgd_'s CUDA kernels: host launchers. Plain CUDA (no torch headers), so cuda.cu
// compiles in seconds; cuda_binding.cpp binds them to Python in lthfast._cuda.
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

// The same update with one learning rate per member: the n entries are n / segment members
// of `segment` consecutive entries each, and entry i uses lr[i / segment] (lr: a device
// array of n / segment floats). segment >= 1 and divides n.
void masked_sgd_member_lr_f32(float* p, const float* grad, float* b, const uint8_t* keep, int64_t n,
                              const float* lr, int64_t segment, float momentum, float weight_decay,
                              bool nesterov, cudaStream_t stream);
void masked_sgd_member_lr_bf16(__nv_bfloat16* p, const __nv_bfloat16* grad, __nv_bfloat16* b,
                               const uint8_t* keep, int64_t n, const float* lr, int64_t segment, float momentum,
                               float weight_decay, bool nesterov, cudaStream_t stream);

}  // namespace lthfast_cuda
