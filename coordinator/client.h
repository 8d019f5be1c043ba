// A client of the coordinator (ZeroMQ DEALER): used by workers and shoalctl. Not
// thread-safe: each thread that talks to the coordinator owns its own ControlClient.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "control.pb.h"
#include "coordinator/curve_keys.h"

namespace shoal {

class ControlClient {
 public:
  // With the default keys (DefaultClientKeys: $SHOAL_KEY and $SHOAL_COORDINATOR_KEY, or
  // .shoal/auth/admin.key); a key file that cannot be read is reported by every Call.
  explicit ControlClient(std::string endpoint);
  // With these keys (CurveZMQ when keys.enabled(), a plain connection otherwise).
  ControlClient(std::string endpoint, const ClientKeys& keys);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends the request and waits for the response with the same id. A response with a
  // non-zero code becomes that Status. No answer within `timeout`: kUnavailable naming
  // the endpoint (late answers to an abandoned call are discarded by id), or, when the
  // coordinator refused the handshake, kPermissionDenied saying why (no key, a key it
  // does not know or revoked).
  StatusOr<Response> Call(Request request, std::chrono::milliseconds timeout);

  const std::string& endpoint() const { return endpoint_; }

 private:
  void Init(const ClientKeys& keys);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
  Status keys_error_;
  uint64_t next_id_ = 1;
};

// This machine's name as workers register it (gethostname).
std::string ThisHostName();

// What a waitpid status says, for people: "killed by signal 9", "exited with code 1".
std::string DescribeExit(int wait_status);

// The launcher's side of ReportExitRequest: a worker process it started on this host
// exited, so the coordinator need not wait for its heartbeats to stop. Returns the
// member id it was (empty when it had already left or finished).
StatusOr<std::string> ReportWorkerExit(ControlClient& client, const std::string& job_id, int pid,
                                       const std::string& how);

}  // namespace shoal
