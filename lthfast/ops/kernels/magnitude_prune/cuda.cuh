// magnitude_prune's CUDA kernel: the host launcher of the radix-select histogram. Plain
// CUDA (no torch headers), so cuda.cu compiles in seconds; cuda_binding.cpp binds it to
// Python in lthfast._cuda.
//
// The launcher enqueues its work on `stream` and returns without synchronizing; n == 0
// launches nothing. Launch errors are left for the caller to read (cudaGetLastError).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace lthfast_cuda {

// Radix-select histogram for global magnitude pruning. For every i with keep[i] != 0:
//   bits = float bits of |w[i]| as uint32 (so bits are monotone in |w|, sign bit 0);
//   key  = largest ? (0x7FFFFFFFu - bits) : bits;
//   if (prefix < 0 || (key >> 16) == (uint32_t)prefix): bins[(key >> shift) & 0xFFFF] += 1
// shift is 16 (first pass, prefix = -1) or 0 (second pass, prefix = the chosen high 16 bits).
// bins has 65536 int32 entries and is zeroed by the caller; counts are added to it.
void key_histogram(const float* w, const uint8_t* keep, int64_t n, bool largest, int shift,
                   int32_t prefix, int32_t* bins, cudaStream_t stream);

}  // namespace lthfast_cuda
