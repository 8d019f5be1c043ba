// In-memory KvStore for tests and single-process runs: ranks running as threads
// rendezvous through one instance (Gloo's HashStore plays the same role).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "collectives/communicator.h"

namespace shoal {

class MemoryKvStore : public KvStore {
 public:
  // Overwrites an existing key, like the coordinator's store does.
  Status Set(const std::string& key, const std::string& value) override;
  // Waits for `key` up to `timeout`; kDeadlineExceeded names the key it waited for.
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> values_;
};

}  // namespace shoal
