// Elastic membership: how generations end and form (coordinator.h, protocol steps 5-7
// and 9). PlanGeneration on its own, then the core driven with a fake clock: every
// trigger (failure, join, leave, scale), the regroup window, workers.min, fencing,
// rollback to a checkpoint, fixed membership and a restart in the middle of a regroup.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <deque>
#include <filesystem>

#include "coordinator/coordinator_test_util.h"
#include "coordinator/membership.h"
#include "coordinator/registry.h"

namespace shoal {
namespace {

using coordinator_test::CoordinatorCoreTest;
using coordinator_test::Inbox;

constexpr int kInvalidArgument = static_cast<int>(StatusCode::kInvalidArgument);
constexpr int kNotFound = static_cast<int>(StatusCode::kNotFound);
constexpr int kFailedPrecondition = static_cast<int>(StatusCode::kFailedPrecondition);
constexpr int kAborted = static_cast<int>(StatusCode::kAborted);
constexpr auto npos = std::string::npos;

// ---- PlanGeneration ---------------------------------------------------------

using Ids = std::vector<std::string>;

TEST(PlanGenerationTest, SurvivorsKeepTheirOrderAndComeFirstJoinersFollowInRegistrationOrder) {
  // Survivors arrive in their old rank order, which need not be their id order.
  GenerationPlan p = PlanGeneration({{"m3"}, {"m1"}, {"m7"}}, {"m9", "m8"}, /*max=*/8, /*target=*/0);
  EXPECT_EQ(p.members, (Ids{"m3", "m1", "m7", "m9", "m8"}));
  EXPECT_TRUE(p.leave.empty());
  EXPECT_TRUE(p.queued.empty());
}

TEST(PlanGenerationTest, LeavingSurvivorsLeaveAndTheOthersCloseUp) {
  GenerationPlan p = PlanGeneration({{"a"}, {"b", true}, {"c"}}, {"j"}, 8, 0);
  EXPECT_EQ(p.members, (Ids{"a", "c", "j"}));
  EXPECT_EQ(p.leave, (Ids{"b"}));
  EXPECT_TRUE(p.queued.empty());
}

TEST(PlanGenerationTest, MaxCapsTheSizeAndSurplusJoinersStayQueued) {
  GenerationPlan p = PlanGeneration({{"a"}, {"b"}}, {"j1", "j2", "j3"}, /*max=*/4, /*target=*/0);
  EXPECT_EQ(p.members, (Ids{"a", "b", "j1", "j2"}));
  EXPECT_TRUE(p.leave.empty());
  EXPECT_EQ(p.queued, (Ids{"j3"}));
}

TEST(PlanGenerationTest, TargetCapsTheSizeBelowMaxButNeverAboveIt) {
  GenerationPlan below = PlanGeneration({{"a"}}, {"j1", "j2", "j3"}, /*max=*/8, /*target=*/3);
  EXPECT_EQ(below.members, (Ids{"a", "j1", "j2"}));
  EXPECT_EQ(below.queued, (Ids{"j3"}));
  GenerationPlan above = PlanGeneration({{"a"}}, {"j1", "j2", "j3"}, /*max=*/2, /*target=*/5);
  EXPECT_EQ(above.members, (Ids{"a", "j1"}));
  EXPECT_EQ(above.queued, (Ids{"j2", "j3"}));
}

TEST(PlanGenerationTest, SurplusSurvivorsLeaveFromTheHighestRankDown) {
  GenerationPlan p = PlanGeneration({{"a"}, {"b"}, {"c"}, {"d"}}, {"j"}, 8, /*target=*/2);
  EXPECT_EQ(p.members, (Ids{"a", "b"}));
  EXPECT_EQ(p.leave, (Ids{"d", "c"}));
  EXPECT_EQ(p.queued, (Ids{"j"}));
}

TEST(PlanGenerationTest, NamedLeaversGoFirstThenTheCapTakesTheHighestRanks) {
  GenerationPlan p = PlanGeneration({{"a"}, {"b", true}, {"c"}, {"d"}}, {}, 8, /*target=*/2);
  EXPECT_EQ(p.members, (Ids{"a", "c"}));
  EXPECT_EQ(p.leave, (Ids{"b", "d"}));
}

TEST(PlanGenerationTest, SurvivorsFillingTheTargetLeaveEveryJoinerQueued) {
  GenerationPlan p = PlanGeneration({{"a"}, {"b"}, {"c"}}, {"j1", "j2"}, 8, /*target=*/3);
  EXPECT_EQ(p.members, (Ids{"a", "b", "c"}));
  EXPECT_TRUE(p.leave.empty());
  EXPECT_EQ(p.queued, (Ids{"j1", "j2"}));
}

// ---- the core, with a fake clock --------------------------------------------

// Forwards to a store the test keeps a handle on, to read what the coordinator
// persisted (the rendezvous keys under kv/) beside what it answers.
class SharedStore : public StateStore {
 public:
  explicit SharedStore(std::shared_ptr<StateStore> inner) : inner_(std::move(inner)) {}
  Status Put(const std::string& k, const std::string& v) override { return inner_->Put(k, v); }
  Status PutBatch(const std::vector<std::pair<std::string, std::string>>& kvs) override {
    return inner_->PutBatch(kvs);
  }
  StatusOr<std::string> Get(const std::string& k) override { return inner_->Get(k); }
  Status Delete(const std::string& k) override { return inner_->Delete(k); }
  StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) override {
    return inner_->Scan(prefix);
  }

 private:
  std::shared_ptr<StateStore> inner_;
};

// The defaults, spelled out: the tests' clock arithmetic depends on them.
JobSpec ElasticSpec(int initial, int min, int max) {
  JobSpec spec = DefaultJobSpec();
  spec.set_name("t");
  WorkersSpec* w = spec.mutable_workers();
  w->set_initial(initial);
  w->set_min(min);
  w->set_max(max);
  w->set_heartbeat_interval_s(0.5);
  w->set_heartbeat_timeout_s(5);
  w->set_regroup_window_s(1.0);
  w->set_min_grace_s(30);
  return spec;
}

constexpr int64_t kBatch = 128;

// One range: steps [0, steps) of epoch 0, each taking kBatch records.
Ledger LedgerTo(int64_t steps) {
  Ledger l;
  l.set_records(60000);
  l.set_seed(42);
  LedgerRange* r = l.add_ranges();
  r->set_step_begin(0);
  r->set_step_end(steps);
  r->set_epoch(0);
  r->set_cursor_begin(0);
  r->set_cursor_end(steps * kBatch);
  r->set_generation(1);
  r->set_world(2);
  r->set_batch(kBatch);
  return l;
}

// What a member of an ending generation says in its AwaitAssignment; At(step) starts
// one for generation 1 from a member that holds state.
struct Report {
  int64_t ended_generation = 1;
  int64_t committed_step = 0;
  bool has_state = true;
  bool failed = false;
  bool leaving = false;
  std::string error;
  Ledger ledger;

