// Who is in the next generation: a pure function of the ending generation's members
// and the queued joiners, so the rules are tested on their own (coordinator_test).
#pragma once

#include <string>
#include <vector>

namespace shoal {

struct Candidate {
  std::string id;
  bool leaving = false;  // survivors only: asked to leave at this boundary
};

struct GenerationPlan {
  std::vector<std::string> members;  // index = new rank
  std::vector<std::string> leave;    // told to exit (asked to, or beyond the target size)
  std::vector<std::string> queued;   // joiners left waiting (no room)
};

// Survivors keep their relative rank order and come first; joiners follow in the order
// they registered. The size is capped at `target` (0: no target) and at `max`;
// survivors beyond the cap leave from the highest rank down, joiners wait.
GenerationPlan PlanGeneration(const std::vector<Candidate>& survivors, const std::vector<std::string>& joiners,
                              int max, int target);

}  // namespace shoal
