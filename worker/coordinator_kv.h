// The rendezvous KvStore of a worker: keys go to the coordinator's key-value service
// (long-poll gets), so communicators of a generation find each other.
#pragma once

#include <mutex>

#include "collectives/communicator.h"
#include "coordinator/client.h"

namespace shoal {

class CoordinatorKvStore : public KvStore {
 public:
  explicit CoordinatorKvStore(const std::string& endpoint) : client_(endpoint) {}
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

 private:
  std::mutex mu_;  // ControlClient is single-threaded
  ControlClient client_;
};

}  // namespace shoal
