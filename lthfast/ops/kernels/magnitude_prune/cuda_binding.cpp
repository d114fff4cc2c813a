// Torch binding of magnitude_prune's CUDA kernel (cuda.cu), registered into lthfast._cuda by
// register_magnitude_prune_cuda (csrc/cuda_module.cpp):
//   key_histogram   one 65536-bin pass of the radix select behind global magnitude pruning
#include "../cuda_binding_common.h"

#include <ATen/ops/zeros.h>

#include "cuda.cuh"

namespace lthfast {
namespace {

constexpr int64_t kBins = 65536;

at::Tensor key_histogram(at::Tensor weights, at::Tensor keep, bool largest, int64_t shift, int64_t prefix) {
  constexpr const char* fn = "key_histogram";
  check_cuda_flat(weights, fn, "weights", weights);
  check_keep(keep, fn, weights);
  TORCH_CHECK(weights.scalar_type() == at::kFloat, fn, ": weights must be float32, got ", weights.scalar_type());
  TORCH_CHECK(shift == 0 || shift == 16, fn, ": shift must be 16 (first pass) or 0 (second pass), got ", shift);
  TORCH_CHECK(prefix >= -1 && prefix < kBins, fn, ": prefix must be -1 (none) or a 16-bit value, got ", prefix);

  const c10::cuda::CUDAGuard guard(weights.device());
  auto bins = at::zeros({kBins}, weights.options().dtype(at::kInt));
  const int64_t n = weights.numel();
  if (n == 0) return bins;
  lthfast_cuda::key_histogram(weights.data_ptr<float>(), keep_ptr(keep), n, largest, static_cast<int>(shift),
                              static_cast<int32_t>(prefix), bins.data_ptr<int32_t>(),
                              c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return bins;
}

}  // namespace

void register_magnitude_prune_cuda(pybind11::module_& m) {
  m.def("key_histogram", &key_histogram,
        "65536-bin int32 histogram of the magnitude keys of the kept weights: bins of the high 16 bits "
        "(shift=16, prefix=-1) or of the low 16 bits of the keys whose high 16 bits equal prefix (shift=0)",
        py::arg("weights"), py::arg("keep"), py::arg("largest"), py::arg("shift"), py::arg("prefix"));
}

}  // namespace lthfast
