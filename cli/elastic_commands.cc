// `shoalctl ledger | events | scale`: what an elastic job did and how big it should be.
// `ledger --check` proves from the coordinator's data ledger that every admitted record
// was used exactly once per epoch, whatever regroups the job went through.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/ledger_check.h"
#include "coordinator/client.h"
#include "coordinator/coordinator.h"

namespace shoal {

namespace {

struct ElasticOptions {
  std::string coordinator;
  std::string job_id;
  int32_t size = 0;
  bool json = false, check = false, follow = false;
  double timeout_s = 5;

  std::string Endpoint() const { return coordinator.empty() ? DefaultCoordinator() : coordinator; }
  std::chrono::milliseconds Timeout() const {
    return std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  }
};

nlohmann::json RangeToJson(const LedgerRange& r) {
  return {{"step_begin", r.step_begin()},     {"step_end", r.step_end()},       {"epoch", r.epoch()},
          {"cursor_begin", r.cursor_begin()}, {"cursor_end", r.cursor_end()},   {"generation", r.generation()},
          {"world", r.world()},               {"batch", r.batch()}};
}

// Left-aligned in a column of `width`, with at least one space after it.
std::string Padded(const std::string& s, size_t width) {
  return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

std::string LedgerTable(const Ledger& l) {
  std::string out = Padded("STEPS", 16) + Padded("EPOCH", 7) + Padded("POSITIONS", 18) + Padded("GEN", 6) +
                    Padded("WORLD", 7) + "BATCH\n";
  for (const LedgerRange& r : l.ranges()) {
    out += Padded(InclusiveSpan(r.step_begin(), r.step_end()), 16) + Padded(std::to_string(r.epoch()), 7) +
           Padded(InclusiveSpan(r.cursor_begin(), r.cursor_end()), 18) + Padded(std::to_string(r.generation()), 6) +
           Padded(std::to_string(r.world()), 7) + std::to_string(r.batch()) + "\n";
  }
  return out;
}

int DoLedger(const ElasticOptions& o) {
  ControlClient client(o.Endpoint());
  Request req;
  req.mutable_ledger()->set_job_id(o.job_id);
  auto resp = client.Call(req, o.Timeout());
  if (!resp.ok()) return ReportError(resp.status());
  const LedgerResponse& lr = resp->ledger();
  const Ledger& l = lr.ledger();
  const bool completed = lr.state() == JOB_COMPLETED;
  const LedgerCheck check = CheckLedger(l, lr.epochs(), lr.max_steps(), completed);

  if (o.json) {
    nlohmann::json ranges = nlohmann::json::array();
    for (const LedgerRange& r : l.ranges()) ranges.push_back(RangeToJson(r));
    nlohmann::json j = {{"job", o.job_id},
                        {"state", JobStateName(lr.state())},
                        {"steps", check.steps},
                        {"epochs_complete", check.epochs_complete},
                        {"records", check.records},
                        {"seed", l.seed()},
                        {"epochs", lr.epochs()},
                        {"max_steps", lr.max_steps()},
                        {"ranges", ranges}};
    if (o.check) {
      j["ok"] = check.ok;
      j["problems"] = check.problems;
    }
    std::cout << j.dump(2) << std::endl;
  } else {
    std::cout << "job " << o.job_id << " (" << JobStateName(lr.state()) << "): " << check.steps << " steps, "
              << check.records << " records per epoch, seed " << l.seed() << ", " << check.epochs_complete
              << " of " << lr.epochs() << " epochs complete"
              << (lr.max_steps() > 0 ? ", max_steps " + std::to_string(lr.max_steps()) : "") << "\n";
    if (l.ranges_size() > 0) std::cout << LedgerTable(l);
    if (o.check) {
      if (check.ok) {
        std::cout << "check: ok, every admitted record used exactly once per epoch"
                  << (completed ? "" : " so far (the job has not completed)") << "\n";
      } else {
        std::cout << "check: FAILED\n";
        for (const std::string& p : check.problems) std::cout << "  - " << p << "\n";
      }
    }
    std::cout << std::flush;
  }
  return o.check && !check.ok ? kExitFailed : kExitOk;
}

// "14:03:27.512" in local time.
std::string LocalClock(int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm_local {};
  localtime_r(&secs, &tm_local);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", tm_local.tm_hour, tm_local.tm_min, tm_local.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

nlohmann::json EventToJson(const Event& e) {
  nlohmann::json figures = nlohmann::json::object();
  for (const auto& [k, v] : e.figures()) figures[k] = v;
  return {{"seq", e.seq()}, {"unix_ms", e.unix_ms()}, {"kind", e.kind()}, {"detail", e.detail()}, {"figures", figures}};
}

// Whole numbers (steps, generations, timestamps in ms) in full, others to 6 digits.
std::string Figure(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  else
    std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// "14:03:27.512  generation        2 formed with 3 member(s) ...  generation=2  world=3"
std::string EventLine(const Event& e) {
  std::string line = LocalClock(e.unix_ms()) + "  " + Padded(e.kind(), 18) + e.detail();
  // The map is unordered: sort its keys so lines read the same every time.
  const std::map<std::string, double> figures(e.figures().begin(), e.figures().end());
  for (const auto& [k, v] : figures) line += "  " + k + "=" + Figure(v);
  line.erase(line.find_last_not_of(' ') + 1);
  return line;
}

bool EndsJob(const Event& e) { return e.kind() == "completed" || e.kind() == "failed" || e.kind() == "cancelled"; }

int DoEvents(const ElasticOptions& o) {
  ControlClient client(o.Endpoint());
  int64_t after = 0;
  nlohmann::json all = nlohmann::json::array();
  for (bool first = true;; first = false) {
    Request req;
    req.mutable_events()->set_job_id(o.job_id);
    req.mutable_events()->set_after_seq(after);
    auto resp = client.Call(req, o.Timeout());
    if (!resp.ok()) return ReportError(resp.status());
    const auto& events = resp->events().events();
    if (first && events.empty()) {
      // The coordinator answers an unknown job with no events; every job it knows has
      // at least "submitted".
      Request st;
      st.mutable_status()->set_job_id(o.job_id);
      auto s = client.Call(st, o.Timeout());
      if (!s.ok()) return ReportError(s.status());
      if (s->status().jobs_size() == 0) return ReportError(NotFound("unknown job " + o.job_id));
    }
    const Event* end = nullptr;
    for (const Event& e : events) {
      after = std::max(after, e.seq());
      if (o.json && o.follow)
        std::cout << EventToJson(e).dump() << "\n";
      else if (o.json)
        all.push_back(EventToJson(e));
      else
        std::cout << EventLine(e) << "\n";
      if (EndsJob(e)) end = &e;
    }
    std::cout << std::flush;
    if (!o.follow) break;
    if (end != nullptr) return end->kind() == "completed" ? kExitOk : kExitFailed;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (o.json) std::cout << all.dump(2) << std::endl;
  return kExitOk;
}

int DoScale(const ElasticOptions& o) {
  ControlClient client(o.Endpoint());
  Request req;
  req.mutable_scale()->set_job_id(o.job_id);
  req.mutable_scale()->set_size(o.size);
  auto resp = client.Call(req, o.Timeout());
  if (!resp.ok()) return ReportError(resp.status());
  const ScaleResponse& sr = resp->scale();
  if (o.json)
    std::cout << nlohmann::json{{"job", o.job_id}, {"target_size", sr.target_size()}, {"active", sr.active()}}.dump()
              << std::endl;
  else
    std::cout << "job " << o.job_id << ": target size " << sr.target_size() << " (" << sr.active() << " active)"
              << std::endl;
  return kExitOk;
}

void AddCommon(CLI::App* cmd, ElasticOptions& o) {
  cmd->add_option("--coordinator", o.coordinator,
                  "coordinator endpoint tcp://HOST:PORT (default: $SHOAL_COORDINATOR, .shoal/endpoint, tcp://127.0.0.1:7400)");
  cmd->add_option("--timeout", o.timeout_s, "seconds to wait for the coordinator")->capture_default_str();
  cmd->add_flag("--json", o.json, "machine-readable output");
}

}  // namespace

void RegisterElasticCommands(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ElasticOptions>();
  CLI::App* ledger = app.add_subcommand(
      "ledger", "Show which steps consumed which records of a job; --check proves each was used once per epoch");
  ledger->footer(
      "One line per range of committed steps: the epoch, the positions of that epoch's seeded record order the "
      "steps consumed, and the generation and world size that trained them. --check exits 0 when the ledger "
      "proves that every admitted record was used exactly once per epoch (so far, for a job still running), "
      "else 1, naming the steps, positions and record indices skipped or used twice.");
  ledger->add_option("job", o->job_id, "job id")->required();
  ledger->add_flag("--check", o->check,
                   "verify the ledger: steps contiguous from 0, each epoch's positions used exactly once, "
                   "epochs in order and as many as the spec asks (or max_steps steps)");
  AddCommon(ledger, *o);
  ledger->callback([o, exit_code] { *exit_code = DoLedger(*o); });

  CLI::App* events =
      app.add_subcommand("events", "List a job's events: membership, generations, scaling, checkpoints, its end");
  events->footer(
      "One line per event: local time, kind (submitted, registered, generation, regrouped, member_dead, "
      "member_left, scale, checkpoint, completed, failed, cancelled, ...), detail, and the figures it measured "
      "as key=value (a regroup's phases in seconds, for one).");
  events->add_option("job", o->job_id, "job id")->required();
  events->add_flag("--follow", o->follow,
                   "keep polling every 0.5 s until the job completes, fails or is cancelled "
                   "(exit 0 when it completed, 1 otherwise); with --json, one object per line");
  AddCommon(events, *o);
  events->callback([o, exit_code] { *exit_code = DoEvents(*o); });

  CLI::App* scale = app.add_subcommand("scale", "Grow or shrink a running elastic job to N workers");
  scale->footer(
      "Workers beyond N leave at the next step boundary; queued workers (started with shoal-worker --job JOB) "
      "join up to N. N must lie within the spec's [workers.min, workers.max]; a job that has ended or whose "
      "backend cannot regroup (mpi) is refused (exit 2).");
  scale->add_option("job", o->job_id, "job id")->required();
  scale->add_option("N", o->size, "target number of workers")->required();
  AddCommon(scale, *o);
  scale->callback([o, exit_code] { *exit_code = DoScale(*o); });
}

}  // namespace shoal
