// Goodput under faults: committed training steps per second of one job (the example
// spec, 4 workers, Gloo, a checkpoint every N steps) under three policies, measured
// side by side in one run with real processes on this machine:
//   fault-free          the job trains for the whole duration;
//   elastic             every F s a random live worker gets kill -9 and a replacement
//                       starts at once (as shoalctl run does); the survivors regroup;
//   checkpoint-restart  every F s every worker gets kill -9 and a whole new set starts a
//                       new job resumed from the latest checkpoint (what torchrun and most
//                       peers do): the steps after that checkpoint are lost.
//   build/bin/goodput_bench [--duration 300] [--fault-every 10] [--checkpoint-every 200]
//                           [--only fault-free|elastic|checkpoint-restart] [--keep] [--json]
// Each policy's clock starts at its job's first committed step (the first launch is the
// same for all three); every restart after it counts, process start, data loading and
// rendezvous included. The committed step is read from the coordinator's data ledger,
// or from rank 0's heartbeat where the ledger has none yet.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
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

constexpr int kWorkers = 4;
constexpr double kPollS = 0.5;  // one status call per poll, the same in every policy

// Workers run in their own process groups, so a Ctrl-C does not reach them: the
// benchmark stops at its next poll and its destructors kill what it started.
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Options {
  double duration_s = 300;
  double fault_every_s = 10;
  int checkpoint_every = 200;
  bool keep = false;
  bool report_exits = true;  // the launcher tells the coordinator of each exit (shoalctl run does)
};

// One coordinator with the jobs and workers of one policy; everything it started is
// cancelled and killed when it goes out of scope.
class Harness {
 public:
  Harness(const std::string& tag, const Options& o)
      : dir_(TempDir("goodput-" + tag)), opt_(o), coord_(dir_), report_exits_(o.report_exits) {}
  ~Harness() {
    for (const std::string& job : jobs_) Cancel(job);
    for (auto& [pid, w] : live_)
      if (w->Wait(20) < 0) w->Kill(SIGKILL);
    live_.clear();
    coord_.Stop(SIGTERM);
    if (!opt_.keep) std::filesystem::remove_all(dir_);
  }
  bool ok() const { return !coord_.endpoint().empty(); }
  const std::string& dir() const { return dir_; }

