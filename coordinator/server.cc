// ZeroMQ ROUTER server loop for the coordinator.
#include "coordinator/server.h"

#include <zmq.hpp>

#include "common/clock.h"
#include "common/log.h"

namespace shoal {

namespace {
// Control messages are small; a hostile peer must not make us allocate gigabytes.
constexpr int64_t kMaxMessageBytes = 16 << 20;
constexpr int kTickMs = 50;
}  // namespace

struct CoordinatorServer::Impl {
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  std::unique_ptr<Coordinator> coordinator;

  void Send(const std::string& identity, const Response& resp) {
    std::string bytes = resp.SerializeAsString();
    try {
      socket.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      SHOAL_LOG_WARN("cannot answer a client: {}", e.what());
    }
  }
};

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Create(const ServerOptions& options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->impl_ = std::make_unique<Impl>();
  std::unique_ptr<StateStore> store;
  if (options.in_memory) {
    store = NewMemoryStore();
  } else {
    ASSIGN_OR_RETURN(store, OpenRocksStore(options.state_dir));
  }
  server->impl_->coordinator = std::make_unique<Coordinator>(std::move(store));
  RETURN_IF_ERROR(server->impl_->coordinator->Load(MonotonicUnixMillis()));
  try {
    auto& s = server->impl_->socket;
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, kMaxMessageBytes);
    s.set(zmq::sockopt::router_mandatory, 0);
    s.bind(options.bind);
    server->endpoint_ = s.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot bind coordinator to " + options.bind + ": " + e.what());
  }
  return server;
}

CoordinatorServer::~CoordinatorServer() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void CoordinatorServer::Start() {
  thread_ = std::thread([this] { Run(); });
}

void CoordinatorServer::Stop() { stop_ = true; }

void CoordinatorServer::Run() {
  auto& impl = *impl_;
  int64_t next_tick = 0;
  while (!stop_) {
    zmq::pollitem_t items[] = {{impl.socket.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(kTickMs));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      SHOAL_LOG_ERROR("poll failed: {}", e.what());
      break;
    }
    if (items[0].revents & ZMQ_POLLIN) {
      // Drain everything that is ready before ticking.
      for (int i = 0; i < 256; ++i) {
        zmq::message_t identity, payload;
        auto got = impl.socket.recv(identity, zmq::recv_flags::dontwait);
        if (!got) break;
        bool more = impl.socket.get(zmq::sockopt::rcvmore);
        if (!more) continue;  // a malformed envelope: no payload frame
        (void)impl.socket.recv(payload, zmq::recv_flags::none);
        while (impl.socket.get(zmq::sockopt::rcvmore)) {  // ignore extra frames
          zmq::message_t extra;
          (void)impl.socket.recv(extra, zmq::recv_flags::none);
        }
        std::string id = identity.to_string();
        Request req;
        if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
          Response bad;
          bad.set_code(static_cast<int>(StatusCode::kInvalidArgument));
          bad.set_error("malformed request: not a shoal.Request protobuf");
          impl.Send(id, bad);
          continue;
        }
        impl.coordinator->Handle(req, MonotonicUnixMillis(), [&impl, id](Response resp) { impl.Send(id, resp); });
      }
    }
    int64_t now = MonotonicUnixMillis();
    if (now >= next_tick) {
      impl.coordinator->Tick(now);
      next_tick = now + kTickMs;
    }
  }
}

}  // namespace shoal
