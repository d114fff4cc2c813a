// Entry point of the C++ extension lthfast._C: one register function per op, each defined
// beside its op in lthfast/ops/kernels/<op>/cpu.cpp (OpenMP CPU kernels).
#include <pybind11/pybind11.h>

namespace lthfast {
void register_apply_mask(pybind11::module_& m);
void register_masked_sgd(pybind11::module_& m);
void register_magnitude_prune(pybind11::module_& m);
}  // namespace lthfast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lthfast C++ CPU ops";
  lthfast::register_apply_mask(m);
  lthfast::register_masked_sgd(m);
  lthfast::register_magnitude_prune(m);
}