  // The benchmark's job; `resume` (a checkpoint directory) continues an earlier one.
  bool Submit(const std::string& job, const std::string& resume = "") {
    std::vector<std::string> argv = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", coord_.endpoint(), "--job-id", job};
    for (const std::string& s :
         {"workers.initial=" + std::to_string(kWorkers), std::string("collectives.backend=gloo"),
          std::string("training.evaluate=false"), std::string("training.epochs=10000"),  // the validator's maximum
          "checkpoint.dir=" + dir_ + "/ck", "checkpoint.every_steps=" + std::to_string(opt_.checkpoint_every),
          std::string("checkpoint.allow_unsigned=true")}) {
      argv.push_back("--set");
      argv.push_back(s);
    }
    if (!resume.empty()) {
      argv.push_back("--set");
      argv.push_back("checkpoint.resume=" + resume);
    }
    auto r = RunCommand(argv, 20);
    if (r.exit_code != 0) {
      std::fprintf(stderr, "goodput_bench: submit of %s failed: %s\n", job.c_str(), r.err.c_str());
      return false;
    }
    jobs_.push_back(job);
    return true;
  }
  void Cancel(const std::string& job) {
    (void)RunCommand({kBin + "/shoalctl", "cancel", job, "--coordinator", coord_.endpoint()}, 20);
  }
  // A worker for `job`, as `shoalctl run` starts one.
  int Start(const std::string& job) {
    auto w = std::make_unique<BackgroundProcess>(
        std::vector<std::string>{kBin + "/shoal-worker", "--coordinator", coord_.endpoint(), "--job", job},
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
  // kill -9, and reaped so that no zombie holds its pid.
  void KillNow(int pid, const std::string& job) {
    live_.at(pid)->Kill(SIGKILL);
    live_.at(pid)->Wait(10);
    if (report_exits_) (void)ReportExit(coord_.endpoint(), job, *live_.at(pid));
    live_.erase(pid);
  }
  void KillAll() {
    for (auto& [pid, w] : live_) w->Kill(SIGKILL);
    for (auto& [pid, w] : live_) w->Wait(10);
    live_.clear();
  }

  nlohmann::json Status(const std::string& job) { return StatusJson(coord_.endpoint(), job); }
  // The end of the job's ledger (the step after its last committed one); -1 when the
  // ledger cannot be read, 0 before the first step (a resumed job's ledger starts at
  // its checkpoint's step).
  int64_t LedgerEnd(const std::string& job) {
    auto j = ShoalctlJson(coord_.endpoint(), {"ledger", job});
    if (j.is_discarded() || !j.contains("ranges")) return -1;
    int64_t end = 0;
    for (const auto& r : j["ranges"]) end = std::max(end, r["step_end"].get<int64_t>());
    return end;
  }
  // The committed step: the ledger's end, or rank 0's step from the heartbeats (the
  // status) when the ledger has none, which is the case for a job resumed from another
  // job's checkpoint: the coordinator refuses its ledger, which starts at the
  // checkpoint's step ("ledger range at step N is malformed", LedgerBook::Offer).
  int64_t CommittedStep(const std::string& job, bool* from_ledger = nullptr) {
    const int64_t end = LedgerEnd(job);
    if (from_ledger) *from_ledger = end > 0;
    if (end > 0) return end;
    return Status(job).value("step", int64_t{0});
  }
  nlohmann::json LedgerCheck(const std::string& job) {
    int code = -1;
    auto j = ShoalctlJson(coord_.endpoint(), {"ledger", job, "--check"}, &code);
    if (j.is_discarded()) return {{"ok", false}, {"problems", {"shoalctl ledger --check gave no JSON (exit " + std::to_string(code) + ")"}}};
    return {{"ok", code == 0 && j.value("ok", false)}, {"problems", j.value("problems", nlohmann::json::array())}};
  }
  // The job's newest checkpoint that verifies (through the coordinator's registry);
  // step -1 when it has none.
  std::pair<int64_t, std::string> LatestCheckpoint(const std::string& job) {
    auto j = ShoalctlJson(coord_.endpoint(), {"checkpoint", "list", job, "--allow-unsigned"});
    std::pair<int64_t, std::string> best{-1, ""};
    if (j.is_discarded() || !j.contains("checkpoints")) return best;
    for (const auto& c : j["checkpoints"])
      if (c.value("verified", false) && c["step"].get<int64_t>() > best.first)
        best = {c["step"].get<int64_t>(), c["dir"].get<std::string>()};
    return best;
  }
  // Waits for the job's first committed step; its ledger end then (-1: it did not train).
  int64_t WaitFirstStep(const std::string& job, double timeout_s = 120) {
    for (const double t0 = MonotonicSeconds(); MonotonicSeconds() - t0 < timeout_s && !g_stop;) {
      const int64_t end = LedgerEnd(job);
      if (end > 0) return end;
      const auto st = Status(job);
      if (st.value("state", "") == "failed" || st.value("state", "") == "cancelled") return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }

 private:
  std::string dir_;
  Options opt_;
  CoordinatorProcess coord_;
  bool report_exits_;
  int started_ = 0;
  std::vector<std::string> jobs_;
  std::map<int, std::unique_ptr<BackgroundProcess>> live_;
};

// Processes that would compete for the 2 cores and that this benchmark did not start
// (another job's workers, a compiler, a test run): their names, so that a disturbed
// measurement says so. Ours are children of this process.
std::vector<std::string> ForeignBusy() {
  std::vector<std::string> found;
  const std::string me = std::to_string(::getpid());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string stat = ReadText(e.path().string() + "/stat");
    const size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 >= stat.size()) continue;
    const std::string comm = stat.substr(open + 1, close - open - 1);
    // "pid (comm) state ppid ...": the ppid is the second field after the name.
    const size_t ppid_at = stat.find(' ', close + 2);
    const std::string ppid = stat.substr(ppid_at + 1, stat.find(' ', ppid_at + 1) - ppid_at - 1);
    if (ppid == me) continue;
    for (const char* heavy : {"shoal-worker", "shoal-coordinat", "cc1plus", "ctest", "ninja", "mpirun", "python3"})
      if (comm == heavy) found.push_back(comm);
  }
  return found;
}

// What a policy measured.
struct Result {
  bool ok = false;
  std::string error;
  double startup_s = 0;   // launch to the first committed step (not counted)
  double measured_s = 0;  // first committed step to the final reading
  int64_t start_step = 0, end_step = 0;
  int faults = 0;
  int polls = 0, disturbed_polls = 0;  // polls that found foreign busy processes
  std::vector<std::string> disturbers;
  nlohmann::json extra = nlohmann::json::object();
  int64_t steps() const { return end_step - start_step; }
  double goodput() const { return measured_s > 0 ? static_cast<double>(steps()) / measured_s : 0; }
};

nlohmann::json ToJson(const Result& r) {
  nlohmann::json j = {{"ok", r.ok},
                      {"startup_s", r.startup_s},
                      {"measured_s", r.measured_s},
                      {"start_step", r.start_step},
                      {"end_step", r.end_step},
                      {"committed_steps", r.steps()},
                      {"goodput_steps_per_s", r.goodput()},
                      {"faults", r.faults},
                      {"polls", r.polls},
                      {"disturbed_polls", r.disturbed_polls},
                      {"disturbers", r.disturbers}};
  if (!r.error.empty()) j["error"] = r.error;
  j.update(r.extra);
  return j;
}

// Launches `job` with 4 workers and waits for its first step: the start of the clock.
bool Launch(Harness& h, const std::string& job, Result* r) {
  const double launched = MonotonicSeconds();
  if (!h.ok() || !h.Submit(job)) {
    r->error = "coordinator or submit failed";
    return false;
  }
  for (int i = 0; i < kWorkers; ++i) h.Start(job);
  r->start_step = h.WaitFirstStep(job);
  if (r->start_step < 0) {
    r->error = "the job did not start training (logs under " + h.dir() + ", with --keep)";
    return false;
  }
  r->startup_s = MonotonicSeconds() - launched;
  return true;
}

// Polls the job's status every kPollS until the duration is over (handing it to
// `seen`), calling `fault(k)` at each fault time (k = 1, 2, ...); `job()` names the
// job to poll.
template <typename JobFn, typename FaultFn, typename SeenFn>
void RunFor(Harness& h, const char* policy, const Options& o, double t0, Result* r, JobFn job, FaultFn fault,
            SeenFn seen) {
  int next_fault = 1;
  double last_report = t0;
  while (!g_stop) {
    const double now = MonotonicSeconds() - t0;
    if (now >= o.duration_s) break;
    if (o.fault_every_s > 0 && now >= next_fault * o.fault_every_s) fault(next_fault++);
    const auto st = h.Status(job());
    seen(st);
    ++r->polls;
    const auto foreign = ForeignBusy();
    if (!foreign.empty()) {
      ++r->disturbed_polls;
      for (const auto& f : foreign)
        if (std::find(r->disturbers.begin(), r->disturbers.end(), f) == r->disturbers.end()) r->disturbers.push_back(f);
    }
    if (MonotonicSeconds() - last_report >= 10) {
      last_report = MonotonicSeconds();
      std::fprintf(stderr, "[%s] %5.0f s: job %s step %lld, world %d, generation %lld\n", policy,
                   MonotonicSeconds() - t0, job().c_str(), static_cast<long long>(st.value("step", int64_t{-1})),
                   st.value("world_size", -1), static_cast<long long>(st.value("generation", int64_t{-1})));
    }
    const double next_tick = std::min(o.duration_s, std::ceil(now / kPollS + 1e-9) * kPollS);
    const double wait = std::min(next_tick, o.fault_every_s > 0 ? next_fault * o.fault_every_s : o.duration_s) -
                        (MonotonicSeconds() - t0);
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  }
}

Result FaultFree(const Options& o) {
  Result r;
  Harness h("fault-free", o);
  const std::string job = "fault-free";
  if (!Launch(h, job, &r)) return r;
  const double t0 = MonotonicSeconds();
  Options no_faults = o;
  no_faults.fault_every_s = 0;
  RunFor(h, "fault-free", no_faults, t0, &r, [&] { return job; }, [](int) {}, [](const nlohmann::json&) {});
  r.end_step = h.LedgerEnd(job);
  r.measured_s = MonotonicSeconds() - t0;
  r.ok = r.end_step > 0 && !g_stop;
  r.extra["ledger"] = h.LedgerCheck(job);
  return r;
}

Result Elastic(const Options& o, std::mt19937& rng) {
  Result r;
  Harness h("elastic", o);
  const std::string job = "elastic";
  if (!Launch(h, job, &r)) return r;
  const double t0 = MonotonicSeconds();
  RunFor(h, "elastic", o, t0, &r, [&] { return job; }, [&](int) {
    h.KillNow(h.RandomLive(rng), job);
    h.Start(job);  // the replacement, as shoalctl run would start it
    ++r.faults;
  }, [](const nlohmann::json&) {});
  r.end_step = h.LedgerEnd(job);
  r.measured_s = MonotonicSeconds() - t0;
  const auto st = h.Status(job);
  r.extra["state"] = st.value("state", "");
  r.extra["generation"] = st.value("generation", int64_t{-1});
  // Exactly-once under faults: each admitted record used once per epoch so far.
  r.extra["ledger"] = h.LedgerCheck(job);
  r.ok = r.end_step > 0 && st.value("state", "") == "running" && !g_stop;
  if (!r.ok && r.error.empty()) r.error = "job state " + st.value("state", std::string("unknown"));
  return r;
}

Result CheckpointRestart(const Options& o) {
  Result r;
  Harness h("ckpt-restart", o);
  int segment = 0;
  std::string job = "ckr-0";
  if (!Launch(h, job, &r)) return r;
  const double t0 = MonotonicSeconds();
  int64_t resume_step = 0;  // where the current segment started
  std::string resume_dir;
  int64_t lost = 0;
  std::vector<double> restart_s;  // kill to the new segment's first committed step
  double killed_at = -1;
  RunFor(h, "ckpt-restart", o, t0, &r, [&] { return job; }, [&](int) {
    // Whatever the segment committed past its last checkpoint dies with its workers
    // (counted from what the coordinator last heard, which trails the workers by up to
    // a heartbeat: a lower bound).
    const int64_t reached = std::max(resume_step, h.CommittedStep(job));
    h.KillAll();
    killed_at = MonotonicSeconds();
    h.Cancel(job);
    auto [step, dir] = h.LatestCheckpoint(job);
    if (step >= 0) {
      resume_step = step;
      resume_dir = dir;
    }  // else: the segment wrote none; the previous checkpoint (or step 0) again
    lost += std::max<int64_t>(0, reached - resume_step);
    ++r.faults;
    job = "ckr-" + std::to_string(++segment);
    if (!h.Submit(job, resume_dir)) {
      r.error = "submit of " + job + " failed";
      return;
    }
    for (int i = 0; i < kWorkers; ++i) h.Start(job);
  }, [&](const nlohmann::json& st) {
    // The status step arrives with heartbeats (0.5 s) and is polled every 0.5 s: the
    // restart times are as coarse, small against a restart.
    if (killed_at >= 0 && st.value("step", int64_t{0}) > resume_step) {
      restart_s.push_back(MonotonicSeconds() - killed_at);
      killed_at = -1;
    }
  });
  bool from_ledger = false;
  const int64_t last = h.CommittedStep(job, &from_ledger);
  r.end_step = std::max(resume_step, last);
  r.extra["end_step_from"] = from_ledger ? "ledger" : "status (rank 0's heartbeat; the coordinator refuses a resumed job's ledger)";
  r.measured_s = MonotonicSeconds() - t0;
  r.ok = !g_stop && r.end_step >= 0 && r.error.empty();
  r.extra["segments"] = segment + 1;
  r.extra["last_resume_step"] = resume_step;
  r.extra["steps_lost_at_least"] = lost;
  if (!restart_s.empty())
    r.extra["restart_s"] = {{"median", Median(restart_s)},
                            {"min", *std::min_element(restart_s.begin(), restart_s.end())},
                            {"max", *std::max_element(restart_s.begin(), restart_s.end())},
                            {"n", restart_s.size()}};
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"goodput_bench: committed steps/s under faults: fault-free, elastic, checkpoint-restart"};
  Options o;
  bool json = false;
  std::vector<std::string> only;
  app.add_option("--duration", o.duration_s, "seconds each policy runs (from its first step)")->capture_default_str();
  app.add_option("--fault-every", o.fault_every_s, "seconds between faults")->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpoint_every, "checkpoint.every_steps")->capture_default_str();
  app.add_option("--only", only, "fault-free, elastic and/or checkpoint-restart (default: all)");
  app.add_flag("--no-exit-reports", [&](int64_t) { o.report_exits = false; },
               "elastic: do not tell the coordinator of a worker's exit (it is then found by the regroup window "
               "or the heartbeat timeout, as when a whole host is lost)");
  app.add_flag("--keep", o.keep, "keep each policy's temp dir (worker and coordinator logs, checkpoints)");
  app.add_flag("--json", json, "print the figures as JSON");
  CLI11_PARSE(app, argc, argv);
  if (o.duration_s <= 0 || o.fault_every_s <= 0 || o.checkpoint_every <= 0) {
    std::fprintf(stderr, "goodput_bench: --duration, --fault-every and --checkpoint-every must be positive\n");
    return 2;
  }
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  auto want = [&](const std::string& k) { return only.empty() || std::find(only.begin(), only.end(), k) != only.end(); };
  std::mt19937 rng(std::random_device{}());

  std::map<std::string, Result> res;
  for (const char* p : {"fault-free", "elastic", "checkpoint-restart"}) {
    if (!want(p) || g_stop) continue;
    std::fprintf(stderr, "goodput_bench: %s, %.0f s%s\n", p, o.duration_s,
                 std::string(p) == "fault-free" ? "" : (", a fault every " + nlohmann::json(o.fault_every_s).dump() + " s").c_str());
    const std::string k = p;
    res[k] = k == "fault-free" ? FaultFree(o) : k == "elastic" ? Elastic(o, rng) : CheckpointRestart(o);
    if (!res[k].ok) std::fprintf(stderr, "goodput_bench: %s failed: %s\n", p, res[k].error.c_str());
  }
  if (g_stop) {
    std::fprintf(stderr, "goodput_bench: interrupted; every process it started was killed\n");
    return 130;
  }

  nlohmann::json out = {{"duration_s", o.duration_s},
                        {"fault_every_s", o.fault_every_s},
                        {"checkpoint_every_steps", o.checkpoint_every},
                        {"workers", kWorkers},
                        {"unix_ms", UnixMillis()}};
  for (auto& [k, r] : res) out["policies"][k] = ToJson(r);
  auto ratio = [&](const std::string& a, const std::string& b) -> nlohmann::json {
    if (!res.count(a) || !res.count(b) || res[b].goodput() <= 0) return nullptr;
    return res[a].goodput() / res[b].goodput();
  };
  out["elastic_over_fault_free"] = ratio("elastic", "fault-free");
  out["elastic_over_checkpoint_restart"] = ratio("elastic", "checkpoint-restart");
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("goodput, the example job, %d workers (Gloo), %.0f s per policy, a fault every %.0f s, checkpoint every %d steps:\n",
                kWorkers, o.duration_s, o.fault_every_s, o.checkpoint_every);
    std::printf("  %-20s %8s %10s %14s %8s\n", "policy", "faults", "steps", "steps/s", "startup");
    for (const char* p : {"fault-free", "elastic", "checkpoint-restart"}) {
      if (!res.count(p)) continue;
      const Result& r = res[p];
      std::printf("  %-20s %8d %10lld %14.1f %7.1fs%s\n", p, r.faults, static_cast<long long>(r.steps()), r.goodput(),
                  r.startup_s, r.ok ? "" : ("  FAILED: " + r.error).c_str());
      if (r.disturbed_polls > 0) {
        std::string who;
        for (const auto& d : r.disturbers) who += (who.empty() ? "" : ", ") + d;
        std::printf("  %-20s   DISTURBED: %d of %d polls saw other busy processes (%s)\n", "", r.disturbed_polls,
                    r.polls, who.c_str());
      }
    }
    if (res.count("checkpoint-restart")) {
      const auto& x = res["checkpoint-restart"].extra;
      std::printf("  checkpoint-restart: %lld segments, >= %lld steps lost past their checkpoints",
                  static_cast<long long>(x.value("segments", int64_t{0})), static_cast<long long>(x.value("steps_lost_at_least", int64_t{0})));
      if (x.contains("restart_s"))
        std::printf(", kill to first step of the new job median %.2f s (%.2f-%.2f, n=%zu)", x["restart_s"]["median"].get<double>(),
                    x["restart_s"]["min"].get<double>(), x["restart_s"]["max"].get<double>(), x["restart_s"]["n"].get<size_t>());
      std::printf("\n");
    }
    if (!out["elastic_over_fault_free"].is_null())
      std::printf("  elastic / fault-free          %.3f  (target >= 0.9: %s)\n", out["elastic_over_fault_free"].get<double>(),
                  out["elastic_over_fault_free"].get<double>() >= 0.9 ? "met" : "NOT met");
    if (!out["elastic_over_checkpoint_restart"].is_null())
      std::printf("  elastic / checkpoint-restart  %.3f  (target >= 2: %s)\n", out["elastic_over_checkpoint_restart"].get<double>(),
                  out["elastic_over_checkpoint_restart"].get<double>() >= 2 ? "met" : "NOT met");
    if (res.count("elastic")) {
      const auto& l = res["elastic"].extra["ledger"];
      std::printf("  elastic: shoalctl ledger --check %s\n", l["ok"].get<bool>() ? "ok (each admitted record used exactly once per epoch so far)" : "FAILED");
      for (const auto& p : l["problems"]) std::printf("    - %s\n", p.get<std::string>().c_str());
    }
  }
  for (auto& [k, r] : res)
    if (!r.ok) return 1;
  // Exactly-once is a correctness claim, not a figure: a failed check fails the run.
  if (res.count("elastic") && !res["elastic"].extra["ledger"]["ok"].get<bool>()) return 1;
  return 0;
}
