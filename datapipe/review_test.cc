// The review overlay: a released record is admitted and a confirmed one stays out, as
// the loader sees them; decisions survive a re-scan; an overlay signed by a key outside
// data.trust, or altered after signing, refuses the dataset naming the file; nothing is
// deleted; hostile or impossible decisions are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "common/file_util.h"
#include "datapipe/loader.h"
#include "datapipe/review.h"
#include "datapipe/scan.h"
#include "datapipe/test_util.h"

namespace shoal {
namespace {

using testing_util::MakeClusters;
using testing_util::Synthetic;
using testing_util::TempDir;

class ReviewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    owner_ = GenerateKeyPair();
    reviewer_ = GenerateKeyPair();
    Synthetic s = MakeClusters(4, 100, 8);
    s.y[11] = 9;  // a bad label: the schema filter's
    std::copy(s.x.begin() + 20 * 8, s.x.begin() + 21 * 8, s.x.begin() + 300 * 8);
    s.y[300] = (s.y[20] + 1) % 4;  // an exact copy under another label: 20 and 300 held back
    testing_util::WriteDataset(s, dir(), 100, &owner_, tmp_.path());
    auto scan = ScanDataset(dir(), ScanOptions{});
    ASSERT_TRUE(scan.ok()) << scan.status().ToString();
    scanned_admitted_ = scan->admitted;
    auto ds = OpenDataset(dir(), DatasetTrust{TrustStore(), true}, false);
    ASSERT_TRUE(ds.ok());
    manifest_ = ds->manifest_sha256;
  }
  std::string dir() const { return tmp_ / "ds"; }
  StatusOr<std::vector<int64_t>> LoadedIds(bool trust_reviewer) {
    TrustStore t;
    t.Add(owner_.public_key);
    if (trust_reviewer) t.Add(reviewer_.public_key);
    ASSIGN_OR_RETURN(InMemoryDataset m, LoadAdmittedInMemory(dir(), t, false));
    LoaderOptions o;
    o.trust.trust = t;
    o.global_batch = 1000;
    ASSIGN_OR_RETURN(std::unique_ptr<Loader> l, Loader::Open(dir(), o));
    EXPECT_EQ(l->size(), m.n);
    ASSIGN_OR_RETURN(LoaderBatch b, l->Next());
    std::vector<int64_t> ids = b.record_ids;
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  ReviewDecision Decide(int64_t id, const std::string& action) { return {id, action, "Ada", "checked by eye", 0, ""}; }
  TempDir tmp_;
  KeyPair owner_, reviewer_;
  int64_t scanned_admitted_ = 0;
  std::string manifest_;
};

TEST_F(ReviewTest, ReleaseAdmitsConfirmKeepsOutAndBothSurviveARescan) {
  auto before = LoadedIds(true);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_EQ(static_cast<int64_t>(before->size()), scanned_admitted_);
  EXPECT_FALSE(std::binary_search(before->begin(), before->end(), 20));
  ASSERT_TRUE(AddReviewDecisions(dir(), manifest_, {Decide(20, "release"), Decide(300, "confirm")}, reviewer_,
                                 TrustStore())
                  .ok());
  for (int pass = 0; pass < 2; ++pass) {
    auto ids = LoadedIds(true);
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    EXPECT_EQ(static_cast<int64_t>(ids->size()), scanned_admitted_ + 1) << "pass " << pass;
    EXPECT_TRUE(std::binary_search(ids->begin(), ids->end(), 20)) << "pass " << pass;
    EXPECT_FALSE(std::binary_search(ids->begin(), ids->end(), 300)) << "pass " << pass;
    // A re-scan flags 20 again; the person's decision still stands.
    ASSERT_TRUE(ScanDataset(dir(), ScanOptions{}).ok());
    EXPECT_TRUE(PathExists(ReviewPath(dir())));
  }
  // The quarantine list still names both records: nothing was deleted.
  auto q = ReadQuarantine(dir());
  ASSERT_TRUE(q.ok());
  std::set<int64_t> held;
  for (const auto& e : *q) held.insert(e.record_id);
  EXPECT_TRUE(held.count(20) && held.count(300));
}

TEST_F(ReviewTest, LaterDecisionSupersedesEarlierWhichStaysOnFile) {
  ASSERT_TRUE(AddReviewDecisions(dir(), manifest_, {Decide(20, "release")}, reviewer_, TrustStore()).ok());
  TrustStore t;
  t.Add(reviewer_.public_key);
  // A second reviewer extends the overlay only if they trust whoever signed it.
  KeyPair second = GenerateKeyPair();
  Status refused = AddReviewDecisions(dir(), manifest_, {Decide(20, "confirm")}, second, TrustStore());
  EXPECT_EQ(refused.code(), StatusCode::kPermissionDenied) << refused.ToString();
  ASSERT_TRUE(AddReviewDecisions(dir(), manifest_, {Decide(20, "confirm")}, second, t).ok());
  t.Add(second.public_key);
  auto r = ReadReview(dir(), t);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->decisions.size(), 2u);
  EXPECT_EQ(r->decisions[0].action, "release");
  EXPECT_EQ(r->decisions[0].key_id, reviewer_.public_key.key_id);
  EXPECT_EQ(r->decisions[1].key_id, second.public_key.key_id);
  EXPECT_EQ(r->decisions[1].by, "Ada");
  EXPECT_EQ(r->decisions[1].why, "checked by eye");
  EXPECT_GT(r->decisions[1].at_unix_ms, 0);
  EXPECT_TRUE(r->Released().empty());
  EXPECT_EQ(r->Confirmed(), std::vector<int64_t>{20});
  EXPECT_EQ(r->signer_key_id, second.public_key.key_id);
}

