// Crash safety, as a real multi-process test: ckpt_crash_writer saves checkpoints in a
// loop; we kill -9 it 50 times at random moments (0-150 ms after start) and restart it.
// After every kill the checkpoint that `latest` resolves to verifies and loads with the
// exact bytes of its step, and every committed step-N directory verifies: a partially
// written or partially deleted directory is never under a committed name.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "checkpoint/job_dir.h"
#include "checkpoint/reader.h"
#include "checkpoint/test_util.h"
#include "common/signing.h"

namespace shoal {
namespace {

namespace fs = std::filesystem;
using testing::MakeSnapshot;
using testing::TempDir;

constexpr int kKills = 50;
constexpr size_t kMiB = 3;

pid_t StartWriter(const std::string& job, const std::string& key) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(CKPT_CRASH_WRITER, CKPT_CRASH_WRITER, job.c_str(), key.c_str(), std::to_string(kMiB).c_str(), "3", "5",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int CountLeftovers(const std::string& job) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(job, ec)) {
    std::string name = e.path().filename().string();
    n += name.find(".tmp-") != std::string::npos || name.find(".del-") != std::string::npos;
  }
  return n;
}

TEST(CrashSafety, KillNineDuringSavesAlwaysLeavesALoadableLatest) {
  TempDir tmp("crash");
  ASSERT_TRUE(WriteKeyPair(GenerateKeyPair(), tmp.path(), "signer").ok());
  TrustStore trust;
  ASSERT_TRUE(trust.AddFile(tmp / "signer.pub").ok());
  const std::string job = tmp / "job";

  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> delay_ms(0, 150);
  int kills_with_checkpoint = 0, kills_mid_write = 0;
  int64_t last_step = 0;
  for (int i = 0; i < kKills; ++i) {
    pid_t pid = StartWriter(job, tmp / "signer.key");
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited by itself with status " << WEXITSTATUS(status) << " at kill " << i;

    kills_mid_write += CountLeftovers(job) > 0;
    auto steps = ListCommittedSteps(job);
    ASSERT_TRUE(steps.ok());
    if (steps->empty()) {  // killed before its first commit
      EXPECT_EQ(ResolveCheckpointDir(job).status().code(), StatusCode::kNotFound);
      continue;
    }
    ++kills_with_checkpoint;
    auto loaded = LoadCheckpoint(job, trust, /*allow_unsigned=*/false);
    ASSERT_TRUE(loaded.ok()) << "after kill " << i << ": " << loaded.status().ToString();
    EXPECT_TRUE(ParseStepDirName(fs::path(loaded->dir).filename().string()).has_value()) << loaded->dir;
    const int64_t step = loaded->snapshot.step;
    EXPECT_GE(step, last_step) << "latest went backwards";
    last_step = step;
    TrainerSnapshot expect = MakeSnapshot(static_cast<uint64_t>(step), kMiB << 20, step);
    ASSERT_EQ(loaded->snapshot.tensors.size(), expect.tensors.size());
    for (size_t t = 0; t < expect.tensors.size(); ++t)
      ASSERT_TRUE(loaded->snapshot.tensors[t].bytes == expect.tensors[t].bytes) << "step " << step << " tensor " << t;
    ASSERT_EQ(loaded->snapshot.rank_tensors.size(), 1u);  // the rank-state file, also written under kill -9
    ASSERT_TRUE(loaded->snapshot.rank_tensors[0].bytes ==
                testing::MakeRankState(static_cast<uint64_t>(step), 0, testing::kRankStateBytes).bytes)
        << "step " << step << " rank state";
    for (int64_t s : *steps) {
      auto v = VerifyCheckpoint(job + "/" + StepDirName(s), trust, false);
      EXPECT_TRUE(v.ok()) << "after kill " << i << ", committed " << StepDirName(s) << ": " << v.status().ToString();
    }
  }
  std::printf("crash test: %d kills, %d after at least one commit, %d interrupted a write, reached step %lld\n", kKills,
              kills_with_checkpoint, kills_mid_write, static_cast<long long>(last_step));
  EXPECT_GT(kills_with_checkpoint, kKills / 2);
  EXPECT_GT(kills_mid_write, 0) << "no kill landed during a save; the test proved nothing";
}

}  // namespace
}  // namespace shoal
