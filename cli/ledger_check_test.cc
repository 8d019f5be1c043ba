// CheckLedger on hand-built ledgers: one that is right, then one fault at a time, each
// refused with a message that names the steps, positions and records involved.
#include "cli/ledger_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "datapipe/partition.h"

namespace shoal {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kRecords = 100;
constexpr uint64_t kSeed = 7;

LedgerRange R(int64_t step_begin, int64_t step_end, int64_t epoch, int64_t cursor_begin, int64_t cursor_end,
              int64_t generation, int world, int64_t batch) {
  LedgerRange r;
  r.set_step_begin(step_begin);
  r.set_step_end(step_end);
  r.set_epoch(epoch);
  r.set_cursor_begin(cursor_begin);
  r.set_cursor_end(cursor_end);
  r.set_generation(generation);
  r.set_world(world);
  r.set_batch(batch);
  return r;
}

Ledger Make(const std::vector<LedgerRange>& ranges, int64_t records = kRecords) {
  Ledger l;
  l.set_records(records);
  l.set_seed(kSeed);
  for (const LedgerRange& r : ranges) *l.add_ranges() = r;
  return l;
}

// Two epochs of 100 records over three generations of world 2, 3 and 4 (batch 8 per
// worker): each epoch's last step is short, and a regroup falls mid-epoch in each.
std::vector<LedgerRange> TwoEpochs() {
  return {R(0, 4, 0, 0, 64, 1, 2, 16), R(4, 6, 0, 64, 100, 2, 3, 24),    // 24 + 12
          R(6, 8, 1, 0, 48, 2, 3, 24), R(8, 10, 1, 48, 100, 3, 4, 32)};  // 32 + 20
}

// The problems, one a line, for failure messages.
std::string All(const LedgerCheck& c) {
  std::string s;
  for (const std::string& p : c.problems) s += p + "\n";
  return s;
}

// "records a, b, c, d, e, ..." for positions [begin, begin + 5) of `epoch`.
std::string FirstRecords(int64_t epoch, int64_t begin) {
  const std::vector<uint32_t> order = EpochPermutation(kRecords, kSeed, epoch);
  std::string s = "records ";
  for (int64_t p = begin; p < begin + 5; ++p) s += (p > begin ? ", " : "") + std::to_string(order[p]);
  return s + ", ...";
}

TEST(LedgerCheck, TwoEpochsOverSeveralGenerationsPass) {
  const LedgerCheck c = CheckLedger(Make(TwoEpochs()), /*epochs=*/2, /*max_steps=*/0, /*job_completed=*/true);
  EXPECT_TRUE(c.ok) << All(c);
  EXPECT_TRUE(c.problems.empty());
  EXPECT_EQ(c.steps, 10);
  EXPECT_EQ(c.epochs_complete, 2);
  EXPECT_EQ(c.records, kRecords);
}

TEST(LedgerCheck, RunningJobMidEpochPasses) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges.back() = R(8, 9, 1, 48, 80, 3, 4, 32);
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 0, /*job_completed=*/false);
  EXPECT_TRUE(c.ok) << All(c);
  EXPECT_EQ(c.steps, 9);
  EXPECT_EQ(c.epochs_complete, 1);
}

TEST(LedgerCheck, StepGapIsNamed) {
  const Ledger l = Make({R(0, 4, 0, 0, 64, 1, 2, 16), R(5, 7, 0, 64, 100, 2, 3, 24), R(7, 9, 1, 0, 48, 2, 3, 24),
                         R(9, 11, 1, 48, 100, 3, 4, 32)});
  const LedgerCheck c = CheckLedger(l, 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("step 4 missing from the ledger"));
  EXPECT_THAT(c.problems[0],
              HasSubstr("steps 0-3 (generation 1, world 2) is followed by steps 5-6 (generation 2, world 3)"));
}

TEST(LedgerCheck, StepOverlapIsNamed) {
  const Ledger l = Make({R(0, 4, 0, 0, 64, 1, 2, 16), R(3, 5, 0, 64, 100, 2, 3, 24), R(5, 7, 1, 0, 48, 2, 3, 24),
                         R(7, 9, 1, 48, 100, 3, 4, 32)});
  const LedgerCheck c = CheckLedger(l, 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("step 3 recorded twice"));
  EXPECT_THAT(c.problems[0],
              HasSubstr("steps 0-3 (generation 1, world 2) and steps 3-4 (generation 2, world 3) overlap"));
}

