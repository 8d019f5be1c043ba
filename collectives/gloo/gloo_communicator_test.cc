// Correctness of the Gloo backend with ranks as threads over a MemoryKvStore:
// allreduce (world size x count x dtype x op) against a reference with stated
// tolerances, allgather, broadcast, barrier and the exact byte counts.
#include "collectives/gloo/gloo_communicator.h"

#include <gloo/allreduce.h>
#include <gloo/context.h>
#include <gloo/math.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <tuple>

#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::Decode;
using testing::RunRanks;
using testing::UniquePrefix;

std::unique_ptr<Communicator> Connect(MemoryKvStore* kv, const std::string& prefix, int rank,
                                      int n) {
  auto comm = MakeGlooCommunicator(rank, n, kv, prefix, 10s);
  EXPECT_TRUE(comm.ok()) << comm.status().ToString();
  return comm.ok() ? std::move(comm).value() : nullptr;
}

struct RankResult {
  std::vector<char> data;
  int64_t sent = 0, received = 0;
};

// Runs one allreduce on n ranks and returns each rank's buffer and byte counts.
std::vector<RankResult> RunAllReduce(int n, size_t count, DType dtype, ReduceOp op,
                                     bool integer_valued, uint32_t tag = 0) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("allreduce");
  std::vector<RankResult> results(n);
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    if (!comm) return;
    results[r].data = testing::MakeInput(dtype, r, count, integer_valued);
    CollectiveOptions opts;
    opts.tag = tag;
    const Status s = comm->AllReduce(results[r].data.data(), count, dtype, op, opts);
    EXPECT_TRUE(s.ok()) << "rank " << r << ": " << s.ToString();
    results[r].sent = comm->bytes_sent();
    results[r].received = comm->bytes_received();
  });
  return results;
}

void CheckAllReduce(int n, size_t count, DType dtype, ReduceOp op, bool integer_valued) {
  const auto results = RunAllReduce(n, count, dtype, op, integer_valued);
  const auto ref = testing::ReferenceReduce(dtype, n, count, op, integer_valued);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(results[r].data.size(), count * DTypeSize(dtype));
    // Replicas must stay identical, bit for bit, or data-parallel training drifts.
    EXPECT_EQ(results[r].data, results[0].data) << "rank " << r << " differs from rank 0";
  }
  const std::vector<float> got = Decode(results[0].data, dtype);
  int bad = 0;
  for (size_t i = 0; i < count && bad < 5; ++i) {
    if (integer_valued) {
      const float want = testing::ExpectedInteger(dtype, ref.sum[i], n, op);
      if (got[i] != want) ++bad;
      EXPECT_EQ(got[i], want) << "element " << i;
    } else {
      const double tol = testing::Tolerance(dtype, n, ref.magnitude[i]);
      if (std::fabs(got[i] - ref.value[i]) > tol) ++bad;
      EXPECT_NEAR(got[i], ref.value[i], tol) << "element " << i;
    }
  }
  // Byte counters: exactly what the ring puts on the wire, per rank.
  for (int r = 0; r < n; ++r) {
    int64_t sent = 0, received = 0;
    if (n > 1) testing::RingBytes(count, n, r, DTypeSize(dtype), &sent, &received);
    EXPECT_EQ(results[r].sent, sent) << "rank " << r;
    EXPECT_EQ(results[r].received, received) << "rank " << r;
    if (count % n == 0) {  // the textbook 2*(n-1)/n of the buffer
      EXPECT_EQ(results[r].sent,
                static_cast<int64_t>(2 * (n - 1) * (count / n) * DTypeSize(dtype)));
    }
  }
}

using AllReduceParam = std::tuple<int, size_t, DType, ReduceOp>;
class GlooAllReduceTest : public ::testing::TestWithParam<AllReduceParam> {};

TEST_P(GlooAllReduceTest, MatchesReference) {
  const auto [n, count, dtype, op] = GetParam();
  // f32 runs on integer-valued inputs (exact); 16-bit on fractional ones, to
  // measure the wire rounding against its bound.
  CheckAllReduce(n, count, dtype, op, /*integer_valued=*/dtype == DType::kF32);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, GlooAllReduceTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(size_t{0}, size_t{1}, size_t{7}, size_t{1000},
                                         size_t{65537}),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(ReduceOp::kSum, ReduceOp::kAverage)),
    [](const ::testing::TestParamInfo<AllReduceParam>& info) {
      // fmt rather than string concatenation: GCC 12 warns falsely (-Wrestrict) on
      // "literal" + std::string.
      return fmt::format("n{}_c{}_{}_{}", std::get<0>(info.param), std::get<1>(info.param),
                         DTypeName(std::get<2>(info.param)),
                         std::get<3>(info.param) == ReduceOp::kSum ? "sum" : "avg");
    });

class GlooWorldTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooWorldTest, FractionalF32WithinRelativeTolerance) {
  CheckAllReduce(GetParam(), 1000, DType::kF32, ReduceOp::kSum, false);
  CheckAllReduce(GetParam(), 1000, DType::kF32, ReduceOp::kAverage, false);
}

TEST_P(GlooWorldTest, IntegerValued16BitIsExact) {
  CheckAllReduce(GetParam(), 1000, DType::kBF16, ReduceOp::kSum, true);
  CheckAllReduce(GetParam(), 1000, DType::kF16, ReduceOp::kAverage, true);
}

// Two ranks exchange whole buffers up to kPairExchangeMaxBytes and use the ring beyond;
// both give exact sums, identical on both ranks, for the same bytes on the wire.
TEST(GlooPairTest, ExchangeAndRingAgreeAcrossTheThreshold) {
  const size_t small = GlooCommunicator::kPairExchangeMaxBytes / 4 - 3;
  const size_t large = GlooCommunicator::kPairExchangeMaxBytes / 4 + 1001;
  for (size_t count : {small, large}) {
    CheckAllReduce(2, count, DType::kF32, ReduceOp::kSum, true);
    CheckAllReduce(2, count, DType::kF32, ReduceOp::kAverage, false);
    const auto results = RunAllReduce(2, count, DType::kF32, ReduceOp::kSum, false);
    EXPECT_EQ(results[0].data, results[1].data) << count;
    for (const auto& r : results) EXPECT_EQ(r.sent, static_cast<int64_t>(count * 4)) << count;
  }
  CheckAllReduce(2, small / 2, DType::kBF16, ReduceOp::kAverage, true);
}

TEST_P(GlooWorldTest, AllGatherIsExact) {
  const int n = GetParam();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{65537}}) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("allgather");
    RunRanks(n, [&](int r) {
      auto comm = Connect(&kv, prefix, r, n);
      if (!comm) return;
      std::vector<char> mine(bytes), all(n * bytes, 0);
      for (size_t i = 0; i < bytes; ++i) mine[i] = static_cast<char>(r * 31 + i);
      ASSERT_TRUE(comm->AllGather(mine.data(), all.data(), bytes, {}).ok());
      // In place: the rank's own block of the output doubles as the input.
      std::vector<char> inplace(n * bytes, 0);
      std::copy(mine.begin(), mine.end(), inplace.begin() + r * bytes);
      ASSERT_TRUE(comm->AllGather(inplace.data() + r * bytes, inplace.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) {
          ASSERT_EQ(all[p * bytes + i], static_cast<char>(p * 31 + i)) << "rank " << r;
        }
      }
      EXPECT_EQ(inplace, all);
      EXPECT_EQ(comm->bytes_sent(), static_cast<int64_t>(2 * (n - 1) * bytes));
      EXPECT_EQ(comm->bytes_received(), static_cast<int64_t>(2 * (n - 1) * bytes));
    });
  }
}

// Block p of rank r's send buffer must arrive as block r of rank p's receive buffer,
// on the backend's own point-to-point path and on the AllGather-based default.
TEST_P(GlooWorldTest, AllToAllDeliversEachBlockToItsRank) {
  const int n = GetParam();
  auto byte = [](int from, int to, size_t i) { return static_cast<char>(from * 37 + to * 11 + i); };
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{65537}}) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("alltoall");
    RunRanks(n, [&](int r) {
      auto comm = Connect(&kv, prefix, r, n);
      if (!comm) return;
      std::vector<char> send(n * bytes);
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) send[p * bytes + i] = byte(r, p, i);
      }
      std::vector<char> got(n * bytes, 0), via_default(n * bytes, 0);
      ASSERT_TRUE(comm->AllToAll(send.data(), got.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(got[p * bytes + i], byte(p, r, i)) << "rank " << r;
      }
      EXPECT_EQ(comm->bytes_sent(), static_cast<int64_t>((n - 1) * bytes));
      EXPECT_EQ(comm->bytes_received(), static_cast<int64_t>((n - 1) * bytes));
      ASSERT_TRUE(comm->Communicator::AllToAll(send.data(), via_default.data(), bytes, {}).ok());
      EXPECT_EQ(via_default, got);
      // The default's n-1 allgathers cost (n-1)^2 blocks each way.
      EXPECT_EQ(comm->bytes_sent(), static_cast<int64_t>((n - 1) * bytes + (n - 1) * (n - 1) * bytes));
    });
  }
}

