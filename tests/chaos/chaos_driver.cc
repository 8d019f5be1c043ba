// Chaos on one machine: a shoal-coordinator and N workers over loopback, and a stream of
// random faults, each logged with its time, kind, target and outcome:
//   kill9        kill -9 of a random worker          kill9_rank0  kill -9 of rank 0
//   kill9_two    two workers at once                 sigterm      a graceful leave
//   sigstop      SIGSTOP past the heartbeat timeout, then SIGCONT (fenced, rejoins)
//   pause        SIGSTOP for under a second, then SIGCONT (must not disturb anything)
//   coordinator  kill -9 of the coordinator, restarted on the same port
//   worker_and_coordinator   a worker and the coordinator together
// Workers that are gone are replaced (as shoalctl run does), so the job keeps N. After
// every fault the job must commit a step within the heartbeat timeout plus 3 s (else
// the fault counts as a hang). At the end: the job completes, `shoalctl ledger --check`
// proves exactly-once, and a table counts faults by kind and outcome.
//   chaos_driver [--faults 30] [--workers 4] [--seed S] [--json]
// Network namespaces, partitions and a slow link (issue 17) are not here yet.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "common/clock.h"
#include "tests/cluster_util.h"

namespace {

using namespace shoal;
using namespace shoal::testing;

constexpr double kHeartbeatTimeout = 2.0;

class Chaos {
 public:
  Chaos(int workers, uint64_t seed, bool report_exits)
      : dir_(TempDir("chaos")), coord_(dir_), rng_(seed), want_(workers), report_exits_(report_exits) {
    auto r = RunCommand({kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord_.endpoint(), "--job-id", "c",
                         "--set", "workers.initial=" + std::to_string(workers), "--set", "collectives.backend=gloo",
                         "--set", "training.epochs=1000", "--set", "training.evaluate=false", "--set",
                         "training.batch_per_worker=32", "--set", "workers.heartbeat_timeout_s=2", "--set",
                         "workers.min_grace_s=60"},
                        20);
    ok_ = r.exit_code == 0;
    if (!ok_) std::fprintf(stderr, "chaos: submit failed: %s\n", r.err.c_str());
    for (int i = 0; i < workers; ++i) Start();
  }
  ~Chaos() {
    (void)RunCommand({kBin + "/shoalctl", "cancel", "c", "--coordinator", coord_.endpoint()}, 20);
    for (auto& [pid, w] : live_) {
      w->Kill(SIGCONT);
      w->Wait(20);
    }
  }
  bool ok() const { return ok_ && !coord_.endpoint().empty(); }
  const std::string& dir() const { return dir_; }

