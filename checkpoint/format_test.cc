// Unit tests of the pure parts of the checkpoint format and the job folder: slicing,
// names, manifest validation, retention choices, the latest pointer and leftovers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/async_writer.h"
#include "checkpoint/format.h"
#include "checkpoint/job_dir.h"
#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "common/file_util.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;
using testing::MakeSnapshot;
using testing::TempDir;

TEST(Format, SlicesCoverTheStreamExactlyOnce) {
  for (int world = 1; world <= 7; ++world) {
    for (uint64_t total : {0ull, 1ull, 5ull, 6ull, 7ull, 100ull, 1000003ull}) {
      uint64_t expect = 0;
      for (int r = 0; r < world; ++r) {
        ByteRange b = SliceForRank(total, r, world);
        EXPECT_EQ(b.begin, expect);
        EXPECT_LE(b.size(), total / world + 1);
        expect = b.end;
      }
      EXPECT_EQ(expect, total);
    }
  }
  EXPECT_EQ(SliceForRank(10, 3, 3).size(), 0u);  // out of range rank gets nothing
}

TEST(Format, StepDirNamesAreCanonical) {
  EXPECT_EQ(StepDirName(42), "step-42");
  EXPECT_EQ(ParseStepDirName("step-42"), 42);
  EXPECT_EQ(ParseStepDirName("step-0"), 0);
  for (const char* bad : {"step-", "step-042", "step--1", "step-+1", "step-1.tmp-ab", "step-1.del-x", "latest",
                          "step-99999999999999999999", "Step-1"})
    EXPECT_FALSE(ParseStepDirName(bad).has_value()) << bad;
  EXPECT_EQ(StagingDirName(7, "abc"), "step-7.tmp-abc");
  EXPECT_EQ(ShardFileName(2, 4), "shard-2-of-4.bin");
}

TEST(Format, TensorSizesAreChecked) {
  EXPECT_EQ(*TensorByteLength("F32", {3, 4}), 48u);
  EXPECT_EQ(*TensorByteLength("BF16", {}), 2u);  // a scalar
  EXPECT_EQ(*TensorByteLength("I8", {0, 5}), 0u);
  EXPECT_FALSE(TensorByteLength("F33", {1}).ok());
  EXPECT_FALSE(TensorByteLength("F32", {-1}).ok());
  EXPECT_FALSE(TensorByteLength("F64", {1ll << 40, 1ll << 40}).ok());  // overflow

  TrainerSnapshot s = MakeSnapshot(1, 4096);
  s.tensors[1].bytes.pop_back();
  EXPECT_EQ(BuildManifest(s).status().code(), StatusCode::kInvalidArgument);
  s = MakeSnapshot(1, 4096);
  s.tensors[1].name = s.tensors[0].name;
  EXPECT_EQ(BuildManifest(s).status().code(), StatusCode::kInvalidArgument);
}

TEST(Format, ViewRangeMatchesTheSerializedBlob) {
  TrainerSnapshot s = MakeSnapshot(3, 10000);
  auto ser = SerializeSnapshot(s);
  ASSERT_TRUE(ser.ok());
  ASSERT_EQ(ser->bytes.size(), TotalBytes(s));
  for (int world = 1; world <= 5; ++world) {
    for (int r = 0; r < world; ++r) {
      ByteRange b = SliceForRank(ser->bytes.size(), r, world);
      std::string joined;
      for (auto v : ViewRange(s, b)) joined.append(v);
      EXPECT_EQ(joined, ser->bytes.substr(b.begin, b.size()));
    }
  }
}

CheckpointManifest ValidManifest() {
  CheckpointManifest m = *BuildManifest(MakeSnapshot(2, 2048));
  uint64_t total = 0;
  for (const auto& t : m.tensors()) total += t.length();
  auto* sh = m.add_shards();
  sh->set_file(ShardFileName(0, 1));
  sh->set_length(total);
  sh->set_sha256(std::string(64, '0'));
  return m;
}

