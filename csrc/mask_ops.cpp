// lthfast C++ CPU ops for masked training and pruning, each one OpenMP-parallel pass (or
// two) over flat buffers:
//   apply_mask_       zero the pruned entries of a tensor
//   masked_sgd_       torch.optim.SGD's update fused with the mask: one pass over memory
//   magnitude_prune   global magnitude pruning by radix selection (no sort of all entries)
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace {

constexpr int64_t kParallelMin = 32768;  // below this, threads cost more than they save

void check_flat(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
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

// ----------------------------------------------------------------------------- apply_mask_

template <typename scalar_t>
void apply_mask_kernel(scalar_t* __restrict__ data, const uint8_t* __restrict__ keep, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    data[i] = keep_or_zero<scalar_t>(data[i], keep[i]);
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
    apply_mask_kernel<scalar_t>(tensor.data_ptr<scalar_t>(), reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>()),
                                tensor.numel());
  });
}

// ----------------------------------------------------------------------------- masked_sgd_

// torch.optim.SGD (dampening 0) in float arithmetic, then the mask as a select. A zero
// momentum buffer gives exactly the first-step rule (buffer = gradient).
template <typename scalar_t, bool kNesterov>
void masked_sgd_kernel(scalar_t* __restrict__ p, const scalar_t* __restrict__ g, scalar_t* __restrict__ b,
                       const uint8_t* __restrict__ keep, int64_t n, float lr, float momentum,
                       float weight_decay) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float param = static_cast<float>(p[i]);
    const float grad = static_cast<float>(g[i]) + weight_decay * param;
    const float buf = momentum * static_cast<float>(b[i]) + grad;
    const float step = kNesterov ? grad + momentum * buf : buf;
    const float updated = param - lr * step;
    p[i] = static_cast<scalar_t>(keep_or_zero<float>(updated, keep[i]));
    b[i] = static_cast<scalar_t>(keep_or_zero<float>(buf, keep[i]));
  }
}

void masked_sgd_(torch::Tensor params, torch::Tensor grads, torch::Tensor momentum_buf, torch::Tensor keep,
                 double lr, double momentum, double weight_decay, bool nesterov) {
  check_flat(params, "params", params);
  check_flat(grads, "grads", params);
  check_flat(momentum_buf, "momentum_buf", params);
  check_flat(keep, "mask", params);
  TORCH_CHECK(keep.scalar_type() == torch::kBool, "masked_sgd_: mask must be bool");
  TORCH_CHECK(grads.scalar_type() == params.scalar_type() && momentum_buf.scalar_type() == params.scalar_type(),
              "masked_sgd_: params, grads and momentum_buf must share one dtype");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, params.scalar_type(), "masked_sgd_", [&] {
    auto run = nesterov ? masked_sgd_kernel<scalar_t, true> : masked_sgd_kernel<scalar_t, false>;
    run(params.data_ptr<scalar_t>(), grads.data_ptr<scalar_t>(), momentum_buf.data_ptr<scalar_t>(),
        reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>()), params.numel(), static_cast<float>(lr),
        static_cast<float>(momentum),
        static_cast<float>(weight_decay));
  });
}

// ----------------------------------------------------------------------------- magnitude_prune

// The bits of |w| (sign bit cleared) as an unsigned integer are monotone in |w|; XOR with
// 0x7FFFFFFF (= 0x7FFFFFFF - bits) orders the largest first, so both directions select the
// smallest keys. Branch-free, so that the loops vectorize.
inline uint32_t magnitude_key(float w, uint32_t flip) {
  uint32_t bits;
  std::memcpy(&bits, &w, sizeof(bits));
  return (bits & 0x7FFFFFFFu) ^ flip;
}

