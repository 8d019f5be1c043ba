// How a data-parallel epoch is cut: one seeded global order per (seed, epoch), a global
// cursor of consumed samples, and each step's global batch split across the current
// ranks. Because the split depends only on (cursor, world), a change of world size
// mid-epoch neither drops nor repeats a sample.
#pragma once

#include <cstdint>
#include <vector>

namespace shoal {

// Fisher-Yates over [0, n) driven by SplitMix64, so the order is identical on every
// platform and standard library (std::shuffle's is not specified).
std::vector<uint32_t> EpochPermutation(uint64_t n, uint64_t seed, int64_t epoch);

struct Span {
  int64_t begin = 0;  // positions in the epoch order
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// The step starting at `cursor` consumes min(global_batch, n - cursor) samples; rank r
// of `world` takes the r-th of `world` near-equal contiguous parts of them.
Span RankSpan(int64_t cursor, int64_t n, int64_t global_batch, int rank, int world);
// Samples the step starting at `cursor` consumes in total (the cursor's advance).
int64_t StepSamples(int64_t cursor, int64_t n, int64_t global_batch);
// Steps in an epoch of n samples when every step has `global_batch` (last one partial).
int64_t StepsPerEpoch(int64_t n, int64_t global_batch);

}  // namespace shoal
