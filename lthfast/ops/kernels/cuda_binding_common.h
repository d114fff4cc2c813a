// Argument checks shared by the ops' torch bindings of their CUDA kernels
// (lthfast/ops/kernels/*/cuda_binding.cpp), compiled into lthfast._cuda (csrc/cuda_module.cpp).
// Inputs are flat (1-D contiguous) CUDA buffers; work runs on the current CUDA stream.
#pragma once

// ATen's tensor and pybind's casters only, not torch/extension.h (the whole C++ frontend).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/csrc/utils/pybind.h>

// c10's stream header, not ATen/cuda/CUDAContext.h (the same getCurrentCUDAStream): that one
// also pulls in the cuBLAS/cuSPARSE/cuSOLVER headers, which a bare CUDA toolkit may lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

namespace lthfast {

inline void check_cuda_flat(const at::Tensor& t, const char* fn, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ", t.device(), ", expected ", like.device());
  TORCH_CHECK(t.dim() == 1, fn, ": ", name, " must be 1-D, got ", t.dim(), " dimensions");
  TORCH_CHECK(t.is_contiguous(), fn, ": ", name, " must be contiguous");
  TORCH_CHECK(t.numel() == like.numel(), fn, ": ", name, " has ", t.numel(), " entries, expected ", like.numel());
}

// keep is the caller's bool mask viewed as uint8 (bool is accepted as is: same bytes).
inline void check_keep(const at::Tensor& keep, const char* fn, const at::Tensor& like) {
  check_cuda_flat(keep, fn, "keep", like);
  TORCH_CHECK(keep.scalar_type() == at::kByte || keep.scalar_type() == at::kBool, fn,
              ": keep must be uint8 (a bool mask viewed as uint8), got ", keep.scalar_type());
}

inline const uint8_t* keep_ptr(const at::Tensor& keep) { return static_cast<const uint8_t*>(keep.data_ptr()); }

}  // namespace lthfast
