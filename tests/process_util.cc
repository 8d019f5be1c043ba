// fork/exec with output redirected to files, polled waitpid with deadlines.
#include "tests/process_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

namespace shoal::testing {

namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Spawn(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path,
          const std::string& cwd) {
  int pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // own process group, so a kill reaches mpirun's children too
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = err_path == out_path ? out : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}
}  // namespace

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
// Every folder TempDir made in this process. They hold logs, checkpoints and datasets (a
// chaos run leaves 0.3-6 GB), so they go when the process exits; SHOAL_KEEP_TEST_DIRS=1
// keeps them for a post-mortem. Only the process that made them removes them: a forked
// child that exits through exit() rather than _exit() must not pull them from under it.
std::mutex made_mu;
std::vector<std::string>* made_dirs = nullptr;
pid_t made_by = 0;

void RemoveMadeDirs() {
  std::lock_guard<std::mutex> lock(made_mu);
  if (!made_dirs || ::getpid() != made_by || std::getenv("SHOAL_KEEP_TEST_DIRS")) return;
  for (const auto& d : *made_dirs) {
    std::error_code ec;  // a process still writing there must not turn exit into a crash
    std::filesystem::remove_all(d, ec);
  }
}
}  // namespace

std::string TempDir(const std::string& tag) {
  static int counter = 0;
  auto dir = std::filesystem::temp_directory_path() /
             ("shoal-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::lock_guard<std::mutex> lock(made_mu);
  if (!made_dirs) {
    made_dirs = new std::vector<std::string>();  // never freed: the exit handler reads it
    made_by = ::getpid();
    std::atexit(RemoveMadeDirs);
  }
  made_dirs->push_back(dir.string());
  return dir.string();
}

CommandResult RunCommand(const std::vector<std::string>& argv, double timeout_s, const std::string& cwd) {
  std::string dir = TempDir("cmd");
  int pid = Spawn(argv, dir + "/out", dir + "/err", cwd);
  CommandResult r;
  double deadline = Now() + timeout_s;
  int status = 0;
  for (;;) {
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    if (Now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadText(dir + "/out");
  r.err = ReadText(dir + "/err");
  std::filesystem::remove_all(dir);
  return r;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_ = Spawn(argv, log_path, log_path, "");
}

BackgroundProcess::~BackgroundProcess() {
  if (!reaped_ && pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
}

int BackgroundProcess::Wait(double timeout_s) {
  double deadline = Now() + timeout_s;
  while (!reaped_) {
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      reaped_ = true;
      break;
    }
    if (Now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
}

void BackgroundProcess::Kill(int signal) {
  if (!reaped_) ::kill(-pid_, signal);
}

}  // namespace shoal::testing
