// Rendering a lineage (LineageResponse) for `shoalctl lineage show`: a text answer to
// "which shards, which filters, which code, which workers produced this model", the
// same as JSON, and a Graphviz graph.
#pragma once

#include <string>
#include <vector>

#include "control.pb.h"

namespace shoal {

// The checkpoint `digest` and its ancestors, newest first, as far as `lineage` knows
// them (parents from other jobs included).
std::vector<CheckpointLineage> CheckpointAncestry(const LineageResponse& lineage, const std::string& digest);

std::string LineageText(const LineageResponse& lineage);
std::string LineageJson(const LineageResponse& lineage);  // pretty-printed
std::string LineageDot(const LineageResponse& lineage);

}  // namespace shoal
