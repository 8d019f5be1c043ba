// Lifecycle of the shared-memory backend as elastic training uses it: one
// communicator per generation under a fresh prefix, destroyed when the generation
// ends, sometimes after an abort. A hundred generations in one process must leave no
// segments in /dev/shm, no threads, no file descriptors and no mappings behind.
#include <dirent.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/memory_kv_store.h"
#include "collectives/shm/shm_communicator.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::RunRanks;
using testing::UniquePrefix;

// Entries of a directory without "." and ".." whose name contains `part`.
int CountEntries(const std::string& path, const std::string& part = "") {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != ".." && name.find(part) != std::string::npos) ++n;
  }
  ::closedir(dir);
  return n;
}

int CountMappings() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) ++n;
  return n;
}

struct ProcessResources {
  int threads = 0;
  int fds = 0;
  int mappings = 0;
  int segments = 0;  // this process's segments in /dev/shm (the name carries the creator's pid)
};

ProcessResources Measure() {
  return {CountEntries("/proc/self/task"), CountEntries("/proc/self/fd"), CountMappings(),
          CountEntries("/dev/shm", fmt::format("-{}-", ::getpid()))};
}

std::vector<std::unique_ptr<Communicator>> Generation(MemoryKvStore* kv, int n) {
  const std::string prefix = UniquePrefix("shm-lifecycle");
  std::vector<std::unique_ptr<Communicator>> comms(n);
  RunRanks(n, [&](int r) {
    auto comm = MakeShmCommunicator(r, n, kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  return comms;
}

void HealthyRound(MemoryKvStore* kv, int n) {
  auto comms = Generation(kv, n);
  for (const auto& c : comms) ASSERT_TRUE(c);
  RunRanks(n, [&](int r) {
    std::vector<float> v(5, static_cast<float>(r + 1));
    CollectiveOptions opts;
    opts.timeout = 10s;
    const Status s = comms[r]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
    ASSERT_TRUE(s.ok()) << "rank " << r << ": " << s.ToString();
    for (float x : v) EXPECT_EQ(x, static_cast<float>(n * (n + 1) / 2));
  });
  comms.clear();
}

// The last rank is inside an AllReduce the others never join when it is aborted from
// another thread; then rank 0's own call fails (the aborted rank closed), and all
// are destroyed.
void AbortedRound(MemoryKvStore* kv, int n) {
  auto comms = Generation(kv, n);
  for (const auto& c : comms) ASSERT_TRUE(c);
  const int victim = n - 1;
  // Above ShmCommunicator::OneShotLimit() (half a slot with two ranks): a call of
  // several steps.
  std::vector<float> v(600000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 10s;
  auto waiting = std::async(std::launch::async, [&] {
    return comms[victim]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  });
  std::this_thread::sleep_for(20ms);
  comms[victim]->Abort();
  ASSERT_EQ(waiting.wait_for(5s), std::future_status::ready) << "Abort() did not end the wait";
  EXPECT_EQ(waiting.get().code(), StatusCode::kAborted);
  comms[victim].reset();
  std::vector<float> w(600000, 1.0f);
  opts.timeout = 5s;
  const auto start = std::chrono::steady_clock::now();
  const Status s = comms[0]->AllReduce(w.data(), w.size(), DType::kF32, ReduceOp::kSum, opts);
  EXPECT_FALSE(s.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s) << s.ToString();
  comms.clear();
}

TEST(ShmLifecycleTest, HundredGenerationsLeakNoSegmentsThreadsOrDescriptors) {
  MemoryKvStore kv;
  // Warm-up at every world size the loop uses: glibc caches thread stacks (mappings).
  for (int n = 2; n <= 8; ++n) HealthyRound(&kv, n);
  AbortedRound(&kv, 2);
  AbortedRound(&kv, 3);
  ASSERT_FALSE(HasFailure());
  const ProcessResources before = Measure();
  ASSERT_GT(before.threads, 0);
  ASSERT_GT(before.fds, 0);
  EXPECT_EQ(before.segments, 0);
  {
    // A live generation does show: a mapping per rank (ranks are threads here).
    auto live = Generation(&kv, 3);
    EXPECT_GE(Measure().mappings, before.mappings + 3);
  }

  constexpr int kRounds = 100;
  for (int i = 0; i < kRounds && !HasFailure(); ++i) {
    HealthyRound(&kv, 2 + i % 7);  // world sizes 2 to 8
    if (i % 10 == 9) AbortedRound(&kv, 2 + (i / 10) % 3);
  }
  ASSERT_FALSE(HasFailure());

  const ProcessResources after = Measure();
  // Slack of 2 for anything a runtime makes lazily once; a leak per generation shows
  // as 10 or more.
  constexpr int kSlack = 2;
  EXPECT_LE(after.threads, before.threads + kSlack) << "threads " << before.threads << " -> " << after.threads;
  EXPECT_LE(after.fds, before.fds + kSlack) << "descriptors " << before.fds << " -> " << after.fds;
  EXPECT_LE(after.mappings, before.mappings + kSlack) << "mappings " << before.mappings << " -> " << after.mappings;
  EXPECT_EQ(after.segments, 0) << "segments left in /dev/shm";
}

}  // namespace
}  // namespace shoal
