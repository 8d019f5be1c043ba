// NcclCommunicator's rendezvous, staging and failure handling, over FakeNcclApi so it
// runs on a CPU: a peer that never arrives, an async error, an op that overruns its
// timeout, Abort() from another thread, and building a new communicator afterwards.
#include "collectives/nccl/nccl_communicator.h"

#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "collectives/memory_kv_store.h"
#include "collectives/nccl/fake_nccl_api.h"
#include "collectives/test_util.h"

namespace shoal::nccl {
namespace {

using namespace std::chrono_literals;
using shoal::testing::RunRanks;
using shoal::testing::UniquePrefix;
using testing::FakeNcclApi;

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

NcclOptions Options(int rank, int size, KvStore* kv, const std::string& prefix,
                    std::chrono::milliseconds timeout = 5000ms) {
  NcclOptions o;
  o.rank = rank;
  o.size = size;
  o.kv = kv;
  o.prefix = prefix;
  o.timeout = timeout;
  o.device = 0;
  return o;
}

// Builds `n` communicators on threads (they must meet, as real ranks do).
std::vector<std::unique_ptr<NcclCommunicator>> BuildAll(int n, const std::shared_ptr<FakeNcclApi>& api,
                                                        KvStore* kv, const std::string& prefix) {
  std::vector<std::unique_ptr<NcclCommunicator>> comms(n);
  RunRanks(n, [&](int r) {
    auto c = NcclCommunicator::Create(Options(r, n, kv, prefix), api);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    comms[r] = std::move(*c);
  });
  return comms;
}

TEST(NcclHex, RoundTripsAndRejectsGarbage) {
  const std::string raw("\x00\x01\xfe\xff id", 7);
  EXPECT_EQ(*HexDecode(HexEncode(raw)), raw);
  EXPECT_EQ(HexDecode("abc").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(HexDecode("zz").status().code(), StatusCode::kDataLoss);
}

TEST(NcclCommunicator, CollectivesOnHostBuffersAcrossThreeRanks) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto comms = BuildAll(3, api, &kv, UniquePrefix("nccl"));
  RunRanks(3, [&](int r) {
    NcclCommunicator& c = *comms[r];
    CollectiveOptions opts;
    std::vector<float> v = {1.0f * r, 2.0f, -3.0f * r};  // host memory: staged through scratch
    ASSERT_TRUE(c.AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts).ok());
    EXPECT_EQ(v, (std::vector<float>{3.0f, 6.0f, -9.0f}));
    ASSERT_TRUE(c.AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kAverage, opts).ok());
    EXPECT_EQ(v, (std::vector<float>{3.0f, 6.0f, -9.0f}));
    int32_t mine = 10 + r, all[3] = {};
    ASSERT_TRUE(c.AllGather(&mine, all, sizeof(mine), opts).ok());
    EXPECT_EQ(all[0], 10);
    EXPECT_EQ(all[2], 12);
    uint64_t token = r == 1 ? 0xfeedull : 0;
    ASSERT_TRUE(c.Broadcast(&token, sizeof(token), 1, opts).ok());
    EXPECT_EQ(token, 0xfeedull);
    EXPECT_TRUE(c.Barrier(opts).ok());
    EXPECT_TRUE(c.AllReduce(v.data(), 0, DType::kF32, ReduceOp::kSum, opts).ok());  // 0 elements: no-op
    EXPECT_GT(c.bytes_sent(), 0);
  });
  comms.clear();
  EXPECT_EQ(api->destroys.load(), 3);  // healthy communicators are finalized, not aborted
  EXPECT_EQ(api->aborts.load(), 0);
}

TEST(NcclCommunicator, PeerNeverArrivesIsAbortedWithinTimeoutThenRebuilt) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  const auto t0 = std::chrono::steady_clock::now();
  // World size 2, only rank 0 started: the non-blocking init stays in progress.
  auto lonely = NcclCommunicator::Create(Options(0, 2, &kv, UniquePrefix("nccl"), 300ms), api);
  const double took = SecondsSince(t0);
  ASSERT_EQ(lonely.status().code(), StatusCode::kDeadlineExceeded) << lonely.status().ToString();
  EXPECT_NE(lonely.status().message().find("never arrive"), std::string::npos);
  EXPECT_GE(took, 0.3);
  EXPECT_LT(took, 2.0);  // the timeout plus polling, not a hang
  EXPECT_EQ(api->aborts.load(), 1);

  // Same process, next generation: both ranks arrive and the new communicator works.
  auto comms = BuildAll(2, api, &kv, UniquePrefix("nccl-gen2"));
  RunRanks(2, [&](int r) {
    float x = 1.0f + r;
    ASSERT_TRUE(comms[r]->AllReduce(&x, 1, DType::kF32, ReduceOp::kSum, {}).ok());
    EXPECT_EQ(x, 3.0f);
  });
}

TEST(NcclCommunicator, MissingUniqueIdTimesOutNamingTheKey) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto c = NcclCommunicator::Create(Options(1, 2, &kv, "job/7/gen/3", 100ms), api);
  ASSERT_EQ(c.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(c.status().message().find("job/7/gen/3/nccl/unique_id"), std::string::npos);
}

