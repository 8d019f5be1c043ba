// Fuzz target: the coordinator's state loader (Coordinator::Load), which reads back
// whatever the state store holds after a crash, a disk error or a hand edit. Stored
// state is input too: a corrupt entry must make Load fail with a Status naming it, and
// a state Load accepts must be one the coordinator can run on (Tick, heartbeats,
// registrations, polls, regroups) without crashing, throwing or hanging.
//
// Input: entries split at kSeparator (coordinator_fuzz_util.h), each
//   u8 key length | key | value (the rest of the entry),
// put into an in-memory store (at most kMaxEntries). The seeds are the real entries of
// a store after realistic request sequences, at several points of a job's life.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/access.h"
#include "coordinator/audit.h"
#include "coordinator_fuzz_util.h"

extern const char kShoalFuzzTarget[] = "coordinator_state";

namespace {

using namespace shoal;
using namespace shoal::fuzz;

constexpr int kMaxEntries = 256;
constexpr size_t kMaxIds = 8;  // members and jobs the follow-up requests visit
constexpr int64_t kLoadMs = 1'700'000'100'000;

void Call(Coordinator& c, const Request& r, int64_t now) { c.Handle(r, now, Checked(r.id())); }

// What a restarted coordinator does next: its clients come back. Says whether the
// state held a job at all.
bool Exercise(Coordinator& c, int64_t now) {
  c.Tick(now);
  StatusResponse st;
  Request all = StatusOf();
  c.Handle(all, now, [&st](Response r) { st = r.status(); });
  std::vector<const Member*> members;
  for (const Member& m : st.members())
    if (members.size() < kMaxIds) members.push_back(&m);
  for (const Member* m : members) {
    Call(c, Heartbeat(m->id(), m->generation(), 100, true), now);
    Call(c, GenerationReport(m->id(), m->generation(), 100), now);
    Call(c, CheckpointCommit(m->job_id(), m->id(), m->generation(), 100), now);
  }
  int n = 0;
  for (const Job& j : st.jobs()) {
    if (++n > static_cast<int>(kMaxIds)) break;
    Call(c, Register(j.id(), 900 + n, true), now);
    Call(c, Register(j.id(), 950 + n, false, 0, 1), now);
    Call(c, Scale(j.id(), 2), now);
    Call(c, LedgerOf(j.id()), now);
    Call(c, Events(j.id()), now);
    Call(c, CheckpointList(j.id()), now);
    const std::string key = j.id() + "/gen-" + std::to_string(j.generation()) + "/gloo/0";
    Call(c, KvGet({key, key + "x"}, 1000), now);
    Call(c, KvSet(key, "10.0.0.9:41000"), now);
  }
  for (const Member* m : members) Call(c, Await(m->id(), m->generation(), 100, m->rank() == 1), now + 500);
  c.Tick(now + 2'000);
  for (const Member* m : members) Call(c, Await(m->id()), now + 2'000);
  c.Tick(now + 10'000);  // past the heartbeat timeout: the silent ones die
  if (!members.empty()) Call(c, Finish(members.front()->id(), true), now + 10'000);
  if (!members.empty()) Call(c, Finish(members.back()->id(), false), now + 10'000);
  if (st.jobs_size() > 0) Call(c, Cancel(st.jobs(st.jobs_size() - 1).id()), now + 10'000);
  c.Tick(now + 100'000);  // past workers.min_grace_s
  c.Tick(now + 3'600'000);
  Call(c, StatusOf(), now + 3'600'000);
  return st.jobs_size() > 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Quiet();
  auto store = NewMemoryStore();
  for (std::string_view rec : SplitRecords(data, size, kMaxEntries)) {
    if (rec.empty()) continue;
    const size_t key_size = std::min<size_t>(static_cast<uint8_t>(rec[0]), rec.size() - 1);
    (void)store->Put(std::string(rec.substr(1, key_size)), std::string(rec.substr(1 + key_size)));
  }
  ++Counters().inputs;
  // The server's own state beside the coordinator's: the key registry refuses a corrupt
  // key, the audit log loads whatever it finds (a broken chain is a warning) and its
  // verification names a problem rather than crash.
  (void)KeyRegistry(store.get()).Load();
  std::string warning;
  (void)AuditLog(store.get()).Load(&warning);
  auto audit = store->Scan("audit/");
  auto heads = store->Scan("audit-head/");
  if (audit.ok() && heads.ok()) (void)VerifyAuditLog(*audit, *heads, nullptr);
  Coordinator c(std::move(store));
  if (!c.Load(kLoadMs).ok()) return 0;  // refused, as corrupt state should be
  if (Exercise(c, kLoadMs)) ++Counters().deep;
  return 0;
}

namespace {

struct Builder {
  std::shared_ptr<StateStore> memory{NewMemoryStore()};
  Coordinator coord{std::make_unique<SharedStore>(memory)};
  int64_t now = 1'700'000'000'000;

  void Do(const Request& r, int64_t advance_ms = 10) {
    now += advance_ms;
    coord.Handle(r, now, [](Response) {});
    coord.Tick(now);
  }
  // The store's entries in the input's encoding. A real state that Load refuses is a
  // bug in Load's checks, not a seed: stop here.
  std::string Dump() {
    auto entries = memory->Scan("");
    std::vector<std::string> records;
    for (const auto& [k, v] : *entries)
      records.push_back(static_cast<char>(std::min<size_t>(k.size(), 255)) + k.substr(0, 255) + v);
    std::string out = JoinRecords(records);
    Coordinator again(std::make_unique<SharedStore>(memory));
    Status s = again.Load(kLoadMs);
    if (!s.ok()) {
      std::fprintf(stderr, "fuzz seed: Load refused a real state: %s\n", s.ToString().c_str());
      std::abort();
    }
    return out;
  }
};

}  // namespace

// A store at several points of real jobs' lives, dumped entry by entry.
std::vector<std::string> ShoalFuzzSeeds() {
  Quiet();
  std::vector<std::string> seeds;
  Builder b;
  b.Do(Submit("fm"));
  b.Do(Register("fm", 101, true));
  b.Do(Await("fm/m0"));
  seeds.push_back(b.Dump());  // pending, one registered
  b.Do(Register("fm", 102, true));
  b.Do(Await("fm/m1"));
  b.Do(KvSet("fm/gen-1/gloo/0", "10.0.0.1:41000"));
  b.Do(KvSet("fm/gen-1/gloo/1", "10.0.0.2:41000"));
  b.Do(Heartbeat("fm/m0", 1, 50, true), 500);
  b.Do(Heartbeat("fm/m1", 1, 50));
  b.Do(GenerationReport("fm/m0", 1, 1));
  b.Do(CheckpointCommit("fm", "fm/m0", 1, 50));
  seeds.push_back(b.Dump());  // generation 1 training, a checkpoint, rendezvous keys
  b.Do(Heartbeat("fm/m0", 1, 80, true), 6'000);  // fm/m1 silent past the timeout: dead
  b.Do(Await("fm/m0", 1, 80));
  seeds.push_back(b.Dump());  // generation 2 (fm/m0 alone) after a death
  b.Do(Register("fm", 103, true));  // a joiner: generation 2 ends at the boundary
  b.Do(Await("fm/m2"));
  b.Do(Heartbeat("fm/m0", 2, 90, true));
  seeds.push_back(b.Dump());  // regroup pending
  b.Do(Await("fm/m0", 2, 90));
  b.Do(Leave("fm/m2"));
  b.Do(Scale("fm", 1));
  b.Do(Heartbeat("fm/m0", 3, 100, true));
  b.Do(Submit("mpi"));
  b.Do(Register("mpi", 201, false, 1, 2));
  b.Do(Register("mpi", 202, false, 0, 2));
  b.Do(ReportExit("mpi", 201));  // a fixed job restarts
  b.Do(Register("mpi", 211, false, 0, 2));
  b.Do(Submit("p", 3));
  b.Do(Register("p", 301, true));
  b.Do(Cancel("p"));
  seeds.push_back(b.Dump());  // three jobs: elastic, restarting, cancelled
  b.Do(Finish("fm/m0", true));
  b.Do(Finish("fm/m2", true));
  b.Do(Register("mpi", 212, false, 1, 2));
  b.Do(Finish("mpi/m3", false));
  seeds.push_back(b.Dump());  // completed and failed
  seeds.push_back("");
  return seeds;
}