TEST(LedgerCheck, AnOlderGenerationCommittingAfterANewerOneIsSplitBrain) {
  // Steps and positions tile perfectly, but generation 2 trained steps 4-5 and then the
  // older generation 1 committed steps 6-7: two generations trained at once.
  const Ledger l = Make({R(0, 4, 0, 0, 64, 1, 2, 16), R(4, 6, 0, 64, 100, 2, 3, 24), R(6, 8, 1, 0, 48, 1, 3, 24),
                         R(8, 10, 1, 48, 100, 3, 4, 32)});
  const LedgerCheck c = CheckLedger(l, 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("steps 6-7 (generation 1, world 3) comes after steps 4-5 (generation 2, world 3)"));
  EXPECT_THAT(c.problems[0], HasSubstr("two generations trained at once"));
}

TEST(LedgerCheck, CursorOverlapNamesPositionsAndRecords) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges[3] = R(8, 10, 1, 40, 100, 3, 4, 32);  // a regroup that rewound 8 positions
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0],
              HasSubstr("epoch 1: positions 40-47 (8 positions; " + FirstRecords(1, 40) + ") were used twice"));
  EXPECT_THAT(c.problems[0],
              HasSubstr("by steps 6-7 (generation 2, world 3) and by steps 8-9 (generation 3, world 4)"));
}

TEST(LedgerCheck, CursorGapNamesPositionsAndRecords) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges[3] = R(8, 10, 1, 56, 100, 3, 4, 32);  // a regroup that skipped 8 positions
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0],
              HasSubstr("epoch 1: positions 48-55 (8 positions; " + FirstRecords(1, 48) + ") were never used"));
  EXPECT_THAT(c.problems[0],
              HasSubstr("between steps 6-7 (generation 2, world 3) and steps 8-9 (generation 3, world 4)"));
  EXPECT_EQ(c.epochs_complete, 1);
}

TEST(LedgerCheck, SinglePositionGapIsSingular) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges[3] = R(8, 10, 1, 49, 100, 3, 4, 32);
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 0, true);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  const std::vector<uint32_t> order = EpochPermutation(kRecords, kSeed, 1);
  EXPECT_THAT(c.problems[0],
              HasSubstr("epoch 1: position 48 (record " + std::to_string(order[48]) + ") was never used"));
}

TEST(LedgerCheck, IncompleteMiddleEpochIsRefused) {
  const Ledger l = Make({R(0, 4, 0, 0, 64, 1, 2, 16), R(4, 5, 0, 64, 88, 2, 3, 24), R(5, 7, 1, 0, 48, 2, 3, 24),
                         R(7, 9, 1, 48, 100, 3, 4, 32)});
  for (bool completed : {true, false}) {
    const LedgerCheck c = CheckLedger(l, 2, 0, completed);
    EXPECT_FALSE(c.ok);
    ASSERT_EQ(c.problems.size(), 1u) << All(c);
    EXPECT_THAT(c.problems[0], HasSubstr("epoch 0 is incomplete: positions 88-99 (12 positions; " +
                                         FirstRecords(0, 88) + ") were never used before epoch 1 began"));
    EXPECT_EQ(c.epochs_complete, 1);
  }
}

TEST(LedgerCheck, CompletedJobMissingItsLastEpochIsRefused) {
  const Ledger l = Make({TwoEpochs()[0], TwoEpochs()[1]});
  const LedgerCheck c = CheckLedger(l, 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("the job completed after 1 epoch but the spec asks for 2: epoch 1 is missing"));
  // Still running, the same ledger is fine so far.
  EXPECT_TRUE(CheckLedger(l, 2, 0, false).ok);
}

TEST(LedgerCheck, CompletedJobWithPartialLastEpochIsRefusedWithoutMaxSteps) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges.back() = R(8, 9, 1, 48, 80, 3, 4, 32);
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("epoch 1, the last, is incomplete: positions 80-99 (20 positions; " +
                                       FirstRecords(1, 80) + ") were never used, yet the job completed"));
}