TEST(Format, ParseManifestRefusesInconsistentTables) {
  CheckpointManifest m = ValidManifest();
  ASSERT_TRUE(ParseManifest(SerializeManifest(m)).ok());
  auto refused = [](CheckpointManifest bad) { return ParseManifest(SerializeManifest(bad)).status().code(); };
  CheckpointManifest bad = m;
  bad.mutable_shards(0)->set_file("../../etc/passwd");
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;
  bad.mutable_tensors(1)->set_offset(1ull << 62);
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;  // a gap between two tensors
  bad.mutable_tensors(1)->set_offset(m.tensors(1).offset() + 4);
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;
  bad.mutable_tensors(0)->add_shape(2);
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;
  bad.set_format_version(9);
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;
  bad.mutable_shards(0)->set_sha256("XYZ");
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  bad = m;
  bad.clear_shards();
  EXPECT_EQ(refused(bad), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseManifest("\xff\xff\xff").status().code(), StatusCode::kInvalidArgument);
}

// Rank states are held to the same rules as shards, plus: one per rank of world_size,
// names unique across every table, and none in a version 1 manifest.
TEST(Format, ParseManifestChecksRankStates) {
  CheckpointManifest m = ValidManifest();
  m.set_world_size(2);
  for (int r = 0; r < 2; ++r) {
    auto state = BuildRankState({NamedTensor{"codec.state." + std::to_string(r), "U8", {5}, "abcde"}}, r, 2);
    ASSERT_TRUE(state.ok());
    state->set_sha256(std::string(64, 'b'));
    *m.add_rank_states() = *state;
  }
  ASSERT_TRUE(ParseManifest(SerializeManifest(m)).ok());
  auto why = [](const CheckpointManifest& bad) {
    auto r = ParseManifest(SerializeManifest(bad));
    return r.ok() ? std::string("accepted") : std::string(r.status().message());
  };
  auto expect_refused = [&](const CheckpointManifest& bad, const std::string& reason) {
    std::string got = why(bad);
    EXPECT_NE(got.find(reason), std::string::npos) << "wanted '" << reason << "', got '" << got << "'";
  };
  CheckpointManifest bad = m;
  bad.mutable_rank_states(1)->set_file("../shard-0-of-1.bin");
  expect_refused(bad, "expected rank-1-of-2.bin");
  bad = m;
  bad.set_world_size(3);
  expect_refused(bad, "2 rank states for world size 3");
  bad = m;
  bad.mutable_rank_states(0)->set_length(6);
  expect_refused(bad, "1 bytes no tensor covers");
  bad = m;
  bad.mutable_rank_states(1)->mutable_tensors(0)->set_name("codec.state.0");
  expect_refused(bad, "'codec.state.0' is empty or repeated");
  bad = m;  // a rank tensor must not shadow a replicated one
  bad.mutable_rank_states(1)->mutable_tensors(0)->set_name(m.tensors(0).name());
  expect_refused(bad, "is empty or repeated");
  bad = m;
  bad.mutable_rank_states(0)->mutable_tensors(0)->set_shard(1);
  expect_refused(bad, "names the wrong shard");
  bad = m;
  bad.mutable_rank_states(1)->set_sha256("XYZ");
  expect_refused(bad, "rank-1-of-2.bin has a malformed sha256");
  bad = m;
  bad.set_format_version(1);
  expect_refused(bad, "version 1 manifest has rank states");
  bad.clear_rank_states();  // what format 1 wrote still reads
  EXPECT_EQ(why(bad), "accepted");
}

TEST(Retention, KeepsLastKAndEveryMth) {
  std::vector<int64_t> steps;
  for (int s = 1; s <= 20; ++s) steps.push_back(s);
  EXPECT_EQ(StepsToDelete(steps, {3, 5}, std::nullopt),
            (std::vector<int64_t>{1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17}));
  EXPECT_EQ(StepsToDelete(steps, {0, 5}, std::nullopt), std::vector<int64_t>{});  // keep_last 0: keep all
  EXPECT_EQ(StepsToDelete({1, 2, 3}, {1, 0}, 2), (std::vector<int64_t>{1}));       // latest is protected
  EXPECT_EQ(StepsToDelete({}, {1, 0}, std::nullopt), std::vector<int64_t>{});
}