  Report& Ended(int64_t generation) {
    ended_generation = generation;
    return *this;
  }
  Report& Failed(const std::string& why) {
    failed = true;
    error = why;
    return *this;
  }
  Report& Leaving() {
    leaving = true;
    return *this;
  }
  Report& With(const Ledger& l) {
    ledger = l;
    return *this;
  }
};
Report At(int64_t step) {
  Report r;
  r.committed_step = step;
  return r;
}

class MembershipTest : public CoordinatorCoreTest {
 protected:
  std::string job_;
  // One inbox per AwaitAssignment (a deque: parked responders keep pointers into it).
  std::deque<Inbox> polls_;
  uint64_t next_id_ = 1000;
  int next_pid_ = 1000;

  const Job& J() const { return *coord_->FindJob(job_); }
  const Member& M(const std::string& id) const { return *coord_->FindMember(id); }

  // Submits `spec` and registers workers.initial elastic workers that poll; generation 1
  // forms with ranks in registration order. Returns the member ids, index = rank.
  std::vector<std::string> Start(const JobSpec& spec) {
    job_ = Submit(spec);
    std::vector<std::string> ids;
    std::vector<Inbox*> inboxes;
    for (int i = 0; i < spec.workers().initial(); ++i) {
      ids.push_back(Join());
      inboxes.push_back(&Poll(ids.back()));
    }
    for (int i = 0; i < static_cast<int>(ids.size()); ++i) {
      EXPECT_EQ(inboxes[i]->got.size(), 1u);
      if (inboxes[i]->got.empty()) continue;
      EXPECT_EQ(inboxes[i]->got[0].assignment().generation(), 1);
      EXPECT_EQ(inboxes[i]->got[0].assignment().rank(), i);
    }
    EXPECT_EQ(J().state(), JOB_RUNNING);
    EXPECT_FALSE(J().fixed_membership());
    return ids;
  }
  // Registers an elastic worker (gloo, nccl); returns its member id.
  // Each worker has its own pid (1000, 1001, ... in registration order) on host "h".
  std::string Join() {
    Response r = Register(job_, -1, /*elastic=*/true, next_pid_++);
    EXPECT_EQ(r.code(), 0) << r.error();
    return r.register_().member_id();
  }
  Inbox& Poll(const std::string& member) { return Send(member, nullptr); }
  Response ReportExit(int pid, const std::string& host = "h") {
    Request r;
    r.mutable_report_exit()->set_job_id(job_);
    r.mutable_report_exit()->set_host(host);
    r.mutable_report_exit()->set_pid(pid);
    r.mutable_report_exit()->set_how("killed by signal 9");
    return Call(r);
  }
  Inbox& Send(const std::string& member, const Report* rep) {
    Request r;
    r.set_id(next_id_++);
    AwaitAssignmentRequest* a = r.mutable_await_assignment();
    a->set_member_id(member);
    if (rep) {
      a->set_ended_generation(rep->ended_generation);
      a->set_committed_step(rep->committed_step);
      a->set_has_state(rep->has_state);
      a->set_failed(rep->failed);
      a->set_error(rep->error);
      a->set_leaving(rep->leaving);
      if (rep->ledger.ranges_size() > 0) *a->mutable_ledger() = rep->ledger;
    }
    polls_.emplace_back();
    Inbox& inbox = polls_.back();
    coord_->Handle(r, now_, inbox.Take());
    return inbox;
  }
  Inbox& ReportEnd(const std::string& member, const Report& rep) { return Send(member, &rep); }

  HeartbeatResponse Beat(const std::string& member, int64_t generation, const Ledger* ledger = nullptr) {
    Request r;
    r.mutable_heartbeat()->set_member_id(member);
    r.mutable_heartbeat()->set_generation(generation);
    if (ledger) *r.mutable_heartbeat()->mutable_ledger() = *ledger;
    Response resp = Call(r);
    EXPECT_EQ(resp.code(), 0) << resp.error();
    return resp.heartbeat();
  }
  // Moves the clock to `t` a heartbeat interval at a time; `alive` heartbeat (for the
  // generation they are in) and the coordinator ticks after each step.
  void AdvanceTo(int64_t t, const std::vector<std::string>& alive) {
    while (now_ < t) {
      now_ = std::min<int64_t>(now_ + 500, t);
      for (const std::string& m : alive) Beat(m, M(m).generation());
      coord_->Tick(now_);
    }
  }
  int64_t TimeoutMs() const { return std::llround(J().spec().workers().heartbeat_timeout_s() * 1000); }
  // `victim` stops heartbeating until it is declared dead; the others carry on.
  void KillByTimeout(const std::string& victim, const std::vector<std::string>& alive) {
    AdvanceTo(M(victim).last_heartbeat_ms() + TimeoutMs() + 500, alive);
    ASSERT_EQ(M(victim).state(), MEMBER_DEAD);
  }

