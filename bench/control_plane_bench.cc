// Control-plane scale: one shoal-coordinator process against N simulated workers over
// real sockets, with CurveZMQ on (each worker its own key, as a fleet of nodes would
// have) or --insecure, side by side in one run.
//
//   control_plane_bench [--workers 10000] [--seconds 30] [--regroup 1000] [--clients 4]
//                       [--modes curve,insecure] [--json]
//
// Per mode, three phases:
//   storm     every worker registers at once (one Register each, all in flight);
//   steady    each worker heartbeats every `heartbeat_interval_s` (1 s) for --seconds;
//   regroup   a job of --regroup workers forms generation 1, one member reports a
//             failure, the rest report the end of the generation, and the time until
//             every member holds its generation-2 assignment is measured.
// Requests/s and p50/p99/max latency per phase. Clients are split over --clients
// processes (each ZeroMQ socket costs two descriptors, and the descriptor limit is 20k).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "control.pb.h"
#include "coordinator/curve_keys.h"
#include "spec/jobspec_loader.h"
#include "tests/cluster_util.h"
#include "tests/process_util.h"

namespace shoal {
namespace {

using testing::BackgroundProcess;
using testing::kBin;

struct Options {
  int workers = 10000;
  double seconds = 30;
  int regroup = 1000;
  int clients = 4;
  std::string modes = "curve,insecure";
  bool json = false;
  // Client mode (internal): one client process's share.
  int part = -1;
  std::string endpoint, auth_dir, out, job, regroup_job;
  bool curve = false;
  int64_t start_at_ms = 0;
};

// One DEALER connection per simulated worker.
struct Conn {
  void* sock = nullptr;
  std::string member;
  int64_t sent_us = 0;
  uint64_t expect_id = 0;  // the request it waits for (answers to earlier ones are skipped)
  bool waiting = false;
  double next_hb = 0;
};

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool SendReq(void* sock, Request& r, uint64_t id, Conn* conn = nullptr) {
  if (conn) conn->expect_id = id;
  r.set_id(id);
  const std::string b = r.SerializeAsString();
  return zmq_send(sock, b.data(), b.size(), ZMQ_DONTWAIT) == static_cast<int>(b.size());
}

bool RecvResp(void* sock, Response* out) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  const int n = zmq_msg_recv(&m, sock, ZMQ_DONTWAIT);
  bool ok = n >= 0 && out->ParseFromArray(zmq_msg_data(&m), static_cast<int>(zmq_msg_size(&m)));
  zmq_msg_close(&m);
  return ok;
}

void* Connect(void* ctx, const Options& o, const ClientKeys& keys) {
  void* s = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
  if (keys.enabled()) {
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, keys.server_public.c_str(), 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, keys.own.public_key.c_str(), 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, keys.own.secret_key.c_str(), 40);
  }
  zmq_connect(s, o.endpoint.c_str());
  return s;
}

// Blocking request on one connection (set-up only).
StatusOr<Response> Once(void* sock, Request r, int timeout_ms = 30000) {
  static uint64_t id = 1ull << 40;
  if (!SendReq(sock, r, ++id)) return Unavailable("send failed");
  zmq_pollitem_t it{sock, 0, ZMQ_POLLIN, 0};
  const int64_t deadline = NowUs() + timeout_ms * 1000LL;
  while (NowUs() < deadline) {
    if (zmq_poll(&it, 1, 100) <= 0) continue;
    Response resp;
    if (RecvResp(sock, &resp) && resp.id() == id) {
      if (resp.code() != 0) return Status(static_cast<StatusCode>(resp.code()), resp.error());
      return resp;
    }
  }
  return Unavailable("no answer");
}

// Reads every answer waiting on the connections `items` flags; for one a connection
// waits for, records its latency (ms) in `lat` and calls take(i, response).
template <typename Take>
size_t TakeAnswers(std::vector<Conn>& conns, const std::vector<zmq_pollitem_t>& items, std::vector<float>& lat,
                   Take take) {
  size_t taken = 0;
  for (size_t i = 0; i < conns.size(); ++i) {
    if (!(items[i].revents & ZMQ_POLLIN)) continue;
    Response resp;
    while (RecvResp(conns[i].sock, &resp)) {
      if (!conns[i].waiting || resp.id() != conns[i].expect_id) continue;
      conns[i].waiting = false;
      lat.push_back((NowUs() - conns[i].sent_us) / 1000.0f);
      take(i, resp);
      ++taken;
    }
  }
  return taken;
}

