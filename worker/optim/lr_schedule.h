// Learning rate as a pure function of the global step, so every rank, and a job resumed
// from a checkpoint, computes the same rate without carrying scheduler state.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace shoal {

// Step indices are 0-based.
//  - Warm-up (warmup_steps > 0): step s < warmup_steps gets base_lr * (s + 1) / warmup_steps,
//    i.e. base/warmup at step 0 rising linearly to base at step warmup_steps - 1.
//  - "cosine": from step warmup_steps, min + (base - min) * (1 + cos(pi * t)) / 2 with
//    t = (s - warmup_steps) / (total_steps - warmup_steps) and min = base * min_lr_ratio,
//    so base at the end of warm-up and min at s == total_steps.
//  - "constant": base after warm-up.
// Past the end of the schedule (s >= total_steps, including every post-warm-up step when
// total_steps <= warmup_steps) the end value holds: min for cosine. Negative steps count
// as 0. An unknown schedule name behaves as "constant"; ValidateLrSchedule refuses it.
double LearningRateAt(int64_t step, int64_t total_steps, double base_lr, int64_t warmup_steps,
                      const std::string& schedule, double min_lr_ratio);

// Checks the arguments once, when the job spec is read, so LearningRateAt need not fail.
Status ValidateLrSchedule(const std::string& schedule, double base_lr, int64_t warmup_steps,
                          int64_t total_steps, double min_lr_ratio);

}  // namespace shoal
