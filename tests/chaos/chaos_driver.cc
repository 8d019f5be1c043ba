// Chaos on a simulated cluster: a coordinator on one network namespace, a worker on each
// of N others (loopback with --net loopback), and a stream of random faults against a
// series of jobs of the example spec (signed checkpoints every 50 steps). Each fault is
// logged with its time, kind, target and outcome:
//   kill9 / kill9_rank0 / kill9_two      kill -9 of a worker, of rank 0, of two at once
//   kill9_in_regroup     a second worker killed while the regroup the first began runs
//   kill9_joiner         the replacement killed as soon as it is placed (state receive)
//   kill9_in_checkpoint  rank 0 killed while a checkpoint is being written
//   sigterm              a graceful leave
//   sigstop / pause      SIGSTOP past the heartbeat timeout (fenced, rejoins) / under 1 s
//   coordinator          kill -9 of the coordinator, restarted on the same port
//   worker_and_coordinator
//   partition            1-2 worker hosts cut off (an isolated bridge) for 2.5-5 s, healed
//   link_down            a worker host's link down for 2.5-4 s, then up
//   slow_link            a worker's link slowed to 20 Mbit/s for 1-3 s (must not count
//                        as a failure: "disturbed" if a member was declared dead)
// Exited workers are reported to the coordinator and replaced on their host, as
// shoalctl run does. After every fault the job must commit a step within the heartbeat
// timeout plus 3 s of the fault's end (else: a hang). After every job: it completed,
// `shoalctl ledger --check` proves each record was used once per epoch and that no two
// generations trained at once, no more generations than its faults explain (a storm of
// one-step generations commits steps, so no fault looks hung), every checkpoint verifies, and its test accuracy is
// within 0.5 points of a fault-free run of the same spec made first.
//   chaos_driver [--faults 30] [--workers 4] [--net netns|loopback] [--seed S] [--json]
// Exit 0 when nothing failed; 77 (skip) when namespaces cannot be made.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "common/clock.h"
#include "tests/chaos/chaos_cluster.h"

namespace {

using namespace shoal;
using namespace shoal::testing;

// SIGINT/SIGTERM stop the soak after the fault in progress; what it made is removed.
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

double Uniform(std::mt19937_64& rng, double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
void Sleep(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// Staging directories (step-N.tmp-*) under a job's checkpoint folder: a write in progress.
int Staging(const std::string& root) {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec); !ec && it != decltype(it)(); it.increment(ec))
    n += it->path().filename().string().find(".tmp-") != std::string::npos;
  return n;
}

struct Fault {
  std::string target;
  double extra_s = 0;        // how long the fault itself lasted (the bound counts from its end)
  bool changes_membership = true;
};

class Injector {
 public:
  Injector(ChaosCluster& c, double timeout_s) : c_(c), timeout_s_(timeout_s) {}