TEST(NcclCommunicator, OpWhosePeerNeverCallsIsAbortedAtItsTimeout) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto comms = BuildAll(2, api, &kv, UniquePrefix("nccl"));
  CollectiveOptions opts;
  opts.timeout = 200ms;
  float x = 1.0f;
  const auto t0 = std::chrono::steady_clock::now();
  const Status s = comms[0]->AllReduce(&x, 1, DType::kF32, ReduceOp::kSum, opts);  // rank 1 never calls
  const double took = SecondsSince(t0);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_GE(took, 0.2);
  EXPECT_LT(took, 2.0);
  EXPECT_EQ(api->aborts.load(), 1);
  // Later calls fail at once instead of waiting out another timeout.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_FALSE(comms[0]->Barrier({}).ok());
  EXPECT_LT(SecondsSince(t1), 0.5);
  EXPECT_EQ(comms[0]->abort_status().code(), StatusCode::kDeadlineExceeded);
}

TEST(NcclCommunicator, AsyncErrorAbortsPendingOpPromptly) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto comms = BuildAll(2, api, &kv, UniquePrefix("nccl"));
  CollectiveOptions opts;
  opts.timeout = 30'000ms;  // the error, not the timeout, must end the wait
  std::thread injector([&] {
    std::this_thread::sleep_for(100ms);
    api->InjectAsyncError("remote process exited (injected)");
  });
  float x = 1.0f;
  const auto t0 = std::chrono::steady_clock::now();
  const Status s = comms[0]->AllReduce(&x, 1, DType::kF32, ReduceOp::kSum, opts);
  injector.join();
  EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
  EXPECT_NE(s.message().find("injected"), std::string::npos);
  EXPECT_LT(SecondsSince(t0), 2.0);
  EXPECT_GE(api->aborts.load(), 1);  // the watchdog polls every communicator
}

TEST(NcclCommunicator, AbortFromAnotherThreadEndsAHungOp) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto comms = BuildAll(2, api, &kv, UniquePrefix("nccl"));
  api->hang_ops = true;  // both ranks call, but the op never finishes
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    comms[0]->Abort();
    comms[1]->Abort();
  });
  const auto t0 = std::chrono::steady_clock::now();
  RunRanks(2, [&](int r) {
    CollectiveOptions opts;
    opts.timeout = 30'000ms;
    float x = 1.0f;
    EXPECT_EQ(comms[r]->AllReduce(&x, 1, DType::kF32, ReduceOp::kSum, opts).code(), StatusCode::kAborted);
  });
  stopper.join();
  EXPECT_LT(SecondsSince(t0), 2.0);
  EXPECT_EQ(api->aborts.load(), 2);
  comms.clear();  // destroying aborted communicators must not touch NCCL again
  EXPECT_EQ(api->destroys.load(), 0);
}

TEST(NcclCommunicator, BucketGroupWaitsForBackwardEvent) {
  auto api = std::make_shared<FakeNcclApi>();
  MemoryKvStore kv;
  auto comms = BuildAll(2, api, &kv, UniquePrefix("nccl"));
  RunRanks(2, [&](int r) {
    // Device buckets (fake device memory) and a "compute stream" whose backward has
    // not finished until `gate` opens.
    void* a = nullptr;
    void* b = nullptr;
    ASSERT_TRUE(api->Malloc(&a, 4 * sizeof(float)).ok());
    ASSERT_TRUE(api->Malloc(&b, 2 * sizeof(float)).ok());
    float* fa = static_cast<float*>(a);
    float* fb = static_cast<float*>(b);
    for (int i = 0; i < 4; ++i) fa[i] = 1.0f;
    fb[0] = fb[1] = 2.0f * (r + 1);
    StreamHandle compute = nullptr;
    EventHandle backward_done = nullptr;
    ASSERT_TRUE(api->StreamCreate(&compute).ok());
    ASSERT_TRUE(api->EventCreate(&backward_done).ok());
    std::atomic<bool> gate{false};
    api->EnqueueGate(compute, &gate);
    ASSERT_TRUE(api->EventRecord(backward_done, compute).ok());
    CollectiveOptions opts;
    ASSERT_TRUE(comms[r]->EnqueueAllReduce({{a, 4, DType::kF32}, {b, 2, DType::kF32}}, ReduceOp::kSum,
                                           backward_done, opts).ok());
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(fa[0], 1.0f);  // not reduced while backward is still "running"
    gate = true;
    ASSERT_TRUE(comms[r]->Synchronize().ok());
    EXPECT_EQ(fa[3], 2.0f);
    EXPECT_EQ(fb[1], 6.0f);
  });
}

TEST(NcclCommunicator, NoDeviceOrBadLocalRankIsRefused) {
  auto api = std::make_shared<FakeNcclApi>();
  api->device_count = 0;
  auto none = NcclCommunicator::Create(Options(0, 1, nullptr, "p"), api);
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  api->device_count = 1;
  auto opts = Options(0, 1, nullptr, "p");
  opts.device = -1;
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  auto bad = NcclCommunicator::Create(opts, api);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::Create(Options(0, 2, nullptr, "p"), api).status().code(),
            StatusCode::kInvalidArgument);  // two ranks need a store
}

}  // namespace
}  // namespace shoal::nccl
