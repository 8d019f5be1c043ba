// Planting is what every figure of the poison benchmark rests on: a seed must give the
// same set, each backdoor's trigger must land where its attack says with its target
// label, and the second backdoor must leave every other planted record as it was (so
// figures measured before it stay comparable). A small synthetic set, no timing.
#include "bench/poison/plant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace shoal::poison {
namespace {

constexpr int kSide = 28;

// 2,000 images whose content stays inside rows and columns 6..21, so the corners where
// both triggers go are dark, as in Fashion-MNIST; labels cycle through 10 classes.
InMemoryDataset SyntheticImages(int64_t n = 2000) {
  InMemoryDataset d;
  d.n = n;
  d.dim = kSide * kSide;
  d.num_classes = 10;
  d.x.assign(static_cast<size_t>(n) * d.dim, 0.0f);
  d.y.resize(n);
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<float> u(0.0f, 0.5f);
  for (int64_t i = 0; i < n; ++i) {
    d.y[i] = static_cast<int32_t>(i % 10);
    for (int r = 6; r < 22; ++r)
      for (int c = 6; c < 22; ++c) d.x[i * d.dim + r * kSide + c] = u(rng);
  }
  return d;
}

const float* Image(const PlantedSet& s, int64_t i) { return s.x.data() + i * s.dim; }

// Bit for bit: corrupt records carry NaN, which never equals itself.
bool SameBits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

bool IsTrigger(const PlantedSet& s, int64_t i, Trigger t) { return s.kind[i] == kBackdoor && s.variant[i] == t; }

// The pixels the default cross sets: both diagonals of the 5x5 box at (1, 1).
std::vector<std::pair<int, int>> DefaultCrossPixels() {
  return {{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {1, 5}, {2, 4}, {4, 2}, {5, 1}};
}

TEST(PoisonPlant, StampCrossSetsBothDiagonalsAndNothingElse) {
  std::vector<float> image(kSide * kSide, 0.0f);
  StampCross(image.data(), kSide, 5, 1);
  std::vector<float> expected(kSide * kSide, 0.0f);
  for (auto [r, c] : DefaultCrossPixels()) expected[r * kSide + c] = 1.0f;
  EXPECT_EQ(image, expected);
}

TEST(PoisonPlant, StampCrossClipsAtTheImageEdge) {
  std::vector<float> image(4 * 4, 0.0f);
  StampCross(image.data(), 4, 5, 1);  // the 5x5 box at (1, 1) runs past the edge of a 4x4 image
  std::vector<float> expected(4 * 4, 0.0f);
  for (auto [r, c] : std::vector<std::pair<int, int>>{{1, 1}, {2, 2}, {3, 3}}) expected[r * 4 + c] = 1.0f;
  EXPECT_EQ(image, expected);  // the other diagonal (1,5), (2,4), (3,3) is off the image but for (3,3)
}

TEST(PoisonPlant, SameSeedGivesTheSamePlantedSet) {
  const InMemoryDataset clean = SyntheticImages();
  const PlantConfig cfg;
  const PlantedSet a = Plant(clean, cfg), b = Plant(clean, cfg);
  ASSERT_EQ(a.x.size(), b.x.size());
  EXPECT_TRUE(SameBits(a.x.data(), b.x.data(), a.x.size()));
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.origin, b.origin);
  EXPECT_EQ(a.variant, b.variant);
}

TEST(PoisonPlant, EachTriggerLandsWhereItsAttackSaysWithItsTarget) {
  const InMemoryDataset clean = SyntheticImages();
  const PlantConfig cfg;
  const PlantedSet s = Plant(clean, cfg);
  std::vector<float> expected(s.dim);
  for (const BackdoorAttack& attack : BackdoorAttacks(cfg)) {
    int64_t planted = 0;
    for (int64_t i = 0; i < s.n(); ++i) {
      if (!IsTrigger(s, i, attack.trigger)) continue;
      ++planted;
      const int64_t from = s.origin[i];
      EXPECT_NE(clean.y[from], attack.target) << attack.name << ": a victim already of the target class";
      EXPECT_EQ(s.y[i], attack.target) << attack.name;
      // The clean image with exactly this trigger stamped, nothing else changed.
      std::copy(clean.x.begin() + from * s.dim, clean.x.begin() + (from + 1) * s.dim, expected.begin());
      StampTrigger(expected.data(), s.side, attack.trigger, cfg);
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), Image(s, i))) << attack.name << " record " << i;
    }
    EXPECT_EQ(planted, std::llround(attack.fraction * clean.n)) << attack.name;
  }
  // The default cross, pixel by pixel, on every one of its records, labelled bag (8).
  for (int64_t i = 0; i < s.n(); ++i) {
    if (!IsTrigger(s, i, kCrossTrigger)) continue;
    EXPECT_EQ(s.y[i], 8);
    for (auto [r, c] : DefaultCrossPixels()) EXPECT_EQ(Image(s, i)[r * kSide + c], 1.0f) << i << ": " << r << "," << c;
  }
}

TEST(PoisonPlant, TheCrossLeavesEveryOtherPlantedRecordAsItWas) {
  const InMemoryDataset clean = SyntheticImages();
  // A fifth of the set crossed, so that had it been planted before the other kinds it
  // would surely have taken some of their victims.
  PlantConfig with, without;
  with.cross_fraction = 0.2;
  without.cross_fraction = 0;
  const PlantedSet before = Plant(clean, without), after = Plant(clean, with);
  ASSERT_EQ(before.n(), after.n());
  int64_t crosses = 0;
  for (int64_t i = 0; i < after.n(); ++i) {
    EXPECT_EQ(before.origin[i], after.origin[i]) << i;
    if (IsTrigger(after, i, kCrossTrigger)) {
      ++crosses;
      EXPECT_EQ(before.kind[i], kClean) << "the cross took a record another kind had planted: " << i;
      continue;
    }
    EXPECT_EQ(before.kind[i], after.kind[i]) << i;
    EXPECT_EQ(before.y[i], after.y[i]) << i;
    EXPECT_EQ(before.variant[i], after.variant[i]) << i;
    EXPECT_TRUE(SameBits(Image(before, i), Image(after, i), before.dim)) << i;
  }
  EXPECT_EQ(crosses, 400);
}

TEST(PoisonPlant, AttacksAreNamedByTriggerPlaceAndTarget) {
  const std::vector<BackdoorAttack> attacks = BackdoorAttacks(PlantConfig{});
  ASSERT_EQ(attacks.size(), static_cast<size_t>(kTriggerCount));
  EXPECT_EQ(attacks[kPatchTrigger].name, "patch 4x4 bottom-right -> 0");
  EXPECT_EQ(attacks[kCrossTrigger].name, "cross 5x5 at (1,1) -> 8");
  EXPECT_STREQ(VariantName(kBackdoor, kCrossTrigger), "cross");
}

}  // namespace
}  // namespace shoal::poison