  // An empty target: nothing to hit (the job is ending); no fault was injected.
  Fault Inject(const std::string& kind) {
    Fault f;
    auto& rng = c_.rng();
    if (c_.RandomWorker() < 0) return f;
    if (kind == "kill9" || kind == "worker_and_coordinator") {
      const int pid = c_.RandomWorker();
      f.target = Pid(pid);
      c_.Kill9(pid);
    } else if (kind == "kill9_rank0") {
      const int pid = c_.RankZero();
      f.target = "rank 0, " + Pid(pid);
      c_.Kill9(pid);
    } else if (kind == "kill9_two") {
      const int a = c_.RandomWorker();
      int b = c_.RandomWorker();
      for (int i = 0; i < 10 && b == a; ++i) b = c_.RandomWorker();
      f.target = Pid(a) + " and " + Pid(b);
      c_.Signal(a, SIGKILL);
      c_.Kill9(b);
      c_.Kill9(a);
    } else if (kind == "kill9_in_regroup") {
      const int a = c_.RandomWorker();
      c_.Kill9(a);
      // The regroup a's exit begins lasts ~0.15 s from the kill to the next step.
      const double delay = Uniform(rng, 0, 0.08);
      Sleep(delay);
      const int b = c_.RandomWorker();
      c_.Kill9(b);
      f.target = Pid(a) + ", then " + Pid(b) + " " + std::to_string(static_cast<int>(delay * 1000)) + " ms later";
    } else if (kind == "kill9_joiner") {
      const int a = c_.RandomWorker();
      c_.Kill9(a);
      auto started = c_.Replenish();
      if (started.empty()) return f;
      const int j = started[0];
      bool placed = false;
      for (double t0 = MonotonicSeconds(); !placed && MonotonicSeconds() - t0 < 10;) placed = c_.Placed(j);
      f.target = Pid(a) + ", then its replacement " + Pid(j) + (placed ? " once placed" : " (never placed)");
      c_.Kill9(j);
    } else if (kind == "kill9_in_checkpoint") {
      const int pid = c_.RankZero();
      bool writing = false;
      for (double t0 = MonotonicSeconds(); !writing && MonotonicSeconds() - t0 < 3;) {
        writing = Staging(c_.CheckpointRoot()) > 0;
        if (!writing) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      c_.Signal(pid, SIGKILL);
      const bool mid_write = Staging(c_.CheckpointRoot()) > 0;
      c_.Kill9(pid);
      f.target = "rank 0, " + Pid(pid) + (mid_write ? " mid-write" : " (the write had finished)");
    } else if (kind == "sigterm") {
      const int pid = c_.RandomWorker();
      f.target = Pid(pid);
      c_.Signal(pid, SIGTERM);
    } else if (kind == "sigstop" || kind == "pause") {
      const int pid = c_.RandomWorker();
      f.target = Pid(pid);
      f.extra_s = kind == "pause" ? 0.3 : timeout_s_ + 0.7;
      f.changes_membership = kind == "sigstop";
      c_.Signal(pid, SIGSTOP);
      Sleep(f.extra_s);
      c_.Signal(pid, SIGCONT);
    } else if (kind == "partition") {
      std::vector<int> hosts = {c_.HostOf(c_.RandomWorker())};
      if (std::uniform_int_distribution<int>(0, 1)(rng)) {
        const int other = c_.HostOf(c_.RandomWorker());
        if (other != hosts[0]) hosts.push_back(other);
      }
      f.extra_s = Uniform(rng, 2.5, 5);
      f.target = "host" + std::string(hosts.size() > 1 ? "s " : " ") + std::to_string(hosts[0]) +
                 (hosts.size() > 1 ? " and " + std::to_string(hosts[1]) : "") + " for " + Seconds(f.extra_s);
      Check(c_.Partition(hosts));
      Sleep(f.extra_s);
      Check(c_.Heal());
    } else if (kind == "link_down") {
      const int host = c_.HostOf(c_.RandomWorker());
      f.extra_s = Uniform(rng, 2.5, 4);
      f.target = "host " + std::to_string(host) + " for " + Seconds(f.extra_s);
      Check(c_.SetLinkUp(host, false));
      Sleep(f.extra_s);
      Check(c_.SetLinkUp(host, true));
    } else if (kind == "slow_link") {
      const int host = c_.HostOf(c_.RandomWorker());
      f.extra_s = Uniform(rng, 1, 3);
      f.changes_membership = false;
      f.target = "host " + std::to_string(host) + " at 20 Mbit/s for " + Seconds(f.extra_s);
      c_.SlowLink(host, 20);
      Sleep(f.extra_s);
      c_.SlowLink(host, 0);
    }
    if (kind == "coordinator" || kind == "worker_and_coordinator") {
      f.target += f.target.empty() ? "coordinator" : " and the coordinator";
      c_.KillCoordinator();
      Sleep(0.5);
      c_.RestartCoordinator();
      f.extra_s += 0.5;  // its down time
    }
    return f;
  }

 private:
  static std::string Pid(int pid) { return "pid " + std::to_string(pid); }
  static std::string Seconds(double s) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.1f s", s);
    return b;
  }
  static void Check(const Status& s) {
    if (!s.ok()) std::fprintf(stderr, "chaos: %s\n", s.ToString().c_str());
  }
  ChaosCluster& c_;
  double timeout_s_;
};

// What one job ended with, checked.
struct JobCheck {
  std::string state;
  bool ledger_ok = false;
  std::string ledger_problem;
  int checkpoints = 0;
  bool checkpoints_ok = false;
  double accuracy = -1;
  int64_t generations = 0;
  nlohmann::json ToJson() const {
    return {{"state", state},         {"ledger_exactly_once", ledger_ok}, {"checkpoints", checkpoints},
            {"checkpoints_ok", checkpoints_ok}, {"test_accuracy", accuracy}, {"ledger_problem", ledger_problem},
            {"generations", generations}};
  }
};

// Members the coordinator has declared dead so far in the current job (its events);
// -1 when they cannot be read (a shoalctl run that ended took its coordinator along).
int DeathsSoFar(ChaosCluster& c) {
  const auto events = ShoalctlJson(c.endpoint(), {"events", c.job()});
  if (!events.is_array()) return -1;
  int n = 0;
  for (auto& e : events)
    if (e.is_object()) n += e.value("kind", "") == "member_dead";
  return n;
}

JobCheck FinishJob(ChaosCluster& c, double timeout_s) {
  JobCheck out;
  if (c.shoalctl_run()) {
    (void)c.EndRun(timeout_s);
  } else {
    for (double t0 = MonotonicSeconds(); MonotonicSeconds() - t0 < timeout_s; Sleep(0.2)) {
      c.Replenish();
      out.state = c.State();
      if (out.state != "running" && out.state != "pending" && !out.state.empty()) break;
    }
    c.WaitWorkersGone(30);
  }
  out.state = c.State();
  int rc = -1;
  auto ledger = ShoalctlJson(c.endpoint(), {"ledger", c.job(), "--check"}, &rc);
  out.ledger_ok = rc == 0;
  if (!out.ledger_ok) out.ledger_problem = ledger.dump();
  auto list = ShoalctlJson(c.endpoint(), {"checkpoint", "list", c.job(), "--trust", c.TrustKey()}, &rc);
  out.checkpoints_ok = rc == 0;
  if (list.is_array()) out.checkpoints = static_cast<int>(list.size());
  else if (list.contains("checkpoints")) out.checkpoints = static_cast<int>(list["checkpoints"].size());
  auto st = c.JobStatus();
  if (st.contains("result")) out.accuracy = st["result"].value("final_test_accuracy", -1.0);
  out.generations = st.value("generation", int64_t{0});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chaos_driver: random faults against elastic jobs on a simulated cluster; exit 0 if nothing was lost"};
  int faults = 30;
  ChaosOptions o;
  std::string net = "netns";
  uint64_t seed = std::random_device{}();
  bool json = false, settle = false, no_exit_reports = false;
  std::vector<std::string> kinds;
  app.add_option("--faults", faults, "faults to inject")->capture_default_str();
  app.add_option("--workers", o.workers, "workers (one per host)")->capture_default_str();
  app.add_option("--epochs", o.epochs, "epochs of each job")->capture_default_str();
  app.add_option("--net", net, "netns: hosts are network namespaces (root); loopback: one namespace")
      ->check(CLI::IsMember({"netns", "loopback"}))
      ->capture_default_str();
  app.add_option("--launcher", o.launcher,
                 "harness: this driver starts and replaces the workers (one per host); shoalctl-run: each job is a "
                 "`shoalctl run` on the coordinator's host, whose restarts replace what is killed; mixed: every "
                 "fourth job is a shoalctl run")
      ->check(CLI::IsMember({"harness", "shoalctl-run", "mixed"}))
      ->capture_default_str();
  app.add_option("--kinds", kinds, "only these fault kinds (default: all that apply)");
  app.add_flag("--settle", settle, "inject each fault only once the job trains at full size with no change pending");
  app.add_flag("--no-exit-reports", no_exit_reports,
               "do not tell the coordinator when a worker exits: deaths are then found by the regroup window or the "
               "heartbeat timeout");
  app.add_option("--seed", seed, "random seed (printed, to replay a run)");
  app.add_flag("--json", json, "print the summary as JSON");
  CLI11_PARSE(app, argc, argv);
  if (!HaveDataset()) {
    std::fprintf(stderr, "chaos: skipped: dataset-fashion-mnist not installed\n");
    return 77;
  }
  o.netns = net == "netns" && o.launcher != "shoalctl-run";
  o.report_exits = !no_exit_reports;
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  auto made = ChaosCluster::Create(o);
  if (!made.ok()) {
    std::fprintf(stderr, "chaos: %s: %s\n", o.netns ? "skipped (no simulated cluster here; --net loopback runs without)" : "failed",
                 made.status().ToString().c_str());
    return o.netns ? 77 : 1;
  }
  ChaosCluster& c = **made;
  c.rng().seed(seed);
  std::vector<std::string> all = {"kill9",   "kill9_rank0", "kill9_two",   "kill9_in_regroup", "kill9_joiner",
                                  "kill9_in_checkpoint", "sigterm", "sigstop", "pause", "coordinator",
                                  "worker_and_coordinator", "slow_link"};
  if (c.netns()) all.insert(all.end(), {"partition", "link_down"});
  // Under shoalctl run, its coordinator and its workers' environment and host are its own.
  const std::vector<std::string> under_run = {"kill9",     "kill9_rank0", "kill9_two", "kill9_in_regroup",
                                              "kill9_in_checkpoint", "sigstop", "pause"};
  const std::vector<std::string> chosen = kinds;
  auto kinds_for = [&](bool run) {
    std::vector<std::string> out;
    for (const auto& k : chosen.empty() ? all : chosen)
      if (!run || std::find(under_run.begin(), under_run.end(), k) != under_run.end()) out.push_back(k);
    return out.empty() ? under_run : out;
  };
  auto through_run = [&](int round) {
    return o.launcher == "shoalctl-run" || (o.launcher == "mixed" && round % 4 == 0);
  };
  std::fprintf(stderr, "chaos: seed %llu, %d faults, %d workers on %s (%s)\n", static_cast<unsigned long long>(seed),
               faults, o.workers, c.netns() ? "network namespaces" : "loopback", c.dir().c_str());

  // The fault-free reference.
  if (!c.StartJob("reference", o.launcher == "shoalctl-run")) return 1;
  const JobCheck reference = FinishJob(c, 300);
  std::fprintf(stderr, "chaos: fault-free reference %s, test accuracy %.4f, %d checkpoints\n", reference.state.c_str(),
               reference.accuracy, reference.checkpoints);
  if (reference.state != "completed") {
    std::fprintf(stderr, "chaos: the fault-free reference did not complete (%s)\n", c.dir().c_str());
    return 1;
  }

  std::map<std::string, std::map<std::string, int>> table;  // kind -> outcome -> count
  nlohmann::json log = nlohmann::json::array(), jobs = nlohmann::json::array();
  int hangs = 0, bad_jobs = 0, injected = 0;
  double worst_accuracy_gap = 0;
  Injector inject(c, o.heartbeat_timeout_s);
  for (int round = 1; injected < faults && !g_stop; ++round) {
    const std::string job = "r" + std::to_string(round);
    kinds = kinds_for(through_run(round));
    if (!c.StartJob(job, through_run(round)) || !c.Progress(0, 60)) {
      std::fprintf(stderr, "chaos: job %s never started\n", job.c_str());
      return 1;
    }
    const int faults_before_job = injected;
    while (injected < faults && !g_stop) {
      c.Replenish();
      if (settle) c.Settle(30);
      if (c.State() != "running") break;
      const std::string kind = kinds[std::uniform_int_distribution<size_t>(0, kinds.size() - 1)(c.rng())];
      const int64_t before = c.Step();
      const int deaths = DeathsSoFar(c);
      const int64_t unix_ms = UnixMillis();
      Fault f = inject.Inject(kind);
      if (f.target.empty()) break;
      const double ended = MonotonicSeconds();
      ++injected;
      c.Replenish();
      // Heartbeats may still carry steps committed before the fault: progress counts from
      // what rank 0 reports a heartbeat interval later.
      Sleep(0.6);
      const int64_t settled = std::max(before, c.Step());
      const double limit = o.heartbeat_timeout_s + 3;
      const bool progressed = c.Progress(settled, limit);
      const double took = MonotonicSeconds() - ended;  // from the fault's end (a heal, a SIGCONT)
      std::string outcome = progressed ? "recovered" : "hang";
      const int deaths_after = f.changes_membership ? -1 : DeathsSoFar(c);
      if (progressed && deaths >= 0 && deaths_after > deaths)
        outcome = "disturbed";  // a slow link or a short pause must not cost a member
      hangs += !progressed;
      ++table[kind][outcome];
      log.push_back({{"fault", injected}, {"job", job}, {"unix_ms", unix_ms}, {"kind", kind}, {"target", f.target},
                     {"outcome", outcome}, {"fault_s", f.extra_s}, {"seconds_to_next_step", took}});
      std::fprintf(stderr, "fault %d (%s): %-22s %-52s %s in %.2f s\n", injected, job.c_str(), kind.c_str(),
                   f.target.c_str(), outcome.c_str(), took);
      Sleep(Uniform(c.rng(), 0.2, 0.8));
    }
    const JobCheck j = FinishJob(c, 600);
    const double gap = j.accuracy >= 0 ? std::fabs(j.accuracy - reference.accuracy) : 1;
    worst_accuracy_gap = std::max(worst_accuracy_gap, gap);
    // A regroup storm (generations that end at their first boundary, over and over)
    // commits steps, so no fault looks hung; the generation count shows it. A fault
    // costs at most four (two deaths, two replacements joining); kill9_two's and a
    // joiner's are the most.
    const int64_t generation_bound = 5 * (injected - faults_before_job) + 10;
    const bool storm = j.generations > generation_bound;
    const bool ok = j.state == "completed" && j.ledger_ok && j.checkpoints_ok && gap <= 0.005 && !storm;
    bad_jobs += !ok;
    nlohmann::json jj = j.ToJson();
    jj["job"] = job;
    jj["launcher"] = c.shoalctl_run() ? "shoalctl run" : "harness";
    jj["ok"] = ok;
    jobs.push_back(jj);
    std::fprintf(stderr, "chaos: job %s (%s) %s: ledger %s, %d checkpoints %s, accuracy %.4f (reference %.4f)%s\n",
                 job.c_str(), c.shoalctl_run() ? "shoalctl run" : "harness", j.state.c_str(), j.ledger_ok ? "exactly once" : "FAILED", j.checkpoints,
                 j.checkpoints_ok ? "verified" : "FAILING VERIFICATION", j.accuracy, reference.accuracy,
                 ok ? "" : "  <-- FAILED");
    if (!j.ledger_ok) std::fprintf(stderr, "%s\n", j.ledger_problem.c_str());
    if (storm)
      std::fprintf(stderr, "chaos: job %s went through %lld generations for %d faults (bound %lld): a regroup storm\n",
                   job.c_str(), static_cast<long long>(j.generations), injected - faults_before_job,
                   static_cast<long long>(generation_bound));
  }
  nlohmann::json summary = {{"seed", seed},
                            {"faults", injected},
                            {"net", c.netns() ? "netns" : "loopback"},
                            {"hangs", hangs},
                            {"jobs", jobs.size()},
                            {"failed_jobs", bad_jobs},
                            {"reference_accuracy", reference.accuracy},
                            {"worst_accuracy_gap", worst_accuracy_gap},
                            {"by_kind", table},
                            {"log", log},
                            {"job_checks", jobs},
                            {"dir", c.dir()}};
  if (json) {
    std::printf("%s\n", summary.dump(2).c_str());
  } else {
    std::printf("%-24s %10s %6s %10s\n", "fault", "recovered", "hang", "disturbed");
    for (auto& [kind, outcomes] : table) {
      auto n = [&](const char* k) { return outcomes.count(k) ? outcomes.at(k) : 0; };
      std::printf("%-24s %10d %6d %10d\n", kind.c_str(), n("recovered"), n("hang"), n("disturbed"));
    }
    std::printf("%d faults over %zu jobs: %d hangs, %d jobs failing a check (ledger, checkpoints, accuracy within "
                "0.005 of %.4f; worst gap %.4f)\n",
                injected, jobs.size(), hangs, bad_jobs, reference.accuracy, worst_accuracy_gap);
  }
  if (g_stop) std::fprintf(stderr, "chaos: interrupted after %d faults\n", injected);
  return g_stop ? 130 : hangs == 0 && bad_jobs == 0 ? 0 : 1;
}
