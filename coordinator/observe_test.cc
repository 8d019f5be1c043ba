// Observability in the coordinator: the straggler rule and its windows, the straggler
// flags and events driven through the Coordinator with a fake clock, the bounded job
// history, the HTTP server over real sockets, and the Prometheus text (checked with
// promtool, the Prometheus project's own linter, where it is installed).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/clock.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/http_server.h"
#include "coordinator/metrics_text.h"
#include "coordinator/observe_http.h"
#include "coordinator/straggler.h"

namespace shoal {
namespace {

// ---- the rule ----------------------------------------------------------------

std::vector<bool> Flags(const std::vector<StragglerVerdict>& v) {
  std::vector<bool> out;
  for (const auto& x : v) out.push_back(x.straggler);
  return out;
}

TEST(StragglerRule, FlagsTheOneOutlier) {
  auto v = JudgeStragglers({1.0, 1.02, 0.99, 2.3}, {});
  EXPECT_EQ(Flags(v), (std::vector<bool>{false, false, false, true}));
  EXPECT_NEAR(v[3].ratio, 2.3 / 1.0, 1e-9);
  EXPECT_GE(v[3].z, kStragglerFlagZ);
}

TEST(StragglerRule, NoOutlierInATightGroup) {
  auto v = JudgeStragglers({1.0, 1.05, 0.98, 1.02, 1.01}, {});
  EXPECT_EQ(Flags(v), std::vector<bool>(5, false));
}

TEST(StragglerRule, ANoisyGroupDoesNotFlagItsSlowest) {
  // The slowest is 2.1x its peers' median, but its peers spread so widely (MAD 0.25 s)
  // that 2.1x is within their noise: z = 0.6745 * 1.0 / 0.25 = 2.7 < 3.5.
  auto v = JudgeStragglers({1.0, 0.5, 1.5, 0.8, 1.9}, {});
  EXPECT_EQ(Flags(v), std::vector<bool>(5, false));
  EXPECT_GT(v[4].ratio, kStragglerFlagRatio);
  EXPECT_LT(v[4].z, kStragglerFlagZ);
}

TEST(StragglerRule, ASmallButSignificantDifferenceIsNotFlagged) {
  // Identical peers make any difference significant (z large): the ratio test keeps a
  // rank 20% slower from being called a straggler.
  auto v = JudgeStragglers({1.0, 1.0, 1.0, 1.2}, {});
  EXPECT_EQ(Flags(v), std::vector<bool>(4, false));
}

TEST(StragglerRule, TwoWorkersUseTheRatioAlone) {
  EXPECT_EQ(Flags(JudgeStragglers({1.0, 1.6}, {})), (std::vector<bool>{false, true}));
  EXPECT_EQ(Flags(JudgeStragglers({1.0, 1.3}, {})), (std::vector<bool>{false, false}));
  EXPECT_EQ(Flags(JudgeStragglers({1.0}, {})), std::vector<bool>{false});
  EXPECT_TRUE(JudgeStragglers({}, {}).empty());
}

TEST(StragglerRule, HysteresisKeepsAFlagUntilClearlyBackInLine) {
  // Flagged at 2x; at 1.3x it stays flagged (above the clear ratio), at 1.2x it clears.
  EXPECT_EQ(Flags(JudgeStragglers({1.0, 1.0, 1.01, 1.3}, {false, false, false, true})),
            (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ(Flags(JudgeStragglers({1.0, 1.0, 1.01, 1.2}, {false, false, false, true})),
            (std::vector<bool>(4, false)));
  // Not flagged before: 1.3x does not flag.
  EXPECT_EQ(Flags(JudgeStragglers({1.0, 1.0, 1.01, 1.3}, {})), std::vector<bool>(4, false));
}

TEST(StragglerRule, LargeGroupsFlagOnlyTheOutliers) {
  std::vector<double> medians;
  for (int i = 0; i < 500; ++i) medians.push_back(1.0 + 0.01 * ((i * 37) % 11 - 5));
  medians[123] = 3.0;
  medians[321] = 2.0;
  auto v = JudgeStragglers(medians, {});
  for (size_t i = 0; i < medians.size(); ++i) EXPECT_EQ(v[i].straggler, i == 123 || i == 321) << i;
}

TEST(StragglerWindows, NeedsSamplesAndForgetsOldOnes) {
  StragglerWindows w;
  w.Observe("a", 0, 1.0);
  w.Observe("a", 500, 1.0);
  EXPECT_FALSE(w.WindowMedian("a", 500));  // two samples: not judged yet
  w.Observe("a", 1000, 5.0);
  w.Observe("a", 1500, 0);  // no step yet: ignored
  ASSERT_TRUE(w.WindowMedian("a", 1500));
  EXPECT_DOUBLE_EQ(*w.WindowMedian("a", 1500), 1.0);
  // 10 s later the old samples are out of the window.
  for (int64_t t = 11'000; t <= 12'000; t += 500) w.Observe("a", t, 3.0);
  EXPECT_DOUBLE_EQ(*w.WindowMedian("a", 12'000), 3.0);
  w.Forget("a");
  EXPECT_FALSE(w.WindowMedian("a", 12'000));
  EXPECT_EQ(w.tracked(), 0u);
}

// ---- through the coordinator (fake clock) ------------------------------------

class StragglerCoreTest : public coordinator_test::CoordinatorCoreTest {
 protected:
  std::vector<std::string> StartJob(int workers) {
    JobSpec spec = coordinator_test::TwoWorkerSpec();
    spec.mutable_workers()->set_initial(workers);
    job_ = Submit(spec);
    std::vector<std::string> ids;
    for (int i = 0; i < workers; ++i) ids.push_back(Register(job_, -1, true, 100 + i).register_().member_id());
    for (const auto& id : ids) coord_->Handle(Await(id), now_, inbox_.Take());
    EXPECT_EQ(coord_->FindJob(job_)->state(), JOB_RUNNING);
    return ids;
  }
  void Beat(const std::string& member, int64_t step, double compute_s, double accuracy = -1, int evaluations = 0) {
    Request r;
    r.mutable_heartbeat()->set_member_id(member);
    r.mutable_heartbeat()->set_generation(coord_->FindJob(job_)->generation());
    WorkerMetrics* m = r.mutable_heartbeat()->mutable_metrics();
    m->set_step(step);
    m->set_compute_seconds(compute_s);
    m->set_loader_wait_seconds(0.0001);
    m->set_loss(2.0 / (1 + step));
    m->set_samples_per_second(1000);
    m->set_test_accuracy(accuracy);
    m->set_evaluations(evaluations);
    EXPECT_EQ(Call(r).code(), 0);
  }
  // Heartbeats every 0.5 s for `seconds`, member i working compute[i] per step.
  void Train(const std::vector<std::string>& ids, const std::vector<double>& compute, double seconds) {
    for (double t = 0; t < seconds; t += 0.5) {
      now_ += 500;
      step_ += 10;
      for (size_t i = 0; i < ids.size(); ++i) Beat(ids[i], step_, compute[i]);
      coord_->Tick(now_);
    }
  }
  int CountEvents(const std::string& kind) {
    int n = 0;
    for (const Event& e : coord_->EventsOf(job_)) n += e.kind() == kind;
    return n;
  }
  std::string job_;
  coordinator_test::Inbox inbox_;
  int64_t step_ = 0;
};

TEST_F(StragglerCoreTest, FlagsTheSlowMemberWithAnEventAndClearsIt) {
  auto ids = StartJob(3);
  Train(ids, {0.010, 0.011, 0.010}, 6);
  for (const auto& id : ids) EXPECT_FALSE(coord_->FindMember(id)->straggler());
  Train(ids, {0.010, 0.011, 0.030}, 8);  // member 2 slows down 3x
  EXPECT_FALSE(coord_->FindMember(ids[0])->straggler());
  EXPECT_FALSE(coord_->FindMember(ids[1])->straggler());
  EXPECT_TRUE(coord_->FindMember(ids[2])->straggler());
  EXPECT_NEAR(coord_->FindMember(ids[2])->straggler_ratio(), 0.030 / 0.0105, 0.2);
  ASSERT_EQ(CountEvents("straggler"), 1);
  for (const Event& e : coord_->EventsOf(job_))
    if (e.kind() == "straggler") {
      EXPECT_NE(e.detail().find(ids[2]), std::string::npos) << e.detail();
      EXPECT_GT(e.figures().at("ratio"), 2.5);
      EXPECT_EQ(e.figures().at("rank"), 2);
    }
  Train(ids, {0.010, 0.011, 0.010}, 12);  // back in line
  EXPECT_FALSE(coord_->FindMember(ids[2])->straggler());
  EXPECT_EQ(CountEvents("straggler_cleared"), 1);
  const JobHistory* h = coord_->HistoryOf(job_);
  ASSERT_NE(h, nullptr);
  ASSERT_EQ(h->stragglers().size(), 2u);
  EXPECT_TRUE(h->stragglers()[0].flagged);
  EXPECT_FALSE(h->stragglers()[1].flagged);
}

TEST_F(StragglerCoreTest, AMemberThatLeavesIsNeitherFlaggedNorAPeer) {
  auto ids = StartJob(4);
  Train(ids, {0.010, 0.010, 0.011, 0.040}, 8);
  ASSERT_TRUE(coord_->FindMember(ids[3])->straggler());
  // The straggler's process exits: it is dead, its flag goes, and the three left are
  // judged among themselves (none is slow).
  Request exit;
  exit.mutable_report_exit()->set_job_id(job_);
  exit.mutable_report_exit()->set_host("h");
  exit.mutable_report_exit()->set_pid(103);
  ASSERT_EQ(Call(exit).code(), 0);
  now_ += 1000;
  coord_->Tick(now_);
  EXPECT_EQ(coord_->FindMember(ids[3])->state(), MEMBER_DEAD);
  EXPECT_FALSE(coord_->FindMember(ids[3])->straggler());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(coord_->FindMember(ids[i])->straggler());
}

TEST_F(StragglerCoreTest, HistoryRecordsProgressGenerationsAndWork) {
  auto ids = StartJob(2);
  Train(ids, {0.010, 0.010}, 5);
  const JobHistory* h = coord_->HistoryOf(job_);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->progress().size(), 10u);  // one point per rank-0 step change
  EXPECT_EQ(h->progress().back().step, step_);
  ASSERT_EQ(h->generations().size(), 1u);
  EXPECT_EQ(h->generations()[0].generation, 1);
  EXPECT_EQ(h->work().size(), 2u);

  const StatusResponse status = coord_->Snapshot(job_, now_);
  nlohmann::json j = JobDashboardJson(status, h, coord_->EventsOf(job_));
  EXPECT_EQ(j["job"]["id"], job_);
  EXPECT_EQ(j["progress"]["step"].size(), 10u);
  EXPECT_EQ(j["work"].size(), 2u);
  EXPECT_EQ(j["members"].size(), 2u);
  EXPECT_EQ(j["generations"][0]["cause"], "start");
}

// Two epochs that score the same are two evaluations: the count, not the value, says so
// (the dashboard draws a point per evaluation from it).
TEST_F(StragglerCoreTest, HistoryKeepsTwoEvaluationsThatScoreTheSame) {
  auto ids = StartJob(1);
  const int64_t steps[] = {10, 20, 30, 40};
  const int evaluations[] = {0, 1, 1, 2};
  for (int i = 0; i < 4; ++i) {
    now_ += 500;
    Beat(ids[0], steps[i], 0.01, evaluations[i] ? 0.8125 : -1, evaluations[i]);
  }
  const JobHistory* h = coord_->HistoryOf(job_);
  ASSERT_NE(h, nullptr);
  nlohmann::json j = JobDashboardJson(coord_->Snapshot(job_, now_), h, coord_->EventsOf(job_));
  EXPECT_EQ(j["progress"]["evaluations"], nlohmann::json::parse("[0, 1, 1, 2]"));
  EXPECT_EQ(j["progress"]["test_accuracy"], nlohmann::json::parse("[-1, 0.8125, 0.8125, 0.8125]"));
}

TEST(DecimatedSeries, StaysBoundedAndSpansTheRun) {
  DecimatedSeries<int> s(64);
  for (int i = 0; i < 100000; ++i) s.Add(i);
  auto p = s.Points();
  EXPECT_LE(p.size(), 65u);
  EXPECT_GE(p.size(), 32u);
  EXPECT_EQ(p.front(), 0);
  EXPECT_EQ(p.back(), 99999);
  for (size_t i = 1; i < p.size(); ++i) EXPECT_LT(p[i - 1], p[i]);
}

// ---- the HTTP server over real sockets ----------------------------------------

// A blocking client: sends `request`, returns everything the server sent until it closed.
std::string Fetch(const std::string& address, const std::string& request) {
  const size_t colon = address.rfind(':');
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &a.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return got;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpLimits limits;
    limits.max_request_bytes = 1024;
    limits.connection_timeout_ms = 300;
    limits.max_connections = 4;
    auto s = HttpServer::Listen("127.0.0.1:0", [](const HttpRequest& r) {
      if (r.path == "/hello") return TextResponse(200, "hello " + r.query);
      if (r.path == "/big") {
        HttpResponse big;
        big.body = std::string(4 << 20, 'x');  // more than one socket buffer: written over many turns
        return big;
      }
      return TextResponse(404, "no");
    }, limits);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    EXPECT_TRUE(server_->loopback());
    loop_ = std::thread([this] {
      while (!stop_) server_->ServeOnce(20, MonotonicUnixMillis());
    });
  }
  void TearDown() override {
    stop_ = true;
    if (loop_.joinable()) loop_.join();
  }
  std::string Get(const std::string& request) { return Fetch(server_->address(), request); }
  std::unique_ptr<HttpServer> server_;
  std::atomic<bool> stop_{false};
  std::thread loop_;
};

TEST_F(HttpServerTest, AnswersGetAndClosesTheConnection) {
  const std::string r = Get("GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(r.find("Content-Length: 10\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.size() - 10), "hello x=1\n");
  const std::string head = Get("HEAD /hello HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK", 0), 0u);
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n");  // no body
}

TEST_F(HttpServerTest, RefusesOtherMethodsUnknownPathsAndBadRequests) {
  const std::string post = Get("POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 ", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(Get("GET /nothing HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(Get("garbage\r\n\r\n").rfind("HTTP/1.1 400 ", 0), 0u);
  EXPECT_EQ(Get("GET /hello HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n").rfind("HTTP/1.1 431 ", 0), 0u);
}

TEST_F(HttpServerTest, WritesLargeAnswersWithoutBlocking) {
  const std::string r = Get("GET /big HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK", 0), 0u);
  EXPECT_EQ(r.size() - r.find("\r\n\r\n") - 4, 4u << 20);
}

TEST_F(HttpServerTest, ClosesASilentConnectionAtItsDeadline) {
  // Sends half a request and waits: the server gives up after 300 ms.
  const double start = MonotonicSeconds();
  const std::string r = Get("GET /hello HTTP/1.1\r\n");
  EXPECT_EQ(r, "");
  EXPECT_LT(MonotonicSeconds() - start, 9.0);  // closed by the server, not by the client's 10 s timeout
}

TEST_F(HttpServerTest, AnswersBeyondTheConnectionLimitWith503) {
  // The fixture allows 4 connections: 4 silent clients hold them (for up to the 300 ms
  // deadline), and the fifth is turned away at once instead of queued.
  std::vector<int> idle;
  const size_t colon = server_->address().rfind(':');
  for (int i = 0; i < 4; ++i) {
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(server_->address().substr(colon + 1))));
    ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    idle.push_back(::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_EQ(::connect(idle.back(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(60));  // the loop (20 ms turns) accepts them
  EXPECT_EQ(Get("GET /hello HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 503 ", 0), 0u);
  for (int fd : idle) ::close(fd);
}

TEST(HttpServerListen, RejectsMalformedAddressesAndTakenPorts) {
  auto handler = [](const HttpRequest&) { return TextResponse(200, ""); };
  EXPECT_EQ(HttpServer::Listen("nonsense", handler).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpServer::Listen("127.0.0.1:99999", handler).status().code(), StatusCode::kInvalidArgument);
  auto first = HttpServer::Listen("127.0.0.1:0", handler);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(HttpServer::Listen((*first)->address(), handler).status().code(), StatusCode::kUnavailable);
}

// ---- the Prometheus text -------------------------------------------------------

StatusResponse SampleStatus() {
  StatusResponse st;
  st.set_now_ms(1'000'000);
  Job* job = st.add_jobs();
  job->set_id("mnist-1");
  job->set_state(JOB_RUNNING);
  job->set_generation(2);
  job->set_world_size(2);
  job->set_total_steps(1000);
  job->set_committed_step(40);
  job->set_restarts(0);
  job->set_updated_ms(999'000);
  (*job->mutable_spec()->mutable_labels())["team"] = "vision \"core\"\\ops\nnight";
  (*job->mutable_spec()->mutable_labels())["project"] = "fm";
  for (int r = 0; r < 2; ++r) {
    Member* m = st.add_members();
    m->set_id("mnist-1/m" + std::to_string(r));
    m->set_job_id("mnist-1");
    m->set_host("node-" + std::to_string(r));
    m->set_state(MEMBER_ACTIVE);
    m->set_generation(2);
    m->set_rank(r);
    m->set_last_heartbeat_ms(999'500);
    m->set_straggler(r == 1);
    m->set_straggler_ratio(r == 1 ? 2.5 : 0.8);
    WorkerMetrics* w = m->mutable_metrics();
    w->set_step(50);
    w->set_loss(0.5);
    w->set_samples_per_second(1234.5);
    w->set_compute_seconds(0.002);
    w->set_bytes_sent(123456789012);
    w->set_cpu_seconds(12.5);
    w->set_test_accuracy(r == 0 ? 0.81 : -1);
    if (r == 1) {
      w->set_has_gpu(true);
      w->set_gpu_utilization_pct(87);
      w->set_gpu_energy_joules(1500);
    }
  }
  Job* old = st.add_jobs();  // ended long ago: counted, not listed
  old->set_id("old");
  old->set_state(JOB_COMPLETED);
  old->set_updated_ms(1);
  return st;
}

TEST(PrometheusText, HasFamiliesLabelsAndEscaping) {
  const std::string text = PrometheusText(SampleStatus());
  EXPECT_NE(text.find("# TYPE shoal_worker_sent_bytes_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE shoal_job_generation gauge\n"), std::string::npos);
  EXPECT_NE(text.find("shoal_job_generation{job=\"mnist-1\",team=\"vision \\\"core\\\"\\\\ops\\nnight\",project=\"fm\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("shoal_worker_straggler{job=\"mnist-1\",member=\"mnist-1/m1\",rank=\"1\",host=\"node-1\""),
            std::string::npos);
  EXPECT_NE(text.find("shoal_worker_sent_bytes_total{job=\"mnist-1\",member=\"mnist-1/m0\""), std::string::npos);
  EXPECT_NE(text.find("} 123456789012\n"), std::string::npos);
  EXPECT_NE(text.find("shoal_job_committed_step{job=\"mnist-1\""), std::string::npos);
  EXPECT_NE(text.find("shoal_job_test_accuracy{"), std::string::npos);
  EXPECT_NE(text.find("shoal_jobs{state=\"completed\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("shoal_worker_gpu_utilization_ratio{job=\"mnist-1\",member=\"mnist-1/m1\""), std::string::npos);
  EXPECT_EQ(text.find("job=\"old\""), std::string::npos);  // ended over 10 minutes ago
  EXPECT_EQ(text.find("shoal_worker_gpu_utilization_ratio{job=\"mnist-1\",member=\"mnist-1/m0\""), std::string::npos);
  EXPECT_NE(text.find("shoal_job_stragglers{job=\"mnist-1\""), std::string::npos);
  // Each family's HELP/TYPE appears once, before its samples.
  EXPECT_EQ(text.find("# TYPE shoal_worker_step gauge"), text.rfind("# TYPE shoal_worker_step gauge"));
}

TEST(PrometheusText, PassesPromtool) {
  const std::string promtool = "/usr/bin/promtool";
  if (!std::filesystem::exists(promtool)) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  const std::string dir = ::testing::TempDir() + "/promtool-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/metrics.txt") << PrometheusText(SampleStatus()); }
  const std::string cmd = promtool + " check metrics < " + dir + "/metrics.txt > " + dir + "/out.txt 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(dir + "/out.txt");
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "") << "promtool's lint findings:\n" << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shoal
