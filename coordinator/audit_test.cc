// The audit log's hash chain: a real coordinator writes it to RocksDB; the test then
// edits, deletes, inserts, reorders and rewrites entries in the store directly, and the
// verification names the first entry that fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/signing.h"
#include "coordinator/audit.h"
#include "coordinator/client.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/curve_keys.h"
#include "coordinator/server.h"

namespace shoal {
namespace {

using Records = std::vector<std::pair<std::string, std::string>>;

class AuditChainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (std::filesystem::temp_directory_path() / ("shoal-audit-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(InitAuthDir(dir_ + "/auth").ok());
    ServerOptions o;
    o.bind = "tcp://127.0.0.1:*";
    o.state_dir = dir_ + "/state";
    o.auth_dir = dir_ + "/auth";
    {
      auto server = CoordinatorServer::Create(o);
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      (*server)->Start();
      auto keys = LoadClientKeys(dir_ + "/auth/admin.key", dir_ + "/auth/coordinator.pub");
      ControlClient c((*server)->endpoint(), *keys);
      for (int i = 0; i < 12; ++i) {  // submits and cancels: 24 audited requests (+ the admin's admission)
        Request r;
        *r.mutable_submit()->mutable_spec() = coordinator_test::TwoWorkerSpec();
        auto resp = c.Call(r, std::chrono::seconds(5));
        ASSERT_TRUE(resp.ok());
        Request cancel;
        cancel.mutable_cancel()->set_job_id(resp->submit().job_id());
        ASSERT_TRUE(c.Call(cancel, std::chrono::seconds(5)).ok());
      }
    }  // stopping signs the head
    auto store = OpenRocksStore(dir_ + "/state");
    ASSERT_TRUE(store.ok());
    records_ = *(*store)->Scan("audit/");
    heads_ = *(*store)->Scan("audit-head/");
    ASSERT_TRUE(trust_.AddFile(dir_ + "/auth/coordinator-signing.pub").ok());
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static AuditEntry Entry(const Records& r, size_t i) {
    AuditEntry e;
    EXPECT_TRUE(e.ParseFromString(r[i].second));
    return e;
  }

  static inline std::string dir_;
  static inline Records records_, heads_;
  static inline TrustStore trust_;
};

TEST_F(AuditChainTest, UntouchedLogVerifiesWithItsSignedHead) {
  ASSERT_GE(records_.size(), 25u);
  ASSERT_GE(heads_.size(), 1u);
  AuditVerdict v = VerifyAuditLog(records_, heads_, &trust_);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, static_cast<int64_t>(records_.size()));
  EXPECT_GE(v.heads, 1);
  EXPECT_EQ(v.unsigned_tail, 0);
}

TEST_F(AuditChainTest, EditedEntryIsNamed) {
  Records r = records_;
  AuditEntry e = Entry(r, 4);  // entry 5
  e.set_outcome("ok");
  e.set_key("someone-else");
  r[4].second = e.SerializeAsString();
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 5);
  EXPECT_NE(v.problem.find("entry 5 was edited"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, EditedAndRehashedEntryBreaksTheChainAtIt) {
  Records r = records_;
  AuditEntry e = Entry(r, 6);  // entry 7
  e.set_detail("nothing happened");
  e.set_hash(AuditEntryHash(e));
  r[6].second = e.SerializeAsString();
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 7) << v.problem;
}

TEST_F(AuditChainTest, DeletedEntryIsNamed) {
  Records r = records_;
  r.erase(r.begin() + 9);  // entry 10
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 10);
  EXPECT_NE(v.problem.find("entry 10 is missing"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, DeletedLastEntriesAreCaughtByTheSignedHead) {
  Records r = records_;
  r.resize(r.size() - 2);
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, static_cast<int64_t>(records_.size())) << v.problem;
}

TEST_F(AuditChainTest, InsertedEntryIsNamed) {
  Records r = records_;
  AuditEntry forged = Entry(r, 2);
  forged.set_action("cancel");
  r.insert(r.begin() + 3, {AuditKey(3) + "a", forged.SerializeAsString()});  // sorts after entry 3
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 4);
  EXPECT_NE(v.problem.find("inserted"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, InsertedEntryThatShiftsTheRestIsNamed) {
  // A forged entry 6 chained properly, the old 6.. moved up by one under new keys.
  Records r(records_.begin(), records_.begin() + 5);
  AuditEntry forged = Entry(records_, 5);
  forged.set_detail("forged");
  forged.set_hash(AuditEntryHash(forged));
  r.push_back({AuditKey(6), forged.SerializeAsString()});
  for (size_t i = 5; i < records_.size(); ++i) r.push_back({AuditKey(i + 2), records_[i].second});
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 7) << v.problem;  // the first entry that is not where it was written
}

TEST_F(AuditChainTest, ReorderedEntriesAreNamed) {
  Records r = records_;
  std::swap(r[11].second, r[12].second);  // entries 12 and 13
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 12);
  EXPECT_NE(v.problem.find("reordered"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, RewrittenChainDisagreesWithTheSignedHead) {
  // Everything from entry 3 on re-chained with valid hashes: only the signature knows.
  Records r = records_;
  std::string prev = Entry(r, 1).hash();
  for (size_t i = 2; i < r.size(); ++i) {
    AuditEntry e = Entry(r, i);
    if (i == 2) e.set_outcome("refused: nothing to see");
    e.set_prev_hash(prev);
    e.set_hash(AuditEntryHash(e));
    prev = e.hash();
    r[i].second = e.SerializeAsString();
  }
  EXPECT_TRUE(VerifyAuditLog(r, {}, nullptr).ok);  // the chain alone is consistent
  AuditVerdict v = VerifyAuditLog(r, heads_, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("rewritten after they were signed"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, ForgedHeadSignatureIsRefused) {
  Records h = heads_;
  AuditHead head;
  ASSERT_TRUE(head.ParseFromString(h.back().second));
  KeyPair other = GenerateKeyPair();
  head.set_envelope(SignDsse(kAuditHeadPayloadType, R"({"seq":1,"hash":"x"})", other));
  h.back().second = head.SerializeAsString();
  AuditVerdict v = VerifyAuditLog(records_, h, &trust_);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.problem.find("does not verify"), std::string::npos) << v.problem;
}

TEST_F(AuditChainTest, RestartedCoordinatorContinuesTheChain) {
  // A second coordinator on a copy of the state appends to the same chain.
  const std::string copy = dir_ + "/state-copy";
  std::filesystem::copy(dir_ + "/state", copy, std::filesystem::copy_options::recursive);
  std::filesystem::remove(copy + "/LOCK");
  ServerOptions o;
  o.bind = "tcp://127.0.0.1:*";
  o.state_dir = copy;
  o.auth_dir = dir_ + "/auth";
  {
    auto server = CoordinatorServer::Create(o);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    (*server)->Start();
    ControlClient c((*server)->endpoint(), *LoadClientKeys(dir_ + "/auth/admin.key", dir_ + "/auth/coordinator.pub"));
    Request r;
    *r.mutable_submit()->mutable_spec() = coordinator_test::TwoWorkerSpec();
    ASSERT_TRUE(c.Call(r, std::chrono::seconds(5)).ok());
  }
  auto store = OpenRocksStore(copy);
  ASSERT_TRUE(store.ok());
  AuditVerdict v = VerifyAuditLog(*(*store)->Scan("audit/"), *(*store)->Scan("audit-head/"), &trust_);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.entries, static_cast<int64_t>(records_.size()) + 1);
}

}  // namespace
}  // namespace shoal