TEST_F(ReviewTest, UntrustedOrAlteredOverlayRefusesTheDatasetNamingTheFile) {
  ASSERT_TRUE(AddReviewDecisions(dir(), manifest_, {Decide(20, "release")}, reviewer_, TrustStore()).ok());
  auto untrusted = LoadedIds(false);
  ASSERT_FALSE(untrusted.ok());
  EXPECT_EQ(untrusted.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(untrusted.status().message().find(ReviewPath(dir())), std::string::npos) << untrusted.status().message();
  // Altered after signing: decode the payload, release another record, keep the signature.
  auto env = ReadFile(ReviewPath(dir()));
  ASSERT_TRUE(env.ok());
  auto parsed = ParseDsseUnverified(*env);
  ASSERT_TRUE(parsed.ok());
  std::string payload = parsed->payload;
  size_t at = payload.find("\"record_id\": 20");
  ASSERT_NE(at, std::string::npos) << payload;
  payload.replace(at, 15, "\"record_id\": 11");
  std::string forged = *env;
  size_t p = forged.find(Base64Encode(parsed->payload));
  ASSERT_NE(p, std::string::npos);
  forged.replace(p, Base64Encode(parsed->payload).size(), Base64Encode(payload));
  ASSERT_TRUE(WriteFileAtomic(ReviewPath(dir()), forged).ok());
  auto altered = LoadedIds(true);
  ASSERT_FALSE(altered.ok());
  EXPECT_EQ(altered.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(altered.status().message().find(kReviewFile), std::string::npos);
  // Extending an altered overlay is refused too: it is never re-signed.
  TrustStore t;
  t.Add(reviewer_.public_key);
  EXPECT_FALSE(AddReviewDecisions(dir(), manifest_, {Decide(300, "confirm")}, reviewer_, t).ok());
}

TEST_F(ReviewTest, ImpossibleDecisionsAreRefused) {
  // Not quarantined, a schema reject (unreadable as declared), no reason given, unknown action.
  Status s = AddReviewDecisions(dir(), manifest_, {Decide(5, "release")}, reviewer_, TrustStore());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not in the quarantine list"), std::string::npos) << s.message();
  s = AddReviewDecisions(dir(), manifest_, {Decide(11, "release")}, reviewer_, TrustStore());
  EXPECT_NE(s.message().find("schema"), std::string::npos) << s.message();
  EXPECT_TRUE(AddReviewDecisions(dir(), manifest_, {Decide(11, "confirm")}, reviewer_, TrustStore()).ok());
  ReviewDecision nowhy = Decide(20, "release");
  nowhy.why.clear();
  EXPECT_FALSE(AddReviewDecisions(dir(), manifest_, {nowhy}, reviewer_, TrustStore()).ok());
  EXPECT_FALSE(AddReviewDecisions(dir(), manifest_, {Decide(20, "delete")}, reviewer_, TrustStore()).ok());
  // Another dataset version: the overlay is not silently reused.
  EXPECT_EQ(AddReviewDecisions(dir(), std::string(64, '0'), {Decide(20, "release")}, reviewer_, TrustStore()).code(),
            StatusCode::kFailedPrecondition);
}

TEST(ApplyReview, SetArithmeticAndBounds) {
  ReviewOverlay r;
  r.manifest_sha256 = "m";
  r.decisions = {{7, "release", "a", "w", 1, "k"}, {3, "confirm", "a", "w", 2, "k"}, {9, "release", "a", "w", 3, "k"},
                 {9, "confirm", "b", "w", 4, "k"}};
  auto out = ApplyReview({1, 3, 5}, r, 10, "m");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, (std::vector<int64_t>{1, 5, 7}));
  EXPECT_EQ(ApplyReview({1}, r, 10, "other").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ApplyReview({1}, r, 8, "m").ok());  // 9 was confirmed last: not released
  EXPECT_EQ(ApplyReview({1}, r, 7, "m").status().code(), StatusCode::kDataLoss);  // releases 7 of 7 records
}

}  // namespace
}  // namespace shoal
