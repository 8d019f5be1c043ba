// `shoalctl usage [--by team|project|job|LABEL] [--since T] [--json]`: what jobs
// consumed (CPU-seconds, GPU-seconds, energy where measurable), summed per label value
// from the coordinator's store (coordinator/usage.h).
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/clock.h"
#include "coordinator/client.h"
#include "coordinator/coordinator.h"
#include "coordinator/store.h"
#include "coordinator/usage.h"

namespace shoal {

namespace {
struct UsageOptions {
  std::string coordinator, state_dir, by = "team", since;
  bool json = false;
};

std::string Energy(const JobUsage& u) {
  if (!u.energy_known()) return "unknown";
  char buf[32];
  if (u.energy_joules() >= 3.6e6) std::snprintf(buf, sizeof(buf), "%.2f kWh", u.energy_joules() / 3.6e6);
  else std::snprintf(buf, sizeof(buf), "%.0f J", u.energy_joules());
  return buf;
}

int DoUsage(const UsageOptions& o) {
  auto since = ParseSinceTime(o.since);
  if (!since.ok()) return ReportError(since.status());
  Request r;
  r.mutable_status();
  StatusOr<Response> resp = Response();
  if (const std::string offline = StoppedRunStateDir(o.coordinator, o.state_dir); !offline.empty()) {
    // A stopped coordinator's store: the same sums, computed by a coordinator loaded from it.
    auto store = OpenRocksStore(offline);
    if (!store.ok()) return ReportError(store.status());
    Coordinator c(std::move(*store));
    const int64_t now = UnixMillis();
    if (Status s = c.Load(now); !s.ok()) return ReportError(s.WithContext(offline));
    c.Handle(r, now, [&](Response got) { *resp = std::move(got); });
  } else {
    ControlClient client(o.coordinator.empty() ? DefaultCoordinator() : o.coordinator);
    resp = client.Call(r, std::chrono::seconds(10));
  }
  if (!resp.ok()) return ReportError(resp.status());
  const auto rows = GroupUsage(resp->status(), o.by, *since);
  if (o.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const UsageRow& row : rows)
      out.push_back({{o.by, row.key},
                     {"jobs", row.jobs},
                     {"cpu_seconds", row.usage.cpu_seconds()},
                     {"gpu_seconds", row.usage.gpu_seconds()},
                     {"energy_joules", row.usage.energy_known() ? nlohmann::json(row.usage.energy_joules()) : nlohmann::json()},
                     {"energy_known", row.usage.energy_known()},
                     {"wall_seconds", row.usage.wall_seconds()},
                     {"samples", row.usage.samples()}});
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  if (rows.empty()) {
    std::printf("no jobs%s\n", o.since.empty() ? "" : (" since " + o.since).c_str());
    return kExitOk;
  }
  std::printf("%-24s %5s %12s %12s %12s %12s %14s\n", o.by.c_str(), "JOBS", "CPU-S", "GPU-S", "ENERGY", "WALL-S",
              "SAMPLES");
  for (const UsageRow& row : rows)
    std::printf("%-24s %5d %12.1f %12.1f %12s %12.1f %14lld\n", row.key.c_str(), row.jobs, row.usage.cpu_seconds(),
                row.usage.gpu_seconds(), Energy(row.usage).c_str(), row.usage.wall_seconds(),
                static_cast<long long>(row.usage.samples()));
  bool unknown = false;
  for (const UsageRow& row : rows) unknown = unknown || !row.usage.energy_known();
  if (unknown)
    std::printf("energy unknown: a worker could not read its CPU's RAPL counters (/sys/class/powercap, root only)\n");
  return kExitOk;
}
}  // namespace

void RegisterUsageCommand(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<UsageOptions>();
  CLI::App* usage = app.add_subcommand(
      "usage", "what jobs consumed (CPU-seconds, GPU-seconds, energy), summed per team, project or any spec label");
  usage->add_option("--by", o->by, "group by this label of the jobs' specs (labels: {team: ..}), or `job`")
      ->capture_default_str();
  usage->add_option("--since", o->since, "only jobs created since: a local time (2026-12-07T10:00), unix ms, or -2h / -7d");
  usage->add_option("--coordinator", o->coordinator, "coordinator endpoint (default: as shoalctl status)");
  usage->add_option("--state-dir", o->state_dir,
                    "read a stopped coordinator's store instead (default when no coordinator is named: a finished "
                    "`shoalctl run`'s .shoal/coordinator)");
  usage->add_flag("--json", o->json, "print JSON for scripts");
  usage->callback([o, exit_code] { *exit_code = DoUsage(*o); });
}

}  // namespace shoal
