// OpenLineage run events (https://openlineage.io, spec 2-x) for a job's run: START when
// its first generation forms, OTHER for each later generation and each checkpoint,
// COMPLETE / FAIL / ABORT when it ends. Inputs are the training and test datasets (with
// schema, version and data-quality facets from the scan); outputs are checkpoints.
// tests/data/openlineage/OpenLineage.json is the schema they are validated against.
#pragma once

#include <string>
#include <vector>

#include "lineage.pb.h"

namespace shoal {

struct LineageEventInput {
  std::string event_type;        // START | OTHER | COMPLETE | FAIL | ABORT
  int64_t unix_ms = 0;
  std::string job_namespace;     // e.g. "shoal://<coordinator host>"
  JobLineage job;
  const GenerationLineage* generation = nullptr;  // a generation change (OTHER, START)
  std::vector<CheckpointLineage> outputs;
  std::string error;             // FAIL / ABORT: why
  std::string final_state;       // the job's state name when it ended
};

// The run id of a job: a UUID derived from its id, so every event of the run (and a
// restarted coordinator's) carries the same one.
std::string OpenLineageRunId(const std::string& job_id);

// One event as compact JSON (one line).
std::string BuildOpenLineageEvent(const LineageEventInput& in);

}  // namespace shoal
