// Test helpers for ranks as separate processes: this test binary re-executed with a
// gtest filter naming the child's test and its settings in the environment, and a
// KvStore over a directory for their rendezvous.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"

namespace shoal::testing {

// Set writes a file and renames it into place; Get polls for it.
class DirKvStore : public KvStore {
 public:
  explicit DirKvStore(std::string dir) : dir_(std::move(dir)) {}
  Status Set(const std::string& key, const std::string& value) override {
    const std::string path = Path(key), tmp = path + ".tmp";
    {
      std::ofstream out(tmp);
      out << value;
      if (!out) return Unavailable("writing " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) return Unavailable("renaming " + tmp);
    return OkStatus();
  }
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      std::ifstream in(Path(key));
      if (in) {
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
      }
      if (std::chrono::steady_clock::now() >= deadline) return DeadlineExceeded("key " + key + " never appeared");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  std::string Path(std::string key) const {
    for (char& c : key) {
      if (c == '/') c = '_';
    }
    return dir_ + "/" + key;
  }
  std::string dir_;
};

inline const char* Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// Starts `n` copies of this test binary running only `gtest_filter`, copy r with
// this environment plus extra_env(r) ("NAME=value" entries). Everything is built
// before fork; the child only calls execve (a threaded parent may fork safely).
template <typename ExtraEnv>
std::vector<pid_t> SpawnSelf(int n, const std::string& gtest_filter, ExtraEnv&& extra_env) {
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return {};
  self[len] = '\0';
  std::string filter = "--gtest_filter=" + gtest_filter;
  std::vector<std::vector<std::string>> envs(n);
  std::vector<std::vector<char*>> envps(n);
  for (int r = 0; r < n; ++r) {
    // ::environ comes from <unistd.h> (g++ defines _GNU_SOURCE).
    for (char** e = ::environ; *e != nullptr; ++e) envs[r].emplace_back(*e);
    for (std::string& e : extra_env(r)) envs[r].push_back(std::move(e));
    for (auto& e : envs[r]) envps[r].push_back(e.data());
    envps[r].push_back(nullptr);
  }
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    char* argv[] = {self, filter.data(), nullptr};
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execve(self, argv, envps[r].data());
      ::_exit(127);
    }
    if (pid > 0) pids.push_back(pid);
  }
  return pids;
}

}  // namespace shoal::testing
