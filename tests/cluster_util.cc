// The shared harness: coordinator process and shoalctl JSON calls.
#include "tests/cluster_util.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include <filesystem>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/curve_keys.h"

namespace shoal::testing {

bool HaveDataset() { return std::filesystem::exists(kDataset); }

const std::string& TestAuthDir() {
  static const std::string dir = [] {
    std::string d = "/tmp/shoal-test-auth-" + std::to_string(::getpid());
    std::filesystem::remove_all(d);
    auto made = InitAuthDir(d);
    if (!made.ok()) std::fprintf(stderr, "test harness: cannot make keys in %s: %s\n", d.c_str(), made.status().ToString().c_str());
    ::setenv("SHOAL_AUTH_DIR", d.c_str(), 1);
    std::atexit([] { std::filesystem::remove_all("/tmp/shoal-test-auth-" + std::to_string(::getpid())); });
    return d;
  }();
  return dir;
}

namespace {
// Before main: every client this process makes, and every process it starts, uses the keys.
const bool kAuthReady = !TestAuthDir().empty();
}  // namespace

CoordinatorProcess::CoordinatorProcess(const std::string& state_dir, const std::string& host)
    : dir_(state_dir), host_(host) {
  Start();
}

void CoordinatorProcess::Start() {
  const std::string ep_file = dir_ + "/endpoint";
  std::filesystem::remove(ep_file);
  const std::string bind = endpoint_.empty() ? "tcp://" + host_ + ":*" : endpoint_;
  proc_ = std::make_unique<BackgroundProcess>(
      std::vector<std::string>{kBin + "/shoal-coordinator", "--bind", bind, "--state-dir", dir_ + "/state",
                               "--auth-dir", TestAuthDir(), "--endpoint-file", ep_file},
      dir_ + "/coordinator-" + std::to_string(starts_++) + ".log");
  endpoint_ = WaitForEndpointFile(ep_file);
}

void CoordinatorProcess::Stop(int signal) {
  proc_->Kill(signal);
  proc_->Wait(10);
}

std::string CoordinatorProcess::log() const {
  std::string all;
  for (int i = 0; i < starts_; ++i) all += ReadText(dir_ + "/coordinator-" + std::to_string(i) + ".log");
  return all;
}

std::string WaitForEndpointFile(const std::string& path) {
  std::string ep;
  for (int i = 0; i < 400 && ep.empty(); ++i) {
    ep = ReadText(path);
    if (ep.empty() || ep.back() != '\n') {
      ep.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  if (!ep.empty()) ep.pop_back();
  return ep;
}

std::string CoordinatorOn(const std::string& state_dir, const std::string& dir, std::unique_ptr<BackgroundProcess>* proc) {
  const std::string ep_file = dir + "/coordinator-on.endpoint";
  std::filesystem::remove(ep_file);
  *proc = std::make_unique<BackgroundProcess>(
      std::vector<std::string>{kBin + "/shoal-coordinator", "--bind", "tcp://127.0.0.1:*", "--state-dir", state_dir,
                               "--auth-dir", TestAuthDir(), "--endpoint-file", ep_file},
      dir + "/coordinator.log");
  return WaitForEndpointFile(ep_file);
}

nlohmann::json StatusJson(const std::string& endpoint, const std::string& job) {
  auto r = RunCommand({kBin + "/shoalctl", "status", job, "--coordinator", endpoint, "--json"}, 20);
  if (r.exit_code != 0) return nlohmann::json::object();
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  return j.is_discarded() ? nlohmann::json::object() : j;
}

nlohmann::json ShoalctlJson(const std::string& endpoint, std::vector<std::string> args, int* exit_code) {
  std::vector<std::string> argv = {kBin + "/shoalctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const char* a : {"--coordinator", endpoint.c_str(), "--json"}) argv.push_back(a);
  auto r = RunCommand(argv, 60);
  if (exit_code) *exit_code = r.exit_code;
  return nlohmann::json::parse(r.out, nullptr, false);
}

std::string ReportExit(const std::string& endpoint, const std::string& job, const BackgroundProcess& worker) {
  if (!worker.reaped()) return "";
  ControlClient client(endpoint);
  auto member = ReportWorkerExit(client, job, worker.pid(), DescribeExit(worker.wait_status()));
  return member.ok() ? *member : "";
}

}  // namespace shoal::testing
