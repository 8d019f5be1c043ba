// Cost attribution (issue 20): what each job consumed, summed from its members' last
// cumulative figures (CPU-seconds, GPU-seconds, energy: NVML on GPUs, RAPL on CPUs), and
// the same summed per label value for `shoalctl usage --by team|project`.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "control.pb.h"

namespace shoal {

// A job's usage from its members (every member it ever had: the dead ones' last
// heartbeat counts), its first generation's time and its ledger.
JobUsage SumUsage(const std::vector<const Member*>& members, int64_t started_ms, int64_t ended_ms,
                  const Ledger& ledger);

struct UsageRow {
  std::string key;      // the label value ("(none)" for jobs without the label), or the job id
  int jobs = 0;
  JobUsage usage;       // summed; energy_known only if every job's was
};

// Groups the jobs of `status` by label `by` ("team", "project", any label; "job" for
// one row per job), counting jobs created at or after `since_ms`. Rows sorted by key.
std::vector<UsageRow> GroupUsage(const StatusResponse& status, const std::string& by, int64_t since_ms);

}  // namespace shoal
