// Rollback and substitution: a signed checkpoint copied under a newer step's name (or
// into another job's folder) is refused, naming both; resuming from a checkpoint older
// than the newest that verifies in its job directory, or through a turned-back `latest`,
// is refused unless a rollback is allowed, and then loads with a warning that names both
// steps. The normal case, `latest` naming the newest, loads as before.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/async_writer.h"
#include "checkpoint/cli_test_util.h"
#include "checkpoint/commands.h"
#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "common/file_util.h"
#include "common/log.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;
using testing::MakeSnapshot;
using testing::TempDir;

bool Mentions(const Status& s, const std::string& text) { return s.message().find(text) != std::string::npos; }

// Routes spdlog's default logger into a string for the life of the object.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// A job directory named after its job ("job-test", MakeSnapshot's) with signed
// checkpoints at steps 100, 200 and 300; `latest` names step-300.
class RollbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    trust_.Add(key_.public_key);
    for (int64_t step : {100, 200, 300}) Save(job_, step);
    ASSERT_EQ(*ReadLatestPointer(job_), "step-300");
  }
  void Save(const std::string& job_dir, int64_t step, const std::string& job_id = "job-test",
            const std::string& parent_digest = "") {
    AsyncCheckpointerOptions o;
    o.job_dir = job_dir;
    o.key = key_;
    o.parent_digest = parent_digest;
    auto cp = AsyncCheckpointer::Create(o);
    ASSERT_TRUE(cp.ok()) << cp.status().ToString();
    TrainerSnapshot snap = MakeSnapshot(static_cast<uint64_t>(step), 20000, step);
    snap.job_id = job_id;
    ASSERT_TRUE((*cp)->SaveNow(snap).ok());
  }
  void PointLatestAt(const std::string& name) { ASSERT_TRUE(WriteFileAtomic(job_ + "/latest", name + "\n").ok()); }
  void CopyCheckpoint(const std::string& from, const std::string& to) {
    fs::copy(from, to, fs::copy_options::recursive);
  }
  LoadOptions Resume() const {
    LoadOptions o;
    o.resume = true;
    o.job_from_directory = true;
    return o;
  }

  TempDir tmp_{"rollback"};
  std::string job_ = tmp_ / "job-test";
  KeyPair key_ = GenerateKeyPair();
  TrustStore trust_;
};

TEST_F(RollbackTest, TheNewestStillLoads) {
  LogCapture log;
  auto via_latest = LoadCheckpoint(job_, trust_, Resume());
  ASSERT_TRUE(via_latest.ok()) << via_latest.status().ToString();
  EXPECT_EQ(via_latest->dir, job_ + "/step-300");
  EXPECT_EQ(via_latest->snapshot.step, 300);
  EXPECT_EQ(via_latest->rollback_warning, "");
  auto named = LoadCheckpoint(job_ + "/step-300", trust_, Resume());
  ASSERT_TRUE(named.ok()) << named.status().ToString();
  EXPECT_EQ(named->rollback_warning, "");
  auto pointer_file = LoadCheckpoint(job_ + "/latest", trust_, Resume());
  ASSERT_TRUE(pointer_file.ok()) << pointer_file.status().ToString();
  EXPECT_EQ(pointer_file->snapshot.step, 300);
  EXPECT_EQ(log.text().find("rolling back"), std::string::npos) << log.text();
  // Verifying or exporting an older step is no rollback: only resuming from it is.
  EXPECT_TRUE(VerifyCheckpoint(job_ + "/step-100", trust_, false).ok());
}

// An older checkpoint, validly signed, copied under a newer step's name: its manifest
// says step 100, its name step 400. Refused by every path to it, whatever is allowed.
TEST_F(RollbackTest, ARenamedOlderCheckpointIsRefused) {
  CopyCheckpoint(job_ + "/step-100", job_ + "/step-400");
  PointLatestAt("step-400");
  LoadOptions lax = Resume();
  lax.allow_rollback = true;
  lax.allow_unsigned = true;
  for (const LoadOptions& o : {Resume(), LoadOptions{}, lax}) {
    for (const std::string& path : {job_, job_ + "/latest", job_ + "/step-400"}) {
      SCOPED_TRACE(path);
      auto r = LoadCheckpoint(path, trust_, o);
      ASSERT_FALSE(r.ok()) << "loaded step " << r->snapshot.step << " as step-400";
      EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), job_ + "/step-400")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), "manifest for step 100 of job job-test")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), "not step 400")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), "renamed or substituted")) << r.status().ToString();
      EXPECT_FALSE(VerifyCheckpoint(path, trust_, o).ok());
    }
  }

  // With `latest` back on step-300, the impostor is not a newer checkpoint: it does not
  // verify as step 400, so resuming step 300 is no rollback.
  PointLatestAt("step-300");
  LogCapture log;
  auto loaded = LoadCheckpoint(job_, trust_, Resume());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->snapshot.step, 300);
  EXPECT_NE(log.text().find("step-400 is newer than"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("does not count"), std::string::npos) << log.text();
}

