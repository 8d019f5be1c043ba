// Failure behaviour of the Gloo backend: a silent peer times out with a message
// naming op, tag and peer; Abort() from another thread ends a wait promptly; a
// missing rank fails the rendezvous within its timeout; a failed communicator
// refuses further calls.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
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

// Connects n ranks and hands the communicators to `body` on the main thread.
std::vector<std::unique_ptr<Communicator>> ConnectAll(int n) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("failure");
  std::vector<std::unique_ptr<Communicator>> comms(n);
  RunRanks(n, [&](int r) {
    auto comm = MakeGlooCommunicator(r, n, &kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    comms[r] = std::move(comm).value();
  });
  return comms;
}

TEST(GlooFailureTest, SilentPeerTimesOutNamingOpTagAndPeer) {
  auto comms = ConnectAll(2);
  ASSERT_TRUE(comms[0] && comms[1]);
  // Rank 1 is connected but never calls AllReduce.
  std::vector<float> v(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 500ms;
  opts.tag = 7;
  const auto start = Clock::now();
  const Status s = comms[0]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  EXPECT_LT(SecondsSince(start), 1.5);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find("AllReduce"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("tag=7"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.message();
  // Gloo closed every pair on the timeout: the communicator refuses further work.
  const Status again = comms[0]->Barrier({});
  EXPECT_EQ(again.code(), StatusCode::kAborted) << again.ToString();
}

TEST(GlooFailureTest, AbortFromAnotherThreadEndsWaitPromptly) {
  auto comms = ConnectAll(2);
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
  for (const Status& later : {comms[0]->Barrier({}), comms[0]->AllReduce(v.data(), 0, DType::kF32,
                                                                         ReduceOp::kSum, {})}) {
    EXPECT_EQ(later.code(), StatusCode::kAborted) << later.ToString();
  }
}

TEST(GlooFailureTest, AbortBeforeCallFailsAtOnce) {
  auto comms = ConnectAll(2);
  ASSERT_TRUE(comms[0]);
  comms[0]->Abort();
  std::vector<char> out(2);
  const auto start = Clock::now();
  EXPECT_EQ(comms[0]->AllGather("x", out.data(), 1, {}).code(), StatusCode::kAborted);
  EXPECT_LT(SecondsSince(start), 0.1);
}

TEST(GlooFailureTest, PeerGoingAwayFailsTheWaitBeforeTheDeadline) {
  auto comms = ConnectAll(2);
  ASSERT_TRUE(comms[0] && comms[1]);
  std::vector<float> v(1000, 1.0f);
  CollectiveOptions opts;
  opts.timeout = 20s;
  auto killer = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(100ms);
    comms[1].reset();  // closes rank 1's connections, as a crashed process would
  });
  const auto start = Clock::now();
  const Status s = comms[0]->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
  killer.get();
  EXPECT_FALSE(s.ok());
  EXPECT_LT(SecondsSince(start), 5.0) << s.ToString();
  EXPECT_EQ(comms[0]->Barrier({}).code(), StatusCode::kAborted);
}

TEST(GlooFailureTest, RendezvousWithMissingRankFailsWithinTimeout) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("missing");
  const auto start = Clock::now();
  // Rank 1 of 2 never arrives.
  auto comm = MakeGlooCommunicator(0, 2, &kv, prefix, 500ms);
  EXPECT_LT(SecondsSince(start), 1.5);
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), StatusCode::kDeadlineExceeded) << comm.status().ToString();
  EXPECT_NE(comm.status().message().find(prefix + "/gloo/1"), std::string::npos)
      << comm.status().message();
}

TEST(GlooFailureTest, BindsByInterfaceName) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("iface");
  RunRanks(2, [&](int r) {
    auto comm = MakeGlooCommunicator(r, 2, &kv, prefix, 5s, "lo");
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    EXPECT_TRUE((*comm)->Barrier({}).ok());
  });
}

TEST(GlooFailureTest, FactoryRejectsBadArguments) {
  MemoryKvStore kv;
  EXPECT_EQ(MakeGlooCommunicator(0, 2, nullptr, "p", 1s).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeGlooCommunicator(2, 2, &kv, "p", 1s).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeGlooCommunicator(0, 1, &kv, "p", 0ms).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(GlooFailureTest, InvalidArgumentsDoNotBreakTheCommunicator) {
  auto comms = ConnectAll(1);
  ASSERT_TRUE(comms[0]);
  EXPECT_EQ(comms[0]->Broadcast(nullptr, 4, 3, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(comms[0]->AllReduce(nullptr, 4, DType::kF32, ReduceOp::kSum, {}).code(),
            StatusCode::kInvalidArgument);
  CollectiveOptions zero;
  zero.timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(comms[0]->Barrier(zero).code(), StatusCode::kInvalidArgument);
  float x = 2.5f;
  ASSERT_TRUE(comms[0]->AllReduce(&x, 1, DType::kF32, ReduceOp::kAverage, {}).ok());
  EXPECT_EQ(x, 2.5f);  // size 1 + average = identity
}

}  // namespace
}  // namespace shoal
