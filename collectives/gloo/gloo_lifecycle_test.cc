// Lifecycle of the Gloo backend, as elastic training uses it: one communicator per
// generation, built under a fresh prefix and destroyed when the generation ends. A
// hundred generations in one process must leave no threads or file descriptors behind.
#include <dirent.h>
#include <signal.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::RunRanks;
using testing::UniquePrefix;

// Entries of /proc/self/<what> without "." and "..". Listing /proc/self/fd opens one
// descriptor for the listing itself: the same one extra in every count.
int CountProcEntries(const char* what) {
  const std::string path = std::string("/proc/self/") + what;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") ++n;
  }
  ::closedir(dir);
  return n;
}

struct ProcessResources {
  int threads = 0;
  int fds = 0;
};

ProcessResources Measure() { return {CountProcEntries("task"), CountProcEntries("fd")}; }

// Builds one generation of `n` ranks (threads) over `kv`, all connected when it
// returns; null entries (with a test failure) if the rendezvous failed.
std::vector<std::unique_ptr<Communicator>> Generation(MemoryKvStore* kv, int n) {
  const std::string prefix = UniquePrefix("lifecycle");
  std::vector<std::unique_ptr<Communicator>> comms(n);
  RunRanks(n, [&](int r) {
    auto comm = MakeGlooCommunicator(r, n, kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  return comms;
}

// A healthy generation: one small AllReduce, its result checked, then destruction
// (from the main thread, once every rank is done, as a generation ends).
void HealthyRound(MemoryKvStore* kv, int n) {
  auto comms = Generation(kv, n);
  for (const auto& c : comms) ASSERT_TRUE(c);
  RunRanks(n, [&](int r) {
    std::vector<float> v(5, static_cast<float>(r + 1));
    CollectiveOptions opts;
    opts.timeout = 10s;
    const Status s = comms[r]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
    ASSERT_TRUE(s.ok()) << "rank " << r << ": " << s.ToString();
    for (float x : v) EXPECT_EQ(x, static_cast<float>(n * (n + 1) / 2));  // 1 + 2 + ... + n
  });
  comms.clear();
}

// A failed generation: the last rank is inside an AllReduce the others never join
// when it is aborted from another thread; it is destroyed, and then rank 0's own
// AllReduce finds the connection gone. Then everything is destroyed.
void AbortedRound(MemoryKvStore* kv, int n) {
  auto comms = Generation(kv, n);
  for (const auto& c : comms) ASSERT_TRUE(c);
  const int victim = n - 1;
  std::vector<float> v(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 10s;
  auto waiting = std::async(std::launch::async, [&] {
    return comms[victim]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  });
  // Most often the abort lands mid-wait; if it lands before the call starts, the call
  // fails at once, which is the same cleanup path.
  std::this_thread::sleep_for(20ms);
  comms[victim]->Abort();
  ASSERT_EQ(waiting.wait_for(5s), std::future_status::ready) << "Abort() did not end the wait";
  EXPECT_EQ(waiting.get().code(), StatusCode::kAborted);
  comms[victim].reset();
  std::vector<float> w(1000, 1.0f);
  opts.timeout = 5s;
  EXPECT_FALSE(comms[0]->AllReduce(w.data(), w.size(), DType::kF32, ReduceOp::kSum, opts).ok());
  comms.clear();
}

TEST(GlooLifecycleTest, HundredGenerationsLeakNoThreadsOrDescriptors) {
  MemoryKvStore kv;  // one store for all generations, as the coordinator's is
  // Warm-up: anything created once per process (Gloo's or glibc's lazily made state)
  // exists before the baseline.
  for (int i = 0; i < 3; ++i) HealthyRound(&kv, 2 + i % 2);
  AbortedRound(&kv, 2);
  AbortedRound(&kv, 3);
  ASSERT_FALSE(HasFailure());
  const ProcessResources before = Measure();
  ASSERT_GT(before.threads, 0);
  ASSERT_GT(before.fds, 0);
  {
    // The counts do see a live generation (each rank's Gloo device runs an I/O thread
    // and holds a listening socket, an epoll descriptor and one socket per peer), so
    // "no growth" below means it was all released.
    auto live = Generation(&kv, 3);
    const ProcessResources during = Measure();
    EXPECT_GT(during.threads, before.threads);
    EXPECT_GE(during.fds, before.fds + 3 * 2);
  }

  constexpr int kRounds = 100;
  for (int i = 0; i < kRounds && !HasFailure(); ++i) {
    HealthyRound(&kv, 2 + i % 2);  // world sizes 2 and 3
    if (i % 10 == 9) AbortedRound(&kv, 2 + (i / 10) % 2);
  }
  ASSERT_FALSE(HasFailure());

  const ProcessResources after = Measure();
  // Slack of 2: a per-process resource made lazily after the warm-up (a runtime's
  // helper thread or cached descriptor) would show once, not per generation. A leak
  // per generation, even one descriptor in ten generations, shows as 10 or more.
  constexpr int kSlack = 2;
  EXPECT_LE(after.threads, before.threads + kSlack)
      << "threads before " << before.threads << ", after " << kRounds << " generations "
      << after.threads;
  EXPECT_LE(after.fds, before.fds + kSlack)
      << "descriptors before " << before.fds << ", after " << kRounds << " generations "
      << after.fds;
}


// Gloo writes with writev, so a peer that is gone raises SIGPIPE, whose default action
// kills the process (a test binary, a tool embedding the trainer) instead of failing the
// collective. Making a communicator ignores it unless the program handles it itself. In a
// fresh process (threadsafe death tests re-run the binary), so nothing earlier set it.
TEST(GlooLifecycleTest, APeerThatIsGoneIsAnErrorNotSigpipe) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::signal(SIGPIPE, SIG_DFL);
        MemoryKvStore kv;
        auto comms = Generation(&kv, 2);
        struct sigaction now {};
        ::sigaction(SIGPIPE, nullptr, &now);
        ::raise(SIGPIPE);  // what a write to a closed peer delivers
        ::_exit(now.sa_handler == SIG_IGN && comms[0] && comms[1] ? 0 : 3);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace shoal