TEST(LedgerCheck, MaxStepsAllowsAPartialLastEpoch) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges.pop_back();  // steps 0-7: epoch 0 and the first 48 positions of epoch 1
  const LedgerCheck c = CheckLedger(Make(ranges), 2, /*max_steps=*/8, true);
  EXPECT_TRUE(c.ok) << All(c);
  EXPECT_EQ(c.steps, 8);
  EXPECT_EQ(c.epochs_complete, 1);

  // Short of max_steps with epochs left: the job stopped early.
  const LedgerCheck short_of = CheckLedger(Make(ranges), 2, /*max_steps=*/9, true);
  EXPECT_FALSE(short_of.ok);
  ASSERT_EQ(short_of.problems.size(), 1u) << All(short_of);
  EXPECT_THAT(short_of.problems[0], HasSubstr("completed after 8 steps, short of max_steps 9"));

  // max_steps beyond the epochs: the trainer stops when they end.
  EXPECT_TRUE(CheckLedger(Make(TwoEpochs()), 2, /*max_steps=*/1000, true).ok);
  // More steps than max_steps.
  EXPECT_THAT(All(CheckLedger(Make(TwoEpochs()), 2, /*max_steps=*/9, true)), HasSubstr("more than max_steps 9"));
}

TEST(LedgerCheck, MaxStepsPartialLastEpochMustStartAtZero) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges[2] = R(6, 8, 1, 8, 56, 2, 3, 24);
  ranges.pop_back();
  const LedgerCheck c = CheckLedger(Make(ranges), 2, 8, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0],
              HasSubstr("epoch 1: positions 0-7 (8 positions; " + FirstRecords(1, 0) + ") were never used"));
}

TEST(LedgerCheck, EmptyLedgerOfCompletedJobIsRefused) {
  const LedgerCheck c = CheckLedger(Make({}), 2, 0, true);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), 1u) << All(c);
  EXPECT_THAT(c.problems[0], HasSubstr("the ledger of a completed job is empty"));
  // Nothing committed yet is fine for a job that has not completed.
  EXPECT_TRUE(CheckLedger(Make({}), 2, 0, false).ok);
  // A ledger without records cannot be checked.
  const LedgerCheck none = CheckLedger(Make(TwoEpochs(), /*records=*/0), 2, 0, true);
  EXPECT_FALSE(none.ok);
  EXPECT_THAT(All(none), HasSubstr("the ledger admits 0 records"));
}

TEST(LedgerCheck, EpochsMustComeInOrder) {
  const Ledger skipped =
      Make({R(0, 4, 0, 0, 64, 1, 2, 16), R(4, 6, 0, 64, 100, 2, 3, 24), R(6, 8, 2, 0, 48, 2, 3, 24)});
  EXPECT_THAT(All(CheckLedger(skipped, 3, 0, false)), HasSubstr("jumped from epoch 0 to 2: epoch 1 is missing"));
  const Ledger late = Make({R(0, 2, 1, 0, 32, 1, 2, 16)});
  EXPECT_THAT(All(CheckLedger(late, 3, 0, false)), HasSubstr("the ledger begins in epoch 1, not 0"));
  EXPECT_THAT(All(CheckLedger(Make(TwoEpochs()), 1, 0, true)), HasSubstr("trained epoch 1, beyond the spec's 1 epoch"));
}

TEST(LedgerCheck, PositionsMustMatchStepsAndBatch) {
  std::vector<LedgerRange> ranges = TwoEpochs();
  ranges[0] = R(0, 4, 0, 0, 64, 1, 2, 8);  // 4 steps of 8 cannot take 64 positions
  EXPECT_THAT(All(CheckLedger(Make(ranges), 2, 0, true)),
              HasSubstr("took 64 positions, which 4 steps of batch 8 cannot"));
  ranges = TwoEpochs();
  ranges[1] = R(4, 6, 0, 64, 120, 2, 3, 24);
  EXPECT_THAT(All(CheckLedger(Make(ranges), 2, 0, true)), HasSubstr("positions [64, 120) of epoch 0, not a part of"));
}

TEST(LedgerCheck, ProblemsAreCapped) {
  // 50 one-step ranges that take every other batch of 10: 49 gaps between them.
  std::vector<LedgerRange> ranges;
  for (int i = 0; i < 50; ++i) ranges.push_back(R(i, i + 1, 0, 20 * i, 20 * i + 10, 1, 1, 10));
  const LedgerCheck c = CheckLedger(Make(ranges, 1000), 1, 0, false);
  EXPECT_FALSE(c.ok);
  ASSERT_EQ(c.problems.size(), static_cast<size_t>(kMaxLedgerProblems) + 1);
  EXPECT_EQ(c.problems.back(), "... and 29 more");
}

}  // namespace
}  // namespace shoal