  Response Scale(int size) {
    Request r;
    r.mutable_scale()->set_job_id(job_);
    r.mutable_scale()->set_size(size);
    return Call(r);
  }
  Response Leave(const std::string& member) {
    Request r;
    r.mutable_leave()->set_member_id(member);
    return Call(r);
  }
  Response Cancel() {
    Request r;
    r.mutable_cancel()->set_job_id(job_);
    return Call(r);
  }
  Response Commit(const std::string& member, int64_t generation, int64_t step, const std::string& path) {
    Request r;
    CheckpointCommitRequest* c = r.mutable_checkpoint_commit();
    c->set_member_id(member);
    c->set_generation(generation);
    CheckpointRecord* rec = c->mutable_record();
    rec->set_job_id(job_);
    rec->set_step(step);
    rec->set_path(path);
    rec->set_manifest_digest(std::string(64, 'd'));
    return Call(r);
  }
  Response KvSet(const std::string& key, const std::string& value) {
    Request r;
    r.mutable_kv_set()->set_key(key);
    r.mutable_kv_set()->set_value(value);
    return Call(r);
  }
  Request KvGetRequest(const std::string& key) {
    Request r;
    r.mutable_kv_get()->add_keys(key);
    r.mutable_kv_get()->set_timeout_ms(60'000);
    return r;
  }

  int CountEvents(const std::string& kind) const {
    int n = 0;
    for (const Event& e : coord_->EventsOf(job_)) n += e.kind() == kind;
    return n;
  }
  std::string LastEventDetail(const std::string& kind) const {
    std::string d;
    for (const Event& e : coord_->EventsOf(job_))
      if (e.kind() == kind) d = e.detail();
    return d;
  }
};

// The single answer of a poll, which must be an assignment to a place.
const Assignment& Placed(const Inbox& inbox) {
  static const Assignment kNone;
  EXPECT_EQ(inbox.got.size(), 1u);
  if (inbox.got.size() != 1) return kNone;
  EXPECT_EQ(inbox.got[0].code(), 0) << inbox.got[0].error();
  EXPECT_TRUE(inbox.got[0].has_assignment());
  EXPECT_FALSE(inbox.got[0].assignment().exit());
  return inbox.got[0].assignment();
}

TEST_F(MembershipTest, HeartbeatTimeoutEndsTheGenerationNowAndSurvivorsKeepTheirOrder) {
  auto m = Start(ElasticSpec(4, 1, 8));
  // Rank 1 goes silent; the others heartbeat every interval.
  KillByTimeout(m[1], {m[0], m[2], m[3]});
  EXPECT_NE(M(m[1]).failure_reason().find("no heartbeat"), npos);
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_EQ(J().generation(), 1);
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
  EXPECT_NE(J().regroup_cause().find(m[1]), npos);
  for (int r : {0, 2, 3}) {
    HeartbeatResponse hb = Beat(m[r], 1);
    EXPECT_EQ(hb.regroup(), REGROUP_NOW) << "rank " << r;
    EXPECT_EQ(hb.generation(), 1);
    EXPECT_FALSE(hb.fenced());
  }
  EXPECT_EQ(CountEvents("member_dead"), 1);
  EXPECT_EQ(CountEvents("generation_ending"), 1);

  // Rank 2 got one step further than the others (a half-finished reduction).
  Inbox& p0 = ReportEnd(m[0], At(40));
  Inbox& p3 = ReportEnd(m[3], At(40));
  EXPECT_TRUE(p0.got.empty());
  EXPECT_TRUE(p3.got.empty());
  EXPECT_EQ(J().generation(), 1) << "formed before every survivor reported";
  Inbox& p2 = ReportEnd(m[2], At(41));

  const std::vector<std::pair<Inbox*, std::string>> next = {{&p0, m[0]}, {&p2, m[2]}, {&p3, m[3]}};
  for (int rank = 0; rank < 3; ++rank) {
    const Assignment& a = Placed(*next[rank].first);
    EXPECT_EQ(a.member_id(), next[rank].second);
    EXPECT_EQ(a.generation(), 2);
    EXPECT_EQ(a.rank(), rank) << "survivors keep their old relative order";
    EXPECT_EQ(a.world_size(), 3);
    EXPECT_EQ(a.state_source(), 1) << "the furthest member (old rank 2, new rank 1) is the state source";
    EXPECT_EQ(a.resume_checkpoint(), "");
    EXPECT_EQ(a.kv_prefix(), "job1/gen-2/");
    EXPECT_NE(a.cause().find(m[1]), npos);
    const Member& mm = M(next[rank].second);
    EXPECT_EQ(mm.state(), MEMBER_ACTIVE);
    EXPECT_EQ(mm.rank(), rank);
    EXPECT_EQ(mm.generation(), 2);
  }
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(J().world_size(), 3);
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  EXPECT_EQ(J().committed_step(), 41);
  EXPECT_EQ(Beat(m[0], 2).regroup(), REGROUP_NONE);
  EXPECT_EQ(CountEvents("generation"), 2);
}

TEST_F(MembershipTest, AFailedReportEndsTheGenerationNowWithoutATimeout) {
  auto m = Start(ElasticSpec(2, 1, 8));
  Inbox& p0 = ReportEnd(m[0], At(7).Failed("allreduce: connection reset by peer"));
  // No clock movement, no Tick: the report alone ends the generation.
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
  EXPECT_NE(J().regroup_cause().find("connection reset by peer"), npos);
  EXPECT_EQ(Beat(m[1], 1).regroup(), REGROUP_NOW);
  EXPECT_EQ(M(m[0]).state(), MEMBER_ACTIVE) << "a failed collective is not a dead member";
  EXPECT_TRUE(p0.got.empty());
  Inbox& p1 = ReportEnd(m[1], At(7).Failed("allreduce: peer closed"));
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(Placed(p1).generation(), 2);
  EXPECT_EQ(Placed(p1).world_size(), 2);
  EXPECT_NE(Placed(p1).cause().find("connection reset by peer"), npos);
  EXPECT_EQ(CountEvents("member_dead"), 0);
}

TEST_F(MembershipTest, RegroupWindowTakesAMemberThatNeverReportsForDead) {
  auto m = Start(ElasticSpec(3, 1, 8));
  const int64_t first = now_ + 100;
  now_ = first;
  Inbox& p0 = ReportEnd(m[0], At(9).Failed("gloo: timed out"));
  now_ += 300;
  Inbox& p1 = ReportEnd(m[1], At(9).Failed("gloo: timed out"));
  // Rank 2's heartbeat thread is alive (it is stuck, not dead) but it never reports.
  now_ = first + 999;
  EXPECT_EQ(Beat(m[2], 1).regroup(), REGROUP_NOW);
  coord_->Tick(now_);
  EXPECT_EQ(J().generation(), 1) << "formed before workers.regroup_window_s";
  EXPECT_TRUE(p0.got.empty());
  EXPECT_TRUE(p1.got.empty());
  EXPECT_EQ(M(m[2]).state(), MEMBER_ACTIVE);

  now_ = first + 1001;
  coord_->Tick(now_);
  EXPECT_EQ(M(m[2]).state(), MEMBER_DEAD);
  EXPECT_NE(M(m[2]).failure_reason().find("did not report the end of generation 1"), npos);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(Placed(p1).world_size(), 2);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_TRUE(Beat(m[2], 1).fenced());
  EXPECT_EQ(CountEvents("member_dead"), 1);
}

TEST_F(MembershipTest, ALaunchersExitReportMakesTheMemberDeadAndFormsOnceTheOthersReported) {
  auto m = Start(ElasticSpec(3, 1, 8));  // pids 1000, 1001, 1002
  // Ranks 0 and 2 saw their collective fail before the launcher's report arrived.
  Inbox& p0 = ReportEnd(m[0], At(9).Failed("gloo: connection closed by peer"));
  Inbox& p2 = ReportEnd(m[2], At(9).Failed("gloo: connection closed by peer"));
  EXPECT_TRUE(p0.got.empty());
  // Another host's process with the same pid, and a pid nobody has, change nothing.
  EXPECT_EQ(ReportExit(1001, "other-host").report_exit().member_id(), "");
  EXPECT_EQ(ReportExit(4242).report_exit().member_id(), "");
  EXPECT_EQ(M(m[1]).state(), MEMBER_ACTIVE);
  // No clock movement: the report alone, not the regroup window, forms generation 2.
  Response r = ReportExit(1001);
  EXPECT_EQ(r.code(), 0) << r.error();
  EXPECT_EQ(r.report_exit().member_id(), m[1]);
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
  EXPECT_NE(M(m[1]).failure_reason().find("killed by signal 9 (reported by its launcher)"), npos);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p2).rank(), 1);
  EXPECT_EQ(Placed(p2).world_size(), 2);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_TRUE(Beat(m[1], 1).fenced());
  // A second report of the same exit is harmless.
  EXPECT_EQ(ReportExit(1001).report_exit().member_id(), "");
  EXPECT_EQ(CountEvents("member_dead"), 1);
}

