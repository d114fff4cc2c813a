// lthfast C++ CPU ops. First op: apply a keep-mask in place (zero the pruned entries),
// one OpenMP-parallel pass over memory, the building block of masked training.
#include <torch/extension.h>

#include <cstdint>

namespace {

template <typename scalar_t>
void apply_mask_kernel(scalar_t* __restrict__ data, const bool* __restrict__ keep, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    // A select, not a multiply: NaN or inf in a pruned entry still becomes exactly zero.
    data[i] = keep[i] ? data[i] : scalar_t(0);
  }
}

void apply_mask_(torch::Tensor tensor, torch::Tensor mask) {
  TORCH_CHECK(tensor.device().is_cpu() && mask.device().is_cpu(), "apply_mask_: CPU tensors only");
  TORCH_CHECK(mask.scalar_type() == torch::kBool, "apply_mask_: mask must be bool");
  TORCH_CHECK(tensor.numel() == mask.numel(), "apply_mask_: tensor and mask sizes differ");
  // Elementwise over the underlying storage: valid for any dense layout both tensors share.
  TORCH_CHECK(tensor.is_contiguous() || tensor.is_contiguous(at::MemoryFormat::ChannelsLast),
              "apply_mask_: tensor must be contiguous or channels_last");
  TORCH_CHECK(tensor.strides() == mask.strides(), "apply_mask_: tensor and mask strides differ");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, tensor.scalar_type(), "apply_mask_", [&] {
    apply_mask_kernel<scalar_t>(tensor.data_ptr<scalar_t>(), mask.data_ptr<bool>(), tensor.numel());
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lthfast C++ CPU ops";
  m.def("apply_mask_", &apply_mask_, "Zero, in place, the entries of tensor where mask is false");
}
