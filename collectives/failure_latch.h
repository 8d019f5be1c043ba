// The failure state every backend keeps: Abort() from any thread, and the first error
// after which the communicator is unusable. Both are sticky: later calls fail with
// kAborted, naming the call and the first failure, until a new communicator is built.
#pragma once

#include <atomic>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "common/status.h"

namespace shoal {

class FailureLatch {
 public:
  void Abort() { aborted_.store(true); }
  bool aborted() const { return aborted_.load(); }

  // OK while usable; else kAborted naming the call `name` and why.
  Status Check(const char* name) const {
    if (aborted_.load()) return Aborted(fmt::format("{}: communicator was aborted", name));
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.empty()) {
      return Aborted(fmt::format("{}: communicator unusable after an earlier failure ({}); build a new one",
                                 name, broken_));
    }
    return OkStatus();
  }

  // Records `status` as the reason if it is the first failure, and returns it.
  Status Break(Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.empty()) broken_ = status.ToString();
    return status;
  }

 private:
  std::atomic<bool> aborted_{false};
  mutable std::mutex mu_;  // guards broken_
  std::string broken_;     // why the communicator became unusable; empty while usable
};

}  // namespace shoal