TEST_F(MembershipTest, AnExitReportedBeforeAnyoneNoticedEndsTheGenerationNow) {
  auto m = Start(ElasticSpec(2, 1, 8));
  EXPECT_EQ(ReportExit(1000).report_exit().member_id(), m[0]);
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
  EXPECT_EQ(Beat(m[1], 1).regroup(), REGROUP_NOW);
  Inbox& p1 = ReportEnd(m[1], At(5).Failed("gloo: aborted"));
  EXPECT_EQ(Placed(p1).rank(), 0);
  EXPECT_EQ(Placed(p1).world_size(), 1);
  EXPECT_EQ(Placed(p1).state_source(), 0);
}

TEST_F(MembershipTest, AMemberThatDiesWhileItsGenerationFormsIsDroppedWithoutATimeout) {
  // The gap the chaos soak found: generation 2 is formed with a member that dies before
  // it builds its communicator. Its launcher's report ends generation 2 at once.
  auto m = Start(ElasticSpec(3, 1, 8));
  Inbox& p0 = ReportEnd(m[0], At(4).Failed("gloo: peer closed"));
  Inbox& p1 = ReportEnd(m[1], At(4).Failed("gloo: peer closed"));
  ReportExit(1002);
  ASSERT_EQ(J().generation(), 2);
  EXPECT_EQ(Placed(p0).world_size(), 2);
  EXPECT_EQ(Placed(p1).world_size(), 2);
  // Rank 1 of generation 2 dies during the rendezvous; its peer's KvGet is aborted.
  Inbox kv;
  coord_->Handle(KvGetRequest("job1/gen-2/rank-1"), now_, kv.Take());
  EXPECT_TRUE(kv.got.empty());
  ReportExit(1001);
  ASSERT_EQ(kv.got.size(), 1u);
  EXPECT_EQ(kv.got[0].code(), static_cast<int>(StatusCode::kAborted));
  Inbox& again = ReportEnd(m[0], At(4).Ended(2).Failed("rendezvous aborted"));
  EXPECT_EQ(Placed(again).generation(), 3);
  EXPECT_EQ(Placed(again).world_size(), 1);
}

TEST_F(MembershipTest, AJoinWhileRunningEntersAtTheNextBoundary) {
  auto m = Start(ElasticSpec(2, 1, 8));
  std::string j = Join();
  Inbox& pj = Poll(j);
  EXPECT_EQ(M(j).state(), MEMBER_REGISTERED);
  EXPECT_EQ(M(j).rank(), -1);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_NE(J().regroup_cause().find(j + " joins"), npos);
  EXPECT_EQ(Beat(m[0], 1).regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_EQ(Beat(m[1], 1).regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_EQ(Beat(j, 0).regroup(), REGROUP_NONE) << "a joiner is in no generation yet";

  // The boundary: both report the same step; rank 0 hands over its ledger.
  Inbox& p0 = ReportEnd(m[0], At(100).With(LedgerTo(100)));
  EXPECT_EQ(LedgerEnd(coord_->LedgerOf(job_)), 100);
  EXPECT_TRUE(pj.got.empty());
  EXPECT_EQ(M(j).state(), MEMBER_REGISTERED);
  EXPECT_EQ(J().generation(), 1);
  Inbox& p1 = ReportEnd(m[1], At(100));

  const Assignment& aj = Placed(pj);
  EXPECT_EQ(aj.generation(), 2);
  EXPECT_EQ(aj.rank(), 2) << "the joiner comes after the survivors";
  EXPECT_EQ(aj.world_size(), 3);
  EXPECT_EQ(aj.state_source(), 0) << "equal steps: the lowest rank is the source";
  EXPECT_EQ(aj.resume_checkpoint(), "");
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(M(j).state(), MEMBER_ACTIVE);
  EXPECT_EQ(M(j).generation(), 2);
  EXPECT_EQ(J().world_size(), 3);
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  EXPECT_EQ(LedgerEnd(coord_->LedgerOf(job_)), 100) << "the source's step: nothing to cut";
}

TEST_F(MembershipTest, ALeaveRequestExitsTheLeaverAtTheBoundary) {
  auto m = Start(ElasticSpec(3, 1, 8));
  EXPECT_EQ(Leave(m[1]).code(), 0);
  EXPECT_EQ(M(m[1]).state(), MEMBER_LEAVING);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_NE(J().regroup_cause().find("leaves"), npos);
  HeartbeatResponse hb = Beat(m[1], 1);
  EXPECT_EQ(hb.regroup(), REGROUP_AT_BOUNDARY) << "the leaver trains on to the boundary";
  EXPECT_FALSE(hb.fenced());

  Inbox& p1 = ReportEnd(m[1], At(20).Leaving());
  Inbox& p0 = ReportEnd(m[0], At(20));
  EXPECT_TRUE(p1.got.empty()) << "the leaver is answered when the next generation forms";
  Inbox& p2 = ReportEnd(m[2], At(20));

  ASSERT_EQ(p1.got.size(), 1u);
  EXPECT_EQ(p1.got[0].code(), 0);
  EXPECT_TRUE(p1.got[0].assignment().exit());
  EXPECT_NE(p1.got[0].assignment().exit_reason().find("left"), npos);
  EXPECT_EQ(M(m[1]).state(), MEMBER_LEFT);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p2).rank(), 1);
  EXPECT_EQ(Placed(p2).world_size(), 2);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(CountEvents("member_left"), 1);
  EXPECT_TRUE(Beat(m[1], 1).fenced());
}

TEST_F(MembershipTest, ALeavingReportWithoutALeaveRequestAlsoLeaves) {
  auto m = Start(ElasticSpec(3, 1, 8));
  // SIGTERM arrived, the LeaveRequest did not: the report says it.
  Inbox& p2 = ReportEnd(m[2], At(30).Leaving());
  EXPECT_EQ(M(m[2]).state(), MEMBER_LEAVING);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_EQ(Beat(m[0], 1).regroup(), REGROUP_AT_BOUNDARY);
  Inbox& p0 = ReportEnd(m[0], At(30));
  Inbox& p1 = ReportEnd(m[1], At(30));
  ASSERT_EQ(p2.got.size(), 1u);
  EXPECT_TRUE(p2.got[0].assignment().exit());
  EXPECT_EQ(M(m[2]).state(), MEMBER_LEFT);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(Placed(p1).world_size(), 2);
  EXPECT_EQ(J().generation(), 2);
}

