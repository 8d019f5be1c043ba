// Coordinator tests. The core is driven directly with a fake clock (Ray-style: no
// sleeps); then the real thing: ZeroMQ server + client, and a RocksDB-backed restart.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>

#include "coordinator/client.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/usage.h"
#include "coordinator/registry.h"
#include "coordinator/server.h"
#include "spec/jobspec_loader.h"

namespace shoal {
namespace {

using coordinator_test::CoordinatorCoreTest;
using coordinator_test::Inbox;
using coordinator_test::TwoWorkerSpec;

TEST_F(CoordinatorCoreTest, FormsGenerationOneWhenInitialWorkersJoin) {
  std::string job = Submit(TwoWorkerSpec());
  EXPECT_EQ(coord_->FindJob(job)->state(), JOB_PENDING);
  Response a = Register(job, 1);
  ASSERT_EQ(a.code(), 0);
  Inbox inbox_a, inbox_b;
  coord_->Handle(Await(a.register_().member_id()), now_, inbox_a.Take());
  EXPECT_TRUE(inbox_a.got.empty()) << "answered before the generation formed";
  // b's registration forms the generation and answers a's parked poll; b's own poll
  // comes after and is answered at once.
  Response b = Register(job, 0);
  EXPECT_EQ(inbox_a.got.size(), 1u);
  coord_->Handle(Await(b.register_().member_id()), now_, inbox_b.Take());
  ASSERT_EQ(inbox_a.got.size(), 1u);
  ASSERT_EQ(inbox_b.got.size(), 1u);
  const Assignment& aa = inbox_a.got[0].assignment();
  EXPECT_EQ(inbox_a.got[0].id(), 77u);
  EXPECT_EQ(aa.generation(), 1);
  EXPECT_EQ(aa.world_size(), 2);
  EXPECT_EQ(aa.rank(), 1) << "launcher rank order decides ranks";
  EXPECT_EQ(inbox_b.got[0].assignment().rank(), 0);
  EXPECT_EQ(aa.kv_prefix(), "job1/gen-1/");
  EXPECT_EQ(coord_->FindJob(job)->state(), JOB_RUNNING);
  // A third worker cannot join a running fixed-membership job.
  Response late = Register(job);
  EXPECT_EQ(late.code(), static_cast<int>(StatusCode::kFailedPrecondition));
}

TEST_F(CoordinatorCoreTest, UnknownJobAndBadSpecAreRefused) {
  Response r = Register("nope");
  EXPECT_EQ(r.code(), static_cast<int>(StatusCode::kNotFound));
  EXPECT_NE(r.error().find("unknown job 'nope'"), std::string::npos);
  JobSpec bad = TwoWorkerSpec();
  bad.mutable_training()->set_batch_per_worker(-1);
  Request req;
  *req.mutable_submit()->mutable_spec() = bad;
  Response resp = Call(req);
  EXPECT_EQ(resp.code(), static_cast<int>(StatusCode::kInvalidArgument));
  EXPECT_NE(resp.error().find("batch_per_worker"), std::string::npos);
}

TEST_F(CoordinatorCoreTest, CompletesWhenAllFinishAndRank0ResultIsKept) {
  std::string job = Submit(TwoWorkerSpec());
  std::string m0 = Register(job).register_().member_id();
  std::string m1 = Register(job).register_().member_id();
  for (auto& m : {m0, m1}) {
    Request r;
    r.mutable_finish()->set_member_id(m);
    r.mutable_finish()->set_success(true);
    r.mutable_finish()->mutable_result()->set_final_test_accuracy(m == m0 ? 0.9 : 0.1);
    EXPECT_EQ(Call(r).code(), 0);
  }
  EXPECT_EQ(coord_->FindJob(job)->state(), JOB_COMPLETED);
  EXPECT_DOUBLE_EQ(coord_->FindJob(job)->result().final_test_accuracy(), 0.9);
}

// Members that cannot regroup (elastic=false, as for mpi) and no restarts left: a
// silent member fails the job. (Elastic jobs regroup: membership_test.cc.)
TEST_F(CoordinatorCoreTest, SilentMemberIsDeadAndFailsAFixedJobWithoutRestarts) {
  JobSpec spec = TwoWorkerSpec();
  spec.mutable_workers()->set_max_restarts(0);
  std::string job = Submit(spec);
  std::string m0 = Register(job).register_().member_id();
  std::string m1 = Register(job).register_().member_id();
  for (int i = 0; i < 20; ++i) {  // m0 keeps heartbeating, m1 goes silent
    now_ += 500;
    EXPECT_EQ(Heartbeat(m0, i).code(), 0);
    coord_->Tick(now_);
  }
  const Job* j = coord_->FindJob(job);
  EXPECT_EQ(j->state(), JOB_FAILED);
  EXPECT_NE(j->failure_reason().find(m1), std::string::npos);
  EXPECT_EQ(Heartbeat(m0, 21).heartbeat().job_state(), JOB_FAILED) << "survivors learn the job ended";
}

TEST_F(CoordinatorCoreTest, CancelAnswersParkedAwaits) {
  JobSpec spec = TwoWorkerSpec();
  spec.mutable_workers()->set_initial(3);
  std::string job = Submit(spec);
  std::string m0 = Register(job).register_().member_id();
  Inbox inbox;
  coord_->Handle(Await(m0), now_, inbox.Take());
  Request c;
  c.mutable_cancel()->set_job_id(job);
  EXPECT_EQ(Call(c).cancel().state(), JOB_CANCELLED);
  ASSERT_EQ(inbox.got.size(), 1u);
  EXPECT_EQ(inbox.got[0].code(), static_cast<int>(StatusCode::kAborted));
}

TEST_F(CoordinatorCoreTest, KvGetIsALongPollWithDeadline) {
  Inbox waiting, expired;
  Request get;
  get.mutable_kv_get()->add_keys("j/gen-1/a");
  get.mutable_kv_get()->set_timeout_ms(1000);
  coord_->Handle(get, now_, waiting.Take());
  Request get2;
  get2.mutable_kv_get()->add_keys("j/gen-1/never");
  get2.mutable_kv_get()->set_timeout_ms(1000);
  coord_->Handle(get2, now_, expired.Take());
  EXPECT_TRUE(waiting.got.empty());
  Request set;
  set.mutable_kv_set()->set_key("j/gen-1/a");
  set.mutable_kv_set()->set_value("addr");
  EXPECT_EQ(Call(set).code(), 0);
  ASSERT_EQ(waiting.got.size(), 1u);
  EXPECT_EQ(waiting.got[0].kv_get().values(0), "addr");
  coord_->Tick(now_ + 999);
  EXPECT_TRUE(expired.got.empty());
  coord_->Tick(now_ + 1001);
  ASSERT_EQ(expired.got.size(), 1u);
  EXPECT_EQ(expired.got[0].code(), static_cast<int>(StatusCode::kDeadlineExceeded));
  EXPECT_NE(expired.got[0].error().find("never"), std::string::npos);
}

// The real thing: a ZeroMQ server with RocksDB state, a client over TCP, a restart.
TEST(CoordinatorServerTest, RestartedCoordinatorStillListsTheJob) {
  std::string dir = (std::filesystem::temp_directory_path() / ("shoal-coord-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  ServerOptions opts;
  opts.bind = "tcp://127.0.0.1:*";
  opts.state_dir = dir;
  std::string job_id;
  {
    auto server = CoordinatorServer::Create(opts);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    (*server)->Start();
    ControlClient client((*server)->endpoint());
    Request r;
    *r.mutable_submit()->mutable_spec() = TwoWorkerSpec();
    auto resp = client.Call(r, std::chrono::seconds(5));
    ASSERT_TRUE(resp.ok()) << resp.status().ToString();
    job_id = resp->submit().job_id();
    // A second coordinator on the same state dir is refused while the first runs.
    auto second = CoordinatorServer::Create(opts);
    EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  }
  auto server = CoordinatorServer::Create(opts);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  (*server)->Start();
  ControlClient client((*server)->endpoint());
  Request st;
  st.mutable_status();
  auto resp = client.Call(st, std::chrono::seconds(5));
  ASSERT_TRUE(resp.ok());
  ASSERT_EQ(resp->status().jobs_size(), 1);
  EXPECT_EQ(resp->status().jobs(0).id(), job_id);
  EXPECT_EQ(resp->status().jobs(0).state(), JOB_PENDING);
  std::filesystem::remove_all(dir);
}

TEST(ControlClientTest, UnreachableCoordinatorTimesOutWithAClearError) {
  ControlClient client("tcp://127.0.0.1:1");
  Request st;
  st.mutable_status();
  auto resp = client.Call(st, std::chrono::milliseconds(300));
  EXPECT_EQ(resp.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(resp.status().message().find("tcp://127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace shoal

namespace shoal {
namespace {
using coordinator_test::CoordinatorCoreTest;
TEST_F(CoordinatorCoreTest, CheckpointRegistryRecordsCommitsAndStatusShowsTheLatest) {
  std::string job = Submit(TwoWorkerSpec());
  for (int step : {100, 200}) {
    Request r;
    CheckpointRecord* rec = r.mutable_checkpoint_commit()->mutable_record();
    rec->set_job_id(job);
    rec->set_step(step);
    rec->set_path("/ck/" + job + "/step-" + std::to_string(step));
    rec->set_manifest_digest(std::string(64, 'a' + step / 100));
    rec->set_signer_key_id("k1");
    EXPECT_EQ(Call(r).code(), 0);
  }
  Request bad;
  bad.mutable_checkpoint_commit()->mutable_record()->set_job_id(job);
  EXPECT_EQ(Call(bad).code(), static_cast<int>(StatusCode::kInvalidArgument));
  Request st;
  st.mutable_status()->set_job_id(job);
  Response resp = Call(st);
  ASSERT_EQ(resp.status().latest_checkpoints_size(), 1);
  EXPECT_EQ(resp.status().latest_checkpoints(0).step(), 200);
  Request list;
  list.mutable_checkpoint_list()->set_job_id(job);
  EXPECT_EQ(Call(list).checkpoint_list().records_size(), 2);
}
}  // namespace
}  // namespace shoal

// Stored state is input too: Load refuses corrupt entries with kDataLoss naming the key,
// instead of accepting a state the handlers later crash on. tests/fuzz's
// fuzz_coordinator_state found the first (a member without its job); the others came
// from reading what the handlers assume while writing it.
namespace shoal {
namespace {

using coordinator_test::Inbox;
using coordinator_test::TwoWorkerSpec;
using Entries = std::map<std::string, std::string>;

// A consistent state as a coordinator writes it: job1 running generation 1 with
// members job1/m0 and job1/m1, a checkpoint and a ledger.
Entries GoodState() {
  Entries e;
  Job job;
  job.set_id("job1");
  *job.mutable_spec() = TwoWorkerSpec();
  job.set_state(JOB_RUNNING);
  job.set_generation(1);
  job.set_world_size(2);
  e["job/job1"] = job.SerializeAsString();
  Generation gen;
  gen.set_job_id("job1");
  gen.set_number(1);
  gen.set_state_source(-1);
  for (int k = 0; k < 2; ++k) {
    Member m;
    m.set_id("job1/m" + std::to_string(k));
    m.set_job_id("job1");
    m.set_state(MEMBER_ACTIVE);
    m.set_generation(1);
    m.set_rank(k);
    e["member/job1/" + m.id()] = m.SerializeAsString();
    gen.add_member_ids(m.id());
  }
  e["gen/job1/0000000001"] = gen.SerializeAsString();
  CheckpointRecord ck;
  ck.set_job_id("job1");
  ck.set_step(100);
  ck.set_manifest_digest(std::string(64, 'a'));
  e["ckpt/job1/000000000100"] = ck.SerializeAsString();
  Ledger ledger;
  LedgerRange* r = ledger.add_ranges();
  r->set_step_begin(0);
  r->set_step_end(100);
  r->set_cursor_end(6400);
  r->set_batch(64);
  e["ledger/job1"] = ledger.SerializeAsString();
  e["kv/job1/gen-1/addr"] = "10.0.0.1:4000";
  e["meta/next_event_seq"] = "7";
  return e;
}

std::unique_ptr<Coordinator> Loaded(const Entries& entries, Status* status) {
  auto store = NewMemoryStore();
  for (const auto& [k, v] : entries) EXPECT_TRUE(store->Put(k, v).ok());
  auto coord = std::make_unique<Coordinator>(std::move(store));
  *status = coord->Load(1'000'000);
  return coord;
}

// Load refuses `entries` with kDataLoss whose message names `key`.
void ExpectRefused(const Entries& entries, const std::string& key) {
  Status s;
  Loaded(entries, &s);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.message().find(key), std::string::npos) << s.ToString();
}

template <typename Proto>
std::string Edited(const std::string& bytes, const std::function<void(Proto&)>& edit) {
  Proto p;
  EXPECT_TRUE(p.ParseFromString(bytes));
  edit(p);
  return p.SerializeAsString();
}

TEST(CoordinatorLoadTest, AcceptsAConsistentStateAndRunsOnIt) {
  Status s;
  auto coord = Loaded(GoodState(), &s);
  ASSERT_TRUE(s.ok()) << s.ToString();
  Request hb;
  hb.mutable_heartbeat()->set_member_id("job1/m1");
  hb.mutable_heartbeat()->set_generation(1);
  Inbox inbox;
  coord->Handle(hb, 1'000'100, inbox.Take());
  ASSERT_EQ(inbox.got.size(), 1u);
  EXPECT_EQ(inbox.got[0].code(), 0) << inbox.got[0].error();
  EXPECT_EQ(inbox.got[0].heartbeat().job_state(), JOB_RUNNING);
}

// Every handler finds a member's job with jobs_.at(): a member whose job entry is gone
// made the member's first heartbeat throw std::out_of_range.
TEST(CoordinatorLoadTest, LoadRefusesMemberOfUnknownJob) {
  Entries e = GoodState();
  e.erase("job/job1");
  e.erase("gen/job1/0000000001");
  ExpectRefused(e, "member/job1/job1/m0");
}

// Member ids are "<job>/m<k>"; the index k sets the next registration's, so
// "job1/m2147483647" made k + 1 overflow.
TEST(CoordinatorLoadTest, LoadRefusesMalformedMemberIds) {
  for (const std::string id : {"job1/x0", "job1/m", "job1/m-1", "job1/m01", "job1/m2147483647", "other/m3"}) {
    Entries e = GoodState();
    e["member/job1/" + id] = Edited<Member>(e["member/job1/job1/m0"], [&](Member& m) { m.set_id(id); });
    SCOPED_TRACE(id);
    ExpectRefused(e, "member/job1/" + id);
  }
  Entries e = GoodState();  // stored under another member's key
  e["member/job1/job1/m0"] = e["member/job1/job1/m1"];
  ExpectRefused(e, "member/job1/job1/m0");
}

// A spec Submit would refuse: workers.initial -1 sized a vector with resize(-1) at the
// next registration (std::length_error).
TEST(CoordinatorLoadTest, LoadRefusesJobWhoseSpecIsInvalid) {
  Entries e = GoodState();
  e["job/job1"] = Edited<Job>(e["job/job1"], [](Job& j) {
    j.set_state(JOB_PENDING);
    j.mutable_spec()->mutable_workers()->set_initial(-1);
  });
  ExpectRefused(e, "job/job1");
  e = GoodState();
  e["job/job1"] = Edited<Job>(e["job/job1"], [](Job& j) { j.set_id("job2"); });  // under another job's key
  ExpectRefused(e, "job/job1");
}

// Numbers the coordinator adds to: generation + 1 at the next regroup, now -
// below_min_since_ms, the event counter + 1. Near the int64 limits they overflowed.
TEST(CoordinatorLoadTest, LoadRefusesNumbersThatWouldOverflow) {
  Entries e = GoodState();
  e["job/job1"] = Edited<Job>(e["job/job1"], [](Job& j) { j.set_generation(INT64_MAX); });
  ExpectRefused(e, "job/job1");
  e = GoodState();
  e["job/job1"] = Edited<Job>(e["job/job1"], [](Job& j) { j.set_below_min_since_ms(INT64_MIN); });
  ExpectRefused(e, "job/job1");
  for (const std::string seq : {"9223372036854775807", "0", "12abc", ""}) {
    e = GoodState();
    e["meta/next_event_seq"] = seq;
    ExpectRefused(e, "meta/next_event_seq");
  }
}

TEST(CoordinatorLoadTest, LoadRefusesGenerationsOfUnknownMembers) {
  Entries e = GoodState();
  e["gen/job1/0000000001"] =
      Edited<Generation>(e["gen/job1/0000000001"], [](Generation& g) { g.add_member_ids("job1/m9"); });
  ExpectRefused(e, "gen/job1/0000000001");
  e = GoodState();
  e["gen/job1/0000000001"] = Edited<Generation>(e["gen/job1/0000000001"], [](Generation& g) { g.set_state_source(2); });
  ExpectRefused(e, "gen/job1/0000000001");
  e = GoodState();  // a generation the job has not reached
  e["gen/job1/0000000002"] = Edited<Generation>(e["gen/job1/0000000001"], [](Generation& g) { g.set_number(2); });
  ExpectRefused(e, "gen/job1/0000000002");
  e = GoodState();
  e["gen/job1/0000000001"] = "\xff\xff";
  ExpectRefused(e, "gen/job1/0000000001");
}

TEST(CoordinatorLoadTest, LoadRefusesCorruptCheckpointAndLedgerEntries) {
  Entries e = GoodState();
  e["ckpt/job1/000000000100"] = "\xff\xff";
  ExpectRefused(e, "ckpt/job1/000000000100");
  e = GoodState();  // stored under another step's key
  e["ckpt/job1/000000000200"] = e["ckpt/job1/000000000100"];
  ExpectRefused(e, "ckpt/job1/000000000200");
  e = GoodState();
  e["ledger/job1"] = "\xff\xff";
  ExpectRefused(e, "ledger/job1");
  e = GoodState();
  e["ledger/job1"] = Edited<Ledger>(e["ledger/job1"], [](Ledger& l) { l.mutable_ranges(0)->set_batch(int64_t{1} << 62); });
  ExpectRefused(e, "ledger/job1");
}

// A ledger range whose batch x steps overflows int64: the cut at the next rollback
// (LedgerBefore) computed cursor_begin + batch * steps, undefined behaviour.
TEST(LedgerBookTest, LedgerWithOverflowingBatchIsRefused) {
  auto store = NewMemoryStore();
  LedgerBook book(store.get());
  Ledger l;
  LedgerRange* r = l.add_ranges();
  r->set_step_begin(0);
  r->set_step_end(100);
  r->set_cursor_end(100);
  r->set_batch(int64_t{1} << 62);
  EXPECT_EQ(book.Offer("j", l).code(), StatusCode::kInvalidArgument);
  r->set_batch(-1);
  EXPECT_EQ(book.Offer("j", l).code(), StatusCode::kInvalidArgument);
  r->set_batch(1);
  EXPECT_TRUE(book.Offer("j", l).ok());
  Ledger negative = l;  // a ledger starting before step 0
  negative.mutable_ranges(0)->set_step_begin(-5);
  EXPECT_EQ(book.Offer("j", negative).code(), StatusCode::kInvalidArgument);
}


// Cost attribution: each job's usage is its members' last cumulative figures, and
// `usage --by team` sums the jobs of each team (two teams, three jobs).
TEST_F(CoordinatorCoreTest, UsageSumsMembersPerJobAndJobsPerTeam) {
  auto run_job = [&](const std::string& id, const std::string& team, std::vector<double> cpu, bool energy_known) {
    JobSpec spec = TwoWorkerSpec();
    (*spec.mutable_labels())["team"] = team;
    Request r;
    *r.mutable_submit()->mutable_spec() = spec;
    r.mutable_submit()->set_job_id(id);
    ASSERT_EQ(Call(r).code(), 0);
    Inbox inbox;
    std::vector<std::string> members;
    for (int i = 0; i < 2; ++i) {
      members.push_back(Register(id, -1, true, 10 + i).register_().member_id());
      coord_->Handle(Await(members.back()), now_, inbox.Take());
    }
    now_ += 5000;
    for (int i = 0; i < 2; ++i) {
      Request hb;
      hb.mutable_heartbeat()->set_member_id(members[i]);
      hb.mutable_heartbeat()->set_generation(1);
      WorkerMetrics* m = hb.mutable_heartbeat()->mutable_metrics();
      m->set_step(10);
      m->set_cpu_seconds(cpu[i]);
      m->set_cpu_energy_joules(energy_known ? 100 * cpu[i] : 0);
      m->set_cpu_energy_known(energy_known);
      m->set_gpu_seconds(1);
      ASSERT_EQ(Call(hb).code(), 0);
    }
  };
  run_job("a1", "vision", {3, 4}, true);
  run_job("a2", "vision", {10, 20}, true);
  run_job("b1", "speech", {0.5, 1.5}, false);
  Request st;
  st.mutable_status();
  const StatusResponse status = Call(st).status();
  ASSERT_EQ(status.jobs_size(), 3);
  for (const Job& j : status.jobs()) {
    if (j.id() == "a1") {
      EXPECT_DOUBLE_EQ(j.usage().cpu_seconds(), 7);
      EXPECT_DOUBLE_EQ(j.usage().energy_joules(), 700);
      EXPECT_TRUE(j.usage().energy_known());
      EXPECT_DOUBLE_EQ(j.usage().gpu_seconds(), 2);
      EXPECT_GT(j.usage().wall_seconds(), 0);
    }
  }
  const auto rows = GroupUsage(status, "team", 0);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].key, "speech");
  EXPECT_EQ(rows[0].jobs, 1);
  EXPECT_DOUBLE_EQ(rows[0].usage.cpu_seconds(), 2);
  EXPECT_FALSE(rows[0].usage.energy_known()) << "a member without RAPL: unknown, not 0";
  EXPECT_EQ(rows[1].key, "vision");
  EXPECT_EQ(rows[1].jobs, 2);
  EXPECT_DOUBLE_EQ(rows[1].usage.cpu_seconds(), 37);
  EXPECT_DOUBLE_EQ(rows[1].usage.energy_joules(), 3700);
  EXPECT_TRUE(rows[1].usage.energy_known());
  EXPECT_EQ(GroupUsage(status, "project", 0)[0].key, "(none)");
  EXPECT_EQ(GroupUsage(status, "job", 0).size(), 3u);
  EXPECT_TRUE(GroupUsage(status, "team", now_ + 1).empty()) << "--since after every job";
}

// The lineage of a job that regrouped: its inputs, one record per generation chained to
// the last, the chain head in each assignment, and checkpoints found by digest.
TEST_F(CoordinatorCoreTest, LineageRecordsGenerationsAndCheckpointsAsTheyHappen) {
  JobSpec spec = TwoWorkerSpec();
  Request r;
  *r.mutable_submit()->mutable_spec() = spec;
  r.mutable_submit()->set_job_id("lj");
  r.mutable_submit()->mutable_lineage()->mutable_dataset()->set_dir("/data/x");
  r.mutable_submit()->mutable_lineage()->set_job_id("forged");  // the coordinator's own word wins
  ASSERT_EQ(Call(r).code(), 0);
  Inbox inbox;
  std::vector<std::string> members;
  for (int i = 0; i < 2; ++i) {
    members.push_back(Register("lj", -1, true, 20 + i).register_().member_id());
    coord_->Handle(Await(members.back()), now_, inbox.Take());
  }
  ASSERT_EQ(inbox.got.size(), 2u);
  const std::string head1 = inbox.got[0].assignment().lineage_digest();
  EXPECT_EQ(head1.size(), 64u);
  EXPECT_EQ(inbox.got[1].assignment().lineage_digest(), head1);

  Request commit;
  CheckpointRecord* rec = commit.mutable_checkpoint_commit()->mutable_record();
  rec->set_job_id("lj");
  rec->set_step(40);
  rec->set_path("/ck/lj/step-40");
  rec->set_manifest_digest(std::string(64, 'a'));
  rec->set_lineage_digest(head1);
  commit.mutable_checkpoint_commit()->set_member_id(members[0]);
  commit.mutable_checkpoint_commit()->set_generation(1);
  ASSERT_EQ(Call(commit).code(), 0);

  Request ask;
  ask.mutable_lineage()->set_checkpoint_digest("aaaaaaaa");
  Response got = Call(ask);
  ASSERT_EQ(got.code(), 0) << got.error();
  ASSERT_EQ(got.lineage().jobs_size(), 1);
  const JobLineageRecord& l = got.lineage().jobs(0);
  EXPECT_EQ(l.job().job_id(), "lj");
  EXPECT_EQ(l.job().dataset().dir(), "/data/x");
  EXPECT_EQ(l.job().spec_digest().size(), 64u);
  ASSERT_EQ(l.generations_size(), 1);
  EXPECT_EQ(l.generations(0).members_size(), 2);
  EXPECT_EQ(l.generations(0).digest(), head1);
  ASSERT_EQ(l.checkpoints_size(), 1);
  EXPECT_EQ(l.checkpoints(0).generation(), 1);
  ask.mutable_lineage()->set_checkpoint_digest("bbbbbbbb");
  EXPECT_EQ(Call(ask).code(), static_cast<int>(StatusCode::kNotFound));
  ask.mutable_lineage()->set_checkpoint_digest("aaaaaaaa");
  ask.mutable_lineage()->set_job_id("other");
  EXPECT_EQ(Call(ask).code(), static_cast<int>(StatusCode::kInvalidArgument)) << "a digest of another job";
}

}  // namespace
}  // namespace shoal