// Sends one request on each connection (all in flight), collects every answer; returns
// per-request latencies in ms. `make(i)` builds connection i's request.
template <typename Make, typename Take>
std::vector<float> AllAtOnce(std::vector<Conn>& conns, Make make, Take take, double timeout_s = 120) {
  std::vector<float> lat;
  std::vector<zmq_pollitem_t> items(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) {
    Request r = make(i);
    conns[i].sent_us = NowUs();
    static uint64_t round = 0;
    conns[i].waiting = SendReq(conns[i].sock, r, (++round << 32) + i, &conns[i]);
    items[i] = {conns[i].sock, 0, ZMQ_POLLIN, 0};
  }
  size_t left = conns.size();
  const int64_t deadline = NowUs() + static_cast<int64_t>(timeout_s * 1e6);
  while (left > 0 && NowUs() < deadline) {
    if (zmq_poll(items.data(), static_cast<int>(items.size()), 100) <= 0) continue;
    left -= TakeAnswers(conns, items, lat, take);
  }
  return lat;
}

void WriteFloats(std::ofstream& f, const std::vector<float>& v) {
  const uint64_t n = v.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(reinterpret_cast<const char*>(v.data()), n * sizeof(float));
}
std::vector<float> ReadFloats(std::ifstream& f) {
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::vector<float> v(n);
  f.read(reinterpret_cast<char*>(v.data()), n * sizeof(float));
  return v;
}

// --- one client process ------------------------------------------------------------

