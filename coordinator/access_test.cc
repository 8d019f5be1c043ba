// The control plane's security over real sockets: CurveZMQ admission, roles, revocation
// without a restart, limits, encryption on the wire, and the audit log's refusals.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "coordinator/access.h"
#include "coordinator/audit.h"
#include "coordinator/client.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/curve_keys.h"
#include "coordinator/server.h"

namespace shoal {
namespace {

using coordinator_test::TwoWorkerSpec;
using std::chrono::milliseconds;
using std::chrono::seconds;

class SecureCoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / ("shoal-access-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(InitAuthDir(dir_ + "/auth").ok());
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(ServerOptions opts = {}) {
    opts.bind = "tcp://127.0.0.1:*";
    opts.state_dir = dir_ + "/state";
    if (opts.auth_dir.empty() && !opts.insecure) opts.auth_dir = dir_ + "/auth";
    auto s = CoordinatorServer::Create(opts);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    server_->Start();
  }

  ClientKeys Admin() { return *LoadClientKeys(dir_ + "/auth/admin.key", dir_ + "/auth/coordinator.pub"); }
  ClientKeys Stranger() {
    ClientKeys k = Admin();
    k.own = NewCurveKeyPair();
    return k;
  }
  // A new key pair admitted by the admin with `role` (and `jobs` for a worker).
  ClientKeys Admitted(const std::string& name, Role role, std::vector<std::string> jobs = {}) {
    ClientKeys k = Stranger();
    Request r;
    AuthKey* a = r.mutable_auth_add()->mutable_key();
    a->set_name(name);
    a->set_public_key(k.own.public_key);
    a->set_role(role);
    for (auto& j : jobs) a->add_jobs(j);
    EXPECT_TRUE(Call(Admin(), r).ok());
    return k;
  }

  StatusOr<Response> Call(const ClientKeys& keys, Request r, milliseconds timeout = seconds(5)) {
    ControlClient c(server_->endpoint(), keys);
    return c.Call(std::move(r), timeout);
  }
  std::string Submit(const ClientKeys& keys, const std::string& name = "job") {
    Request r;
    *r.mutable_submit()->mutable_spec() = TwoWorkerSpec();
    r.mutable_submit()->mutable_spec()->set_name(name);
    auto resp = Call(keys, r);
    EXPECT_TRUE(resp.ok()) << resp.status().ToString();
    return resp.ok() ? resp->submit().job_id() : "";
  }
  std::vector<AuditEntry> AuditLogEntries() {
    Request r;
    r.mutable_audit();
    auto resp = Call(Admin(), r);
    EXPECT_TRUE(resp.ok()) << resp.status().ToString();
    return resp.ok() ? std::vector<AuditEntry>(resp->audit().entries().begin(), resp->audit().entries().end())
                     : std::vector<AuditEntry>{};
  }
  // The audit entry for `action` by `key` whose outcome starts with `outcome`, if any.
  bool Audited(const std::string& key, const std::string& action, const std::string& outcome) {
    for (const AuditEntry& e : AuditLogEntries())
      if (e.key() == key && e.action() == action && e.outcome().rfind(outcome, 0) == 0) return true;
    return false;
  }

  static Request StatusReq() {
    Request r;
    r.mutable_status();
    return r;
  }

  std::string dir_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(SecureCoordinatorTest, AdminKeyIsAdmittedAndEverythingItDoesIsAudited) {
  StartServer();
  ASSERT_TRUE(server_->secure());
  const std::string job = Submit(Admin());
  ASSERT_FALSE(job.empty());
  EXPECT_TRUE(Audited("admin", "submit", "ok"));
  for (const AuditEntry& e : AuditLogEntries())
    if (e.action() == "submit") {
      EXPECT_EQ(e.job_id(), job);
    }
}

TEST_F(SecureCoordinatorTest, ClientWithNoKeyIsRefusedAndTheRefusalAudited) {
  StartServer();
  auto resp = Call(ClientKeys{}, StatusReq(), milliseconds(1500));
  ASSERT_EQ(resp.status().code(), StatusCode::kPermissionDenied) << resp.status().ToString();
  EXPECT_NE(resp.status().message().find("CurveZMQ"), std::string::npos) << resp.status().message();
  EXPECT_TRUE(Audited("-", "connect", "refused: handshake failed: no CURVE key presented"));
}

TEST_F(SecureCoordinatorTest, UnknownKeyIsRefusedAndAudited) {
  StartServer();
  ClientKeys stranger = Stranger();
  auto resp = Call(stranger, StatusReq(), milliseconds(1500));
  ASSERT_EQ(resp.status().code(), StatusCode::kPermissionDenied) << resp.status().ToString();
  EXPECT_TRUE(Audited("unknown:" + CurveKeyFingerprint(stranger.own.public_key), "connect", "refused: unknown key"));
}

TEST_F(SecureCoordinatorTest, RevokedKeyIsRefusedOnItsNextRequestWithoutARestart) {
  StartServer();
  ClientKeys viewer = Admitted("ops-viewer", ROLE_VIEWER);
  ControlClient open_connection(server_->endpoint(), viewer);
  ASSERT_TRUE(open_connection.Call(StatusReq(), seconds(5)).ok());
  Request revoke;
  revoke.mutable_auth_revoke()->set_name("ops-viewer");
  ASSERT_TRUE(Call(Admin(), revoke).ok());
  // The connection admitted before the revocation: refused at its next request.
  auto again = open_connection.Call(StatusReq(), seconds(5));
  EXPECT_EQ(again.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(again.status().message().find("revoked"), std::string::npos);
  // A new connection with it: refused at the handshake.
  EXPECT_EQ(Call(viewer, StatusReq(), milliseconds(1500)).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(Audited("ops-viewer", "status", "refused: key 'ops-viewer' was revoked"));
  EXPECT_TRUE(Audited("ops-viewer", "connect", "refused: revoked key"));
  EXPECT_TRUE(Audited("admin", "auth_revoke", "ok"));
}

TEST_F(SecureCoordinatorTest, ViewerReadsButCannotSubmitOrCancel) {
  StartServer();
  const std::string job = Submit(Admin());
  ClientKeys viewer = Admitted("viewer", ROLE_VIEWER);
  auto st = Call(viewer, StatusReq());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->status().jobs_size(), 1);
  Request submit;
  *submit.mutable_submit()->mutable_spec() = TwoWorkerSpec();
  EXPECT_EQ(Call(viewer, submit).status().code(), StatusCode::kPermissionDenied);
  Request cancel;
  cancel.mutable_cancel()->set_job_id(job);
  EXPECT_EQ(Call(viewer, cancel).status().code(), StatusCode::kPermissionDenied);
  Request list;
  list.mutable_auth_list();
  EXPECT_EQ(Call(viewer, list).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(Audited("viewer", "submit", "refused: key 'viewer' (role viewer) may not submit"));
  EXPECT_TRUE(Audited("viewer", "cancel", "refused:"));
}

TEST_F(SecureCoordinatorTest, WorkerOfJobACannotTouchJobBNorCancelAnything) {
  StartServer();
  const std::string a = Submit(Admin(), "alpha"), b = Submit(Admin(), "beta");
  ClientKeys worker = Admitted("worker-a", ROLE_WORKER, {a});
  Request reg_b;
  reg_b.mutable_register_()->set_job_id(b);
  reg_b.mutable_register_()->set_host("h");
  reg_b.mutable_register_()->set_pid(1);
  EXPECT_EQ(Call(worker, reg_b).status().code(), StatusCode::kPermissionDenied);
  Request set_b;
  set_b.mutable_kv_set()->set_key(b + "/gen-1/rank0");
  set_b.mutable_kv_set()->set_value("tcp://evil:1");
  EXPECT_EQ(Call(worker, set_b).status().code(), StatusCode::kPermissionDenied);
  Request get_b;
  get_b.mutable_kv_get()->add_keys(b + "/gen-1/rank0");
  get_b.mutable_kv_get()->set_timeout_ms(100);
  EXPECT_EQ(Call(worker, get_b).status().code(), StatusCode::kPermissionDenied);
  Request unscoped;
  unscoped.mutable_kv_set()->set_key("no-job-prefix");
  EXPECT_EQ(Call(worker, unscoped).status().code(), StatusCode::kPermissionDenied);
  for (const std::string& j : {a, b}) {
    Request cancel;
    cancel.mutable_cancel()->set_job_id(j);
    EXPECT_EQ(Call(worker, cancel).status().code(), StatusCode::kPermissionDenied) << j;
  }
  // Its own job: allowed, and status shows only it.
  Request reg_a = reg_b;
  reg_a.mutable_register_()->set_job_id(a);
  auto reg = Call(worker, reg_a);
  ASSERT_TRUE(reg.ok()) << reg.status().ToString();
  // A member id of the other job, presented by this worker: refused.
  Request hb;
  hb.mutable_heartbeat()->set_member_id(b + "/m0");
  EXPECT_EQ(Call(worker, hb).status().code(), StatusCode::kPermissionDenied);
  Request set_a = set_b;
  set_a.mutable_kv_set()->set_key(a + "/gen-1/rank0");
  EXPECT_TRUE(Call(worker, set_a).ok());
  auto st = Call(worker, StatusReq());
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->status().jobs_size(), 1);
  EXPECT_EQ(st->status().jobs(0).id(), a);
  EXPECT_TRUE(Audited("worker-a", "kv_set", "refused: key 'worker-a' (role worker) may not kv_set key '" + b));
  EXPECT_TRUE(Audited("worker-a", "kv_set", "ok"));
}

TEST_F(SecureCoordinatorTest, SubmitterControlsAndSeesOnlyItsOwnJobs) {
  StartServer();
  ClientKeys alice = Admitted("alice", ROLE_SUBMITTER), bob = Admitted("bob", ROLE_SUBMITTER);
  const std::string job = Submit(alice, "alices");
  ASSERT_FALSE(job.empty());
  Request cancel;
  cancel.mutable_cancel()->set_job_id(job);
  EXPECT_EQ(Call(bob, cancel).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Call(bob, StatusReq())->status().jobs_size(), 0);
  EXPECT_EQ(Call(alice, StatusReq())->status().jobs_size(), 1);
  EXPECT_TRUE(Call(alice, cancel).ok());
  // The owner is the authenticated key, whatever the request claims.
  Request forged;
  *forged.mutable_submit()->mutable_spec() = TwoWorkerSpec();
  forged.mutable_submit()->set_owner("alice");
  auto bobs = Call(bob, forged);
  ASSERT_TRUE(bobs.ok());
  auto st = Call(Admin(), StatusReq());
  for (const Job& j : st->status().jobs())
    if (j.id() == bobs->submit().job_id()) {
      EXPECT_EQ(j.owner(), "bob");
    }
}

TEST_F(SecureCoordinatorTest, NonLoopbackBindWithoutKeysIsRefusedUnlessInsecure) {
  ServerOptions o;
  o.bind = "tcp://0.0.0.0:*";
  o.state_dir = dir_ + "/state-open";
  o.in_memory = true;
  auto refused = CoordinatorServer::Create(o);
  ASSERT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--insecure"), std::string::npos);
  EXPECT_NE(refused.status().message().find("shoalctl auth init"), std::string::npos);
  o.insecure = true;
  EXPECT_TRUE(CoordinatorServer::Create(o).ok());
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://127.0.0.1:7400"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://localhost:*"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://10.0.0.1:7400"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://*:7400"));
}

TEST_F(SecureCoordinatorTest, RateLimitPerKeyRefusesTheExcessAndAuditsIt) {
  ServerOptions o;
  o.requests_per_second_per_key = 5;  // bursts of 20
  StartServer(o);
  ControlClient c(server_->endpoint(), Admin());
  int refused = 0;
  for (int i = 0; i < 60; ++i)
    if (c.Call(StatusReq(), seconds(5)).status().code() == StatusCode::kResourceExhausted) ++refused;
  EXPECT_GT(refused, 20);
  EXPECT_LT(refused, 60);
  std::this_thread::sleep_for(seconds(1));  // tokens for the audit read itself
  EXPECT_TRUE(Audited("admin", "status", "refused: key 'admin' exceeds 5 requests/s"));
}

TEST_F(SecureCoordinatorTest, ParkedLongPollsPerConnectionAreBounded) {
  ServerOptions o;
  o.max_parked_per_connection = 2;
  StartServer(o);
  const std::string job = Submit(Admin());
  ControlClient c(server_->endpoint(), Admin());
  Request get;
  get.mutable_kv_get()->add_keys(job + "/gen-1/never");
  get.mutable_kv_get()->set_timeout_ms(20000);
  // Two park (the client gives up on them, the server keeps them parked).
  for (int i = 0; i < 2; ++i) EXPECT_EQ(c.Call(get, milliseconds(200)).status().code(), StatusCode::kUnavailable);
  auto third = c.Call(get, seconds(5));
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted) << third.status().ToString();
  // Another connection has its own allowance.
  ControlClient other(server_->endpoint(), Admin());
  EXPECT_EQ(other.Call(get, milliseconds(200)).status().code(), StatusCode::kUnavailable);
}

// A TCP relay that keeps every byte it forwards: what someone reading the loopback
// traffic would see.
class Tap {
 public:
  explicit Tap(const std::string& target_endpoint) {
    const size_t colon = target_endpoint.rfind(':');
    target_port_ = std::stoi(target_endpoint.substr(colon + 1));
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listen_, 4);
    thread_ = std::thread([this] { Relay(); });
  }
  ~Tap() {
    stop_ = true;
    ::shutdown(listen_, SHUT_RDWR);
    ::close(listen_);
    thread_.join();
  }
  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  std::string seen() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_;
  }

