// The coordinator's ZeroMQ ROUTER loop: receives Requests, hands them to the
// Coordinator, sends Responses (immediately or, for long polls, later), and ticks the
// coordinator every few tens of milliseconds. One thread owns the socket.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "coordinator/coordinator.h"

namespace shoal {

struct ServerOptions {
  std::string bind = "tcp://127.0.0.1:7400";  // "tcp://127.0.0.1:*" picks a free port
  std::string state_dir = ".shoal/coordinator";
  bool in_memory = false;                        // tests only: no RocksDB
};

class CoordinatorServer {
 public:
  // Opens the state store, reloads it and binds the socket. Fails (kUnavailable) if the
  // address is taken or another coordinator holds the state dir.
  static StatusOr<std::unique_ptr<CoordinatorServer>> Create(const ServerOptions& options);
  ~CoordinatorServer();

  // The address clients connect to, with the real port when "*" was asked for.
  const std::string& endpoint() const { return endpoint_; }

  void Run();          // blocks until Stop()
  void Start();        // Run() on a background thread
  void Stop();         // safe from any thread and from a signal handler's flag

 private:
  CoordinatorServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace shoal
