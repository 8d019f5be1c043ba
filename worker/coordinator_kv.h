// The rendezvous KvStore of a worker: keys go to the coordinator's key-value service
// (long-poll gets), so communicators of a generation find each other.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/communicator.h"
#include "coordinator/client.h"

namespace shoal {

// Thread-safe. ControlClient is not, and a Get is a long poll that may hold its client
// for the whole timeout, so every call borrows a client of its own from a small pool
// (a new one when none is idle) and no lock is held while a call is on the wire: a Set
// on one thread is never queued behind another thread's Get.
class CoordinatorKvStore : public KvStore {
 public:
  explicit CoordinatorKvStore(const std::string& endpoint) : endpoint_(endpoint) {}
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

  // Idle clients kept for reuse; more calls at once than this create clients that are
  // dropped afterwards. Each client is a ZeroMQ context (an I/O thread) and a socket,
  // and a worker has only a few threads that rendezvous at once.
  static constexpr size_t kMaxIdleClients = 4;

 private:
  class Lease;
  // Sends `request` on a borrowed client.
  StatusOr<Response> Call(const Request& request, std::chrono::milliseconds timeout);

  const std::string endpoint_;
  std::mutex mu_;  // guards idle_ only; never held across a call
  std::vector<std::unique_ptr<ControlClient>> idle_;
};

}  // namespace shoal
