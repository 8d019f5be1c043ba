// The chaos harness's cluster (see the header).
#include "tests/chaos/chaos_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/clock.h"

namespace shoal::testing {

ChaosCluster::ChaosCluster(const ChaosOptions& o) : opt_(o), dir_(TempDir("chaos")), rng_(0) {}

StatusOr<std::unique_ptr<ChaosCluster>> ChaosCluster::Create(const ChaosOptions& o) {
  std::unique_ptr<ChaosCluster> c(new ChaosCluster(o));
  std::string host = "127.0.0.1";
  if (o.netns) {
    ASSIGN_OR_RETURN(c->net_, NetnsCluster::Create(o.workers + 1));
    // The driver talks from the coordinator's host; what it starts runs there too.
    RETURN_IF_ERROR(c->net_->Enter(0));
    host = c->net_->address(0);
  }
  auto keys = RunCommand({kBin + "/shoalctl", "keygen", "--out", c->dir_ + "/keys", "--name", "ck"}, 20);
  if (keys.exit_code != 0) return Internal("shoalctl keygen failed: " + keys.err);
  if (o.launcher == "shoalctl-run") return c;  // each run embeds its own coordinator
  c->coord_ = std::make_unique<CoordinatorProcess>(c->dir_, host);
  if (c->coord_->endpoint().empty()) return Internal("the coordinator did not start (" + c->dir_ + ")");
  return c;
}

ChaosCluster::~ChaosCluster() {
  if (!job_.empty() && !endpoint().empty())
    (void)RunCommand({kBin + "/shoalctl", "cancel", job_, "--coordinator", endpoint()}, 20);
  if (run_ && run_->Wait(30) < 0 && !run_->reaped()) run_->Kill(SIGKILL);
  for (auto& [pid, w] : live_) w.proc->Kill(SIGCONT);
  for (auto& [pid, w] : live_)
    if (w.proc->Wait(20) < 0) w.proc->Kill(SIGKILL);
  live_.clear();
  if (coord_) coord_->Stop(SIGTERM);
  if (net_) (void)net_->Heal();
}

bool ChaosCluster::StartJob(const std::string& job, bool through_shoalctl_run) {
  job_ = job;
  run_mode_ = through_shoalctl_run;
  const std::string keys = dir_ + "/keys/ck";
  std::vector<std::string> sets = {
      "workers.initial=" + std::to_string(opt_.workers), "workers.min=1", "collectives.backend=gloo",
      "training.epochs=" + std::to_string(opt_.epochs),
      "workers.heartbeat_timeout_s=" + std::to_string(opt_.heartbeat_timeout_s), "workers.min_grace_s=60",
      "workers.max_restarts=100000", "checkpoint.dir=" + dir_ + "/ck",
      "checkpoint.every_steps=" + std::to_string(opt_.checkpoint_every), "checkpoint.keep_last=1000",
      "checkpoint.sign_key=" + keys + ".key", "checkpoint.trust=[" + keys + ".pub]"};
  std::vector<std::string> argv;
  if (shoalctl_run()) {
    run_dir_ = dir_ + "/" + job;
    replayed_.reset();
    argv = {kBin + "/shoalctl", "run", kSpec, "--quiet", "--summary", run_dir_ + "/summary.json", "--state-dir",
            run_dir_ + "/.shoal", "--set", "name=" + job};
  } else {
    argv = {kBin + "/shoalctl", "submit", kSpec, "--coordinator", endpoint(), "--job-id", job};
  }
  for (const std::string& s : sets) {
    argv.push_back("--set");
    argv.push_back(s);
  }
  if (shoalctl_run()) {
    std::filesystem::create_directories(run_dir_);
    run_ = std::make_unique<BackgroundProcess>(argv, run_dir_ + "/run.log");
    run_endpoint_ = WaitForEndpointFile(run_dir_ + "/.shoal/endpoint");
    // shoalctl run names the job itself: the only one its coordinator has.
    for (int i = 0; i < 100 && !run_endpoint_.empty(); ++i) {
      auto all = ShoalctlJson(run_endpoint_, {"status"});
      if (all.contains("jobs") && !all["jobs"].empty()) {
        job_ = all["jobs"][0]["job"];
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::fprintf(stderr, "chaos: shoalctl run for %s did not start: %s\n", job.c_str(),
                 ReadText(run_dir_ + "/run.log").c_str());
    return false;
  }
  auto r = RunCommand(argv, 20);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "chaos: submit of %s failed: %s\n", job.c_str(), r.err.c_str());
    return false;
  }
  for (int h = 1; h <= opt_.workers; ++h) Start(h);
  return true;
}

nlohmann::json ChaosCluster::EndRun(double timeout_s) {
  if (!run_) return nlohmann::json::object();
  if (run_->Wait(timeout_s) < 0 && !run_->reaped()) {
    (void)RunCommand({kBin + "/shoalctl", "cancel", job_, "--coordinator", run_endpoint_}, 20);
    if (run_->Wait(30) < 0 && !run_->reaped()) run_->Kill(SIGKILL);
  }
  run_.reset();
  run_endpoint_ = CoordinatorOn(run_dir_ + "/.shoal/coordinator", run_dir_, &replayed_);
  auto summary = nlohmann::json::parse(ReadText(run_dir_ + "/summary.json"), nullptr, false);
  return summary.is_discarded() ? nlohmann::json::object() : summary;
}

std::vector<int> ChaosCluster::RunWorkers() {
  std::vector<int> out;
  auto st = JobStatus();
  if (!st.contains("members")) return out;
  for (auto& m : st["members"]) {
    const int pid = m["pid"].get<int>();
    if ((m["state"] == "active" || m["state"] == "joining") && ::kill(pid, 0) == 0) out.push_back(pid);
  }
  return out;
}

int ChaosCluster::Start(int host) {
  std::vector<std::string> argv = {"env", "SHOAL_EMULATE_CONTROL_FILE=" + dir_ + "/link-h" + std::to_string(host)};
  if (net_) argv.push_back("SHOAL_LISTEN_HOST=" + net_->address(host));
  for (const std::string& a : {kBin + "/shoal-worker", std::string("--coordinator"), endpoint(), std::string("--job"), job_})
    argv.push_back(a);
  if (net_) argv = net_->Exec(host, argv);
  auto p = std::make_unique<BackgroundProcess>(argv, dir_ + "/w" + std::to_string(started_++) + "-h" +
                                                         std::to_string(host) + ".log");
  const int pid = p->pid();
  live_[pid] = Worker{std::move(p), host};
  return pid;
}

std::vector<int> ChaosCluster::Replenish() {
  std::vector<int> started;
  if (shoalctl_run()) return started;  // shoalctl run replaces its workers itself
  for (auto it = live_.begin(); it != live_.end();) {
    (void)it->second.proc->Wait(0);
    if (it->second.proc->reaped()) {
      if (opt_.report_exits) (void)ReportExit(endpoint(), job_, *it->second.proc);
      it = live_.erase(it);
    } else {
      ++it;
    }
  }
  const std::string state = State();
  if (state != "running" && state != "pending") return started;
  for (int h = 1; h <= opt_.workers; ++h) {
    bool has = false;
    for (auto& [pid, w] : live_) has |= w.host == h;
    if (!has) started.push_back(Start(h));
  }
  return started;
}

void ChaosCluster::WaitWorkersGone(double timeout_s) {
  if (shoalctl_run()) return;
  const double until = MonotonicSeconds() + timeout_s;
  for (auto& [pid, w] : live_) {
    w.proc->Kill(SIGCONT);
    if (w.proc->Wait(std::max(0.1, until - MonotonicSeconds())) < 0 && !w.proc->reaped()) w.proc->Kill(SIGKILL);
    (void)w.proc->Wait(5);
  }
  live_.clear();
}

int ChaosCluster::RandomWorker() {
  if (shoalctl_run()) {
    auto pids = RunWorkers();
    return pids.empty() ? -1 : pids[std::uniform_int_distribution<size_t>(0, pids.size() - 1)(rng_)];
  }
  if (live_.empty()) return -1;
  auto it = live_.begin();
  std::advance(it, std::uniform_int_distribution<size_t>(0, live_.size() - 1)(rng_));
  return it->first;
}

int ChaosCluster::RankZero() {
  auto st = JobStatus();
  if (st.contains("members"))
    for (auto& m : st["members"])
      if (m["rank"] == 0 && m["state"] == "active" && (shoalctl_run() || live_.count(m["pid"].get<int>())))
        return m["pid"];
  return RandomWorker();
}

bool ChaosCluster::Placed(int pid) {
  auto st = JobStatus();
  if (!st.contains("members")) return false;
  for (auto& m : st["members"])
    if (m["pid"] == pid && m["rank"].get<int>() >= 0 && m["state"] == "active") return true;
  return false;
}

int ChaosCluster::HostOf(int pid) const { return live_.count(pid) ? live_.at(pid).host : -1; }

void ChaosCluster::Kill9(int pid) {
  if (shoalctl_run()) {
    if (pid > 0) ::kill(pid, SIGKILL);  // shoalctl run reaps, reports and replaces it
    return;
  }
  if (!live_.count(pid)) return;
  live_[pid].proc->Kill(SIGKILL);
  (void)live_[pid].proc->Wait(5);
  if (opt_.report_exits) (void)ReportExit(endpoint(), job_, *live_[pid].proc);
  live_.erase(pid);
}

void ChaosCluster::Signal(int pid, int sig) {
  if (shoalctl_run() && pid > 0) ::kill(pid, sig);
  if (live_.count(pid)) live_[pid].proc->Kill(sig);
}

void ChaosCluster::KillCoordinator() { coord_->Stop(SIGKILL); }
void ChaosCluster::RestartCoordinator() { coord_->Start(); }

Status ChaosCluster::Partition(const std::vector<int>& hosts) {
  if (!net_) return FailedPrecondition("no partitions on loopback");
  return net_->Partition(hosts);
}
Status ChaosCluster::Heal() { return net_ ? net_->Heal() : OkStatus(); }
Status ChaosCluster::SetLinkUp(int host, bool up) {
  if (!net_) return FailedPrecondition("no links on loopback");
  return net_->SetLinkUp(host, up);
}

void ChaosCluster::SlowLink(int host, double mbps) {
  const std::string file = dir_ + "/link-h" + std::to_string(host);
  if (mbps <= 0) {
    std::filesystem::remove(file);
    return;
  }
  std::ofstream(file + ".new") << mbps << " 0\n";
  std::filesystem::rename(file + ".new", file);
}

nlohmann::json ChaosCluster::JobStatus() { return StatusJson(endpoint(), job_); }

int64_t ChaosCluster::Step() {
  auto st = JobStatus();
  return st.contains("step") ? st["step"].get<int64_t>() : -1;
}

std::string ChaosCluster::State() {
  auto st = JobStatus();
  return st.contains("state") ? st["state"].get<std::string>() : "";
}

bool ChaosCluster::Progress(int64_t after, double timeout_s) {
  const double until = MonotonicSeconds() + timeout_s;
  while (MonotonicSeconds() < until) {
    // A shoalctl run that exited took its coordinator along: the job ended (how, the
    // job's checks tell).
    if (run_ && (run_->Wait(0), run_->reaped())) return true;
    auto st = JobStatus();
    if (st.contains("state") && st["state"] != "running" && st["state"] != "pending") return st["state"] == "completed";
    if (st.contains("step") && st["step"].get<int64_t>() > after) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // A status call that was under way when shoalctl run exited (its coordinator with it)
  // waits out its own timeout, past the deadline: the exit still says the job ended.
  return run_ && (run_->Wait(0), run_->reaped());
}

void ChaosCluster::Settle(double timeout_s) {
  const double until = MonotonicSeconds() + timeout_s;
  while (MonotonicSeconds() < until) {
    auto st = JobStatus();
    if (st.value("state", "") != "running") return;
    if (st["world_size"] == opt_.workers && !st.contains("regroup")) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace shoal::testing
