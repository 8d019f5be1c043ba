// A client of the coordinator (ZeroMQ DEALER): used by workers and shoalctl. Not
// thread-safe: each thread that talks to the coordinator owns its own ControlClient.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "control.pb.h"

namespace shoal {

class ControlClient {
 public:
  explicit ControlClient(std::string endpoint);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends the request and waits for the response with the same id. A response with a
  // non-zero code becomes that Status. No answer within `timeout`: kUnavailable naming
  // the endpoint (late answers to an abandoned call are discarded by id).
  StatusOr<Response> Call(Request request, std::chrono::milliseconds timeout);

  const std::string& endpoint() const { return endpoint_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
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