TEST_F(MembershipTest, ScaleDownMakesTheHighestRanksLeaveAtTheBoundary) {
  auto m = Start(ElasticSpec(4, 1, 8));
  Response s = Scale(2);
  ASSERT_EQ(s.code(), 0) << s.error();
  EXPECT_EQ(s.scale().target_size(), 2);
  EXPECT_EQ(s.scale().active(), 4);
  EXPECT_EQ(J().target_size(), 2);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  EXPECT_EQ(M(m[0]).state(), MEMBER_ACTIVE);
  EXPECT_EQ(M(m[1]).state(), MEMBER_ACTIVE);
  EXPECT_EQ(M(m[2]).state(), MEMBER_LEAVING);
  EXPECT_EQ(M(m[3]).state(), MEMBER_LEAVING);
  EXPECT_EQ(Beat(m[3], 1).regroup(), REGROUP_AT_BOUNDARY);

  std::vector<Inbox*> p;
  for (const std::string& id : m) p.push_back(&ReportEnd(id, At(50)));
  for (int r : {2, 3}) {
    ASSERT_EQ(p[r]->got.size(), 1u);
    EXPECT_TRUE(p[r]->got[0].assignment().exit()) << "rank " << r;
    EXPECT_EQ(M(m[r]).state(), MEMBER_LEFT);
  }
  EXPECT_EQ(Placed(*p[0]).rank(), 0);
  EXPECT_EQ(Placed(*p[1]).rank(), 1);
  EXPECT_EQ(Placed(*p[1]).world_size(), 2);
  EXPECT_EQ(J().world_size(), 2);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(CountEvents("scale"), 1);
  EXPECT_EQ(CountEvents("member_left"), 2);
}

TEST_F(MembershipTest, ScaleUpTakesQueuedJoinersUpToTheTarget) {
  auto m = Start(ElasticSpec(3, 1, 8));
  ASSERT_EQ(Scale(2).code(), 0);
  for (const std::string& id : m) ReportEnd(id, At(10));
  ASSERT_EQ(J().generation(), 2);
  ASSERT_EQ(J().world_size(), 2);

  // The job is at its target: joiners wait without ending the generation.
  std::string j1 = Join(), j2 = Join();
  Inbox& pj1 = Poll(j1);
  Inbox& pj2 = Poll(j2);
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  EXPECT_EQ(M(j1).state(), MEMBER_REGISTERED);
  EXPECT_EQ(M(j2).state(), MEMBER_REGISTERED);
  EXPECT_EQ(CountEvents("queued"), 2);

  Response s = Scale(3);
  ASSERT_EQ(s.code(), 0) << s.error();
  EXPECT_EQ(s.scale().active(), 2);
  EXPECT_EQ(J().target_size(), 3);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  Inbox& p0 = ReportEnd(m[0], At(20).Ended(2));
  Inbox& p1 = ReportEnd(m[1], At(20).Ended(2));
  EXPECT_EQ(J().generation(), 3);
  EXPECT_EQ(J().world_size(), 3);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(Placed(pj1).rank(), 2);
  EXPECT_EQ(Placed(pj1).generation(), 3);
  EXPECT_TRUE(pj2.got.empty()) << "the surplus joiner stays queued";
  EXPECT_EQ(M(j2).state(), MEMBER_REGISTERED);
}

TEST_F(MembershipTest, ScaleRefusesSizesOutsideMinMaxAndEndedJobs) {
  Start(ElasticSpec(2, 2, 4));
  for (int size : {1, 5, 0, -3}) {
    Response r = Scale(size);
    EXPECT_EQ(r.code(), kInvalidArgument) << size;
    EXPECT_NE(r.error().find("[workers.min, workers.max] = [2, 4]"), npos) << r.error();
  }
  EXPECT_EQ(J().target_size(), 0);
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  EXPECT_EQ(CountEvents("scale"), 0);
  Request unknown;
  unknown.mutable_scale()->set_job_id("nope");
  unknown.mutable_scale()->set_size(2);
  EXPECT_EQ(Call(unknown).code(), kNotFound);

  ASSERT_EQ(Cancel().code(), 0);
  Response r = Scale(3);
  EXPECT_EQ(r.code(), kFailedPrecondition);
  EXPECT_NE(r.error().find("has ended"), npos) << r.error();
  EXPECT_EQ(J().target_size(), 0);
}

// A job scaled before it started begins at its target size, not workers.initial.
TEST_F(MembershipTest, ScaleBeforeTheStartFormsTheFirstGenerationAtTheTarget) {
  const std::string job = Submit(ElasticSpec(3, 1, 4));
  Request scale;
  scale.mutable_scale()->set_job_id(job);
  scale.mutable_scale()->set_size(2);
  ASSERT_EQ(Call(scale).code(), 0);
  ASSERT_EQ(Register(job, -1, true).code(), 0);
  EXPECT_EQ(coord_->FindJob(job)->state(), JOB_PENDING);
  ASSERT_EQ(Register(job, -1, true).code(), 0);
  EXPECT_EQ(coord_->FindJob(job)->state(), JOB_RUNNING);
  EXPECT_EQ(coord_->FindJob(job)->world_size(), 2);
}