 private:
  void Relay() {
    int client = ::accept(listen_, nullptr, nullptr);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_port_);
    ::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    char buf[65536];
    while (!stop_) {
      fd_set fds;
      FD_ZERO(&fds);
      FD_SET(client, &fds);
      FD_SET(server, &fds);
      timeval tv{0, 100000};
      if (::select(std::max(client, server) + 1, &fds, nullptr, nullptr, &tv) <= 0) continue;
      for (auto [from, to] : {std::pair{client, server}, std::pair{server, client}}) {
        if (!FD_ISSET(from, &fds)) continue;
        ssize_t n = ::read(from, buf, sizeof(buf));
        if (n <= 0) {
          stop_ = true;
          break;
        }
        {
          std::lock_guard<std::mutex> l(mu_);
          seen_.append(buf, n);
        }
        (void)!::write(to, buf, n);
      }
    }
    ::close(client);
    ::close(server);
  }
  int listen_ = -1, port_ = 0, target_port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string seen_;
  std::thread thread_;
};

// Submits a job named with a canary through a tap; true if the canary crossed in clear.
bool CanaryVisible(const std::string& endpoint, const ClientKeys& keys) {
  Tap tap(endpoint);
  ControlClient c(tap.endpoint(), keys);
  Request r;
  *r.mutable_submit()->mutable_spec() = TwoWorkerSpec();
  r.mutable_submit()->mutable_spec()->set_name("canary-plaintext-jobname");
  auto resp = c.Call(r, seconds(5));
  EXPECT_TRUE(resp.ok()) << resp.status().ToString();
  const std::string bytes = tap.seen();
  EXPECT_GT(bytes.size(), 100u);
  return bytes.find("canary-plaintext") != std::string::npos;
}

TEST_F(SecureCoordinatorTest, TrafficIsEncryptedNoProtobufFieldInClear) {
  StartServer();
  EXPECT_FALSE(CanaryVisible(server_->endpoint(), Admin()));
}

TEST_F(SecureCoordinatorTest, InsecureTrafficShowsTheFieldSoTheTapSeesWhatItShould) {
  ServerOptions o;
  o.insecure = true;
  StartServer(o);
  EXPECT_FALSE(server_->secure());
  EXPECT_TRUE(CanaryVisible(server_->endpoint(), ClientKeys{}));
}

TEST_F(SecureCoordinatorTest, OversizedMessageIsDroppedAndTheCoordinatorServesOthers) {
  ServerOptions o;
  o.max_message_bytes = 1 << 20;
  StartServer(o);
  ControlClient big(server_->endpoint(), Admin());
  Request r;
  r.mutable_kv_set()->set_key("x/y");
  r.mutable_kv_set()->set_value(std::string(2 << 20, 'z'));
  EXPECT_FALSE(big.Call(r, milliseconds(1000)).ok());
  EXPECT_TRUE(Call(Admin(), StatusReq()).ok());
}

}  // namespace
}  // namespace shoal
