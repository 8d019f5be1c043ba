// Linear warm-up followed by cosine decay or a constant rate; see lr_schedule.h for the
// exact formulas and the edge cases (no warm-up, schedule shorter than warm-up).
#include "worker/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace shoal {

double LearningRateAt(int64_t step, int64_t total_steps, double base_lr, int64_t warmup_steps,
                      const std::string& schedule, double min_lr_ratio) {
  step = std::max<int64_t>(step, 0);
  if (warmup_steps > 0 && step < warmup_steps) {
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (schedule != "cosine") return base_lr;
  const double min_lr = base_lr * min_lr_ratio;
  const int64_t warm = std::max<int64_t>(warmup_steps, 0);
  const int64_t decay_steps = total_steps - warm;
  if (decay_steps <= 0 || step >= total_steps) return min_lr;  // schedule over: hold the end
  const double t = static_cast<double>(step - warm) / static_cast<double>(decay_steps);
  return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
}

Status ValidateLrSchedule(const std::string& schedule, double base_lr, int64_t warmup_steps,
                          int64_t total_steps, double min_lr_ratio) {
  if (schedule != "cosine" && schedule != "constant") {
    return InvalidArgument("optimizer.schedule must be \"cosine\" or \"constant\", got \"" + schedule + "\"");
  }
  if (!std::isfinite(base_lr) || base_lr < 0) return InvalidArgument("optimizer.lr must be finite and >= 0");
  if (warmup_steps < 0) return InvalidArgument("optimizer.warmup_steps must be >= 0");
  if (total_steps < 0) return InvalidArgument("training total steps must be >= 0");
  if (!std::isfinite(min_lr_ratio) || min_lr_ratio < 0 || min_lr_ratio > 1) {
    return InvalidArgument("optimizer.min_lr_ratio must be in [0, 1]");
  }
  return OkStatus();
}

}  // namespace shoal
