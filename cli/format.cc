// Human and JSON renderings of jobs and members.
#include "cli/format.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <vector>
#include <sstream>

#include "cli/commands.h"
#include "coordinator/coordinator.h"

namespace shoal {

namespace {
std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}
}  // namespace

nlohmann::json JobToJson(const Job& job, const StatusResponse* status, int64_t now_ms) {
  nlohmann::json j = {{"job", job.id()},
                      {"name", job.spec().name()},
                      {"state", JobStateName(job.state())},
                      {"generation", job.generation()},
                      {"world_size", job.world_size()},
                      {"total_steps", job.total_steps()},
                      {"spec_digest", job.spec_digest()}};
  if (!job.failure_reason().empty()) j["failure_reason"] = job.failure_reason();
  if (!job.spec().labels().empty()) j["labels"] = job.spec().labels();
  if (job.has_usage())
    j["usage"] = {{"cpu_seconds", job.usage().cpu_seconds()},
                  {"gpu_seconds", job.usage().gpu_seconds()},
                  {"energy_joules", job.usage().energy_known() ? nlohmann::json(job.usage().energy_joules()) : nlohmann::json()},
                  {"wall_seconds", job.usage().wall_seconds()},
                  {"samples", job.usage().samples()}};
  if (job.has_result()) j["result"] = SummaryJson(job);  // rank 0's, once it finished
  if (job.target_size() > 0) j["target_size"] = job.target_size();
  if (job.regroup() != REGROUP_NONE) {
    j["regroup"] = job.regroup() == REGROUP_NOW ? "now" : "at_boundary";
    j["regroup_cause"] = job.regroup_cause();
    j["regroup_for_s"] = (now_ms - job.regroup_since_ms()) / 1000.0;
  }
  if (!status) return j;
  nlohmann::json members = nlohmann::json::array();
  int64_t step = 0;
  double loss = 0, sps = 0;
  for (const Member& m : status->members()) {
    if (m.job_id() != job.id()) continue;
    const WorkerMetrics& w = m.metrics();
    // In the current generation, a member has a rank; others show the last one they had.
    const bool current = (m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING || m.state() == MEMBER_FINISHED) &&
                         m.generation() == job.generation();
    members.push_back({{"member", m.id()},
                       {"state", MemberDisplayState(job, m)},
                       {"rank", current ? m.rank() : -1},
                       {"last_rank", m.rank()},
                       {"generation", m.generation()},
                       {"host", m.host()},
                       {"pid", m.pid()},
                       {"step", w.step()},
                       {"heartbeat_age_s", (now_ms - m.last_heartbeat_ms()) / 1000.0},
                       {"step_seconds", w.step_seconds()},
                       {"comm_seconds", w.comm_seconds()},
                       {"loss", w.loss()},
                       {"samples_per_second", w.samples_per_second()},
                       {"bytes_sent", w.bytes_sent()},
                       {"cpu_seconds", w.cpu_seconds()},
                       {"rss_bytes", w.rss_bytes()},
                       {"test_accuracy", w.test_accuracy()},
                       // Its compute + loader time per step over its peers' (coordinator/straggler.h).
                       {"straggler", m.straggler()},
                       {"straggler_ratio", m.straggler_ratio()}});
    if (w.has_gpu())
      members.back()["gpu"] = {{"device", w.gpu_device()},
                               {"utilization_pct", w.gpu_utilization_pct()},
                               {"memory_used_bytes", w.gpu_memory_used_bytes()},
                               {"memory_total_bytes", w.gpu_memory_total_bytes()},
                               {"power_watts", w.gpu_power_watts()},
                               {"temperature_c", w.gpu_temperature_c()},
                               {"energy_joules", w.gpu_energy_joules()}};
    if (!m.failure_reason().empty()) members.back()["reason"] = m.failure_reason();
    if (current && m.rank() == 0) {
      step = w.step();
      loss = w.loss();
      sps = w.samples_per_second();
    }
  }
  j["step"] = step;
  j["loss"] = loss;
  j["samples_per_second"] = sps;
  j["members"] = members;
  for (const CheckpointRecord& c : status->latest_checkpoints())
    if (c.job_id() == job.id())
      j["latest_checkpoint"] = {{"step", c.step()}, {"path", c.path()}, {"manifest_digest", c.manifest_digest()},
                                {"signer", c.signer_key_id()}};
  return j;
}

std::string MemberDisplayState(const Job& job, const Member& m) {
  // A registered member of a running job waits for the next boundary to join it.
  if (m.state() == MEMBER_REGISTERED) return job.state() == JOB_RUNNING ? "joining" : "registered";
  return MemberStateName(m.state());
}

