// Multi-process test harness pieces shared by the end-to-end tests: a coordinator
// process (restartable on the same port), shoalctl calls with JSON answers.
#pragma once

#include <csignal>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/process_util.h"

namespace shoal::testing {

// The binaries under test: this build's, or a copy named by SHOAL_TEST_BIN_DIR (a long
// soak runs on a frozen copy while the tree is rebuilt).
inline const std::string kBin = std::getenv("SHOAL_TEST_BIN_DIR") ? std::getenv("SHOAL_TEST_BIN_DIR") : SHOAL_BIN_DIR;
inline const std::string kSpec = std::string(SHOAL_SOURCE_DIR) + "/examples/fashion-mnist.yaml";
inline const std::string kDataset = "/usr/share/datasets/fashion-mnist";

bool HaveDataset();

// The control-plane keys every coordinator, shoalctl and worker of this test process
// shares: $SHOAL_AUTH_DIR, set (to a fresh directory made with InitAuthDir, removed at
// exit) before main runs, so that coordinators are CurveZMQ like a user's, and a
// `shoalctl run`'s state can be reopened by a later coordinator with the same keys.
const std::string& TestAuthDir();

// A coordinator process on a free port; its endpoint comes from --endpoint-file. A
// restart binds the same endpoint, so that workers find it again.
class CoordinatorProcess {
 public:
  // Binds `host` (an address of this namespace) on a free port.
  explicit CoordinatorProcess(const std::string& state_dir, const std::string& host = "127.0.0.1");
  void Start();
  void Stop(int signal = SIGTERM);
  const std::string& endpoint() const { return endpoint_; }
  std::string log() const;

 private:
  std::string dir_, host_, endpoint_;
  int starts_ = 0;
  std::unique_ptr<BackgroundProcess> proc_;
};

// Waits (up to 10 s) for a file holding an endpoint and a newline; "" if none came.
std::string WaitForEndpointFile(const std::string& path);
// Starts a coordinator on an existing state dir (say, what shoalctl run left under
// .shoal/coordinator) on a free port, logging to dir/coordinator.log; its endpoint.
std::string CoordinatorOn(const std::string& state_dir, const std::string& dir, std::unique_ptr<BackgroundProcess>* proc);

// `shoalctl status JOB --json` (an empty object when it fails).
nlohmann::json StatusJson(const std::string& endpoint, const std::string& job);
// `shoalctl <args...> --coordinator EP --json` parsed (discarded on failure).
nlohmann::json ShoalctlJson(const std::string& endpoint, std::vector<std::string> args, int* exit_code = nullptr);

// Tells the coordinator, as a launcher does, that a worker process of `job` it started
// has exited (reaped, so its wait status is known). Returns the member it was, or "".
std::string ReportExit(const std::string& endpoint, const std::string& job, const BackgroundProcess& worker);

}  // namespace shoal::testing
