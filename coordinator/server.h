// The coordinator's ZeroMQ ROUTER loop: receives Requests, checks who sent them, hands
// them to the Coordinator, sends Responses (immediately or, for long polls, later), and
// ticks the coordinator every few tens of milliseconds. One thread owns every socket.
//
// Security (docs/ARCHITECTURE.md, "Control plane security"): with a key pair in
// auth_dir the socket is a CurveZMQ server; a ZAP handler on the same loop admits only
// public keys in the KeyRegistry, and every request is authorised for its key's role
// (access.h). Every state-changing request and every refusal goes to the hash-chained
// audit log (audit.h). Bad input is bounded: a message size limit, a bound on parked
// long polls per connection and a request rate limit per key.
//
// With `http` set, the same loop also serves the read-only HTTP endpoint (metrics and
// dashboard, observe_http.h): its descriptors join the zmq_poll items, so its handlers
// read the Coordinator on this thread.
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
  // Keys (curve_keys.h): with DIR/coordinator.key the control plane is CurveZMQ. Without
  // keys the coordinator binds only loopback, unless `insecure`.
  std::string auth_dir;
  bool insecure = false;                         // no CURVE, no access control: every client is admin
  double requests_per_second_per_key = 2000;     // sustained; bursts of 4x that pass
  int max_parked_per_connection = 64;            // long polls (await, kv_get) waiting at once
  int64_t max_message_bytes = 16 << 20;
  // OpenLineage run events (openlineage_sink.h): a JSON-lines file (default
  // <state_dir>/openlineage.jsonl; "-" for none) and an HTTP collector (default
  // $OPENLINEAGE_URL; "" for none).
  std::string openlineage_file;
  std::string openlineage_url;
  // "HOST:PORT" of the read-only HTTP endpoint (metrics, dashboard; observe_http.h),
  // served on this server's loop; port 0 picks one; empty: none. Unauthenticated:
  // keep it on loopback or behind a proxy.
  std::string http;
};

// True for endpoints only this machine can reach: tcp://127.x, localhost, [::1], ipc://, inproc://.
bool IsLoopbackEndpoint(const std::string& endpoint);

class CoordinatorServer {
 public:
  // Opens the state store, reloads it and binds the socket. Fails (kUnavailable) if the
  // address is taken or another coordinator holds the state dir; kFailedPrecondition for
  // a non-loopback address without keys (and without `insecure`).
  static StatusOr<std::unique_ptr<CoordinatorServer>> Create(const ServerOptions& options);
  ~CoordinatorServer();

  // The address clients connect to, with the real port when "*" was asked for.
  const std::string& endpoint() const { return endpoint_; }
  bool secure() const;
  // "HOST:PORT" the HTTP endpoint listens on, with the real port; empty without one.
  std::string http_address() const;

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