// A checkpoint of another job at a newer step, copied into this job's folder: its name's
// step is right, its job is not.
TEST_F(RollbackTest, AnotherJobsCheckpointIsRefusedWhereTheJobIsKnown) {
  const std::string other = tmp_ / "other-job";
  Save(other, 400, "other-job");
  CopyCheckpoint(other + "/step-400", job_ + "/step-400");
  LoadOptions expected;
  expected.expected_job = "job-test";
  auto by_name = LoadCheckpoint(job_ + "/step-400", trust_, expected);
  ASSERT_FALSE(by_name.ok());
  EXPECT_EQ(by_name.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Mentions(by_name.status(), "step 400 of job other-job, not of job job-test")) << by_name.status().ToString();
  auto by_folder = LoadCheckpoint(job_ + "/step-400", trust_, Resume());
  ASSERT_FALSE(by_folder.ok());
  EXPECT_EQ(by_folder.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Mentions(by_folder.status(), "of job other-job, but sits in the folder of job job-test"))
      << by_folder.status().ToString();
  EXPECT_TRUE(Mentions(by_folder.status(), "renamed or substituted"));

  // Nor is it a newer checkpoint of job-test: resuming step 300 goes ahead.
  PointLatestAt("step-300");
  auto loaded = LoadCheckpoint(job_, trust_, Resume());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->snapshot.step, 300);
}

// `latest` names step-200 while step-300, newer, verifies: the pointer was turned back.
TEST_F(RollbackTest, ATurnedBackLatestPointerIsRefused) {
  PointLatestAt("step-200");
  for (const std::string& path : {job_, job_ + "/latest"}) {
    SCOPED_TRACE(path);
    // Any load through the pointer, a resume or not, and verification too.
    for (const LoadOptions& o : {Resume(), LoadOptions{}}) {
      auto r = LoadCheckpoint(path, trust_, o);
      ASSERT_FALSE(r.ok()) << "loaded step " << r->snapshot.step;
      EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), job_ + "/latest is turned back")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), "step 200 is older than step 300")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), job_ + "/step-300 verifies")) << r.status().ToString();
      EXPECT_TRUE(Mentions(r.status(), "--allow-rollback")) << r.status().ToString();
    }
    EXPECT_EQ(VerifyCheckpoint(path, trust_, false).status().code(), StatusCode::kFailedPrecondition);
  }
}

// Resuming from a step directory named directly, when a newer one verifies.
TEST_F(RollbackTest, ResumingFromAnOlderStepIsRefused) {
  auto r = LoadCheckpoint(job_ + "/step-100", trust_, Resume());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Mentions(r.status(), job_ + "/step-100 (job job-test): step 100 is older than step 300"))
      << r.status().ToString();
  EXPECT_TRUE(Mentions(r.status(), "Resume from step 300, or pass --allow-rollback")) << r.status().ToString();
  // PrecheckCheckpoint (what shoalctl run asks before starting workers) says the same.
  auto pre = PrecheckCheckpoint(job_ + "/step-100", trust_, Resume());
  EXPECT_EQ(pre.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Mentions(pre.status(), "step 100 is older than step 300")) << pre.status().ToString();
}

TEST_F(RollbackTest, AllowRollbackLoadsWithAWarningNamingBothSteps) {
  LoadOptions allowed = Resume();
  allowed.allow_rollback = true;
  {
    LogCapture log;
    auto named = LoadCheckpoint(job_ + "/step-100", trust_, allowed);
    ASSERT_TRUE(named.ok()) << named.status().ToString();
    EXPECT_EQ(named->snapshot.step, 100);
    ASSERT_FALSE(named->snapshot.tensors.empty());
    EXPECT_TRUE(named->snapshot.tensors[0].bytes == MakeSnapshot(100, 20000, 100).tensors[0].bytes);
    EXPECT_NE(named->rollback_warning.find("loading step 100 although step 300 is newer"), std::string::npos)
        << named->rollback_warning;
    EXPECT_NE(log.text().find("[warning]"), std::string::npos) << log.text();
    EXPECT_NE(log.text().find("loading step 100 although step 300 is newer"), std::string::npos) << log.text();
  }
  PointLatestAt("step-200");
  {
    LogCapture log;
    auto via_latest = LoadCheckpoint(job_, trust_, allowed);
    ASSERT_TRUE(via_latest.ok()) << via_latest.status().ToString();
    EXPECT_EQ(via_latest->snapshot.step, 200);
    EXPECT_NE(via_latest->rollback_warning.find("latest is turned back"), std::string::npos)
        << via_latest->rollback_warning;
    EXPECT_NE(via_latest->rollback_warning.find("loading step 200 although step 300 is newer"), std::string::npos)
        << via_latest->rollback_warning;
    EXPECT_NE(log.text().find("loading step 200 although step 300 is newer"), std::string::npos) << log.text();
  }
}

