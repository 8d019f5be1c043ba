// What elasticity costs, measured with real processes on this machine:
//   faults   kill -9 of a random worker of 4 (a replacement started at once, as
//            shoalctl run does), repeated twice: with the launcher reporting the exit
//            (shoalctl run does), and without: time from the kill to the next committed
//            step, split into detect + regroup + rendezvous + sync + first step (from
//            the coordinator's "regrouped" events);
//   planned  SIGTERM of a random worker (a graceful leave), then a new worker joining:
//            how long training pauses for each, and how long after it registered the
//            joiner trains;
//   steady   fault-free samples/s of this worker against a baseline worker binary
//            (the commit before elasticity, built by bench/build-baseline.sh),
//            alternated in one run.
//   build/bin/elastic_bench [--faults 20] [--planned 20] [--repeats 5]
//                           [--baseline-worker /tmp/shoal-baseline/bin/shoal-worker] [--json]
// Timings use the spec's defaults (heartbeat 0.5 s, timeout 5 s, regroup window 1 s).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/median.h"
#include "tests/cluster_util.h"

namespace {

using namespace shoal;
using namespace shoal::testing;

struct Range {
  double median = 0, lo = 0, hi = 0;
  size_t n = 0;
};
Range Summarise(std::vector<double> v) {
  Range r;
  if (v.empty()) return r;
  r.n = v.size();
  r.median = Median(v);
  r.lo = *std::min_element(v.begin(), v.end());
  r.hi = *std::max_element(v.begin(), v.end());
  return r;
}
nlohmann::json ToJson(const Range& r) { return {{"median", r.median}, {"min", r.lo}, {"max", r.hi}, {"n", r.n}}; }
void Print(const char* what, const Range& r, const char* unit = "s") {
  std::printf("  %-44s median %7.3f %s  range %.3f-%.3f  (n=%zu)\n", what, r.median, unit, r.lo, r.hi, r.n);
}

// A long job on a coordinator process, workers started and killed by hand.
class Cluster {
 public:
  explicit Cluster(int workers) : dir_(TempDir("elastic-bench")), coord_(dir_) {
    auto r = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord_.endpoint(), "--job-id", "b", "--set",
                         "workers.initial=" + std::to_string(workers), "--set", "collectives.backend=gloo", "--set",
                         "training.epochs=1000", "--set", "training.evaluate=false"},
                        20);
    if (r.exit_code != 0) {
      std::fprintf(stderr, "elastic_bench: submit failed: %s\n", r.err.c_str());
      std::exit(1);
    }
    for (int i = 0; i < workers; ++i) Start();
  }
  ~Cluster() {
    (void)RunCommand({kBin + "/shoalctl", "cancel", "b", "--coordinator", coord_.endpoint()}, 20);
    for (auto& [pid, w] : live_) w->Wait(20);
  }
  int Start() {
    auto w = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{kBin + "/shoal-worker", "--coordinator", coord_.endpoint(), "--job", "b"},
        dir_ + "/w" + std::to_string(started_++) + ".log");
    const int pid = w->pid();
    live_[pid] = std::move(w);
    return pid;
  }
  int RandomLive(std::mt19937& rng) {
    auto it = live_.begin();
    std::advance(it, std::uniform_int_distribution<size_t>(0, live_.size() - 1)(rng));
    return it->first;
  }
  void Signal(int pid, int sig) { live_.at(pid)->Kill(sig); }
  void ReportExitOf(int pid) {
    live_.at(pid)->Wait(5);
    (void)ReportExit(coord_.endpoint(), "b", *live_.at(pid));
  }
  void Forget(int pid) {
    live_.at(pid)->Wait(30);
    live_.erase(pid);
  }
  nlohmann::json Status() { return StatusJson(coord_.endpoint(), "b"); }
  nlohmann::json Events() { return ShoalctlJson(coord_.endpoint(), {"events", "b"}); }
  // Waits until `world` members train in a generation no change is pending for.
  bool WaitSteady(int world, double timeout_s = 60) {
    int64_t first_step = -1;
    for (double t = 0; t < timeout_s; t += 0.1) {
      auto st = Status();
      if (st["state"] != "running" && st["state"] != "pending") return false;
      if (st["world_size"] == world && !st.contains("regroup") && st["step"].get<int64_t>() > 0) {
        if (first_step < 0) first_step = st["step"].get<int64_t>();
        else if (st["step"].get<int64_t>() > first_step + 20) return true;  // training, not just formed
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // The first "regrouped" event of a generation after `generation`, waiting for it.
  nlohmann::json NextRegroup(int64_t generation, double timeout_s = 60) {
    for (double t = 0; t < timeout_s; t += 0.2) {
      for (auto& e : Events())
        if (e["kind"] == "regrouped" && e["figures"]["generation"].get<double>() > generation) return e;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return nlohmann::json();
  }
  // Unix ms of the "registered" event of the member with this pid.
  double RegisteredAt(int pid) {
    for (auto& e : Events())
      if (e["kind"] == "registered" &&
          e["detail"].get<std::string>().find("pid " + std::to_string(pid)) != std::string::npos)
        return e["unix_ms"].get<double>();
    return -1;
  }

 private:
  std::string dir_;
  CoordinatorProcess coord_;
  int started_ = 0;
  std::map<int, std::unique_ptr<BackgroundProcess>> live_;
};

// report_exits: the launcher reaps the victim and tells the coordinator (shoalctl run
// does); without, the coordinator finds the death by the regroup window (a lost host).
nlohmann::json MeasureFaults(int faults, std::mt19937& rng, bool report_exits) {
  Cluster c(4);
  std::map<std::string, std::vector<double>> t;
  if (!c.WaitSteady(4)) {
    std::fprintf(stderr, "elastic_bench: the job did not start\n");
    std::exit(1);
  }
  for (int f = 0; f < faults; ++f) {
    const int64_t generation = c.Status()["generation"].get<int64_t>();
    const int victim = c.RandomLive(rng);
    const double killed_at = static_cast<double>(UnixMillis());
    c.Signal(victim, SIGKILL);
    if (report_exits) c.ReportExitOf(victim);
    c.Start();  // the replacement, as shoalctl run would start it
    auto e = c.NextRegroup(generation);
    c.Forget(victim);
    if (e.is_null()) {
      std::fprintf(stderr, "elastic_bench: no regroup after fault %d\n", f);
      continue;
    }
    const auto& fig = e["figures"];
    t["kill_to_next_step_s"].push_back((fig["first_step_unix_ms"].get<double>() - killed_at) / 1000);
    for (const char* k : {"detect_s", "regroup_s", "rendezvous_s", "sync_s", "first_step_s"}) t[k].push_back(fig[k]);
    std::fprintf(stderr, "fault %d: kill -9 -> next step %.2f s\n", f + 1, t["kill_to_next_step_s"].back());
    if (!c.WaitSteady(4)) break;
  }
  nlohmann::json out;
  for (auto& [k, v] : t) out[k] = ToJson(Summarise(v));
  return out;
}

nlohmann::json MeasurePlanned(int rounds, std::mt19937& rng) {
  Cluster c(4);
  std::map<std::string, std::vector<double>> t;
  if (!c.WaitSteady(4)) std::exit(1);
  for (int i = 0; i < rounds; ++i) {
    int64_t generation = c.Status()["generation"].get<int64_t>();
    const int leaver = c.RandomLive(rng);
    c.Signal(leaver, SIGTERM);
    auto leave = c.NextRegroup(generation);
    c.Forget(leaver);
    if (!leave.is_null()) t["leave_pause_s"].push_back(leave["figures"]["total_s"]);
    if (!c.WaitSteady(3)) break;
    generation = c.Status()["generation"].get<int64_t>();
    const int joiner = c.Start();
    auto join = c.NextRegroup(generation);
    if (!join.is_null()) {
      t["join_pause_s"].push_back(join["figures"]["total_s"]);
      const double registered = c.RegisteredAt(joiner);
      if (registered > 0) t["joiner_trains_after_s"].push_back((join["figures"]["first_step_unix_ms"].get<double>() - registered) / 1000);
    }
    std::fprintf(stderr, "planned %d: leave pause %.2f s, join pause %.2f s\n", i + 1,
                 t["leave_pause_s"].empty() ? -1.0 : t["leave_pause_s"].back(),
                 t["join_pause_s"].empty() ? -1.0 : t["join_pause_s"].back());
    if (!c.WaitSteady(4)) break;
  }
  nlohmann::json out;
  for (auto& [k, v] : t) out[k] = ToJson(Summarise(v));
  return out;
}

// `shoalctl run`'s summary with the given worker binary (the example job, 2 workers).
nlohmann::json SteadyRun(const std::string& worker) {
  std::string dir = TempDir("elastic-bench-steady");
  std::string cmd = "cd " + dir + " && SHOAL_WORKER=" + worker + " " + kBin + "/shoalctl run " + kSpec +
                    " --json --quiet --workers 2 --set collectives.backend=gloo --set training.max_steps=1500 --set "
                    "training.evaluate=false 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int rc = p ? ::pclose(p) : -1;
  std::filesystem::remove_all(dir);
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (rc != 0 || j.is_discarded()) {
    std::fprintf(stderr, "elastic_bench: steady run with %s failed (exit %d)\n", worker.c_str(), rc);
    return nlohmann::json{{"samples_per_second", -1}};
  }
  return j;
}

nlohmann::json MeasureSteady(int repeats, const std::string& baseline) {
  std::vector<double> now, base, share;
  for (int r = 0; r < repeats; ++r) {
    // ABBA: the baseline goes first in every other pair, so neither binary always
    // runs on a machine the other has just warmed (or heated).
    const bool baseline_first = !baseline.empty() && r % 2 == 1;
    if (baseline_first) base.push_back(SteadyRun(baseline)["samples_per_second"].get<double>());
    const nlohmann::json s = SteadyRun(kBin + "/shoal-worker");
    now.push_back(s["samples_per_second"].get<double>());
    // The ledger's bookkeeping measured inside the run, as a share of the wall time
    // (rank 0); the boundary exchanges ride in the gradient reductions.
    if (s.contains("wall_seconds") && s["wall_seconds"].get<double>() > 0)
      share.push_back(s.value("ledger_seconds", 0.0) / s["wall_seconds"].get<double>());
    if (!baseline.empty() && !baseline_first) base.push_back(SteadyRun(baseline)["samples_per_second"].get<double>());
    std::fprintf(stderr, "steady %d: %.0f samples/s%s\n", r + 1, now.back(),
                 baseline.empty() ? "" : (", baseline " + std::to_string(static_cast<int>(base.back()))).c_str());
  }
  nlohmann::json out = {{"samples_per_second", ToJson(Summarise(now))},
                        {"elastic_share_of_wall", ToJson(Summarise(share))}};
  if (!baseline.empty()) {
    out["baseline_samples_per_second"] = ToJson(Summarise(base));
    std::vector<double> ratios;
    for (size_t i = 0; i < now.size(); ++i) ratios.push_back(now[i] / base[i]);
    out["ratio"] = ToJson(Summarise(ratios));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"elastic_bench: the cost of elasticity (faults, planned changes, steady state)"};
  int faults = 20, planned = 20, repeats = 5;
  std::string baseline;
  bool json = false;
  std::vector<std::string> only;
  app.add_option("--faults", faults, "kill -9 faults to time")->capture_default_str();
  app.add_option("--planned", planned, "leave + join rounds to time")->capture_default_str();
  app.add_option("--repeats", repeats, "steady-state runs of each binary")->capture_default_str();
  app.add_option("--baseline-worker", baseline, "shoal-worker of the commit before elasticity (bench/build-baseline.sh)");
  app.add_option("--only", only, "faults, planned and/or steady (default: all)");
  app.add_flag("--json", json, "print the figures as JSON");
  CLI11_PARSE(app, argc, argv);
  auto want = [&](const std::string& k) { return only.empty() || std::find(only.begin(), only.end(), k) != only.end(); };
  std::mt19937 rng(std::random_device{}());
  nlohmann::json out;
  if (want("faults")) {
    out["faults"] = MeasureFaults(faults, rng, true);
    out["faults_unreported"] = MeasureFaults(faults, rng, false);
  }
  if (want("planned")) out["planned"] = MeasurePlanned(planned, rng);
  if (want("steady")) out["steady"] = MeasureSteady(repeats, baseline);
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  auto range = [](const nlohmann::json& j) {
    return Range{j["median"].get<double>(), j["min"].get<double>(), j["max"].get<double>(), j["n"].get<size_t>()};
  };
  for (const char* mode : {"faults", "faults_unreported"}) {
    if (!out.contains(mode)) continue;
    std::printf("kill -9 of 1 of 4 workers (replacement started at once), %s:\n",
                std::string(mode) == "faults" ? "the launcher reports the exit"
                                              : "no exit report (found by the regroup window)");
    for (const char* k : {"kill_to_next_step_s", "detect_s", "regroup_s", "rendezvous_s", "sync_s", "first_step_s"})
      if (out[mode].contains(k)) Print(k, range(out[mode][k]));
  }
  if (out.contains("planned")) {
    std::printf("planned changes (4 workers):\n");
    for (const char* k : {"leave_pause_s", "join_pause_s", "joiner_trains_after_s"})
      if (out["planned"].contains(k)) Print(k, range(out["planned"][k]));
  }
  if (out.contains("steady")) {
    std::printf("fault-free, 2 workers, the example job (1500 steps):\n");
    Print("samples/s (this build)", range(out["steady"]["samples_per_second"]), "");
    Print("ledger bookkeeping, share of wall", range(out["steady"]["elastic_share_of_wall"]), "");
    if (out["steady"].contains("ratio")) {
      Print("samples/s (baseline)", range(out["steady"]["baseline_samples_per_second"]), "");
      Print("ratio this / baseline", range(out["steady"]["ratio"]), "");
    }
  }
  return 0;
}