int RunClientPart(const Options& o) {
  void* ctx = zmq_ctx_new();
  zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 30000);
  zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
  ClientKeys admin;
  if (o.curve) admin = *LoadClientKeys(o.auth_dir + "/admin.key", o.auth_dir + "/coordinator.pub");
  void* admin_sock = Connect(ctx, o, admin);
  const int mine = o.workers / o.clients + (o.part < o.workers % o.clients ? 1 : 0);
  std::vector<Conn> conns(mine);
  // Each worker its own key, admitted by the admin (set-up, not measured).
  for (int i = 0; i < mine; ++i) {
    ClientKeys k;
    if (o.curve) {
      k = admin;
      k.own = NewCurveKeyPair();
      Request add;
      AuthKey* a = add.mutable_auth_add()->mutable_key();
      a->set_name("w" + std::to_string(o.part) + "-" + std::to_string(i));
      a->set_public_key(k.own.public_key);
      a->set_role(ROLE_WORKER);
      a->add_jobs(o.job + "-" + std::to_string(o.part));
      a->add_jobs(o.regroup_job);
      auto r = Once(admin_sock, add);
      if (!r.ok()) {
        std::fprintf(stderr, "bench client %d: auth add: %s\n", o.part, r.status().ToString().c_str());
        return 1;
      }
    }
    conns[i].sock = Connect(ctx, o, k);
  }
  while (UnixMillis() < o.start_at_ms) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Storm: every worker registers at once.
  const int64_t storm_begin = NowUs();
  auto storm = AllAtOnce(
      conns,
      [&](size_t i) {
        Request r;
        r.mutable_register_()->set_job_id(o.job + "-" + std::to_string(o.part));
        r.mutable_register_()->set_host("sim-" + std::to_string(o.part));
        r.mutable_register_()->set_pid(static_cast<int>(i) + 1);
        r.mutable_register_()->set_elastic(true);
        return r;
      },
      [&](size_t i, const Response& resp) { conns[i].member = resp.register_().member_id(); });
  const double storm_s = (NowUs() - storm_begin) / 1e6;
  // Steady: heartbeats every second each, spread over the second.
  std::vector<float> steady;
  std::vector<zmq_pollitem_t> items(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) {
    items[i] = {conns[i].sock, 0, ZMQ_POLLIN, 0};
    conns[i].next_hb = MonotonicSeconds() + static_cast<double>(i) / conns.size();
    conns[i].waiting = false;
  }
  int64_t sent = 0, errors = 0;
  const double steady_begin = MonotonicSeconds(), steady_end = steady_begin + o.seconds;
  uint64_t id = 1;
  while (MonotonicSeconds() < steady_end) {
    const double now = MonotonicSeconds();
    for (Conn& c : conns) {
      if (c.waiting || now < c.next_hb || c.member.empty()) continue;
      Request r;
      r.mutable_heartbeat()->set_member_id(c.member);
      r.mutable_heartbeat()->mutable_metrics()->set_step(static_cast<int64_t>(now));
      c.sent_us = NowUs();
      c.waiting = SendReq(c.sock, r, ++id, &c);
      c.next_hb += 1.0;
      ++sent;
    }
    if (zmq_poll(items.data(), static_cast<int>(items.size()), 1) <= 0) continue;
    TakeAnswers(conns, items, steady, [&](size_t, const Response& resp) { errors += resp.code() != 0; });
  }
  const double steady_s = MonotonicSeconds() - steady_begin;
  // Regroup: the first part only, on its own job and connections.
  double regroup_s = -1;
  std::vector<float> regroup_lat;
  if (o.part == 0 && o.regroup > 0) {
    std::vector<Conn> rg(std::min<int>(o.regroup, static_cast<int>(conns.size())));
    for (size_t i = 0; i < rg.size(); ++i) rg[i].sock = conns[i].sock;
    (void)AllAtOnce(
        rg,
        [&](size_t i) {
          Request r;
          r.mutable_register_()->set_job_id(o.regroup_job);
          r.mutable_register_()->set_host("sim-rg");
          r.mutable_register_()->set_pid(static_cast<int>(i) + 100000);
          r.mutable_register_()->set_elastic(true);
          return r;
        },
        [&](size_t i, const Response& resp) { rg[i].member = resp.register_().member_id(); });
    int64_t gen = 0;
    (void)AllAtOnce(
        rg,
        [&](size_t i) {
          Request r;
          r.mutable_await_assignment()->set_member_id(rg[i].member);
          return r;
        },
        [&](size_t, const Response& resp) { gen = resp.assignment().generation(); });
    // Member 0 reports a failed collective; every other one reports the generation's end.
    size_t placed = 0;
    const int64_t begin = NowUs();
    regroup_lat = AllAtOnce(
        rg,
        [&](size_t i) {
          Request r;
          auto* a = r.mutable_await_assignment();
          a->set_member_id(rg[i].member);
          a->set_ended_generation(gen);
          a->set_committed_step(10);
          a->set_has_state(true);
          a->set_failed(i == 0);
          if (i == 0) a->set_error("simulated failure");
          return r;
        },
        [&](size_t, const Response& resp) { placed += resp.assignment().generation() == gen + 1; });
    regroup_s = (NowUs() - begin) / 1e6;
    if (placed != rg.size()) {
      std::fprintf(stderr, "bench: regroup placed %zu of %zu members in generation %lld\n", placed, rg.size(),
                   static_cast<long long>(gen + 1));
      regroup_s = -regroup_s;  // reported as a failure
    }
  }
  std::ofstream f(o.out, std::ios::binary);
  WriteFloats(f, storm);
  WriteFloats(f, steady);
  WriteFloats(f, regroup_lat);
  const double figures[] = {storm_s, steady_s, regroup_s, static_cast<double>(sent), static_cast<double>(errors)};
  f.write(reinterpret_cast<const char*>(figures), sizeof(figures));
  for (Conn& c : conns) zmq_close(c.sock);
  zmq_close(admin_sock);
  zmq_ctx_term(ctx);
  return 0;
}

// --- the orchestrator --------------------------------------------------------------

// utime + stime of a live process, from /proc.
double ProcessCpuSeconds(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) stime = std::atof(field.c_str());
  }
  return (utime + stime) / ::sysconf(_SC_CLK_TCK);
}

nlohmann::json Summary(std::vector<float> v, double seconds) {
  nlohmann::json j;
  j["requests"] = v.size();
  j["requests_per_s"] = seconds > 0 ? v.size() / seconds : 0;
  if (v.empty()) return j;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  j["p50_ms"] = at(0.5);
  j["p99_ms"] = at(0.99);
  j["max_ms"] = v.back();
  return j;
}

