// Epoch order and per-rank spans.
#include "datapipe/partition.h"

#include <algorithm>

namespace shoal {

namespace {
uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Unbiased integer in [0, bound) by rejection (Lemire's method without the multiply trick).
uint64_t Bounded(uint64_t& state, uint64_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do r = SplitMix64(state); while (r >= limit);
  return r % bound;
}
}  // namespace

std::vector<uint32_t> EpochPermutation(uint64_t n, uint64_t seed, int64_t epoch) {
  std::vector<uint32_t> order(n);
  for (uint64_t i = 0; i < n; ++i) order[i] = static_cast<uint32_t>(i);
  uint64_t state = seed * 0x2545F4914F6CDD1Dull + static_cast<uint64_t>(epoch) * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t i = n; i > 1; --i) std::swap(order[i - 1], order[Bounded(state, i)]);
  return order;
}

int64_t StepSamples(int64_t cursor, int64_t n, int64_t global_batch) {
  return std::max<int64_t>(0, std::min(global_batch, n - cursor));
}

Span RankSpan(int64_t cursor, int64_t n, int64_t global_batch, int rank, int world) {
  int64_t g = StepSamples(cursor, n, global_batch);
  return Span{cursor + g * rank / world, cursor + g * (rank + 1) / world};
}

int64_t StepsPerEpoch(int64_t n, int64_t global_batch) { return (n + global_batch - 1) / global_batch; }

}  // namespace shoal