TEST_P(GlooWorldTest, BroadcastIsExactFromAnyRoot) {
  const int n = GetParam();
  // 3 MiB takes the chain path for n > 2 (12 segments, with a short last one).
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{1000}, size_t{(3 << 20) + 5}}) {
    for (int root : {0, n - 1}) {
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("broadcast");
      std::vector<int64_t> sent(n), received(n);
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        if (!comm) return;
        std::vector<char> data(bytes, 0);
        if (r == root) {
          for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<char>(i * 7 + root);
        }
        ASSERT_TRUE(comm->Broadcast(data.data(), bytes, root, {}).ok());
        for (size_t i = 0; i < bytes; ++i) {
          ASSERT_EQ(data[i], static_cast<char>(i * 7 + root)) << "rank " << r << " byte " << i;
        }
        sent[r] = comm->bytes_sent();
        received[r] = comm->bytes_received();
      });
      int64_t total_sent = 0;
      for (int r = 0; r < n; ++r) {
        total_sent += sent[r];
        EXPECT_EQ(received[r], r == root ? 0 : static_cast<int64_t>(bytes));
      }
      // Star or chain, the buffer crosses n-1 links once each.
      EXPECT_EQ(total_sent, static_cast<int64_t>((n - 1) * bytes));
    }
  }
}

TEST_P(GlooWorldTest, BarrierWaitsForEveryRank) {
  const int n = GetParam();
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("barrier");
  constexpr int kRounds = 3;
  std::atomic<int> arrived[kRounds] = {};
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    if (!comm) return;
    for (int round = 0; round < kRounds; ++round) {
      // A different rank is late each round; nobody may leave before it arrives.
      if (r == round % n) std::this_thread::sleep_for(30ms);
      arrived[round].fetch_add(1);
      ASSERT_TRUE(comm->Barrier({}).ok());
      EXPECT_EQ(arrived[round].load(), n) << "rank " << r << " left round " << round << " early";
    }
  });
}

TEST_P(GlooWorldTest, ConcurrentTagsDoNotMix) {
  const int n = GetParam();
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("tags");
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    if (!comm) return;
    // Two threads per rank, one per tag, each with its own sequence of values.
    auto worker = [&](uint32_t tag) {
      for (int iter = 0; iter < 10; ++iter) {
        std::vector<float> v(513, static_cast<float>(tag * 100 + iter + r));
        CollectiveOptions opts;
        opts.tag = tag;
        ASSERT_TRUE(comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts).ok());
        const float want = n * static_cast<float>(tag * 100 + iter) + n * (n - 1) / 2.0f;
        ASSERT_EQ(v[0], want);
        ASSERT_EQ(v[512], want);
      }
    };
    std::thread a(worker, 1), b(worker, 2);
    a.join();
    b.join();
  });
}

// The ring is pipelined in segments of kRingSegmentBytes, more than the grid's
// buffers hold per chunk; a 1 KiB segment makes every chunk many segments (and an
// odd count a short last one), with the same results and the same bytes.
TEST_P(GlooWorldTest, ManySegmentsPerChunkMatchReference) {
  setenv("SHOAL_GLOO_RING_SEGMENT_KIB", "1", 1);
  CheckAllReduce(GetParam(), 65537, DType::kF32, ReduceOp::kSum, true);
  CheckAllReduce(GetParam(), 65537, DType::kF32, ReduceOp::kAverage, false);
  CheckAllReduce(GetParam(), 10007, DType::kBF16, ReduceOp::kAverage, false);
  CheckAllReduce(GetParam(), 10007, DType::kF16, ReduceOp::kSum, true);
  unsetenv("SHOAL_GLOO_RING_SEGMENT_KIB");
}

INSTANTIATE_TEST_SUITE_P(World, GlooWorldTest, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return fmt::format("n{}", info.param);
                         });

// Benchmarks compare with Gloo's own allreduce on the same connections.
TEST(GlooCommunicatorTest, RawContextRunsGlooAllreduce) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("raw");
  RunRanks(2, [&](int r) {
    auto comm = Connect(&kv, prefix, r, 2);
    if (!comm) return;
    auto* gloo_comm = dynamic_cast<GlooCommunicator*>(comm.get());
    ASSERT_NE(gloo_comm, nullptr);
    ASSERT_NE(gloo_comm->raw_context(), nullptr);
    std::vector<float> v(100, static_cast<float>(r + 1));
    gloo::AllreduceOptions opts(gloo_comm->shared_context());
    opts.setOutput(v.data(), v.size());
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
        &gloo::sum<float>));
    gloo::allreduce(opts);
    EXPECT_EQ(v[0], 3.0f);
    // And our own collectives still work on the same connections afterwards.
    ASSERT_TRUE(comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, {}).ok());
    EXPECT_EQ(v[99], 6.0f);
  });
}

}  // namespace
}  // namespace shoal
