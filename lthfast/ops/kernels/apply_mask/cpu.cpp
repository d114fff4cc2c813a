// apply_mask_ on the CPU: zero the pruned entries of a tensor in place, one OpenMP-parallel
// pass over its storage. Bound into lthfast._C by register_apply_mask (csrc/module.cpp).
#include "../cpu_common.h"

namespace lthfast {
namespace {

template <typename scalar_t>
void apply_mask_kernel(scalar_t* __restrict__ data, const uint8_t* __restrict__ keep, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    data[i] = keep_or_zero<scalar_t>(data[i], keep[i]);
  }
}

void apply_mask_(at::Tensor tensor, at::Tensor mask) {
  TORCH_CHECK(tensor.device().is_cpu() && mask.device().is_cpu(), "apply_mask_: CPU tensors only");
  TORCH_CHECK(mask.scalar_type() == at::kBool, "apply_mask_: mask must be bool");
  TORCH_CHECK(tensor.numel() == mask.numel(), "apply_mask_: tensor and mask sizes differ");
  // Elementwise over the underlying storage: valid for any dense layout both tensors share.
  TORCH_CHECK(tensor.is_contiguous() || tensor.is_contiguous(at::MemoryFormat::ChannelsLast),
              "apply_mask_: tensor must be contiguous or channels_last");
  TORCH_CHECK(tensor.strides() == mask.strides(), "apply_mask_: tensor and mask strides differ");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, tensor.scalar_type(), "apply_mask_", [&] {
    apply_mask_kernel<scalar_t>(tensor.data_ptr<scalar_t>(), keep_bytes(mask), tensor.numel());
  });
}

}  // namespace

void register_apply_mask(pybind11::module_& m) {
  m.def("apply_mask_", &apply_mask_, "Zero, in place, the entries of tensor where mask is false");
}

}  // namespace lthfast
