// Fuzz target: the coordinator's request handler (Coordinator::Handle and Tick), the
// code every byte a client sends reaches. An input is a sequence of serialized Requests
// handled in order against a coordinator already holding realistic state, with a clock
// that advances between them (deaths, regroup windows and grace periods fall inside
// one input). Whatever arrives, the coordinator must not crash, throw or hang, each
// response must echo its request's id and come at most once, and a coordinator
// restarted on the state left behind must load it.
//
// Input: records split at kSeparator (coordinator_fuzz_util.h). The first record's
// first byte picks the starting state (bit 0: elastic job "fm" training in generation
// 1 with members fm/m0, fm/m1, rendezvous keys and a checkpoint; bit 1: fixed-
// membership job "mpi" in generation 1 with mpi/m0, mpi/m1; bit 2: job "p" pending with
// p/m0 registered and polling). Each later record, at most kMaxRequests, is
//   u8 clock advance | serialized Request
// (advance a < 250: a x 25 ms; a >= 250: (a - 249) x 30 s); Tick runs after each.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/access.h"
#include "coordinator_fuzz_util.h"

extern const char kShoalFuzzTarget[] = "coordinator_request";

namespace {

using namespace shoal;
using namespace shoal::fuzz;

constexpr int kMaxRequests = 64;
constexpr int64_t kStartMs = 1'700'000'000'000;

int64_t Advance(uint8_t a) { return a < 250 ? a * 25 : (a - 249) * 30'000; }

// One caller of each role, the worker serving job "fm" (the server checks these).
const std::vector<Caller>& Callers() {
  static const std::vector<Caller> callers = [] {
    std::vector<Caller> out;
    for (Role role : {ROLE_SUBMITTER, ROLE_VIEWER, ROLE_WORKER}) {
      Caller c;
      c.key = "k";
      c.role = role;
      c.insecure = false;
      if (role == ROLE_WORKER) c.jobs = {"fm"};
      out.push_back(c);
    }
    return out;
  }();
  return callers;
}

struct Session {
  std::shared_ptr<StateStore> store{NewMemoryStore()};
  Coordinator coord{std::make_unique<SharedStore>(store)};
  int64_t now = kStartMs;

  void Handle(const Request& r) {
    coord.Handle(r, now, Checked(r.id()));
    coord.Tick(now);
  }
  void Step(int64_t ms, const Request& r) {
    now += ms;
    Handle(r);
  }
};

// The starting states byte 0 picks, each reached through the protocol's own requests.
void Prepare(Session& s, uint8_t preset) {
  if (preset & 1) {
    s.Handle(Submit("fm"));
    s.Handle(Register("fm", 101, true));
    s.Handle(Register("fm", 102, true));  // generation 1 forms
    s.Handle(Await("fm/m0"));
    s.Handle(Await("fm/m1"));
    s.Handle(KvSet("fm/gen-1/gloo/0", "10.0.0.1:41000"));
    s.Handle(KvSet("fm/gen-1/gloo/1", "10.0.0.2:41000"));
    s.Step(500, Heartbeat("fm/m0", 1, 50, true));
    s.Handle(Heartbeat("fm/m1", 1, 50));
    s.Handle(CheckpointCommit("fm", "fm/m0", 1, 50));
  }
  if (preset & 2) {
    s.Handle(Submit("mpi"));
    s.Handle(Register("mpi", 201, false, 1, 2));
    s.Handle(Register("mpi", 202, false, 0, 2));
    s.Handle(Await("mpi/m0"));
    s.Handle(Await("mpi/m1"));
    s.Step(500, Heartbeat("mpi/m0", 1, 20));
    s.Handle(Heartbeat("mpi/m1", 1, 20));
  }
  if (preset & 4) {
    s.Handle(Submit("p", 3));
    s.Handle(Register("p", 301, true));
    s.Handle(Await("p/m0"));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Quiet();
  const auto records = SplitRecords(data, size, kMaxRequests + 1);
  ++Counters().inputs;
  Session s;
  Prepare(s, records[0].empty() ? 0 : static_cast<uint8_t>(records[0][0]));
  for (size_t n = 1; n < records.size(); ++n) {
    if (records[n].empty()) continue;
    s.now += Advance(static_cast<uint8_t>(records[n][0]));
    Request r;
    if (r.ParseFromArray(records[n].data() + 1, static_cast<int>(records[n].size() - 1))) {
      // The server's access layer sees every request first (coordinator/access.h).
      for (const Caller& who : Callers()) (void)Authorize(who, r, s.coord);
      (void)JobOfRequest(r, s.coord);
      (void)IsAudited(r);
      s.coord.Handle(r, s.now, [checked = Checked(r.id())](Response resp) {
        for (const Caller& who : Callers()) {
          Response copy = resp;
          FilterStatus(who, copy.mutable_status());
        }
        checked(std::move(resp));
      });
      ++Counters().deep;
    }
    s.coord.Tick(s.now);
  }
  // Long after: every poll expires, silent members die, grace periods end.
  s.now += 3'600'000;
  s.coord.Tick(s.now);
  Request status;
  status.mutable_status();
  s.coord.Handle(status, s.now, [&s](Response r) {
    for (const Member& m : r.status().members())
      if (s.coord.FindJob(m.job_id()) == nullptr) std::abort();  // a member outlived its job
  });
  // A restart: whatever state the requests left, a new coordinator must load it (Load's
  // checks refusing a state the coordinator itself wrote would keep it from starting
  // again) and carry on from it.
  Coordinator restarted(std::make_unique<SharedStore>(s.store));
  Status loaded = restarted.Load(s.now);
  if (!loaded.ok()) {
    std::fprintf(stderr, "fuzz: the coordinator cannot load its own state: %s\n", loaded.ToString().c_str());
    std::abort();
  }
  restarted.Tick(s.now + 60'000);
  restarted.Handle(status, s.now + 60'000, Checked(status.id()));
  return 0;
}

namespace {

std::string Encode(uint8_t preset, const std::vector<std::pair<uint8_t, Request>>& steps) {
  std::vector<std::string> records = {std::string(1, static_cast<char>(preset))};
  for (const auto& [advance, r] : steps) records.push_back(static_cast<char>(advance) + r.SerializeAsString());
  return JoinRecords(records);
}

}  // namespace

// Real request sequences of the protocol, from each starting state.
std::vector<std::string> ShoalFuzzSeeds() {
  Quiet();
  std::vector<std::string> seeds;
  // From nothing: a whole elastic job's life: submit, rendezvous, training, a checkpoint,
  // a joiner, a regroup, a leave, the end.
  seeds.push_back(Encode(0, {
      {0, Submit("fm")},
      {1, Register("fm", 101, true)},
      {1, Await("fm/m0")},
      {1, Register("fm", 102, true)},
      {1, Await("fm/m1")},
      {1, KvSet("fm/gen-1/gloo/0", "10.0.0.1:41000")},
      {1, KvGet({"fm/gen-1/gloo/0", "fm/gen-1/gloo/1"}, 30'000)},
      {1, KvSet("fm/gen-1/gloo/1", "10.0.0.2:41000")},
      {20, Heartbeat("fm/m0", 1, 10, true)},
      {0, Heartbeat("fm/m1", 1, 10)},
      {0, GenerationReport("fm/m0", 1, 1)},
      {20, CheckpointCommit("fm", "fm/m0", 1, 20)},
      {0, Events("fm")},
      {0, StatusOf()},
      {0, LedgerOf("fm")},
      {0, CheckpointList("fm")},
      {0, Scale("fm", 3)},
      {1, Register("fm", 103, true)},
      {1, Await("fm/m2")},
      {20, Heartbeat("fm/m0", 1, 30, true)},
      {0, Await("fm/m0", 1, 30)},
      {0, Await("fm/m1", 1, 30)},
      {1, KvSet("fm/gen-2/gloo/0", "10.0.0.1:41001")},
      {20, Heartbeat("fm/m0", 2, 40, true)},
      {0, Leave("fm/m1")},
      {20, Await("fm/m0", 2, 45)},
      {0, Await("fm/m1", 2, 45, false, true)},
      {0, Await("fm/m2", 2, 45)},
      {20, Finish("fm/m0", true)},
      {0, Finish("fm/m2", true)},
      {0, Events("fm", 3)},
      {0, StatusOf("fm")},
  }));
  // A running elastic job loses a member: by silence, by its launcher, by a failed
  // collective; a stale member is fenced; a rendezvous is cut short.
  seeds.push_back(Encode(1, {
      {0, KvGet({"fm/gen-1/nccl-id"}, 10'000)},
      {40, Heartbeat("fm/m0", 1, 60, true)},
      {250, Heartbeat("fm/m0", 1, 70, true)},  // fm/m1 is silent for 30 s: dead
      {1, Await("fm/m0", 1, 70)},
      {1, Heartbeat("fm/m1", 1, 70)},
      {1, KvSet("fm/gen-1/late", "x")},
      {1, Register("fm", 104, true)},
      {1, Await("fm/m2")},
      {1, Await("fm/m0", 2, 70, true)},
      {60, ReportExit("fm", 104)},
      {1, Register("fm", 105, true)},
      {255, StatusOf("fm")},  // 180 s later: below workers.min past its grace?
      {1, CheckpointCommit("fm", "fm/m1", 1, 80)},
      {1, Finish("fm/m0", false)},
      {1, Cancel("fm")},
  }));
  // A fixed-membership (mpi) job restarts: a worker's launcher reports its exit, a whole
  // new set registers with launcher ranks, then the restart budget runs out.
  seeds.push_back(Encode(2, {
      {0, ReportExit("mpi", 201)},
      {1, Await("mpi/m1", 1, 20)},
      {1, Register("mpi", 211, false, 1, 2)},
      {1, Register("mpi", 212, false, 0, 2)},
      {1, Await("mpi/m2")},
      {1, Await("mpi/m3")},
      {1, Leave("mpi/m2")},
      {1, Scale("mpi", 3)},
      {1, Finish("mpi/m3", false)},
      {1, Register("mpi", 221, false, 0, 2)},
      {255, Heartbeat("mpi/m4", 3, 0)},
      {1, Register("mpi", 222, false, 1, 2)},
  }));
  // Everything at once: three jobs, scaling a pending one, requests for unknown ids and
  // bodies left empty (their error paths).
  std::vector<std::pair<uint8_t, Request>> all = {
      {0, Scale("p", 1)},
      {1, Await("p/m0")},
      {1, Register("p", 302, true)},
      {1, Submit("fm")},
      {1, Submit("")},
      {1, Register("nope", 1, true)},
      {1, Await("nope/m0")},
      {1, Heartbeat("nope/m0", 1, 1)},
      {1, KvGet({"mpi/gen-0/x", "fm/gen-1/gloo/0"}, 0)},
      {1, LedgerOf("nope")},
      {1, ReportExit("fm", -1)},
      {1, Cancel("mpi")},
      {1, Register("mpi", 203, true)},
  };
  for (int body = 10; body <= 26; ++body) {
    Request r;
    r.set_id(100 + body);
    const auto* field = Request::descriptor()->FindFieldByNumber(body);
    if (field != nullptr) r.GetReflection()->MutableMessage(&r, field);  // an empty body of that kind
    all.emplace_back(1, r);
  }
  all.emplace_back(1, Request());  // no body at all
  seeds.push_back(Encode(7, all));
  seeds.push_back(std::string(1, '\x07'));
  return seeds;
}
