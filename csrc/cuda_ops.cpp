// lthfast._cuda: Python bindings of the CUDA kernels in csrc/cuda/ (plain CUDA, compiled by
// nvcc on its own; this file is the only one that sees torch):
//   masked_sgd_      torch.optim.SGD's update fused with the keep-mask, in place, one pass
//   key_histogram    one 65536-bin pass of the radix select behind global magnitude pruning
// Inputs are flat (1-D contiguous) CUDA buffers; work runs on the current CUDA stream.
#include <torch/extension.h>

// c10's stream header, not ATen/cuda/CUDAContext.h (the same getCurrentCUDAStream): that one
// also pulls in the cuBLAS/cuSPARSE/cuSOLVER headers, which a bare CUDA toolkit may lack.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "cuda/lthfast_kernels.h"

namespace {

constexpr int64_t kBins = 65536;

void check_flat(const torch::Tensor& t, const char* fn, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ", t.device(), ", expected ", like.device());
  TORCH_CHECK(t.dim() == 1, fn, ": ", name, " must be 1-D, got ", t.dim(), " dimensions");
  TORCH_CHECK(t.is_contiguous(), fn, ": ", name, " must be contiguous");
  TORCH_CHECK(t.numel() == like.numel(), fn, ": ", name, " has ", t.numel(), " entries, expected ", like.numel());
}

// keep is the caller's bool mask viewed as uint8 (bool is accepted as is: same bytes).
void check_keep(const torch::Tensor& keep, const char* fn, const torch::Tensor& like) {
  check_flat(keep, fn, "keep", like);
  TORCH_CHECK(keep.scalar_type() == torch::kByte || keep.scalar_type() == torch::kBool, fn,
              ": keep must be uint8 (a bool mask viewed as uint8), got ", keep.scalar_type());
}

const uint8_t* keep_ptr(const torch::Tensor& keep) { return static_cast<const uint8_t*>(keep.data_ptr()); }

void masked_sgd_(torch::Tensor params, torch::Tensor grads, torch::Tensor momentum_buf, torch::Tensor keep,
                 double lr, double momentum, double weight_decay, bool nesterov) {
  constexpr const char* fn = "masked_sgd_";
  check_flat(params, fn, "params", params);
  check_flat(grads, fn, "grads", params);
  check_flat(momentum_buf, fn, "momentum_buf", params);
  check_keep(keep, fn, params);
  const auto dtype = params.scalar_type();
  TORCH_CHECK(dtype == torch::kFloat || dtype == torch::kBFloat16,
              fn, ": params must be float32 or bfloat16, got ", dtype);
  TORCH_CHECK(grads.scalar_type() == dtype && momentum_buf.scalar_type() == dtype, fn,
              ": params, grads and momentum_buf must share one dtype, got ", dtype, ", ",
              grads.scalar_type(), " and ", momentum_buf.scalar_type());
  const int64_t n = params.numel();
  if (n == 0) return;

  const c10::cuda::CUDAGuard guard(params.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (dtype == torch::kFloat) {
    lthfast_cuda::masked_sgd_f32(params.data_ptr<float>(), grads.data_ptr<float>(),
                                 momentum_buf.data_ptr<float>(), keep_ptr(keep), n, static_cast<float>(lr),
                                 static_cast<float>(momentum), static_cast<float>(weight_decay), nesterov,
                                 stream);
  } else {
    lthfast_cuda::masked_sgd_bf16(reinterpret_cast<__nv_bfloat16*>(params.data_ptr<at::BFloat16>()),
                                  reinterpret_cast<const __nv_bfloat16*>(grads.data_ptr<at::BFloat16>()),
                                  reinterpret_cast<__nv_bfloat16*>(momentum_buf.data_ptr<at::BFloat16>()),
                                  keep_ptr(keep), n, static_cast<float>(lr), static_cast<float>(momentum),
                                  static_cast<float>(weight_decay), nesterov, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

torch::Tensor key_histogram(torch::Tensor weights, torch::Tensor keep, bool largest, int64_t shift, int64_t prefix) {
  constexpr const char* fn = "key_histogram";
  check_flat(weights, fn, "weights", weights);
  check_keep(keep, fn, weights);
  TORCH_CHECK(weights.scalar_type() == torch::kFloat, fn, ": weights must be float32, got ", weights.scalar_type());
  TORCH_CHECK(shift == 0 || shift == 16, fn, ": shift must be 16 (first pass) or 0 (second pass), got ", shift);
  TORCH_CHECK(prefix >= -1 && prefix < kBins, fn, ": prefix must be -1 (none) or a 16-bit value, got ", prefix);

  const c10::cuda::CUDAGuard guard(weights.device());
  auto bins = torch::zeros({kBins}, weights.options().dtype(torch::kInt));
  const int64_t n = weights.numel();
  if (n == 0) return bins;
  lthfast_cuda::key_histogram(weights.data_ptr<float>(), keep_ptr(keep), n, largest, static_cast<int>(shift),
                              static_cast<int32_t>(prefix), bins.data_ptr<int32_t>(),
                              c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return bins;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lthfast CUDA ops: fused masked SGD and the radix-select histogram of magnitude pruning";
  m.def("masked_sgd_", &masked_sgd_,
        "torch.optim.SGD's update (dampening 0) fused with a keep-mask, in place; pruned entries of "
        "params and momentum_buf become exactly 0",
        py::arg("params"), py::arg("grads"), py::arg("momentum_buf"), py::arg("keep"), py::arg("lr"),
        py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));
  m.def("key_histogram", &key_histogram,
        "65536-bin int32 histogram of the magnitude keys of the kept weights: bins of the high 16 bits "
        "(shift=16, prefix=-1) or of the low 16 bits of the keys whose high 16 bits equal prefix (shift=0)",
        py::arg("weights"), py::arg("keep"), py::arg("largest"), py::arg("shift"), py::arg("prefix"));
}
