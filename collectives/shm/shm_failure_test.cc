// Failure behaviour of the shared-memory backend: a silent peer times out naming op,
// tag and peer; Abort() from another thread ends a wait promptly; a peer that closes
// fails the others before their deadline; a missing rank fails the set-up within its
// timeout and leaves no segment; and, with ranks as real processes (this binary
// re-executed), a peer killed with SIGKILL mid-collective makes the others fail with
// a clear error well within the deadline.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <sstream>
#include <thread>

#include "collectives/memory_kv_store.h"
#include "collectives/shm/process_test_util.h"
#include "collectives/shm/shm_communicator.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::RunRanks;
using testing::UniquePrefix;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::unique_ptr<Communicator>> ConnectAll(int n, MemoryKvStore* kv) {
  const std::string prefix = UniquePrefix("shm-failure");
  std::vector<std::unique_ptr<Communicator>> comms(n);
  RunRanks(n, [&](int r) {
    auto comm = MakeShmCommunicator(r, n, kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  return comms;
}

// Entries of /dev/shm made for `prefix` (SegmentName starts with the prefix's hash).
int SegmentsFor(const std::string& prefix) {
  const std::string stem = fmt::format("shoal-{:016x}-", std::hash<std::string>{}(prefix));
  int n = 0;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      if (std::string(e->d_name).rfind(stem, 0) == 0) ++n;
    }
    ::closedir(dir);
  }
  return n;
}

TEST(ShmFailureTest, SilentPeerTimesOutNamingOpTagAndPeer) {
  MemoryKvStore kv;
  auto comms = ConnectAll(3, &kv);
  ASSERT_TRUE(comms[0] && comms[1] && comms[2]);
  // Rank 2 is attached but never calls AllReduce; rank 1 does.
  std::vector<float> v0(1000, 1.0f), v1(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 500ms;
  opts.tag = 7;
  // Rank 1's deadline is later, so rank 0 is the one that times out.
  CollectiveOptions later = opts;
  later.timeout = 5s;
  auto other = std::async(std::launch::async, [&] {
    return comms[1]->AllReduce(v1.data(), v1.size(), DType::kF32, ReduceOp::kSum, later);
  });
  const auto start = Clock::now();
  const Status s = comms[0]->AllReduce(v0.data(), v0.size(), DType::kF32, ReduceOp::kSum, opts);
  EXPECT_LT(SecondsSince(start), 1.5);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find("AllReduce(tag=7)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank 2"), std::string::npos) << s.message();
  // Rank 1 fails too, as soon as rank 0 gives up rather than at its own deadline.
  const Status peer = other.get();
  EXPECT_EQ(peer.code(), StatusCode::kAborted) << peer.ToString();
  EXPECT_LT(SecondsSince(start), 2.0);
  const Status again = comms[0]->Barrier({});
  EXPECT_EQ(again.code(), StatusCode::kAborted) << again.ToString();
}

TEST(ShmFailureTest, AbortFromAnotherThreadEndsWaitPromptly) {
  MemoryKvStore kv;
  auto comms = ConnectAll(2, &kv);
  ASSERT_TRUE(comms[0] && comms[1]);
  std::vector<float> v(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 30s;
  auto aborter = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(100ms);
    comms[0]->Abort();
  });
  const auto start = Clock::now();
  const Status s = comms[0]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  const double elapsed = SecondsSince(start);
  aborter.get();
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  EXPECT_GE(elapsed, 0.09);
  EXPECT_LT(elapsed, 1.0);
  for (const Status& later : {comms[0]->Barrier({}),
                              comms[0]->AllReduce(v.data(), 0, DType::kF32, ReduceOp::kSum, {})}) {
    EXPECT_EQ(later.code(), StatusCode::kAborted) << later.ToString();
  }
  // The peer learns of it at its next call instead of waiting out its deadline.
  const auto peer_start = Clock::now();
  const Status peer = comms[1]->Barrier(opts);
  EXPECT_EQ(peer.code(), StatusCode::kAborted) << peer.ToString();
  EXPECT_NE(peer.message().find("rank 0 closed"), std::string::npos) << peer.message();
  EXPECT_LT(SecondsSince(peer_start), 1.0);
}

TEST(ShmFailureTest, AbortBeforeCallFailsAtOnce) {
  MemoryKvStore kv;
  auto comms = ConnectAll(2, &kv);
  ASSERT_TRUE(comms[0]);
  comms[0]->Abort();
  std::vector<char> out(2);
  const auto start = Clock::now();
  EXPECT_EQ(comms[0]->AllGather("x", out.data(), 1, {}).code(), StatusCode::kAborted);
  EXPECT_LT(SecondsSince(start), 0.1);
}

