// The partition must use every sample exactly once per epoch, for any world size and
// also when the world size changes mid-epoch at a cursor.
#include <gtest/gtest.h>

#include <set>

#include "datapipe/partition.h"

namespace shoal {
namespace {

TEST(EpochPermutation, IsAPermutationAndDeterministic) {
  auto a = EpochPermutation(1000, 7, 0);
  auto b = EpochPermutation(1000, 7, 0);
  auto c = EpochPermutation(1000, 7, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::set<uint32_t> s(a.begin(), a.end());
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_EQ(*s.rbegin(), 999u);
  EXPECT_TRUE(EpochPermutation(0, 1, 0).empty());
}

// Walks one epoch; the world size may change at given cursors. Counts each sample.
std::vector<int> WalkEpoch(int64_t n, int per_worker, std::vector<std::pair<int64_t, int>> worlds) {
  std::vector<int> seen(n, 0);
  auto order = EpochPermutation(n, 3, 0);
  int64_t cursor = 0;
  size_t w = 0;
  while (cursor < n) {
    while (w + 1 < worlds.size() && cursor >= worlds[w + 1].first) ++w;
    int world = worlds[w].second;
    int64_t g = int64_t{per_worker} * world;
    int64_t total = 0;
    for (int r = 0; r < world; ++r) {
      Span s = RankSpan(cursor, n, g, r, world);
      for (int64_t i = s.begin; i < s.end; ++i) seen[order[i]]++;
      total += s.size();
    }
    EXPECT_EQ(total, StepSamples(cursor, n, g));
    cursor += StepSamples(cursor, n, g);
  }
  return seen;
}

TEST(RankSpan, EverySampleOncePerEpochForWorldSizes1To5) {
  for (int world = 1; world <= 5; ++world) {
    for (int64_t n : {1, 7, 100, 1001}) {
      auto seen = WalkEpoch(n, 13, {{0, world}});
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "world " << world << " n " << n << " sample " << i;
    }
  }
}

TEST(RankSpan, EverySampleOnceWhenWorldChangesMidEpoch) {
  auto seen = WalkEpoch(1000, 16, {{0, 4}, {300, 3}, {520, 5}, {700, 1}});
  for (int v : seen) ASSERT_EQ(v, 1);
}

TEST(RankSpan, SplitsNearEvenly) {
  Span a = RankSpan(0, 100, 10, 0, 3), b = RankSpan(0, 100, 10, 1, 3), c = RankSpan(0, 100, 10, 2, 3);
  EXPECT_EQ(a.size() + b.size() + c.size(), 10);
  EXPECT_LE(std::max({a.size(), b.size(), c.size()}) - std::min({a.size(), b.size(), c.size()}), 1);
  EXPECT_EQ(StepsPerEpoch(100, 10), 10);
  EXPECT_EQ(StepsPerEpoch(101, 10), 11);
  EXPECT_EQ(StepSamples(95, 100, 10), 5);
}

}  // namespace
}  // namespace shoal