  int Start() {
    auto w = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{kBin + "/shoal-worker", "--coordinator", coord_.endpoint(), "--job", "c"},
        dir_ + "/w" + std::to_string(started_++) + ".log");
    const int pid = w->pid();
    live_[pid] = std::move(w);
    return pid;
  }
  // Reaps exited workers (telling the coordinator, as shoalctl run does) and starts
  // replacements up to the job's size.
  void Replenish() {
    for (auto it = live_.begin(); it != live_.end();) {
      (void)it->second->Wait(0);
      if (it->second->reaped() || !ProcessAlive(it->first)) {
        if (report_exits_) (void)ReportExit(coord_.endpoint(), "c", *it->second);
        it = live_.erase(it);
      } else {
        ++it;
      }
    }
    while (static_cast<int>(live_.size()) < want_) Start();
  }
  static bool ProcessAlive(int pid) { return ::kill(pid, 0) == 0; }
  int Random() {
    auto it = live_.begin();
    std::advance(it, std::uniform_int_distribution<size_t>(0, live_.size() - 1)(rng_));
    return it->first;
  }
  int RankZero() {
    auto st = StatusJson(coord_.endpoint(), "c");
    for (auto& m : st["members"])
      if (m["rank"] == 0 && m["state"] == "active" && live_.count(m["pid"].get<int>())) return m["pid"];
    return Random();
  }
  void Signal(int pid, int sig) {
    if (live_.count(pid)) live_[pid]->Kill(sig);
  }
  // kill -9, reaped at once: the launcher sees the exit as soon as it happens.
  void Kill9(int pid) {
    if (!live_.count(pid)) return;
    live_[pid]->Kill(SIGKILL);
    (void)live_[pid]->Wait(5);
  }
  int64_t Step() {
    auto st = StatusJson(coord_.endpoint(), "c");
    return st.contains("step") ? st["step"].get<int64_t>() : -1;
  }
  // True once rank 0 reports a step past `after` within `timeout_s`.
  bool Progress(int64_t after, double timeout_s) {
    for (double t = 0; t < timeout_s; t += 0.1) {
      if (Step() > after) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // Waits until the job trains at its full size with no change pending.
  void Settle(double timeout_s) {
    for (double t = 0; t < timeout_s; t += 0.1) {
      auto st = StatusJson(coord_.endpoint(), "c");
      if (st["world_size"] == want_ && !st.contains("regroup")) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  void KillCoordinator() { coord_.Stop(SIGKILL); }
  void RestartCoordinator() { coord_.Start(); }
  std::string Ledger(int* rc) { return ShoalctlJson(coord_.endpoint(), {"ledger", "c", "--check"}, rc).dump(); }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::string dir_;
  CoordinatorProcess coord_;
  std::mt19937_64 rng_;
  int want_;
  bool report_exits_;
  bool ok_ = false;
  int started_ = 0;
  std::map<int, std::unique_ptr<BackgroundProcess>> live_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chaos_driver: random faults against an elastic job on loopback; exit 0 if nothing was lost"};
  int faults = 30, workers = 4;
  uint64_t seed = std::random_device{}();
  bool json = false, settle = false, no_exit_reports = false;
  app.add_option("--faults", faults, "faults to inject")->capture_default_str();
  app.add_flag("--settle", settle,
               "inject each fault only once the job trains at full size with no change pending (the soak "
               "leaves this off: faults then also land while a generation forms)");
  app.add_flag("--no-exit-reports", no_exit_reports,
               "do not tell the coordinator when a worker process exits (as a launcher does): every death is "
               "then found by the heartbeat timeout or the regroup window");
  app.add_option("--workers", workers, "the job's size")->capture_default_str();
  app.add_option("--seed", seed, "random seed (printed, to replay a run)");
  app.add_flag("--json", json, "print the summary as JSON");
  CLI11_PARSE(app, argc, argv);
  if (!HaveDataset()) {
    std::fprintf(stderr, "chaos: dataset-fashion-mnist not installed\n");
    return 77;
  }
  std::fprintf(stderr, "chaos: seed %llu, %d faults, %d workers\n", static_cast<unsigned long long>(seed), faults, workers);
  Chaos c(workers, seed, !no_exit_reports);
  if (!c.ok()) return 1;
  if (!c.Progress(20, 60)) {
    std::fprintf(stderr, "chaos: the job never started\n");
    return 1;
  }
  const std::vector<std::string> kinds = {"kill9",   "kill9_rank0", "kill9_two",   "sigterm",
                                          "sigstop", "pause",       "coordinator", "worker_and_coordinator"};
  std::map<std::string, std::map<std::string, int>> table;  // kind -> outcome -> count
  nlohmann::json log = nlohmann::json::array();
  int hangs = 0;
  for (int f = 0; f < faults; ++f) {
    c.Replenish();
    if (settle) c.Settle(30);
    const std::string kind = kinds[std::uniform_int_distribution<size_t>(0, kinds.size() - 1)(c.rng())];
    const int64_t before = c.Step();
    const double t0 = MonotonicSeconds();
    std::string target;
    if (kind == "kill9" || kind == "worker_and_coordinator") {
      const int pid = c.Random();
      target = "pid " + std::to_string(pid);
      c.Kill9(pid);
    } else if (kind == "kill9_rank0") {
      const int pid = c.RankZero();
      target = "rank 0, pid " + std::to_string(pid);
      c.Kill9(pid);
    } else if (kind == "kill9_two") {
      const int a = c.Random();
      int b = c.Random();
      for (int i = 0; i < 10 && b == a; ++i) b = c.Random();
      target = "pids " + std::to_string(a) + ", " + std::to_string(b);
      c.Signal(a, SIGKILL);
      c.Kill9(b);
      c.Kill9(a);
    } else if (kind == "sigterm") {
      const int pid = c.Random();
      target = "pid " + std::to_string(pid);
      c.Signal(pid, SIGTERM);
    } else if (kind == "sigstop" || kind == "pause") {
      const int pid = c.Random();
      target = "pid " + std::to_string(pid);
      c.Signal(pid, SIGSTOP);
      std::this_thread::sleep_for(std::chrono::duration<double>(kind == "pause" ? 0.3 : kHeartbeatTimeout + 1.5));
      c.Signal(pid, SIGCONT);
    }
    if (kind == "coordinator" || kind == "worker_and_coordinator") {
      target += target.empty() ? "coordinator" : " and the coordinator";
      c.KillCoordinator();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      c.RestartCoordinator();
    }
    c.Replenish();  // replacements, as shoalctl run starts them
    // Heartbeats may still carry steps committed before the fault: progress counts
    // from what rank 0 reports one heartbeat interval later.
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    const int64_t settled = std::max(before, c.Step());
    // Every fault is followed by a committed step within the detection timeout + 3 s
    // (a coordinator restart adds its own down time, 0.5 s, and the workers' 2 s poll).
    const double limit = kHeartbeatTimeout + 3 + (kind.find("coordinator") != std::string::npos ? 2.5 : 0) +
                         (kind == "sigstop" ? kHeartbeatTimeout + 1.5 : 0);
    const bool progressed = c.Progress(settled, limit);
    const double took = MonotonicSeconds() - t0;
    const std::string outcome = progressed ? "recovered" : "hang";
    hangs += !progressed;
    ++table[kind][outcome];
    log.push_back({{"fault", f + 1}, {"unix_ms", UnixMillis()}, {"kind", kind}, {"target", target},
                   {"outcome", outcome}, {"seconds_to_next_step", took}});
    std::fprintf(stderr, "fault %d: %-24s %-30s %s in %.2f s\n", f + 1, kind.c_str(), target.c_str(), outcome.c_str(), took);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 1500)(c.rng())));
  }
  c.Replenish();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  int rc = -1;
  const std::string ledger = c.Ledger(&rc);
  const bool exactly_once = rc == 0;
  nlohmann::json summary = {{"seed", seed}, {"faults", faults}, {"hangs", hangs}, {"ledger_exactly_once", exactly_once},
                            {"by_kind", table}, {"log", log}, {"dir", c.dir()}};
  if (json) {
    std::printf("%s\n", summary.dump(2).c_str());
  } else {
    std::printf("%-24s %10s %6s\n", "fault", "recovered", "hang");
    for (auto& [kind, outcomes] : table)
      std::printf("%-24s %10d %6d\n", kind.c_str(), outcomes.count("recovered") ? outcomes.at("recovered") : 0,
                  outcomes.count("hang") ? outcomes.at("hang") : 0);
    std::printf("hangs %d, ledger %s\n", hangs, exactly_once ? "exactly once" : ("FAILED: " + ledger).c_str());
  }
  return hangs == 0 && exactly_once ? 0 : 1;
}