TEST(Retention, AppliedOnCommitOnDisk) {
  TempDir tmp;
  AsyncCheckpointerOptions o;
  o.job_dir = tmp / "job";
  o.retention = {3, 5};
  auto cp = AsyncCheckpointer::Create(o);
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  for (int step = 1; step <= 20; ++step) ASSERT_TRUE((*cp)->SaveAsync(MakeSnapshot(step, 4096, step)).ok());
  ASSERT_TRUE((*cp)->Wait().ok());
  EXPECT_EQ(*ListCommittedSteps(o.job_dir), (std::vector<int64_t>{5, 10, 15, 18, 19, 20}));
  EXPECT_EQ(*ReadLatestPointer(o.job_dir), "step-20");
  for (const auto& e : fs::directory_iterator(o.job_dir)) {  // no .del- or .tmp- left behind
    std::string n = e.path().filename().string();
    EXPECT_TRUE(n == "latest" || ParseStepDirName(n)) << n;
  }
}

TEST(JobDir, LatestPointerResolution) {
  TempDir tmp;
  std::string job = tmp / "job";
  EXPECT_EQ(ResolveCheckpointDir(job).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(MakeDirs(job + "/step-3").ok());
  ASSERT_TRUE(MakeDirs(job + "/step-12").ok());
  ASSERT_TRUE(MakeDirs(job + "/step-20.tmp-abc").ok());  // staging: never picked
  EXPECT_EQ(*ResolveCheckpointDir(job), job + "/step-12");  // no latest: newest committed
  ASSERT_TRUE(UpdateLatestPointer(job, 3).ok());
  EXPECT_EQ(*ResolveCheckpointDir(job), job + "/step-3");
  EXPECT_EQ(*ResolveCheckpointDir(job + "/latest"), job + "/step-3");  // the pointer file itself
  ASSERT_TRUE(UpdateLatestPointer(job, 12).ok());
  ASSERT_TRUE(UpdateLatestPointer(job, 3).ok());  // an older save never moves latest back
  EXPECT_EQ(*ReadLatestPointer(job), "step-12");
  ASSERT_TRUE(WriteFileAtomic(job + "/latest", "step-99\n").ok());  // dangling: fall back
  EXPECT_EQ(*ResolveCheckpointDir(job), job + "/step-12");
  ASSERT_TRUE(WriteFileAtomic(job + "/latest", "../../etc\n").ok());
  EXPECT_EQ(ResolveCheckpointDir(job).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*ResolveCheckpointDir(job + "/step-3"), job + "/step-3");
  ASSERT_TRUE(WriteFileAtomic(job + "/weights.bin", "not a checkpoint").ok());
  auto file = ResolveCheckpointDir(job + "/weights.bin");
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(file.status().message().find("is a file, not a checkpoint"), std::string::npos) << file.status().ToString();
}

TEST(JobDir, WriterStartRemovesLeftoversOfACrashedWriter) {
  TempDir tmp;
  std::string job = tmp / "job";
  for (const char* d : {"step-5.tmp-deadbeef", "step-4.del-0011", "step-2"}) ASSERT_TRUE(MakeDirs(job + "/" + d).ok());
  std::ofstream(job + "/step-5.tmp-deadbeef/shard-0-of-1.bin") << "partial";
  std::ofstream(job + "/latest.tmp-1234") << "step-5";
  AsyncCheckpointerOptions o;
  o.job_dir = job;
  ASSERT_TRUE(AsyncCheckpointer::Create(o).ok());
  EXPECT_FALSE(PathExists(job + "/step-5.tmp-deadbeef"));
  EXPECT_FALSE(PathExists(job + "/step-4.del-0011"));
  EXPECT_FALSE(PathExists(job + "/latest.tmp-1234"));
  EXPECT_TRUE(PathExists(job + "/step-2"));  // committed names are never touched
}

}  // namespace
}  // namespace shoal