TEST(ShmFailureTest, PeerGoingAwayFailsTheWaitBeforeTheDeadline) {
  MemoryKvStore kv;
  auto comms = ConnectAll(2, &kv);
  ASSERT_TRUE(comms[0] && comms[1]);
  std::vector<float> v(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 20s;
  auto killer = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(100ms);
    comms[1].reset();  // as a generation ending on that rank
  });
  const auto start = Clock::now();
  const Status s = comms[0]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  killer.get();
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  EXPECT_NE(s.message().find("rank 1 closed"), std::string::npos) << s.message();
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_EQ(comms[0]->Barrier({}).code(), StatusCode::kAborted);
}

TEST(ShmFailureTest, RendezvousWithMissingRankFailsWithinTimeoutAndLeavesNoSegment) {
  for (int present : {0, 1}) {  // the creator waits, or a joiner waits for the creator
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("shm-missing");
    const auto start = Clock::now();
    // Ranks `present` and 2 of 3 arrive (rank 1 or 0 never does).
    std::vector<StatusOr<std::unique_ptr<Communicator>>> made;
    std::vector<std::thread> ranks;
    std::vector<Status> got(3);
    for (int r : {present, 2}) {
      ranks.emplace_back([&, r] { got[r] = MakeShmCommunicator(r, 3, &kv, prefix, 500ms).status(); });
    }
    for (auto& t : ranks) t.join();
    EXPECT_LT(SecondsSince(start), 1.5);
    for (int r : {present, 2}) {
      EXPECT_EQ(got[r].code(), StatusCode::kDeadlineExceeded) << got[r].ToString();
    }
    if (present == 0) {
      EXPECT_NE(got[0].message().find("ranks [1] never attached"), std::string::npos) << got[0].message();
    } else {
      EXPECT_NE(got[2].message().find(prefix + "/shm/segment"), std::string::npos) << got[2].message();
    }
    EXPECT_EQ(SegmentsFor(prefix), 0);
  }
}

