// Entry point of the CUDA extension lthfast._cuda: one register function per op with a CUDA
// kernel, each defined beside its op in lthfast/ops/kernels/<op>/cuda_binding.cpp (the torch
// binding) over <op>/cuda.cu (plain CUDA, compiled by nvcc on its own).
#include <pybind11/pybind11.h>

namespace lthfast {
void register_masked_sgd_cuda(pybind11::module_& m);
void register_magnitude_prune_cuda(pybind11::module_& m);
}  // namespace lthfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lthfast CUDA ops: fused masked SGD and the radix-select histogram of magnitude pruning";
  lthfast::register_masked_sgd_cuda(m);
  lthfast::register_magnitude_prune_cuda(m);
}
