// magnitude_prune on the CPU: global magnitude pruning by radix selection (no sort of all
// entries), two OpenMP-parallel passes over a flat buffer. Bound into lthfast._C by
// register_magnitude_prune (csrc/module.cpp).
#include "../cpu_common.h"

#include <ATen/ops/empty_like.h>

#include <omp.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace lthfast {
namespace {

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
at::Tensor magnitude_prune(at::Tensor weights, at::Tensor keep, int64_t count, bool largest) {
  check_flat(weights, "weights", weights);
  check_flat(keep, "mask", weights);
  TORCH_CHECK(weights.scalar_type() == at::kFloat, "magnitude_prune: weights must be float32");
  TORCH_CHECK(keep.scalar_type() == at::kBool, "magnitude_prune: mask must be bool");
  TORCH_CHECK(count >= 0, "magnitude_prune: count must be non-negative");
  const int64_t n = weights.numel();
  TORCH_CHECK(n < (int64_t(1) << 32), "magnitude_prune: at most 2^32 entries");
  if (count == 0) return keep.clone();
  // Restrict-qualified locals: bool stores could otherwise alias everything (char rules),
  // which stops vectorization.
  const float* __restrict__ w = weights.data_ptr<float>();
  const uint8_t* __restrict__ k = reinterpret_cast<const uint8_t*>(keep.data_ptr<bool>());
  at::Tensor out = at::empty_like(keep);
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

void register_magnitude_prune(pybind11::module_& m) {
  m.def("magnitude_prune", &magnitude_prune,
        "The mask with `count` more entries removed: smallest (or largest) |w|, ties by index");
}

}  // namespace lthfast
