// Per-attack scoring: recall over the records stamped with one trigger, precision
// against clean records only (other planted poison counts neither way).
#include "bench/poison/metrics.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace shoal::poison {
namespace {

// Ten records: two per trigger, one flip, five clean.
PlantedSet TenRecords() {
  PlantedSet s;
  s.kind = {kBackdoor, kBackdoor, kBackdoor, kBackdoor, kFlip, kClean, kClean, kClean, kClean, kClean};
  s.variant = {kPatchTrigger, kPatchTrigger, kCrossTrigger, kCrossTrigger, 0, 0, 0, 0, 0, 0};
  s.y.assign(10, 0);
  s.origin = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  return s;
}

const FilterOnAttack& Filter(const AttackScore& s, const std::string& name) {
  for (const auto& f : s.filters)
    if (f.filter == name) return f;
  throw std::runtime_error("no filter " + name);
}

TEST(PoisonMetrics, ScoresEachAttackOnItsOwnRecords) {
  const PlantedSet set = TenRecords();
  // label: one patch, both crosses, the flip and one clean record; outliers: the other patch.
  const std::map<std::string, std::set<int64_t>> flags = {{"label", {0, 2, 3, 4, 5}}, {"outliers", {1}}};
  const auto scores = ScoreAttacks(set, flags, BackdoorAttacks(PlantConfig{}));
  ASSERT_EQ(scores.size(), 2u);
  const AttackScore& patch = scores[kPatchTrigger];
  const AttackScore& cross = scores[kCrossTrigger];
  EXPECT_EQ(patch.planted, 2);
  EXPECT_EQ(cross.planted, 2);
  EXPECT_EQ(Filter(patch, "label").caught, 1);
  EXPECT_DOUBLE_EQ(Filter(patch, "label").recall, 0.5);
  EXPECT_DOUBLE_EQ(Filter(patch, "label").precision, 0.5);  // the flip and the other cross count neither way
  EXPECT_DOUBLE_EQ(Filter(patch, "outliers").precision, 1.0);
  EXPECT_DOUBLE_EQ(Filter(patch, "any").recall, 1.0);
  EXPECT_DOUBLE_EQ(Filter(patch, "any").precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(Filter(cross, "label").recall, 1.0);
  EXPECT_DOUBLE_EQ(Filter(cross, "label").precision, 2.0 / 3.0);
  EXPECT_EQ(Filter(cross, "outliers").caught, 0);
  EXPECT_DOUBLE_EQ(Filter(cross, "outliers").precision, 0.0);
}

}  // namespace
}  // namespace shoal::poison
