// Rendering for shoalctl: the status table, the progress line and the run summary JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "control.pb.h"

namespace shoal {

nlohmann::json JobToJson(const Job& job, const StatusResponse* members_from, int64_t now_ms);
nlohmann::json SummaryJson(const Job& job);
// "joining" for a member queued for a running job; the member state's name otherwise.
std::string MemberDisplayState(const Job& job, const Member& m);
// Rank 0 of the job's current generation (progress comes from it), or null.
const Member* CurrentRankZero(const StatusResponse& status, const Job& job);
std::string StatusTable(const StatusResponse& status);
// "epoch 2/5 [########------] step 1204/4690  loss 0.412  acc 0.861  5120 samples/s"
std::string ProgressLine(const Job& job, const WorkerMetrics& rank0, int width = 24);

}  // namespace shoal
