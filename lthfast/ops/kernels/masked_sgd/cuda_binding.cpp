// Torch binding of masked_sgd_'s CUDA kernels (cuda.cu), registered into lthfast._cuda by
// register_masked_sgd_cuda (csrc/cuda_module.cpp):
//   masked_sgd_             one lr for every entry
//   masked_sgd_member_lr_   lr[k] for the k-th of K equal segments of the buffers
#include "../cuda_binding_common.h"
#include "cuda.cuh"

namespace lthfast {
namespace {

c10::ScalarType check_sgd_buffers(const char* fn, const at::Tensor& params, const at::Tensor& grads,
                                  const at::Tensor& momentum_buf, const at::Tensor& keep) {
  check_cuda_flat(params, fn, "params", params);
  check_cuda_flat(grads, fn, "grads", params);
  check_cuda_flat(momentum_buf, fn, "momentum_buf", params);
  check_keep(keep, fn, params);
  const auto dtype = params.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              fn, ": params must be float32 or bfloat16, got ", dtype);
  TORCH_CHECK(grads.scalar_type() == dtype && momentum_buf.scalar_type() == dtype, fn,
              ": params, grads and momentum_buf must share one dtype, got ", dtype, ", ",
              grads.scalar_type(), " and ", momentum_buf.scalar_type());
  return dtype;
}

__nv_bfloat16* bf16(const at::Tensor& t) { return reinterpret_cast<__nv_bfloat16*>(t.data_ptr<at::BFloat16>()); }

void masked_sgd_(at::Tensor params, at::Tensor grads, at::Tensor momentum_buf, at::Tensor keep,
                 double lr, double momentum, double weight_decay, bool nesterov) {
  const auto dtype = check_sgd_buffers("masked_sgd_", params, grads, momentum_buf, keep);
  const int64_t n = params.numel();
  if (n == 0) return;

  const c10::cuda::CUDAGuard guard(params.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (dtype == at::kFloat) {
    lthfast_cuda::masked_sgd_f32(params.data_ptr<float>(), grads.data_ptr<float>(),
                                 momentum_buf.data_ptr<float>(), keep_ptr(keep), n, static_cast<float>(lr),
                                 static_cast<float>(momentum), static_cast<float>(weight_decay), nesterov,
                                 stream);
  } else {
    lthfast_cuda::masked_sgd_bf16(bf16(params), bf16(grads), bf16(momentum_buf), keep_ptr(keep), n,
                                  static_cast<float>(lr), static_cast<float>(momentum),
                                  static_cast<float>(weight_decay), nesterov, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void masked_sgd_member_lr_(at::Tensor params, at::Tensor grads, at::Tensor momentum_buf,
                           at::Tensor keep, at::Tensor lr, double momentum, double weight_decay,
                           bool nesterov) {
  constexpr const char* fn = "masked_sgd_member_lr_";
  const auto dtype = check_sgd_buffers(fn, params, grads, momentum_buf, keep);
  TORCH_CHECK(lr.is_cuda() && lr.device() == params.device(), fn, ": lr must be on ", params.device(),
              ", got ", lr.device());
  TORCH_CHECK(lr.scalar_type() == at::kFloat && lr.dim() == 1 && lr.is_contiguous(), fn,
              ": lr must be a contiguous 1-D float32 tensor");
  const int64_t members = lr.numel(), n = params.numel();
  TORCH_CHECK(members > 0 && n % members == 0, fn, ": lr has ", members, " entries, which do not divide the ",
              n, " entries of params");
  if (n == 0) return;

  const c10::cuda::CUDAGuard guard(params.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t segment = n / members;
  if (dtype == at::kFloat) {
    lthfast_cuda::masked_sgd_member_lr_f32(params.data_ptr<float>(), grads.data_ptr<float>(),
                                           momentum_buf.data_ptr<float>(), keep_ptr(keep), n,
                                           lr.data_ptr<float>(), segment, static_cast<float>(momentum),
                                           static_cast<float>(weight_decay), nesterov, stream);
  } else {
    lthfast_cuda::masked_sgd_member_lr_bf16(bf16(params), bf16(grads), bf16(momentum_buf), keep_ptr(keep), n,
                                            lr.data_ptr<float>(), segment, static_cast<float>(momentum),
                                            static_cast<float>(weight_decay), nesterov, stream);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void register_masked_sgd_cuda(pybind11::module_& m) {
  m.def("masked_sgd_", &masked_sgd_,
        "torch.optim.SGD's update (dampening 0) fused with a keep-mask, in place; pruned entries of "
        "params and momentum_buf become exactly 0",
        py::arg("params"), py::arg("grads"), py::arg("momentum_buf"), py::arg("keep"), py::arg("lr"),
        py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));
  m.def("masked_sgd_member_lr_", &masked_sgd_member_lr_,
        "masked_sgd_ over K equal segments of the buffers, segment k with learning rate lr[k] "
        "(lr: a 1-D float32 CUDA tensor of K entries, K dividing the buffers' size)",
        py::arg("params"), py::arg("grads"), py::arg("momentum_buf"), py::arg("keep"), py::arg("lr"),
        py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));
}

}  // namespace lthfast
