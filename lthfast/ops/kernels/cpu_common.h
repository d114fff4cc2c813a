// Helpers shared by the ops' C++ CPU kernels (lthfast/ops/kernels/*/cpu.cpp), compiled into
// the extension lthfast._C (csrc/module.cpp).
#pragma once

// ATen's tensor and pybind's casters only, not torch/extension.h (the whole C++ frontend):
// each kernel file then compiles in a third of the time.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <cstring>

namespace lthfast {

constexpr int64_t kParallelMin = 32768;  // below this, threads cost more than they save

inline void check_flat(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), name, ": CPU tensors only");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.numel() == like.numel(), name, " has ", t.numel(), " entries, expected ", like.numel());
}

// keep ? value : 0. For float, as a bit-and: the compiler vectorizes it (a ?: on floats is
// not if-converted without SSE4.1 blends, so it stays a branch). Either way NaN or inf in a
// pruned entry becomes exactly zero, unlike a multiply by the mask.
template <typename scalar_t>
inline scalar_t keep_or_zero(scalar_t value, uint8_t keep) {
  return keep ? value : scalar_t(0);
}

template <>
inline float keep_or_zero<float>(float value, uint8_t keep) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits &= 0u - static_cast<uint32_t>(keep != 0);
  std::memcpy(&value, &bits, sizeof(bits));
  return value;
}

inline const uint8_t* keep_bytes(const at::Tensor& mask) {
  return reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());
}

}  // namespace lthfast