TEST_F(MembershipTest, BelowMinAJoinerWithinTheGraceSavesTheJob) {
  auto m = Start(ElasticSpec(2, 2, 4));
  KillByTimeout(m[1], {m[0]});
  Inbox& p0 = ReportEnd(m[0], At(10));
  EXPECT_TRUE(p0.got.empty());
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_EQ(J().generation(), 1);
  EXPECT_GT(J().below_min_since_ms(), 0);
  EXPECT_EQ(CountEvents("below_min"), 1);
  AdvanceTo(now_ + 20'000, {m[0]});  // within workers.min_grace_s (30 s)
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_EQ(CountEvents("below_min"), 1) << "said once, not every tick";

  std::string j = Join();
  Inbox& pj = Poll(j);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(J().world_size(), 2);
  EXPECT_EQ(J().below_min_since_ms(), 0);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(pj).rank(), 1);
  EXPECT_EQ(Placed(pj).state_source(), 0);
  AdvanceTo(now_ + 20'000, {m[0], j});
  EXPECT_EQ(J().state(), JOB_RUNNING);
}

TEST_F(MembershipTest, BelowMinWithoutAJoinerFailsAfterTheGrace) {
  auto m = Start(ElasticSpec(2, 2, 4));
  KillByTimeout(m[1], {m[0]});
  Inbox& p0 = ReportEnd(m[0], At(10));
  const int64_t since = J().below_min_since_ms();
  ASSERT_GT(since, 0);
  AdvanceTo(since + 29'999, {m[0]});
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_TRUE(p0.got.empty());
  AdvanceTo(since + 30'500, {m[0]});
  EXPECT_EQ(J().state(), JOB_FAILED);
  EXPECT_NE(J().failure_reason().find("below workers.min 2"), npos) << J().failure_reason();
  EXPECT_NE(J().failure_reason().find("workers.min_grace_s"), npos) << J().failure_reason();
  ASSERT_EQ(p0.got.size(), 1u);
  EXPECT_EQ(p0.got[0].code(), kAborted);
  EXPECT_NE(p0.got[0].error().find("below workers.min"), npos) << p0.got[0].error();
  EXPECT_EQ(CountEvents("failed"), 1);
}

TEST_F(MembershipTest, AFencedMemberIsRefusedEverywhereAndMayRegisterAgain) {
  auto m = Start(ElasticSpec(2, 1, 8));
  KillByTimeout(m[1], {m[0]});
  Inbox& p0 = ReportEnd(m[0], At(12));
  ASSERT_EQ(Placed(p0).generation(), 2);
  ASSERT_EQ(J().world_size(), 1);

  // Rank 1 was only stopped (SIGSTOP), not killed: it comes back.
  HeartbeatResponse hb = Beat(m[1], 1);
  EXPECT_TRUE(hb.fenced());
  EXPECT_NE(hb.fence_reason().find("dead"), npos) << hb.fence_reason();
  EXPECT_EQ(hb.generation(), 2);
  Inbox& stale = ReportEnd(m[1], At(12));
  ASSERT_EQ(stale.got.size(), 1u);
  EXPECT_EQ(stale.got[0].code(), kFailedPrecondition);
  EXPECT_NE(stale.got[0].error().find("fenced"), npos) << stale.got[0].error();
  EXPECT_FALSE(stale.got[0].has_assignment());
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(J().world_size(), 1);

  // Its rendezvous in its old scope is refused, answered at once rather than parked.
  Response set = KvSet("job1/gen-1/rank1", "stale-addr");
  EXPECT_EQ(set.code(), kFailedPrecondition);
  EXPECT_NE(set.error().find("fenced"), npos) << set.error();
  Response get = Call(KvGetRequest("job1/gen-1/rank0"));
  EXPECT_EQ(get.code(), kFailedPrecondition);
  EXPECT_EQ(coord_->kv_waiting(), 0u);

  // So is its checkpoint; the live member's commit in the current generation counts.
  Response commit = Commit(m[1], 1, 12, "/ck/stale");
  EXPECT_EQ(commit.code(), kFailedPrecondition);
  EXPECT_NE(commit.error().find("fenced"), npos) << commit.error();
  EXPECT_EQ(Commit(m[0], 2, 12, "/ck/step-12").code(), 0);
  ASSERT_EQ(coord_->CheckpointsOf(job_).size(), 1u);
  EXPECT_EQ(coord_->CheckpointsOf(job_)[0].path(), "/ck/step-12");

  // It registers again as a new member and joins at the next boundary.
  std::string again = Join();
  EXPECT_NE(again, m[1]);
  Inbox& pa = Poll(again);
  EXPECT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  Inbox& p0b = ReportEnd(m[0], At(30).Ended(2));
  EXPECT_EQ(Placed(p0b).rank(), 0);
  EXPECT_EQ(Placed(pa).rank(), 1);
  EXPECT_EQ(Placed(pa).generation(), 3);
  EXPECT_EQ(Placed(pa).state_source(), 0);
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
}

TEST_F(MembershipTest, APlannedBoundaryDropsTheOldGenerationsKeysWhenTheNextForms) {
  auto store = std::shared_ptr<StateStore>(NewMemoryStore());
  coord_ = std::make_unique<Coordinator>(std::make_unique<SharedStore>(store));
  auto m = Start(ElasticSpec(2, 1, 8));
  ASSERT_EQ(KvSet("job1/gen-1/rank0", "a0").code(), 0);
  ASSERT_EQ(KvSet("job1/gen-1/rank1", "a1").code(), 0);
  Inbox parked;
  coord_->Handle(KvGetRequest("job1/gen-1/never"), now_, parked.Take());
  EXPECT_TRUE(parked.got.empty());

  // A join ends the generation at a boundary: until then its keys still serve.
  Join();
  ASSERT_EQ(J().regroup(), REGROUP_AT_BOUNDARY);
  Response get = Call(KvGetRequest("job1/gen-1/rank0"));
  EXPECT_EQ(get.code(), 0);
  ASSERT_EQ(get.kv_get().values_size(), 1);
  EXPECT_EQ(get.kv_get().values(0), "a0");
  EXPECT_TRUE(parked.got.empty());

  ReportEnd(m[0], At(5));
  ReportEnd(m[1], At(5));
  ASSERT_EQ(J().generation(), 2);
  ASSERT_EQ(parked.got.size(), 1u);
  EXPECT_EQ(parked.got[0].code(), kAborted) << "a rendezvous in the dropped scope can never complete";
  EXPECT_NE(parked.got[0].error().find("dropped"), npos);
  EXPECT_TRUE(store->Scan("kv/job1/gen-1/")->empty()) << "a restarted coordinator would reload them";
  EXPECT_EQ(Call(KvGetRequest("job1/gen-1/rank0")).code(), kFailedPrecondition);
  EXPECT_EQ(KvSet("job1/gen-1/rank0", "a0").code(), kFailedPrecondition);
  EXPECT_EQ(KvSet("job1/gen-2/rank0", "b0").code(), 0);
  EXPECT_EQ(store->Scan("kv/job1/gen-2/")->size(), 1u);
}

TEST_F(MembershipTest, AFailureDropsTheEndingGenerationsKeysAtOnce) {
  auto store = std::shared_ptr<StateStore>(NewMemoryStore());
  coord_ = std::make_unique<Coordinator>(std::make_unique<SharedStore>(store));
  auto m = Start(ElasticSpec(3, 1, 8));
  ASSERT_EQ(KvSet("job1/gen-1/rank0", "a0").code(), 0);
  Inbox parked;  // rank 1 builds its communicator and waits for rank 2's address
  coord_->Handle(KvGetRequest("job1/gen-1/rank2"), now_, parked.Take());
  ReportEnd(m[0], At(3).Failed("nccl: remote process exited"));
  EXPECT_EQ(J().generation(), 1);
  ASSERT_EQ(parked.got.size(), 1u);
  EXPECT_EQ(parked.got[0].code(), kAborted);
  EXPECT_TRUE(store->Scan("kv/job1/gen-1/")->empty());
}

TEST_F(MembershipTest, NoMemberHoldsStateResumesFromTheLatestCheckpoint) {
  auto m = Start(ElasticSpec(2, 2, 4));
  // Rank 0 heartbeats its ledger to step 300; checkpoints of steps 100 and 200 commit.
  Ledger ledger = LedgerTo(300);
  Beat(m[0], 1, &ledger);
  ASSERT_EQ(LedgerEnd(coord_->LedgerOf(job_)), 300);
  ASSERT_EQ(Commit(m[0], 1, 100, "/ck/job1/step-100").code(), 0);
  ASSERT_EQ(Commit(m[0], 1, 200, "/ck/job1/step-200").code(), 0);

  // Every member dies; replacements join with no state.
  AdvanceTo(now_ + TimeoutMs() + 500, {});
  EXPECT_EQ(M(m[0]).state(), MEMBER_DEAD);
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
  EXPECT_EQ(CountEvents("below_min"), 1);
  std::string j0 = Join();
  Inbox& p0 = Poll(j0);
  EXPECT_TRUE(p0.got.empty()) << "one joiner is below workers.min 2";
  std::string j1 = Join();
  Inbox& p1 = Poll(j1);
  for (Inbox* p : {&p0, &p1}) {
    const Assignment& a = Placed(*p);
    EXPECT_EQ(a.generation(), 2);
    EXPECT_EQ(a.world_size(), 2);
    EXPECT_EQ(a.state_source(), -1);
    EXPECT_EQ(a.resume_checkpoint(), "/ck/job1/step-200");
  }
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p1).rank(), 1);
  const Ledger cut = coord_->LedgerOf(job_);
  EXPECT_EQ(LedgerEnd(cut), 200) << "the steps after the checkpoint are lost";
  ASSERT_EQ(cut.ranges_size(), 1);
  EXPECT_EQ(cut.ranges(0).cursor_end(), 200 * kBatch);
  EXPECT_EQ(CountEvents("rollback"), 1);
  EXPECT_NE(LastEventDetail("rollback").find("checkpoint step 200"), npos) << LastEventDetail("rollback");
}

TEST_F(MembershipTest, NoMemberHoldsStateAndNoCheckpointStartsOver) {
  auto m = Start(ElasticSpec(2, 1, 4));
  Ledger ledger = LedgerTo(80);
  Beat(m[0], 1, &ledger);
  ASSERT_EQ(LedgerEnd(coord_->LedgerOf(job_)), 80);
  AdvanceTo(now_ + TimeoutMs() + 500, {});
  ASSERT_EQ(M(m[0]).state(), MEMBER_DEAD);
  ASSERT_EQ(M(m[1]).state(), MEMBER_DEAD);
  std::string j = Join();
  Inbox& pj = Poll(j);
  const Assignment& a = Placed(pj);
  EXPECT_EQ(a.generation(), 2);
  EXPECT_EQ(a.rank(), 0);
  EXPECT_EQ(a.world_size(), 1);
  EXPECT_EQ(a.state_source(), -1);
  EXPECT_EQ(a.resume_checkpoint(), "");
  EXPECT_EQ(coord_->LedgerOf(job_).ranges_size(), 0);
  EXPECT_EQ(LedgerEnd(coord_->LedgerOf(job_)), 0);
  EXPECT_EQ(CountEvents("rollback"), 1);
  EXPECT_NE(LastEventDetail("rollback").find("step 0"), npos) << LastEventDetail("rollback");
}

TEST_F(MembershipTest, AFixedMembershipJobKeepsTheOldRules) {
  JobSpec spec = ElasticSpec(2, 1, 8);
  spec.mutable_workers()->set_max_restarts(0);  // no whole-job restart: a failure ends it
  job_ = Submit(spec);
  // One worker whose backend cannot regroup (mpi) fixes the job's membership.
  std::string m0 = Register(job_, -1, /*elastic=*/true).register_().member_id();
  std::string m1 = Register(job_, -1, /*elastic=*/false).register_().member_id();
  ASSERT_EQ(J().state(), JOB_RUNNING);
  EXPECT_TRUE(J().fixed_membership());

  Response late = Register(job_, -1, /*elastic=*/true);
  EXPECT_EQ(late.code(), kFailedPrecondition);
  EXPECT_NE(late.error().find("fixed membership"), npos) << late.error();
  Response scale = Scale(2);
  EXPECT_EQ(scale.code(), kFailedPrecondition);
  EXPECT_NE(scale.error().find("cannot regroup"), npos) << scale.error();
  Response leave = Leave(m0);
  EXPECT_EQ(leave.code(), kFailedPrecondition);
  EXPECT_EQ(M(m0).state(), MEMBER_ACTIVE);
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  EXPECT_EQ(J().target_size(), 0);

  KillByTimeout(m1, {m0});
  EXPECT_EQ(J().state(), JOB_FAILED);
  EXPECT_NE(J().failure_reason().find(m1), npos) << J().failure_reason();
  EXPECT_NE(J().failure_reason().find("cannot regroup"), npos) << J().failure_reason();
  EXPECT_NE(J().failure_reason().find("restart(s) (workers.max_restarts) are used up"), npos) << J().failure_reason();
  EXPECT_EQ(J().generation(), 1);
  EXPECT_EQ(CountEvents("generation_ending"), 0);
  Inbox& p0 = Poll(m0);
  ASSERT_EQ(p0.got.size(), 1u);
  EXPECT_EQ(p0.got[0].code(), kAborted);
}

// A coordinator restart: the second process Loads what the first stored in RocksDB.
class MembershipRestartTest : public MembershipTest {
 protected:
  std::string dir_;
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("shoal-membership-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
    Open();
  }
  void TearDown() override {
    coord_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    auto store = OpenRocksStore(dir_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    coord_ = std::make_unique<Coordinator>(std::move(*store));
  }
  // The old process dies with its parked polls; the new one loads the state.
  void Restart() {
    coord_.reset();  // releases the RocksDB lock
    Open();
    Status s = coord_->Load(now_);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
};

TEST_F(MembershipRestartTest, ReportsRecordedBeforeTheRestartStillCount) {
  auto m = Start(ElasticSpec(3, 1, 8));
  KillByTimeout(m[2], {m[0], m[1]});
  Inbox& lost = ReportEnd(m[0], At(50));  // the furthest
  EXPECT_TRUE(lost.got.empty());
  now_ += 200;
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(J().generation(), 1);
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
  EXPECT_EQ(M(m[0]).reported_generation(), 1);
  EXPECT_EQ(M(m[2]).state(), MEMBER_DEAD);

  // Rank 1's report completes the regroup: rank 0's stored report counts.
  Inbox& p1 = ReportEnd(m[1], At(49));
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(J().world_size(), 2);
  EXPECT_EQ(Placed(p1).rank(), 1);
  EXPECT_EQ(Placed(p1).state_source(), 0) << "rank 0's step 50, reported before the restart";
  // Rank 0 repeats its unanswered report to the new process and gets its place.
  Inbox& p0 = ReportEnd(m[0], At(50));
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(Placed(p0).generation(), 2);
}

TEST_F(MembershipRestartTest, TheRegroupWindowRunsAgainAfterTheRestart) {
  auto m = Start(ElasticSpec(3, 1, 8));
  ReportEnd(m[0], At(8).Failed("gloo: timed out"));
  now_ += 200;
  ReportEnd(m[1], At(8).Failed("gloo: timed out"));
  now_ += 200;
  ASSERT_NO_FATAL_FAILURE(Restart());
  // Rank 0 repeats its report; rank 1's, stored, is not repeated; rank 2 never reports.
  const int64_t again = now_;
  Inbox& p0 = ReportEnd(m[0], At(8).Failed("gloo: timed out"));
  AdvanceTo(again + 999, {m[0], m[1], m[2]});
  EXPECT_EQ(J().generation(), 1);
  EXPECT_TRUE(p0.got.empty());
  AdvanceTo(again + 1'500, {m[0], m[1], m[2]});
  EXPECT_EQ(M(m[2]).state(), MEMBER_DEAD);
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(J().world_size(), 2);
  EXPECT_EQ(Placed(p0).rank(), 0);
  EXPECT_EQ(M(m[1]).rank(), 1);
  EXPECT_EQ(M(m[1]).generation(), 2);
}

// The heartbeat timeout is measured on the clock passed in (the fake one starts in
// 1970, so a wall-clock reading would declare everyone dead at once), and a member is
// dead only once strictly more than workers.heartbeat_timeout_s has passed.
class HeartbeatTimeoutTest : public MembershipTest, public ::testing::WithParamInterface<double> {};

TEST_P(HeartbeatTimeoutTest, AMemberIsDeadOnlyPastTheTimeout) {
  JobSpec spec = ElasticSpec(2, 1, 8);
  spec.mutable_workers()->set_heartbeat_timeout_s(GetParam());
  auto m = Start(spec);
  const int64_t last = M(m[1]).last_heartbeat_ms();
  // The timeout in whole milliseconds, as the spec states it (2.01 s is 2010 ms).
  const int64_t timeout_ms = std::llround(GetParam() * 1000);
  now_ = last + timeout_ms - 1;
  Beat(m[0], 1);
  coord_->Tick(now_);
  now_ = last + timeout_ms;
  Beat(m[0], 1);
  coord_->Tick(now_);
  EXPECT_EQ(M(m[1]).state(), MEMBER_ACTIVE) << "declared dead at exactly the timeout, " << timeout_ms << " ms";
  EXPECT_EQ(J().regroup(), REGROUP_NONE);
  now_ += 1;
  coord_->Tick(now_);
  EXPECT_EQ(M(m[1]).state(), MEMBER_DEAD);
  EXPECT_EQ(M(m[0]).state(), MEMBER_ACTIVE);
  EXPECT_EQ(J().regroup(), REGROUP_NOW);
}

INSTANTIATE_TEST_SUITE_P(Timeouts, HeartbeatTimeoutTest, ::testing::Values(5.0, 2.01, 1.005, 0.8));

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

// mpi cannot regroup: a failure lets every member go, a whole new launch registers
// (ranks in launcher order) and resumes from the latest checkpoint; the budget is
// workers.max_restarts, then the job fails.
TEST_F(MembershipTest, AFixedMembershipJobRestartsWholeFromTheLatestCheckpoint) {
  JobSpec spec = ElasticSpec(2, 1, 8);
  spec.mutable_workers()->set_max_restarts(1);
  job_ = Submit(spec);
  std::string m0 = Register(job_, 0, false).register_().member_id();
  std::string m1 = Register(job_, 1, false).register_().member_id();
  ASSERT_EQ(J().state(), JOB_RUNNING);
  ASSERT_TRUE(J().fixed_membership());
  ASSERT_EQ(Commit(m0, 1, 100, "/ck/step-100").code(), 0);

  KillByTimeout(m1, {m0});
  EXPECT_EQ(J().state(), JOB_RUNNING);
  EXPECT_EQ(J().restarts(), 1);
  EXPECT_EQ(M(m0).state(), MEMBER_DEAD) << "every member of the old launch goes";
  EXPECT_EQ(M(m1).state(), MEMBER_DEAD);
  EXPECT_EQ(CountEvents("restart"), 1);

  // The new launch registers in any order; ranks follow its launcher ranks.
  std::string n1 = Register(job_, 1, false).register_().member_id();
  EXPECT_EQ(J().generation(), 1) << "waits for the whole launch";
  std::string n0 = Register(job_, 0, false).register_().member_id();
  EXPECT_EQ(J().generation(), 2);
  EXPECT_EQ(M(n0).rank(), 0);
  EXPECT_EQ(M(n1).rank(), 1);
  Inbox& p = Poll(n0);
  ASSERT_EQ(p.got.size(), 1u);
  EXPECT_EQ(p.got[0].assignment().state_source(), -1);
  EXPECT_EQ(p.got[0].assignment().resume_checkpoint(), "/ck/step-100");

  // The budget is spent: the next failure ends the job.
  KillByTimeout(n1, {n0});
  EXPECT_EQ(J().state(), JOB_FAILED);
  EXPECT_NE(J().failure_reason().find("used up"), npos) << J().failure_reason();
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {

// A job resumed from another job's checkpoint keeps a ledger that starts at the
// checkpoint's step (found by the goodput benchmark: it was refused as malformed).
TEST(LedgerBookTest, AResumedJobsLedgerMayStartAtItsCheckpointStep) {
  auto store = NewMemoryStore();
  LedgerBook book(store.get());
  Ledger l;
  LedgerRange* r = l.add_ranges();
  r->set_step_begin(600);
  r->set_step_end(700);
  r->set_epoch(1);
  r->set_cursor_begin(100);
  r->set_cursor_end(200);
  r->set_batch(1);
  ASSERT_TRUE(book.Offer("j", l).ok());
  EXPECT_EQ(LedgerEnd(book.Of("j")), 700);
  Ledger gap = l;
  gap.mutable_ranges(0)->set_step_end(800);
  LedgerRange* bad = gap.add_ranges();  // not adjacent: refused
  bad->set_step_begin(900);
  bad->set_step_end(901);
  bad->set_batch(1);
  EXPECT_EQ(book.Offer("j", gap).code(), StatusCode::kInvalidArgument);
  Ledger other = l;  // a different start than the stored one: refused
  other.mutable_ranges(0)->set_step_begin(500);
  other.mutable_ranges(0)->set_step_end(800);
  EXPECT_EQ(book.Offer("j", other).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace shoal
