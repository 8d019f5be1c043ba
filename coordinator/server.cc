// ZeroMQ ROUTER server loop for the coordinator, with its ZAP handler (CurveZMQ key
// admission), its socket monitor (handshakes that fail before ZAP), access checks,
// limits and the audit log.
#include "coordinator/server.h"

#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <zmq.hpp>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "coordinator/access.h"
#include "coordinator/audit.h"
#include "coordinator/curve_keys.h"
#include "coordinator/http_server.h"
#include "coordinator/observe_http.h"
#include "coordinator/openlineage_sink.h"
#include "coordinator/socket_monitor.h"
#include "lineage/code.h"

namespace shoal {

namespace {
constexpr int kTickMs = 50;
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr char kZapDomain[] = "shoal";
// A refused stranger reconnects every few hundred ms: the audit log records the first
// refusal of each kind per second and counts the rest into the next entry.
constexpr int64_t kRefusalAuditIntervalMs = 1000;

// A token bucket per key.
struct RateBucket {
  double tokens = 0;
  int64_t last_ms = 0;
};

Response ErrorResponse(uint64_t id, const Status& s) {
  Response r;
  r.set_id(id);
  r.set_code(static_cast<int>(s.code()));
  r.set_error(s.message());
  return r;
}
}  // namespace

bool IsLoopbackEndpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  static const std::regex tcp(R"(tcp://(\[[^\]]*\]|[^:]*):.*)");
  std::smatch m;
  if (!std::regex_match(endpoint, m, tcp)) return false;
  const std::string host = m[1];
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]";
}

struct CoordinatorServer::Impl {
  ServerOptions options;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  zmq::socket_t zap{context, zmq::socket_type::rep};
  zmq::socket_t monitor{context, zmq::socket_type::pair};
  bool curve = false;
  StateStore* store = nullptr;  // owned by the coordinator
  std::unique_ptr<Coordinator> coordinator;
  std::unique_ptr<KeyRegistry> keys;
  std::unique_ptr<AuditLog> audit;
  std::unique_ptr<OpenLineageSink> openlineage;  // outlives nothing the coordinator calls after Stop
  std::map<std::string, RateBucket> buckets;                    // by key name
  std::map<std::string, std::shared_ptr<int>> parked;           // by connection (routing id)
  std::map<std::string, std::pair<int64_t, int64_t>> refusals;  // what -> (last audited ms, suppressed)
  // The read-only HTTP endpoint, polled on this loop with the ZeroMQ sockets: its
  // handler reads the coordinator on this thread, so no lock and no snapshot copy.
  std::unique_ptr<HttpServer> http;

  void Send(const std::string& identity, const Response& resp) {
    std::string bytes = resp.SerializeAsString();
    try {
      socket.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      SHOAL_LOG_WARN("cannot answer a client: {}", e.what());
    }
  }

  void Audit(const Caller& who, const std::string& action, const std::string& job, const std::string& outcome,
             const std::string& detail, int64_t now_ms) {
    AuditEntry e;
    e.set_key(who.key);
    e.set_role(who.insecure ? "insecure" : RoleName(who.role));
    e.set_action(action);
    e.set_job_id(job);
    e.set_outcome(outcome);
    e.set_detail(detail);
    Status s = audit->Append(std::move(e), now_ms);
    if (!s.ok()) SHOAL_LOG_ERROR("cannot write the audit log: {}", s.ToString());
  }

  // Refusals are audited, at most one per (who, what) per second; the rest are counted.
  void AuditRefusal(const Caller& who, const std::string& action, const std::string& job, const std::string& why,
                    const std::string& detail, int64_t now_ms) {
    auto& [last, suppressed] = refusals[who.key + "|" + action + "|" + why.substr(0, 40)];
    if (last != 0 && now_ms - last < kRefusalAuditIntervalMs) {
      ++suppressed;
      return;
    }
    std::string d = detail;
    if (suppressed > 0) d += (d.empty() ? "" : "; ") + std::to_string(suppressed) + " more like it since the last entry";
    suppressed = 0;
    last = now_ms;
    Audit(who, action, job, "refused: " + why, d, now_ms);
  }