StatusOr<nlohmann::json> RunMode(const Options& o, bool curve, const std::string& self) {
  const std::string dir = testing::TempDir("control-plane-bench");
  if (curve) RETURN_IF_ERROR(InitAuthDir(dir + "/auth").status());
  std::vector<std::string> argv = {kBin + "/shoal-coordinator", "--bind", "tcp://127.0.0.1:*", "--state-dir",
                                   dir + "/state", "--endpoint-file", dir + "/endpoint", "--rate-limit", "0",
                                   "--auth-dir", dir + "/auth"};
  if (!curve) argv.push_back("--insecure");
  BackgroundProcess coord(argv, dir + "/coordinator.log");
  const std::string ep = testing::WaitForEndpointFile(dir + "/endpoint");
  if (ep.empty()) return Internal("the coordinator did not start: " + testing::ReadText(dir + "/coordinator.log"));
  // A fleet job per client part (a job holds at most 4,096 workers; these never form a
  // generation: workers.initial is above their share) and the regroup's job.
  void* ctx = zmq_ctx_new();
  Options co = o;
  co.endpoint = ep;
  ClientKeys admin;
  if (curve) admin = *LoadClientKeys(dir + "/auth/admin.key", dir + "/auth/coordinator.pub");
  void* admin_sock = Connect(ctx, co, admin);
  auto submit = [&](const std::string& id, int initial, int max) -> Status {
    Request r;
    JobSpec spec = DefaultJobSpec();
    spec.set_name(id);
    spec.mutable_workers()->set_initial(initial);
    spec.mutable_workers()->set_min(1);
    spec.mutable_workers()->set_max(max);
    spec.mutable_workers()->set_heartbeat_interval_s(1);
    spec.mutable_workers()->set_heartbeat_timeout_s(60);
    spec.mutable_workers()->set_regroup_window_s(30);
    *r.mutable_submit()->mutable_spec() = spec;
    r.mutable_submit()->set_job_id(id);
    return Once(admin_sock, r).status();
  };
  if ((o.workers + o.clients - 1) / o.clients >= 4096) return InvalidArgument("more --clients: at most 4,095 workers each");
  for (int p = 0; p < o.clients; ++p) RETURN_IF_ERROR(submit("fleet-" + std::to_string(p), 4096, 4096));
  if (o.regroup > 0) RETURN_IF_ERROR(submit("regroup", o.regroup, o.regroup));
  zmq_close(admin_sock);
  zmq_ctx_term(ctx);
  const int64_t start_at = UnixMillis() + 3000 + o.workers * (curve ? 3 : 1);  // after every part's set-up
  std::vector<std::unique_ptr<BackgroundProcess>> parts;
  for (int p = 0; p < o.clients; ++p) {
    parts.push_back(std::make_unique<BackgroundProcess>(
        std::vector<std::string>{self, "--part", std::to_string(p), "--clients", std::to_string(o.clients), "--workers",
                                 std::to_string(o.workers), "--seconds", std::to_string(o.seconds), "--regroup",
                                 std::to_string(o.regroup), "--endpoint", ep, "--auth-dir", dir + "/auth", "--out",
                                 dir + "/part" + std::to_string(p), "--job", "fleet", "--regroup-job", "regroup",
                                 "--start-at", std::to_string(start_at), curve ? "--curve" : "--no-curve"},
        dir + "/part" + std::to_string(p) + ".log"));
  }
  std::vector<float> storm, steady, regroup;
  double storm_s = 0, steady_s = 0, regroup_s = -1, sent = 0, errors = 0;
  for (int p = 0; p < o.clients; ++p) {
    if (parts[p]->Wait(o.seconds + 600) != 0)
      return Internal("client part " + std::to_string(p) + " failed: " +
                      testing::ReadText(dir + "/part" + std::to_string(p) + ".log"));
    std::ifstream f(dir + "/part" + std::to_string(p), std::ios::binary);
    auto a = ReadFloats(f), b = ReadFloats(f), c = ReadFloats(f);
    storm.insert(storm.end(), a.begin(), a.end());
    steady.insert(steady.end(), b.begin(), b.end());
    regroup.insert(regroup.end(), c.begin(), c.end());
    double fig[5];
    f.read(reinterpret_cast<char*>(fig), sizeof(fig));
    storm_s = std::max(storm_s, fig[0]);
    steady_s = std::max(steady_s, fig[1]);
    if (p == 0) regroup_s = fig[2];
    sent += fig[3];
    errors += fig[4];
  }
  const double coordinator_cpu_s = ProcessCpuSeconds(coord.pid());
  coord.Kill(SIGTERM);
  coord.Wait(10);
  nlohmann::json out;
  out["mode"] = curve ? "curve" : "insecure";
  out["storm"] = Summary(storm, storm_s);
  out["storm"]["seconds"] = storm_s;
  out["steady"] = Summary(steady, steady_s);
  out["steady"]["heartbeats_sent"] = sent;
  out["steady"]["errors"] = errors;
  out["regroup"] = Summary(regroup, std::abs(regroup_s));
  out["regroup"]["workers"] = o.regroup;
  out["regroup"]["seconds"] = regroup_s;
  // The coordinator's own CPU over the whole run (set-up included: key admissions and
  // submits): what one request costs it, whatever the clients' share of the machine.
  const double requests = storm.size() + sent + 2.0 * regroup.size() + (curve ? o.workers : 0) + o.clients + 1;
  out["coordinator_cpu_s"] = coordinator_cpu_s;
  out["coordinator_us_per_request"] = 1e6 * coordinator_cpu_s / requests;
  return out;
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) {
  using namespace shoal;
  CLI::App app{"control_plane_bench: one coordinator against N simulated workers, CurveZMQ vs --insecure"};
  Options o;
  app.add_option("--workers", o.workers, "simulated workers")->capture_default_str();
  app.add_option("--seconds", o.seconds, "steady heartbeat phase length")->capture_default_str();
  app.add_option("--regroup", o.regroup, "workers in the regroup job (0: skip)")->capture_default_str();
  app.add_option("--clients", o.clients, "client processes")->capture_default_str();
  app.add_option("--modes", o.modes, "curve, insecure, or both (comma-separated)")->capture_default_str();
  app.add_flag("--json", o.json, "print JSON");
  // Internal: one client process.
  app.add_option("--part", o.part)->group("");
  app.add_option("--endpoint", o.endpoint)->group("");
  app.add_option("--auth-dir", o.auth_dir)->group("");
  app.add_option("--out", o.out)->group("");
  app.add_option("--job", o.job)->group("");
  app.add_option("--regroup-job", o.regroup_job)->group("");
  app.add_option("--start-at", o.start_at_ms)->group("");
  app.add_flag("--curve,!--no-curve", o.curve)->group("");
  CLI11_PARSE(app, argc, argv);
  rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (o.part >= 0) return RunClientPart(o);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  nlohmann::json all = nlohmann::json::array();
  for (const char* mode : {"curve", "insecure"}) {
    if (o.modes.find(mode) == std::string::npos) continue;
    auto r = RunMode(o, std::string(mode) == "curve", self);
    if (!r.ok()) {
      std::fprintf(stderr, "control_plane_bench: %s: %s\n", mode, r.status().ToString().c_str());
      return 1;
    }
    all.push_back(*r);
    if (!o.json) {
      const auto& j = *r;
      std::printf("%-8s storm %d registers: %.0f req/s, p50 %.2f ms, p99 %.2f ms | steady %.0f hb/s: p50 %.2f ms, p99 "
                  "%.2f ms, max %.1f ms, %g errors | regroup of %d: %.3f s (p99 answer %.2f ms) | coordinator %.0f us "
                  "CPU per request\n",
                  mode, o.workers, j["storm"].value("requests_per_s", 0.0), j["storm"].value("p50_ms", 0.0),
                  j["storm"].value("p99_ms", 0.0), j["steady"].value("requests_per_s", 0.0),
                  j["steady"].value("p50_ms", 0.0), j["steady"].value("p99_ms", 0.0), j["steady"].value("max_ms", 0.0),
                  j["steady"].value("errors", 0.0), o.regroup, j["regroup"].value("seconds", 0.0),
                  j["regroup"].value("p99_ms", 0.0), j.value("coordinator_us_per_request", 0.0));
      std::fflush(stdout);
    }
  }
  if (all.size() == 2 && !o.json) {
    std::printf("CurveZMQ / insecure: steady p99 %.2fx, storm throughput %.2fx, regroup time %.2fx\n",
                all[0]["steady"].value("p99_ms", 0.0) / std::max(1e-9, all[1]["steady"].value("p99_ms", 0.0)),
                all[0]["storm"].value("requests_per_s", 0.0) /
                    std::max(1e-9, all[1]["storm"].value("requests_per_s", 0.0)),
                all[0]["regroup"].value("seconds", 0.0) / std::max(1e-9, all[1]["regroup"].value("seconds", 0.0)));
  }
  if (o.json) std::printf("%s\n", all.dump(2).c_str());
  return 0;
}