// Removes the `count` kept entries with the smallest keys, ties by lowest index, in two
// passes: a 65536-bin histogram of the keys' high 16 bits finds the bin holding the
// count-th key; the second pass writes the mask for every entry outside that bin and
// collects the bin's entries, from which an nth_element on (key, index) picks the rest.
torch::Tensor magnitude_prune(torch::Tensor weights, torch::Tensor keep, int64_t count, bool largest) {
  check_flat(weights, "weights", weights);
  check_flat(keep, "mask", weights);
  TORCH_CHECK(weights.scalar_type() == torch::kFloat, "magnitude_prune: weights must be float32");
  TORCH_CHECK(keep.scalar_type() == torch::kBool, "magnitude_prune: mask must be bool");
  TORCH_CHECK(count >= 0, "magnitude_prune: count must be non-negative");
  const int64_t n = weights.numel();
  TORCH_CHECK(n < (int64_t(1) << 32), "magnitude_prune: at most 2^32 entries");
  if (count == 0) return keep.clone();
  // Restrict-qualified locals: bool stores could otherwise alias everything (char rules),
  // which stops vectorization.
  const float* __restrict__ w = weights.data_ptr<float>();
  const uint8_t* __restrict__ k = reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
  torch::Tensor out = torch::empty_like(keep);
  uint8_t* __restrict__ o = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
  const uint32_t flip = largest ? 0x7FFFFFFFu : 0u;
  constexpr int kBins = 1 << 16;
  constexpr int64_t kBlock = 4096;  // pass 2 works block by block while the block is in L1
  const int threads = n > kParallelMin ? omp_get_max_threads() : 1;

  std::vector<std::vector<uint32_t>> histograms(threads, std::vector<uint32_t>(kBins, 0));
#pragma omp parallel num_threads(threads)
  {
    uint32_t* __restrict__ hist = histograms[omp_get_thread_num()].data();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      hist[magnitude_key(w[i], flip) >> 16] += k[i];
    }
  }
  int64_t below = 0, bin = -1;
  for (int b = 0; b < kBins; ++b) {
    int64_t in_bin = 0;
    for (int t = 0; t < threads; ++t) in_bin += histograms[t][b];
    if (below + in_bin >= count) { bin = b; break; }
    below += in_bin;
  }
  TORCH_CHECK(bin >= 0, "magnitude_prune: count ", count, " exceeds the kept entries");
  const uint32_t chosen = static_cast<uint32_t>(bin);

  std::vector<std::vector<std::pair<uint32_t, int64_t>>> candidates(threads);
#pragma omp parallel num_threads(threads)
  {
    auto& mine = candidates[omp_get_thread_num()];
#pragma omp for schedule(static)
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t end = std::min(n, start + kBlock);
      uint32_t keys[kBlock];
      int in_bin = 0;
#pragma omp simd reduction(+ : in_bin)
      for (int64_t i = start; i < end; ++i) {
        const uint32_t key = magnitude_key(w[i], flip);
        const uint32_t high = key >> 16;
        keys[i - start] = key;
        o[i] = k[i] & (high >= chosen);
        in_bin += k[i] & (high == chosen);
      }
      if (in_bin == 0) continue;  // most blocks hold no entry of the chosen bin
      for (int64_t i = start; i < end; ++i) {
        if ((keys[i - start] >> 16) == chosen && k[i]) mine.emplace_back(keys[i - start], i);
      }
    }
  }
  std::vector<std::pair<uint32_t, int64_t>> all;
  for (auto& c : candidates) all.insert(all.end(), c.begin(), c.end());
  const int64_t rest = count - below;  // 1..all.size(): removed from the chosen bin
  std::nth_element(all.begin(), all.begin() + (rest - 1), all.end());  // pairs order by (key, index)
  for (int64_t j = 0; j < rest; ++j) o[all[j].second] = 0;
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lthfast C++ CPU ops";
  m.def("apply_mask_", &apply_mask_, "Zero, in place, the entries of tensor where mask is false");
  m.def("masked_sgd_", &masked_sgd_, "torch.optim.SGD's update fused with a keep-mask, in place");
  m.def("magnitude_prune", &magnitude_prune,
        "The mask with `count` more entries removed: smallest (or largest) |w|, ties by index");
}