const Member* CurrentRankZero(const StatusResponse& status, const Job& job) {
  for (const Member& m : status.members())
    if (m.job_id() == job.id() && m.rank() == 0 && m.generation() == job.generation() &&
        (m.state() == MEMBER_ACTIVE || m.state() == MEMBER_LEAVING || m.state() == MEMBER_FINISHED))
      return &m;
  return nullptr;
}

nlohmann::json SummaryJson(const Job& job) {
  const JobResult& r = job.result();
  nlohmann::json acc = nlohmann::json::array();
  for (double a : r.epoch_test_accuracy()) acc.push_back(a);
  nlohmann::json j = {{"job", job.id()},
                      {"state", JobStateName(job.state())},
                      {"epochs", r.epochs()},
                      {"steps", r.steps()},
                      {"world_size", r.world_size() ? r.world_size() : job.world_size()},
                      {"final_test_accuracy", r.final_test_accuracy()},
                      {"epoch_test_accuracy", acc},
                      {"final_loss", r.final_loss()},
                      {"samples_per_second", r.samples_per_second()},
                      {"wall_seconds", r.wall_seconds()},
                      {"bytes_sent_per_worker", r.bytes_sent_per_worker()},
                      {"backend", r.backend()},
                      {"comm_seconds", r.comm_seconds()},
                      {"compute_seconds", r.compute_seconds()},
                      {"sgemm_seconds", r.sgemm_seconds()},
                      {"loader_wait_seconds", r.loader_wait_seconds()},
                      {"codec", r.codec()},
                      {"bytes_uncompressed_per_worker", r.bytes_uncompressed_per_worker()},
                      {"gradient_bytes_sent_per_worker", r.gradient_bytes_sent_per_worker()},
                      {"exposed_comm_seconds", r.exposed_comm_seconds()},
                      {"codec_compute_seconds", r.codec_compute_seconds()},
                      {"resumed_from_step", r.resumed_from_step()},
                      {"checkpoints_saved", r.checkpoints_saved()},
                      {"checkpoint_stall_seconds", r.checkpoint_stall_seconds()},
                      {"checkpoint_final_save_seconds", r.checkpoint_final_save_seconds()},
                      {"records_admitted", r.records_admitted()},
                      {"records_quarantined", r.records_quarantined()},
                      {"gpu_seconds", r.gpu_seconds()},
                      {"energy_joules", r.energy_joules()},
                      {"generations", job.generation()},
                      {"boundary_exchanges", r.boundary_exchanges()},
                      {"ledger_seconds", r.ledger_seconds()},
                      {"spec_digest", job.spec_digest()}};
  if (!job.failure_reason().empty()) j["failure_reason"] = job.failure_reason();
  return j;
}

