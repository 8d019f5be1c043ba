// Helpers for multi-process tests: run a command with a timeout and capture its output,
// or start one in the background and kill it later (Gloo's multi-process test style).
#pragma once

#include <string>
#include <vector>

namespace shoal::testing {

struct CommandResult {
  int exit_code = -1;   // -1 if killed by a signal or timed out
  bool timed_out = false;
  std::string out, err;
};

CommandResult RunCommand(const std::vector<std::string>& argv, double timeout_s = 120, const std::string& cwd = "");

class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv, const std::string& log_path);
  ~BackgroundProcess();  // SIGKILL if still running
  int pid() const { return pid_; }
  // Waits for exit up to timeout; returns the exit code, or -1 on signal/timeout.
  int Wait(double timeout_s);
  bool reaped() const { return reaped_; }
  int wait_status() const { return status_; }  // waitpid's, once reaped
  void Kill(int signal);

 private:
  int pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

std::string TempDir(const std::string& tag);  // fresh, empty; removed at exit (SHOAL_KEEP_TEST_DIRS=1 keeps it)
std::string ReadText(const std::string& path);

}  // namespace shoal::testing
