// Usage sums (usage.h).
#include "coordinator/usage.h"

#include <algorithm>

namespace shoal {

JobUsage SumUsage(const std::vector<const Member*>& members, int64_t started_ms, int64_t ended_ms,
                  const Ledger& ledger) {
  JobUsage u;
  bool known = !members.empty();
  for (const Member* m : members) {
    const WorkerMetrics& w = m->metrics();
    u.set_cpu_seconds(u.cpu_seconds() + w.cpu_seconds());
    u.set_gpu_seconds(u.gpu_seconds() + w.gpu_seconds());
    u.set_energy_joules(u.energy_joules() + w.cpu_energy_joules() + w.gpu_energy_joules());
    // A CPU worker's energy is known with RAPL; a GPU's from NVML covers the device
    // only, so the host's CPU share must be known too.
    known = known && w.cpu_energy_known();
  }
  u.set_energy_known(known);
  if (started_ms > 0 && ended_ms > started_ms) u.set_wall_seconds((ended_ms - started_ms) / 1000.0);
  int64_t samples = 0;
  for (const LedgerRange& r : ledger.ranges()) samples += r.cursor_end() - r.cursor_begin();
  u.set_samples(samples);
  return u;
}

std::vector<UsageRow> GroupUsage(const StatusResponse& status, const std::string& by, int64_t since_ms) {
  std::map<std::string, UsageRow> rows;
  for (const Job& job : status.jobs()) {
    if (job.created_ms() < since_ms) continue;
    std::string key;
    if (by == "job") {
      key = job.id();
    } else {
      auto it = job.spec().labels().find(by);
      key = it == job.spec().labels().end() || it->second.empty() ? "(none)" : it->second;
    }
    UsageRow& row = rows[key];
    const bool first = row.jobs == 0;
    row.key = key;
    ++row.jobs;
    const JobUsage& j = job.usage();
    JobUsage& u = row.usage;
    u.set_cpu_seconds(u.cpu_seconds() + j.cpu_seconds());
    u.set_gpu_seconds(u.gpu_seconds() + j.gpu_seconds());
    u.set_energy_joules(u.energy_joules() + j.energy_joules());
    u.set_energy_known((first || u.energy_known()) && j.energy_known());
    u.set_wall_seconds(u.wall_seconds() + j.wall_seconds());
    u.set_samples(u.samples() + j.samples());
  }
  std::vector<UsageRow> out;
  for (auto& [k, r] : rows) out.push_back(std::move(r));
  return out;
}

}  // namespace shoal