std::string StatusTable(const StatusResponse& status) {
  std::ostringstream out;
  if (status.jobs_size() == 0) return "no jobs\n";
  for (const Job& job : status.jobs()) {
    nlohmann::json j = JobToJson(job, &status, status.now_ms());
    out << "job " << job.id() << "  " << JobStateName(job.state()) << "  step " << j["step"].get<int64_t>() << "/"
        << job.total_steps() << "  loss " << Fixed(j["loss"].get<double>(), 4) << "  "
        << Fixed(j["samples_per_second"].get<double>(), 0) << " samples/s  generation " << job.generation()
        << "  world " << job.world_size() << "\n";
    if (!job.failure_reason().empty()) out << "  reason: " << job.failure_reason() << "\n";
    if (j.contains("regroup"))
      out << "  regrouping (" << j["regroup"].get<std::string>() << ", for " << Fixed(j["regroup_for_s"].get<double>(), 1)
          << " s): " << j["regroup_cause"].get<std::string>() << "\n";
    if (job.state() == JOB_COMPLETED)
      out << "  final test accuracy " << Fixed(job.result().final_test_accuracy(), 4) << "\n";
    if (j.contains("latest_checkpoint"))
      out << "  latest checkpoint: step " << j["latest_checkpoint"]["step"].get<int64_t>() << "  "
          << j["latest_checkpoint"]["path"].get<std::string>() << "  "
          << (j["latest_checkpoint"]["signer"].get<std::string>().empty() ? "unsigned"
                                                                          : "signed by " + j["latest_checkpoint"]["signer"].get<std::string>())
          << "\n";
    if (j["members"].empty()) continue;
    char line[256];
    std::snprintf(line, sizeof(line), "  %-4s %-10s %-4s %-12s %-16s %-8s %-8s %-8s %-9s %-9s\n", "rank", "state", "gen",
                  "member", "host", "pid", "step", "hb age", "step ms", "comm ms");
    out << line;
    // The current generation by rank first, then the others (joining, left, dead).
    std::vector<nlohmann::json> rows(j["members"].begin(), j["members"].end());
    std::stable_sort(rows.begin(), rows.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
      const int ra = a["rank"].get<int>(), rb = b["rank"].get<int>();
      return (ra < 0 ? 1 << 20 : ra) < (rb < 0 ? 1 << 20 : rb);
    });
    std::string reasons;
    for (const auto& m : rows) {
      const std::string id = m["member"].get<std::string>();
      const std::string short_id = id.substr(id.rfind('/') + 1);
      const std::string rank = m["rank"].get<int>() >= 0 ? std::to_string(m["rank"].get<int>()) : "-";
      // A straggler's row ends with how much slower its own work is than its peers'.
      const std::string slow =
          m.value("straggler", false) ? "  SLOW " + Fixed(m.value("straggler_ratio", 0.0), 1) + "x" : "";
      std::snprintf(line, sizeof(line), "  %-4s %-10s %-4lld %-12.12s %-16.16s %-8d %-8lld %-8s %-9s %-9s%s\n", rank.c_str(),
                    m["state"].get<std::string>().c_str(), static_cast<long long>(m["generation"].get<int64_t>()),
                    short_id.c_str(), m["host"].get<std::string>().c_str(), m["pid"].get<int>(),
                    static_cast<long long>(m["step"].get<int64_t>()), (Fixed(m["heartbeat_age_s"].get<double>(), 1) + "s").c_str(),
                    Fixed(m["step_seconds"].get<double>() * 1000, 2).c_str(),
                    Fixed(m["comm_seconds"].get<double>() * 1000, 2).c_str(), slow.c_str());
      out << line;
      if (m.contains("reason") && (m["state"] == "dead" || m["state"] == "left"))
        reasons += "    " + short_id + " " + m["state"].get<std::string>() + ": " + m["reason"].get<std::string>() + "\n";
      if (m.contains("gpu")) {
        const auto& g = m["gpu"];
        std::snprintf(line, sizeof(line), "       gpu %d: %.0f%% busy, %.1f/%.1f GiB, %.0f W, %.0f C, %.0f J\n", g["device"].get<int>(),
                      g["utilization_pct"].get<double>(), g["memory_used_bytes"].get<int64_t>() / 1073741824.0,
                      g["memory_total_bytes"].get<int64_t>() / 1073741824.0, g["power_watts"].get<double>(),
                      g["temperature_c"].get<double>(), g["energy_joules"].get<double>());
        out << line;
      }
    }
    out << reasons;
  }
  return out.str();
}

std::string ProgressLine(const Job& job, const WorkerMetrics& m, int width) {
  int epochs = job.spec().training().epochs();
  int64_t total = job.total_steps() > 0 ? job.total_steps() : 1;
  int64_t per_epoch = std::max<int64_t>(1, (total + epochs - 1) / epochs);
  int64_t in_epoch = m.step() - int64_t{m.epoch()} * per_epoch;
  int filled = static_cast<int>(std::clamp<double>(static_cast<double>(in_epoch) / per_epoch, 0, 1) * width);
  std::string bar = std::string(filled, '#') + std::string(width - filled, '-');
  std::ostringstream out;
  out << "epoch " << (m.epoch() + 1) << "/" << epochs << " [" << bar << "] step " << m.step() << "/" << total
      << "  loss " << Fixed(m.loss(), 3) << "  acc " << (m.test_accuracy() >= 0 ? Fixed(m.test_accuracy(), 3) : "-")
      << "  " << Fixed(m.samples_per_second(), 0) << " samples/s";
  return out.str();
}

StatusOr<int64_t> ParseSinceTime(const std::string& s) {
  if (s.empty()) return 0;
  if (s[0] == '-' && s.size() > 2) {
    const double n = std::atof(s.c_str() + 1);
    const char unit = s.back();
    const double secs = unit == 'h' ? 3600 : unit == 'm' ? 60 : unit == 'd' ? 86400 : unit == 's' ? 1 : 0;
    if (n > 0 && secs > 0) return static_cast<int64_t>(::time(nullptr) * 1000.0 - n * secs * 1000);
  }
  if (std::all_of(s.begin(), s.end(), ::isdigit)) return std::atoll(s.c_str());
  struct tm tm = {};
  for (const char* fmt : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"}) {
    tm = {};
    const char* end = strptime(s.c_str(), fmt, &tm);
    if (end && *end == '\0') {
      tm.tm_isdst = -1;
      return static_cast<int64_t>(mktime(&tm)) * 1000;
    }
  }
  return InvalidArgument("--since '" + s + "': use a local time (2026-12-07T10:00), unix ms, or -30m / -2h / -1d");
}

}  // namespace shoal
