// Tests for LearningRateAt: warm-up endpoints, cosine midpoint and end, the constant
// schedule, no warm-up, a schedule shorter than its warm-up, and argument validation.
#include <gtest/gtest.h>

#include "worker/optim/lr_schedule.h"

namespace shoal {
namespace {

// Closed-form values computed in double; 1e-12 allows the cosine's last-bit rounding.
constexpr double kTol = 1e-12;

TEST(LrSchedule, WarmupEndpoints) {
  EXPECT_NEAR(LearningRateAt(0, 110, 0.1, 10, "cosine", 0.1), 0.01, kTol);  // base / warmup
  EXPECT_NEAR(LearningRateAt(4, 110, 0.1, 10, "cosine", 0.1), 0.05, kTol);
  EXPECT_NEAR(LearningRateAt(9, 110, 0.1, 10, "cosine", 0.1), 0.1, kTol);   // base at warmup - 1
  EXPECT_NEAR(LearningRateAt(-3, 110, 0.1, 10, "cosine", 0.1), 0.01, kTol); // negative = step 0
}

TEST(LrSchedule, CosineStartMidpointAndEnd) {
  EXPECT_NEAR(LearningRateAt(10, 110, 0.1, 10, "cosine", 0.1), 0.1, kTol);  // t = 0
  EXPECT_NEAR(LearningRateAt(60, 110, 0.1, 10, "cosine", 0.1), 0.055, kTol);  // (base + min) / 2
  EXPECT_NEAR(LearningRateAt(110, 110, 0.1, 10, "cosine", 0.1), 0.01, kTol);  // min at total_steps
  EXPECT_NEAR(LearningRateAt(500, 110, 0.1, 10, "cosine", 0.1), 0.01, kTol);  // holds afterwards
  const double last = LearningRateAt(109, 110, 0.1, 10, "cosine", 0.1);
  EXPECT_GT(last, 0.01);
  EXPECT_LT(last, 0.0101);
  double prev = 1.0;
  for (int s = 10; s <= 110; ++s) {  // never increases after warm-up
    const double lr = LearningRateAt(s, 110, 0.1, 10, "cosine", 0.1);
    EXPECT_LE(lr, prev);
    prev = lr;
  }
  EXPECT_NEAR(LearningRateAt(110, 110, 0.1, 10, "cosine", 0.0), 0.0, kTol);
}

TEST(LrSchedule, ConstantAfterWarmup) {
  EXPECT_NEAR(LearningRateAt(0, 100, 0.2, 4, "constant", 0.1), 0.05, kTol);
  EXPECT_NEAR(LearningRateAt(4, 100, 0.2, 4, "constant", 0.1), 0.2, kTol);
  EXPECT_NEAR(LearningRateAt(99, 100, 0.2, 4, "constant", 0.1), 0.2, kTol);
  EXPECT_NEAR(LearningRateAt(1000, 100, 0.2, 4, "constant", 0.1), 0.2, kTol);
}

TEST(LrSchedule, NoWarmup) {
  EXPECT_NEAR(LearningRateAt(0, 100, 0.1, 0, "cosine", 0.0), 0.1, kTol);
  EXPECT_NEAR(LearningRateAt(50, 100, 0.1, 0, "cosine", 0.0), 0.05, kTol);
  EXPECT_NEAR(LearningRateAt(100, 100, 0.1, 0, "cosine", 0.0), 0.0, kTol);
  EXPECT_NEAR(LearningRateAt(0, 100, 0.1, 0, "constant", 0.0), 0.1, kTol);
}

TEST(LrSchedule, TotalNotBeyondWarmup) {
  // The run ends inside warm-up; warm-up still ramps, and past it the end value holds.
  EXPECT_NEAR(LearningRateAt(3, 5, 0.1, 10, "cosine", 0.1), 0.04, kTol);
  EXPECT_NEAR(LearningRateAt(10, 5, 0.1, 10, "cosine", 0.1), 0.01, kTol);
  EXPECT_NEAR(LearningRateAt(10, 10, 0.1, 10, "cosine", 0.1), 0.01, kTol);
  EXPECT_NEAR(LearningRateAt(10, 5, 0.1, 10, "constant", 0.1), 0.1, kTol);
  EXPECT_NEAR(LearningRateAt(0, 0, 0.1, 0, "cosine", 0.5), 0.05, kTol);
}

TEST(LrSchedule, Validate) {
  EXPECT_TRUE(ValidateLrSchedule("cosine", 0.1, 10, 100, 0.1).ok());
  EXPECT_TRUE(ValidateLrSchedule("constant", 0.1, 0, 0, 0.0).ok());
  EXPECT_EQ(ValidateLrSchedule("linear", 0.1, 10, 100, 0.1).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ValidateLrSchedule("cosine", -0.1, 10, 100, 0.1).ok());
  EXPECT_FALSE(ValidateLrSchedule("cosine", 0.1, -1, 100, 0.1).ok());
  EXPECT_FALSE(ValidateLrSchedule("cosine", 0.1, 10, 100, 1.5).ok());
}

}  // namespace
}  // namespace shoal