  // The ZAP handler: admits a CURVE public key the registry knows and has not revoked.
  void HandleZap(int64_t now_ms) {
    std::vector<zmq::message_t> frames;
    for (;;) {
      zmq::message_t f;
      if (!zap.recv(f, zmq::recv_flags::dontwait)) break;
      frames.push_back(std::move(f));
      if (!zap.get(zmq::sockopt::rcvmore)) break;
    }
    if (frames.size() < 6) return;  // libzmq always sends 6 or more
    const std::string request_id = frames[1].to_string(), address = frames[3].to_string(),
                      mechanism = frames[5].to_string();
    std::string status = "400", text, user;
    Caller stranger;
    stranger.insecure = false;
    stranger.role = ROLE_UNSPECIFIED;
    if (mechanism != "CURVE" || frames.size() < 7 || frames[6].size() != 32) {
      text = "CURVE required";
    } else {
      char z85[41] = {};
      zmq_z85_encode(z85, static_cast<const uint8_t*>(frames[6].data()), 32);
      const AuthKey* key = keys->FindByPublic(z85);
      if (key == nullptr) {
        text = "unknown key";
        stranger.key = "unknown:" + CurveKeyFingerprint(z85);
      } else if (key->revoked()) {
        text = "revoked key";
        stranger.key = key->name();
        stranger.role = key->role();
      } else {
        status = "200";
        text = "OK";
        user = key->name();
      }
    }
    if (status != "200") AuditRefusal(stranger, "connect", "", text, "from " + address, now_ms);
    const std::string reply[] = {"1.0", request_id, status, text, user, ""};
    for (size_t i = 0; i < 6; ++i)
      zap.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  // Handshakes that fail before ZAP is asked: a client with no key (or another
  // mechanism) talking to a CURVE server.
  void HandleMonitor(int64_t now_ms) {
    auto e = NextMonitorEvent(monitor);
    if (!e || e->kind == ZMQ_EVENT_HANDSHAKE_SUCCEEDED || e->kind == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return;
    const uint32_t value = e->value;
    Caller none;
    none.insecure = false;
    none.role = ROLE_UNSPECIFIED;
    char why[120];
    // Which side notices first decides the event: a mechanism mismatch, or the peer
    // gone mid-handshake (NO_DETAIL). Either way the client presented no valid CURVE hello.
    std::snprintf(why, sizeof(why), "handshake failed: %s (%s 0x%x)",
                  value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ? "no CURVE key presented"
                                                                       : "no CURVE key presented, or not a CurveZMQ client",
                  e->kind == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol error" : "error", value);
    AuditRefusal(none, "connect", "", why, "", now_ms);
  }

  // Who sent `payload`: the key ZAP admitted (re-checked now, so a revocation takes
  // effect at once), or the insecure admin.
  StatusOr<Caller> CallerOf(zmq::message_t& payload) {
    Caller c;
    if (!curve) return c;
    c.insecure = false;
    const char* user = zmq_msg_gets(payload.handle(), "User-Id");
    const AuthKey* key = user ? keys->FindByName(user) : nullptr;
    if (key == nullptr) return PermissionDenied("no admitted key on this connection");
    c.key = key->name();
    c.role = key->role();
    c.jobs.assign(key->jobs().begin(), key->jobs().end());
    if (key->revoked()) return PermissionDenied("key '" + c.key + "' was revoked");
    return c;
  }

  bool TakeToken(const std::string& key, int64_t now_ms) {
    const double rate = options.requests_per_second_per_key;
    if (rate <= 0) return true;
    RateBucket& b = buckets[key];
    if (b.last_ms == 0) b.tokens = 4 * rate;
    b.tokens = std::min(4 * rate, b.tokens + (now_ms - b.last_ms) * rate / 1000.0);
    b.last_ms = now_ms;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  // Requests the server answers itself: the key registry and the audit log.
  Status HandleAccess(const Request& req, const Caller& who, int64_t now_ms, Response* resp) {
    switch (req.body_case()) {
      case Request::kAuthAdd: {
        AuthKey k = req.auth_add().key();
        k.set_added_by(who.key);
        return keys->Add(k, now_ms);
      }
      case Request::kAuthList:
        for (const AuthKey& k : keys->List()) *resp->mutable_auth_list()->add_keys() = k;
        return OkStatus();
      case Request::kAuthRevoke: return keys->Revoke(req.auth_revoke().name(), now_ms);
      case Request::kAudit: {
        audit->MaybeSignHead(now_ms, true);  // what --verify reads is covered up to now
        ASSIGN_OR_RETURN(*resp->mutable_audit(), audit->Read(req.audit()));
        return OkStatus();
      }
      default: return Internal("not an access request");
    }
  }

  void HandleRequest(const std::string& id, zmq::message_t& payload, int64_t now_ms) {
    Request req;
    if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
      Send(id, ErrorResponse(0, InvalidArgument("malformed request: not a shoal.Request protobuf")));
      return;
    }
    const std::string action = ActionName(req);
    auto caller = CallerOf(payload);
    if (!caller.ok()) {
      Caller none;
      none.insecure = false;
      none.role = ROLE_UNSPECIFIED;
      const char* user = zmq_msg_gets(payload.handle(), "User-Id");
      if (user) none.key = user;
      AuditRefusal(none, action, JobOfRequest(req, *coordinator), caller.status().message(), "", now_ms);
      Send(id, ErrorResponse(req.id(), caller.status()));
      return;
    }
    const Caller who = *caller;
    const std::string job = JobOfRequest(req, *coordinator);
    auto refuse = [&](const Status& s) {
      AuditRefusal(who, action, job, s.message(), "", now_ms);
      Send(id, ErrorResponse(req.id(), s));
    };
    if (!TakeToken(who.key, now_ms)) {
      refuse(ResourceExhausted("key '" + who.key + "' exceeds " +
                               std::to_string(static_cast<int>(options.requests_per_second_per_key)) +
                               " requests/s; slow down"));
      return;
    }
    if (Status s = Authorize(who, req, *coordinator); !s.ok()) {
      refuse(s);
      return;
    }
    if (req.has_auth_add() || req.has_auth_list() || req.has_auth_revoke() || req.has_audit()) {
      Response resp;
      resp.set_id(req.id());
      Status s = HandleAccess(req, who, now_ms, &resp);
      if (!s.ok()) resp = ErrorResponse(req.id(), s);
      if (IsAudited(req)) {
        const std::string detail = req.has_auth_add() ? req.auth_add().key().name() + " as " +
                                                            RoleName(req.auth_add().key().role())
                                                      : req.auth_revoke().name();
        Audit(who, action, "", s.ok() ? "ok" : "failed: " + s.message(), detail, now_ms);
      }
      Send(id, resp);
      return;
    }
    const bool long_poll = req.has_await_assignment() || req.has_kv_get();
    std::shared_ptr<int> guard;
    if (long_poll) {
      auto& count = parked[id];
      if (!count) count = std::make_shared<int>(0);
      if (*count >= options.max_parked_per_connection) {
        refuse(ResourceExhausted("this connection already has " + std::to_string(*count) +
                                 " long polls waiting (the limit)"));
        return;
      }
      // Counts the request while any copy of its responder lives: a parked poll that
      // the coordinator replaces or drops unanswered is uncounted as well.
      ++*count;
      std::weak_ptr<int> weak = count;
      guard = std::shared_ptr<int>(new int(0), [weak](int* p) {
        if (auto c = weak.lock()) --*c;
        delete p;
      });
    }
    if (req.has_submit()) req.mutable_submit()->set_owner(who.insecure ? "" : who.key);
    const bool audited = IsAudited(req);
    coordinator->Handle(req, now_ms, [this, id, who, action, job, audited, guard, is_status = req.has_status(),
                                      now_ms](Response resp) {
      if (is_status) FilterStatus(who, resp.mutable_status());
      if (audited) {
        const std::string j = resp.has_submit() ? resp.submit().job_id() : job;
        Audit(who, action, j, resp.code() == 0 ? "ok" : "failed: " + resp.error(), "", now_ms);
      }
      Send(id, resp);
    });
  }
};

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Create(const ServerOptions& options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->impl_ = std::make_unique<Impl>();
  Impl& impl = *server->impl_;
  impl.options = options;
  CurveKeyPair server_key;
  std::optional<KeyPair> signing;
  const bool have_keys = !options.auth_dir.empty() && PathExists(options.auth_dir + "/coordinator.key");
  if (have_keys && !options.insecure) {
    ASSIGN_OR_RETURN(server_key, ReadCurveKeyFile(options.auth_dir + "/coordinator.key"));
    if (server_key.secret_key.empty()) return InvalidArgument(options.auth_dir + "/coordinator.key has no secret key");
    const std::string sign_path = options.auth_dir + "/coordinator-signing.key";
    if (PathExists(sign_path)) {
      ASSIGN_OR_RETURN(KeyPair kp, LoadSecretKey(sign_path));
      signing = kp;
    }
    impl.curve = true;
  } else if (!options.insecure && !IsLoopbackEndpoint(options.bind)) {
    return FailedPrecondition(
        "refusing to listen on " + options.bind + " without keys: anyone who reaches it could submit and cancel " +
        "jobs, register as a worker or rewrite a job's rendezvous keys. Make keys with `shoalctl auth init" +
        (options.auth_dir.empty() ? std::string() : " --dir " + options.auth_dir) +
        "` (the control plane is then CurveZMQ, admitting only registered keys), bind 127.0.0.1, or pass --insecure");
  }
  std::unique_ptr<StateStore> store;
  if (options.in_memory) {
    store = NewMemoryStore();
  } else {
    ASSIGN_OR_RETURN(store, OpenRocksStore(options.state_dir));
  }
  impl.store = store.get();
  impl.coordinator = std::make_unique<Coordinator>(std::move(store));
  impl.coordinator->set_code(ThisBuildCode());
  {
    OpenLineageOptions ol;
    ol.file = options.openlineage_file == "-" ? ""
              : !options.openlineage_file.empty() ? options.openlineage_file
              : options.in_memory ? "" : options.state_dir + "/openlineage.jsonl";
    ol.url = options.openlineage_url;
    ol.FillFromEnvironment();
    ASSIGN_OR_RETURN(impl.openlineage, OpenLineageSink::Create(ol));
    char host[256] = "localhost";
    ::gethostname(host, sizeof(host) - 1);
    impl.coordinator->set_lineage_events([sink = impl.openlineage.get()](const std::string& e) { sink->Emit(e); },
                                         std::string("shoal://") + host);
  }
  impl.keys = std::make_unique<KeyRegistry>(impl.store);
  impl.audit = std::make_unique<AuditLog>(impl.store);
  const int64_t now = MonotonicUnixMillis();
  RETURN_IF_ERROR(impl.coordinator->Load(now));
  RETURN_IF_ERROR(impl.keys->Load());
  std::string broken;
  RETURN_IF_ERROR(impl.audit->Load(&broken));
  impl.audit->SetSigner(signing);
  Caller self;
  self.key = "coordinator";
  self.insecure = !impl.curve;
  if (!broken.empty()) {
    SHOAL_LOG_ERROR("the audit log does not verify: {}", broken);
    impl.Audit(self, "start", "", "warning", "the audit log did not verify at start: " + broken, now);
  }
  if (impl.curve) {
    // The auth dir's admin key is admitted at every start unless that public key is
    // registered already (a revoked one stays revoked). Whoever holds the auth dir holds
    // the coordinator's secret key too, so this grants nothing new; it lets a state
    // dir outlive a lost auth dir ("admin" taken by the old key: "admin-<fingerprint>").
    const std::string admin_pub = options.auth_dir + "/admin.pub";
    std::optional<CurveKeyPair> admin;
    if (PathExists(admin_pub)) {
      ASSIGN_OR_RETURN(admin, ReadCurveKeyFile(admin_pub));
    }
    if (admin && impl.keys->FindByPublic(admin->public_key) == nullptr) {
      AuthKey k;
      k.set_name(impl.keys->FindByName("admin") ? "admin-" + CurveKeyFingerprint(admin->public_key).substr(0, 8)
                                                : "admin");
      k.set_public_key(admin->public_key);
      k.set_role(ROLE_ADMIN);
      k.set_added_by("coordinator (from " + admin_pub + ")");
      Status s = impl.keys->Add(k, now);
      if (!s.ok()) return s;
      impl.Audit(self, "auth_add", "", "ok", k.name() + " as admin, from " + admin_pub, now);
    }
  } else if (!options.insecure) {
    SHOAL_LOG_WARN("no keys in '{}': the control plane is open to anyone on this machine (shoalctl auth init makes keys)",
                   options.auth_dir);
  }
  try {
    auto& s = impl.socket;
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::maxmsgsize, options.max_message_bytes);
    s.set(zmq::sockopt::router_mandatory, 0);
    if (impl.curve) {
      impl.zap.bind(kZapEndpoint);
      s.set(zmq::sockopt::curve_server, true);
      s.set(zmq::sockopt::curve_secretkey, server_key.secret_key);
      s.set(zmq::sockopt::zap_domain, kZapDomain);
      // ZAP refusals are audited by HandleZap; the monitor adds the handshakes ZAP never sees.
      (void)MonitorHandshakes(s, impl.monitor, "inproc://shoal-server-monitor");
    }
    s.bind(options.bind);
    server->endpoint_ = s.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot bind coordinator to " + options.bind + ": " + e.what());
  }
  if (!options.http.empty()) {
    Impl* owner = &impl;
    ASSIGN_OR_RETURN(impl.http, HttpServer::Listen(options.http, [owner](const HttpRequest& req) {
                       return ServeObservability(req, *owner->coordinator, MonotonicUnixMillis());
                     }));
    if (!impl.http->loopback())
      SHOAL_LOG_WARN("the HTTP endpoint on {} is reachable from other machines and unauthenticated: anyone who "
                     "reaches it reads job names, hosts, labels and metrics (keep it on loopback or behind a proxy)",
                     impl.http->address());
  }
  return server;
}

std::string CoordinatorServer::http_address() const { return impl_->http ? impl_->http->address() : ""; }

bool CoordinatorServer::secure() const { return impl_->curve; }

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
  std::vector<zmq::pollitem_t> items;
  std::vector<HttpPollFd> http_fds;
  while (!stop_) {
    items.assign({{impl.socket.handle(), 0, ZMQ_POLLIN, 0},
                  {impl.zap.handle(), 0, ZMQ_POLLIN, 0},
                  {impl.monitor.handle(), 0, ZMQ_POLLIN, 0}});
    const size_t n = impl.curve ? 3 : 1;
    items.resize(n);
    http_fds.clear();
    if (impl.http) http_fds = impl.http->PollFds();
    for (const HttpPollFd& f : http_fds)
      items.push_back({nullptr, f.fd, static_cast<short>((f.read ? ZMQ_POLLIN : 0) | (f.write ? ZMQ_POLLOUT : 0)), 0});
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(kTickMs));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      SHOAL_LOG_ERROR("poll failed: {}", e.what());
      break;
    }
    int64_t now = MonotonicUnixMillis();
    // Admissions first: a handshake waits for them.
    if (n > 1 && (items[1].revents & ZMQ_POLLIN)) impl.HandleZap(now);
    if (n > 2 && (items[2].revents & ZMQ_POLLIN)) impl.HandleMonitor(now);
    if (items[0].revents & ZMQ_POLLIN) {
      // Drain what is ready before ticking (bounded, so ZAP and ticks are not starved).
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
        impl.HandleRequest(identity.to_string(), payload, now);
      }
    }
    for (size_t i = 0; i < http_fds.size(); ++i) {
      const short ev = items[n + i].revents;
      if (ev) impl.http->OnReady(http_fds[i].fd, ev & ZMQ_POLLIN, ev & ZMQ_POLLOUT, ev & ZMQ_POLLERR, now);
    }
    if (impl.http) impl.http->Expire(now);
    now = MonotonicUnixMillis();
    if (now >= next_tick) {
      impl.coordinator->Tick(now);
      impl.audit->MaybeSignHead(now);
      next_tick = now + kTickMs;
    }
  }
  impl.audit->MaybeSignHead(MonotonicUnixMillis(), true);
}

}  // namespace shoal
