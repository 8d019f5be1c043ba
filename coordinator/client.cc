// DEALER client: request/response matched by id, with a deadline on every call.
#include "coordinator/client.h"

#include <sys/wait.h>
#include <unistd.h>

#include <zmq.h>

#include <atomic>
#include <zmq.hpp>

#include "common/clock.h"
#include "coordinator/socket_monitor.h"

namespace shoal {

namespace {
std::atomic<int> g_monitor_seq{0};
}

struct ControlClient::Impl {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::dealer};
  zmq::socket_t monitor{context, zmq::socket_type::pair};
  bool monitoring = false;
  bool curve = false;  // this client presents keys
  std::string handshake_error;  // the last refused handshake, for the caller

  // Reads the socket's handshake events: a refusal is remembered, a success clears it.
  void DrainMonitor() {
    if (!monitoring) return;
    while (auto e = NextMonitorEvent(monitor)) {
      const uint16_t kind = e->kind;
      const uint32_t value = e->value;
      if (kind == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        handshake_error.clear();
      } else if (kind == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        handshake_error = "the coordinator refused this client's key (status " + std::to_string(value) +
                          "): it is not registered or was revoked (shoalctl auth list)";
      } else if (kind == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || kind == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        // Which side notices first decides the event (a mechanism mismatch, or the
        // connection closed mid-handshake): what the client had decides the advice.
        handshake_error = !curve ? "the coordinator requires CurveZMQ keys and this client has none (set SHOAL_KEY "
                                   "and SHOAL_COORDINATOR_KEY, or run in the directory of the `shoalctl run` whose "
                                   ".shoal/auth holds them)"
                          : value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                              ? "the coordinator does not use CurveZMQ keys (an --insecure coordinator?) but this "
                                "client does"
                              : "the CurveZMQ handshake failed: is SHOAL_COORDINATOR_KEY this coordinator's key?";
      }
    }
  }
};

ControlClient::ControlClient(std::string endpoint) : impl_(std::make_unique<Impl>()), endpoint_(std::move(endpoint)) {
  auto keys = DefaultClientKeys();
  if (!keys.ok()) keys_error_ = keys.status();
  Init(keys.ok() ? *keys : ClientKeys{});
}

ControlClient::ControlClient(std::string endpoint, const ClientKeys& keys)
    : impl_(std::make_unique<Impl>()), endpoint_(std::move(endpoint)) {
  Init(keys);
}

void ControlClient::Init(const ClientKeys& keys) {
  impl_->curve = keys.enabled();
  if (keys.enabled()) {
    impl_->socket.set(zmq::sockopt::curve_serverkey, keys.server_public);
    impl_->socket.set(zmq::sockopt::curve_publickey, keys.own.public_key);
    impl_->socket.set(zmq::sockopt::curve_secretkey, keys.own.secret_key);
  }
  impl_->monitoring = MonitorHandshakes(impl_->socket, impl_->monitor,
                                        "inproc://shoal-client-monitor-" + std::to_string(g_monitor_seq++));
  impl_->socket.set(zmq::sockopt::linger, 0);
  impl_->socket.set(zmq::sockopt::maxmsgsize, int64_t{64} << 20);
  impl_->socket.set(zmq::sockopt::reconnect_ivl, 100);
  impl_->socket.set(zmq::sockopt::reconnect_ivl_max, 1000);
  try {
    impl_->socket.connect(endpoint_);
  } catch (const zmq::error_t&) {
    // An invalid endpoint is reported by the first Call.
  }
}

ControlClient::~ControlClient() = default;

StatusOr<Response> ControlClient::Call(Request request, std::chrono::milliseconds timeout) {
  if (!keys_error_.ok()) return keys_error_;
  uint64_t id = next_id_++;
  request.set_id(id);
  std::string bytes = request.SerializeAsString();
  double deadline = MonotonicSeconds() + timeout.count() / 1000.0;
  try {
    if (!impl_->socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait))
      return Unavailable("cannot send to coordinator at " + endpoint_ + " (send queue full)");
    for (;;) {
      double left = deadline - MonotonicSeconds();
      if (left <= 0) break;
      zmq::pollitem_t items[] = {{impl_->socket.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(static_cast<int64_t>(left * 1000) + 1));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t msg;
      if (!impl_->socket.recv(msg, zmq::recv_flags::dontwait)) continue;
      Response resp;
      if (!resp.ParseFromArray(msg.data(), static_cast<int>(msg.size())))
        return Internal("coordinator at " + endpoint_ + " sent a malformed response");
      if (resp.id() != id) continue;  // a late answer to an abandoned call
      if (resp.code() != 0) return Status(static_cast<StatusCode>(resp.code()), resp.error());
      return resp;
    }
  } catch (const zmq::error_t& e) {
    return Unavailable("coordinator at " + endpoint_ + ": " + e.what());
  }
  impl_->DrainMonitor();
  if (!impl_->handshake_error.empty()) return PermissionDenied("coordinator at " + endpoint_ + ": " + impl_->handshake_error);
  return Unavailable("coordinator at " + endpoint_ + " did not answer within " +
                     std::to_string(timeout.count() / 1000.0).substr(0, 4) + " s (is it running?)");
}

std::string ThisHostName() {
  char buf[256] = {};
  ::gethostname(buf, sizeof(buf) - 1);
  return buf;
}

std::string DescribeExit(int wait_status) {
  if (WIFSIGNALED(wait_status)) return "killed by signal " + std::to_string(WTERMSIG(wait_status));
  if (WIFEXITED(wait_status)) return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
  return "ended (wait status " + std::to_string(wait_status) + ")";
}

StatusOr<std::string> ReportWorkerExit(ControlClient& client, const std::string& job_id, int pid,
                                       const std::string& how) {
  Request r;
  r.mutable_report_exit()->set_job_id(job_id);
  r.mutable_report_exit()->set_host(ThisHostName());
  r.mutable_report_exit()->set_pid(pid);
  r.mutable_report_exit()->set_how(how);
  ASSIGN_OR_RETURN(Response resp, client.Call(std::move(r), std::chrono::seconds(5)));
  return resp.report_exit().member_id();
}

}  // namespace shoal