TEST(ShmFailureTest, NoSegmentLeftOnceEveryRankAttached) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-unlinked");
  std::vector<std::unique_ptr<Communicator>> comms(3);
  RunRanks(3, [&](int r) {
    auto comm = MakeShmCommunicator(r, 3, &kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  // Live and working, yet nothing in /dev/shm: a SIGKILL now cannot leak it.
  EXPECT_EQ(SegmentsFor(prefix), 0);
  RunRanks(3, [&](int r) { EXPECT_TRUE(comms[r]->Barrier({}).ok()); });
}

TEST(ShmFailureTest, FactoryRejectsBadArguments) {
  MemoryKvStore kv;
  EXPECT_EQ(MakeShmCommunicator(0, 2, nullptr, "p", 1s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeShmCommunicator(2, 2, &kv, "p", 1s).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeShmCommunicator(0, 1, &kv, "p", 0ms).status().code(), StatusCode::kInvalidArgument);
}

TEST(ShmFailureTest, InvalidArgumentsDoNotBreakTheCommunicator) {
  MemoryKvStore kv;
  auto comms = ConnectAll(2, &kv);
  ASSERT_TRUE(comms[0] && comms[1]);
  EXPECT_EQ(comms[0]->Broadcast(nullptr, 4, 3, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->AllReduce(nullptr, 4, DType::kF32, ReduceOp::kSum, {}).code(),
            StatusCode::kInvalidArgument);
  CollectiveOptions zero;
  zero.timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(comms[0]->Barrier(zero).code(), StatusCode::kInvalidArgument);
  RunRanks(2, [&](int r) {
    float x = 2.5f + r;
    ASSERT_TRUE(comms[r]->AllReduce(&x, 1, DType::kF32, ReduceOp::kAverage, {}).ok());
    EXPECT_EQ(x, 3.0f);
  });
}

// ---- ranks as processes ------------------------------------------------------


// The rank's side, run only when the parent re-executes this binary with
// SHOAL_SHM_TEST_DIR set: build the communicator, then allreduce the example model's
// gradient (235,146 floats) until a call fails, and write how it failed and how long
// the failing call took.
TEST(ShmProcessChild, Rank) {
  if (std::string(testing::Env("SHOAL_SHM_TEST_DIR")).empty()) GTEST_SKIP() << "child mode only";
  const std::string dir = testing::Env("SHOAL_SHM_TEST_DIR");
  const int rank = std::atoi(testing::Env("SHOAL_SHM_TEST_RANK"));
  const int size = std::atoi(testing::Env("SHOAL_SHM_TEST_SIZE"));
  testing::DirKvStore kv(dir);
  auto comm = MakeShmCommunicator(rank, size, &kv, testing::Env("SHOAL_SHM_TEST_PREFIX"), 20s);
  ASSERT_TRUE(comm.ok()) << comm.status().ToString();
  std::vector<float> grad(235146, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 20s;
  Status s;
  double seconds = 0;
  int iterations = 0;
  for (; iterations < 1000000; ++iterations) {
    if (iterations == 3) std::ofstream(dir + "/started." + std::to_string(rank)) << "1";
    const auto start = Clock::now();
    s = (*comm)->AllReduce(grad.data(), grad.size(), DType::kF32, ReduceOp::kAverage, opts);
    seconds = SecondsSince(start);
    if (!s.ok()) break;
  }
  std::ofstream(dir + "/result." + std::to_string(rank))
      << static_cast<int>(s.code()) << "\n" << seconds << "\n" << iterations << "\n" << s.message();
}

struct ChildResult {
  int code = -1;
  double seconds = 0;
  int iterations = 0;
  std::string message;
};

class ShmKillTest : public ::testing::TestWithParam<int> {};

// Four ranks as processes; the victim gets SIGKILL while all are busy allreducing.
// The survivors must fail with kAborted within a few seconds (their deadline is 20 s)
// and nothing may be left in /dev/shm.
TEST_P(ShmKillTest, PeerKilledMidCollectiveFailsTheOthersPromptly) {
  constexpr int kSize = 4;
  const int victim = GetParam();
  char tmpl[] = "/tmp/shm-kill-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string prefix = UniquePrefix("shm-kill") + "/" + std::to_string(::getpid()) + "/";

  const std::vector<pid_t> pids = testing::SpawnSelf(kSize, "ShmProcessChild.Rank", [&](int r) {
    return std::vector<std::string>{"SHOAL_SHM_TEST_DIR=" + dir, "SHOAL_SHM_TEST_RANK=" + std::to_string(r),
                                    "SHOAL_SHM_TEST_SIZE=" + std::to_string(kSize),
                                    "SHOAL_SHM_TEST_PREFIX=" + prefix};
  });
  ASSERT_EQ(pids.size(), static_cast<size_t>(kSize));
  auto kill_all = [&] {
    for (pid_t p : pids) ::kill(p, SIGKILL);
    for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  };
  // Wait until every rank has finished a few allreduces.
  const auto setup_deadline = Clock::now() + 30s;
  for (int r = 0; r < kSize; ++r) {
    while (::access((dir + "/started." + std::to_string(r)).c_str(), F_OK) != 0) {
      if (Clock::now() > setup_deadline) {
        kill_all();
        FAIL() << "rank " << r << " never got going";
      }
      std::this_thread::sleep_for(5ms);
    }
  }
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(::kill(pids[victim], SIGKILL), 0);
  const auto killed_at = Clock::now();
  // Do not reap the victim yet: a zombie must count as dead too.
  for (int r = 0; r < kSize; ++r) {
    if (r == victim) continue;
    int status = 0;
    while (::waitpid(pids[r], &status, WNOHANG) == 0) {
      if (SecondsSince(killed_at) > 15) {
        kill_all();
        FAIL() << "rank " << r << " still running 15 s after rank " << victim << " was killed: a hang";
      }
      std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank " << r << " status " << status;
  }
  const double all_failed_after = SecondsSince(killed_at);
  ::waitpid(pids[victim], nullptr, 0);

  bool victim_named = false;
  for (int r = 0; r < kSize; ++r) {
    if (r == victim) continue;
    ChildResult res;
    std::ifstream in(dir + "/result." + std::to_string(r));
    ASSERT_TRUE(in) << "rank " << r << " wrote no result";
    in >> res.code >> res.seconds >> res.iterations;
    in.get();
    std::getline(in, res.message, '\0');
    EXPECT_EQ(res.code, static_cast<int>(StatusCode::kAborted)) << "rank " << r << ": " << res.message;
    EXPECT_LT(res.seconds, 5.0) << "rank " << r << ": " << res.message;
    EXPECT_GT(res.iterations, 3);
    if (res.message.find(fmt::format("rank {} (pid {}) died", victim, pids[victim])) != std::string::npos) {
      victim_named = true;
    }
    std::printf("rank %d failed after %d allreduces: %s\n", r, res.iterations, res.message.c_str());
  }
  EXPECT_TRUE(victim_named) << "no survivor named the dead rank";
  EXPECT_LT(all_failed_after, 5.0);
  EXPECT_EQ(SegmentsFor(prefix), 0);
  if (std::system(("rm -rf " + dir).c_str()) != 0) ADD_FAILURE() << "could not remove " << dir;
}

INSTANTIATE_TEST_SUITE_P(Victim, ShmKillTest, ::testing::Values(0, 3),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return fmt::format("rank{}", info.param);
                         });

}  // namespace
}  // namespace shoal
