// PlanGeneration: the membership rule of a regroup.
#include "coordinator/membership.h"

#include <algorithm>

namespace shoal {

GenerationPlan PlanGeneration(const std::vector<Candidate>& survivors, const std::vector<std::string>& joiners,
                              int max, int target) {
  GenerationPlan plan;
  const size_t cap = static_cast<size_t>(std::max(0, target > 0 ? std::min(target, max) : max));
  for (const Candidate& c : survivors) {
    if (c.leaving)
      plan.leave.push_back(c.id);
    else
      plan.members.push_back(c.id);
  }
  // Too many survivors (a scale-down that named no one): the highest ranks leave.
  while (plan.members.size() > cap) {
    plan.leave.push_back(plan.members.back());
    plan.members.pop_back();
  }
  for (const std::string& j : joiners) {
    if (plan.members.size() < cap)
      plan.members.push_back(j);
    else
      plan.queued.push_back(j);
  }
  return plan;
}

}  // namespace shoal