// A newer directory that does not verify is no evidence of a newer checkpoint.
TEST_F(RollbackTest, ANewerCheckpointThatDoesNotVerifyDoesNotCount) {
  {
    std::fstream f(job_ + "/step-300/shard-0-of-1.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.put('\x7f');
  }
  EXPECT_EQ(LoadCheckpoint(job_ + "/step-300", trust_, false).status().code(), StatusCode::kDataLoss);
  LogCapture log;
  auto loaded = LoadCheckpoint(job_ + "/step-200", trust_, Resume());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->snapshot.step, 200);
  EXPECT_EQ(loaded->rollback_warning, "");
  EXPECT_NE(log.text().find("step-300 is newer than"), std::string::npos) << log.text();
}

// Inside a job, after everyone died, the coordinator names its registry's latest
// checkpoint: that is the newest known then, and a newer directory it never recorded (a
// writer killed between committing and registering) is logged, not refused. The
// manifest must still be of that job.
TEST_F(RollbackTest, TheRegistrysChoiceIsTheNewestKnown) {
  LoadOptions registry = Resume();
  registry.chosen_by_registry = true;
  registry.expected_job = "job-test";
  LogCapture log;
  auto loaded = LoadCheckpoint(job_ + "/step-200", trust_, registry);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->snapshot.step, 200);
  EXPECT_NE(log.text().find("was never registered"), std::string::npos) << log.text();
  registry.expected_job = "another-job";
  auto wrong_job = LoadCheckpoint(job_ + "/step-200", trust_, registry);
  EXPECT_EQ(wrong_job.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Mentions(wrong_job.status(), "not of job another-job")) << wrong_job.status().ToString();
}

// A manifest whose parent is a later checkpoint of the same directory: training only
// moves forward from the checkpoint it resumed, so this lineage is impossible.
TEST_F(RollbackTest, AParentNewerThanItsChildIsRefused) {
  auto newest = VerifyCheckpoint(job_ + "/step-300", trust_, false);
  ASSERT_TRUE(newest.ok());
  Save(job_, 250, "job-test", newest->manifest_digest);
  LoadOptions allowed = Resume();
  allowed.allow_rollback = true;
  for (const LoadOptions& o : {Resume(), allowed}) {
    auto r = LoadCheckpoint(job_ + "/step-250", trust_, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_TRUE(Mentions(r.status(), job_ + "/step-250 (step 250) names " + job_ + "/step-300 (step 300) as its parent"))
        << r.status().ToString();
  }
}

// The shoalctl commands follow `latest`: a turned-back one fails verification (exit 1)
// naming both steps, and --allow-rollback verifies what it names.
TEST_F(RollbackTest, CheckpointVerifyReportsATurnedBackPointer) {
  ASSERT_TRUE(WriteKeyPair(key_, tmp_ / "keys", "k").ok());
  PointLatestAt("step-200");
  auto run = [](std::vector<std::string> args) {
    auto r = testing::RunCheckpointCli(std::move(args));
    return std::make_pair(r.code, r.out + r.err);
  };
  auto refused = run({"checkpoint", "verify", job_, "--trust", tmp_ / "keys/k.pub"});
  EXPECT_EQ(refused.first, 1) << refused.second;
  EXPECT_NE(refused.second.find("step 200 is older than step 300"), std::string::npos) << refused.second;
  auto allowed = run({"checkpoint", "verify", job_, "--trust", tmp_ / "keys/k.pub", "--allow-rollback"});
  EXPECT_EQ(allowed.first, 0) << allowed.second;
  EXPECT_NE(allowed.second.find("step 200"), std::string::npos) << allowed.second;
  auto list = run({"checkpoint", "list", job_, "--trust", tmp_ / "keys/k.pub"});
  EXPECT_EQ(list.first, 0) << list.second;  // every checkpoint verifies; the pointer is what is wrong
  EXPECT_NE(list.second.find("(latest, turned back: step 300 is newer)"), std::string::npos) << list.second;
}

}  // namespace
}  // namespace shoal
