// masked_sgd_ on the CPU: torch.optim.SGD's update fused with the keep-mask, one
// OpenMP-parallel pass over flat buffers. Bound into lthfast._C by register_masked_sgd
// (csrc/module.cpp) as masked_sgd_ (one lr) and masked_sgd_member_lr_ (lr[k] for member k).
#include "../cpu_common.h"

#include <omp.h>

#include <algorithm>

namespace lthfast {
namespace {

// torch.optim.SGD (dampening 0) in float arithmetic, then the mask as a select, over
// entries [begin, end). A zero momentum buffer gives exactly the first-step rule (buffer =
// gradient). The extension is built without -ffast-math and without FMA contraction, so
// every backend that rounds each operation to float32 agrees bit for bit.
template <typename scalar_t, bool kNesterov>
inline void sgd_range(scalar_t* __restrict__ p, const scalar_t* __restrict__ g, scalar_t* __restrict__ b,
                      const uint8_t* __restrict__ keep, int64_t begin, int64_t end, float lr, float momentum,
                      float weight_decay) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float param = static_cast<float>(p[i]);
    const float grad = static_cast<float>(g[i]) + weight_decay * param;
    const float buf = momentum * static_cast<float>(b[i]) + grad;
    const float step = kNesterov ? grad + momentum * buf : buf;
    const float updated = param - lr * step;
    p[i] = static_cast<scalar_t>(keep_or_zero<float>(updated, keep[i]));
    b[i] = static_cast<scalar_t>(keep_or_zero<float>(buf, keep[i]));
  }
}

// One lr for every entry: each thread updates an equal share of [0, n).
template <typename scalar_t, bool kNesterov>
void masked_sgd_kernel(scalar_t* p, const scalar_t* g, scalar_t* b, const uint8_t* keep, int64_t n, float lr,
                       float momentum, float weight_decay) {
  const int threads = n > kParallelMin ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(threads)
  {
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    const int64_t share = (n + parts - 1) / parts;
    sgd_range<scalar_t, kNesterov>(p, g, b, keep, std::min(n, part * share), std::min(n, (part + 1) * share), lr,
                                   momentum, weight_decay);
  }
}

// lr[k] for the entries of member k, [k * segment, (k + 1) * segment). Each thread takes an
// equal share of [0, n) and walks it segment by segment, so the inner loop keeps one lr
// and vectorizes whatever the segment size (1 to n).
template <typename scalar_t, bool kNesterov>
void masked_sgd_member_lr_kernel(scalar_t* p, const scalar_t* g, scalar_t* b, const uint8_t* keep, int64_t n,
                                 const float* lr, int64_t segment, float momentum, float weight_decay) {
  const int threads = n > kParallelMin ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(threads)
  {
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
    const int64_t share = (n + parts - 1) / parts;
    const int64_t begin = std::min(n, part * share), end = std::min(n, begin + share);
    for (int64_t start = begin; start < end;) {
      const int64_t member = start / segment;
      const int64_t stop = std::min(end, (member + 1) * segment);
      sgd_range<scalar_t, kNesterov>(p, g, b, keep, start, stop, lr[member], momentum, weight_decay);
      start = stop;
    }
  }
}

void check_sgd_buffers(const at::Tensor& params, const at::Tensor& grads, const at::Tensor& momentum_buf,
                       const at::Tensor& keep) {
  check_flat(params, "params", params);
  check_flat(grads, "grads", params);
  check_flat(momentum_buf, "momentum_buf", params);
  check_flat(keep, "mask", params);
  TORCH_CHECK(keep.scalar_type() == at::kBool, "masked_sgd_: mask must be bool");
  TORCH_CHECK(grads.scalar_type() == params.scalar_type() && momentum_buf.scalar_type() == params.scalar_type(),
              "masked_sgd_: params, grads and momentum_buf must share one dtype");
}

void masked_sgd_(at::Tensor params, at::Tensor grads, at::Tensor momentum_buf, at::Tensor keep,
                 double lr, double momentum, double weight_decay, bool nesterov) {
  check_sgd_buffers(params, grads, momentum_buf, keep);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, params.scalar_type(), "masked_sgd_", [&] {
    auto run = nesterov ? masked_sgd_kernel<scalar_t, true> : masked_sgd_kernel<scalar_t, false>;
    run(params.data_ptr<scalar_t>(), grads.data_ptr<scalar_t>(), momentum_buf.data_ptr<scalar_t>(),
        keep_bytes(keep), params.numel(), static_cast<float>(lr), static_cast<float>(momentum),
        static_cast<float>(weight_decay));
  });
}

void masked_sgd_member_lr_(at::Tensor params, at::Tensor grads, at::Tensor momentum_buf,
                           at::Tensor keep, at::Tensor lr, double momentum, double weight_decay,
                           bool nesterov) {
  check_sgd_buffers(params, grads, momentum_buf, keep);
  TORCH_CHECK(lr.device().is_cpu() && lr.scalar_type() == at::kFloat && lr.dim() == 1 && lr.is_contiguous(),
              "masked_sgd_member_lr_: lr must be a contiguous 1-D float32 CPU tensor");
  const int64_t members = lr.numel(), n = params.numel();
  TORCH_CHECK(members > 0 && n % members == 0, "masked_sgd_member_lr_: lr has ", members,
              " entries, which do not divide the ", n, " entries of params");
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, params.scalar_type(), "masked_sgd_member_lr_", [&] {
    auto run = nesterov ? masked_sgd_member_lr_kernel<scalar_t, true> : masked_sgd_member_lr_kernel<scalar_t, false>;
    run(params.data_ptr<scalar_t>(), grads.data_ptr<scalar_t>(), momentum_buf.data_ptr<scalar_t>(),
        keep_bytes(keep), n, lr.data_ptr<float>(), n / members, static_cast<float>(momentum),
        static_cast<float>(weight_decay));
  });
}

}  // namespace

void register_masked_sgd(pybind11::module_& m) {
  m.def("masked_sgd_", &masked_sgd_, "torch.optim.SGD's update fused with a keep-mask, in place");
  m.def("masked_sgd_member_lr_", &masked_sgd_member_lr_,
        "masked_sgd_ over K equal segments of the buffers, segment k with learning rate lr[k]");
}

}  // namespace lthfast
