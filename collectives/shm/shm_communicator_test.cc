// Correctness of the shared-memory backend with ranks as threads (each maps the
// segment on its own): allreduce over world size 1-8 x count (0, 1, odd, several
// rounds) x dtype x op against a reference with stated tolerances, allgather,
// all-to-all, broadcast, barrier, exact byte counts, and mismatched calls.
#include "collectives/shm/shm_communicator.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <tuple>

#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::Decode;
using testing::RunRanks;
using testing::UniquePrefix;

std::unique_ptr<Communicator> Connect(MemoryKvStore* kv, const std::string& prefix, int rank, int n,
                                      const ShmOptions& options = {}) {
  auto comm = MakeShmCommunicator(rank, n, kv, prefix, 20s, options);
  EXPECT_TRUE(comm.ok()) << comm.status().ToString();
  return comm.ok() ? std::move(comm).value() : nullptr;
}

struct RankResult {
  std::vector<char> data;
  int64_t sent = 0, received = 0;
};

std::vector<RankResult> RunAllReduce(int n, size_t count, DType dtype, ReduceOp op,
                                     bool integer_valued, const ShmOptions& options) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-allreduce");
  std::vector<RankResult> results(n);
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n, options);
    if (!comm) return;
    results[r].data = testing::MakeInput(dtype, r, count, integer_valued);
    CollectiveOptions opts;
    opts.timeout = 30s;
    const Status s = comm->AllReduce(results[r].data.data(), count, dtype, op, opts);
    EXPECT_TRUE(s.ok()) << "rank " << r << ": " << s.ToString();
    results[r].sent = comm->bytes_sent();
    results[r].received = comm->bytes_received();
  });
  return results;
}

// What ShmCommunicator::AllReduce documents: up to OneShotLimit(), sent = the buffer
// and received = (n-1) * the buffer; above, per round of at most half a slot, sent =
// the round's bytes, received = (n-1) * own slice + (round - own slice).
void ExpectedBytes(size_t count, size_t esize, int n, int r, size_t half_bytes, int64_t* sent,
                   int64_t* received) {
  *sent = *received = 0;
  if (n == 1) return;
  if (count * esize <= ShmCommunicator::OneShotLimit(n, half_bytes)) {
    *sent = static_cast<int64_t>(count * esize);
    *received = static_cast<int64_t>((n - 1) * count * esize);
    return;
  }
  const size_t per_round = half_bytes / esize;
  for (size_t off = 0; off < count; off += per_round) {
    const size_t len = std::min(per_round, count - off);
    const size_t own = len / n + (static_cast<size_t>(r) < len % n ? 1 : 0);
    *sent += static_cast<int64_t>(len * esize);
    *received += static_cast<int64_t>(((n - 1) * own + len - own) * esize);
  }
}

void CheckAllReduce(int n, size_t count, DType dtype, ReduceOp op, bool integer_valued,
                    const ShmOptions& options = {}) {
  const auto results = RunAllReduce(n, count, dtype, op, integer_valued, options);
  const auto ref = testing::ReferenceReduce(dtype, n, count, op, integer_valued);
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(results[r].data.size(), count * DTypeSize(dtype));
    // Replicas must stay identical, bit for bit: each slice is reduced by one rank.
    ASSERT_TRUE(results[r].data == results[0].data) << "rank " << r << " differs from rank 0";
  }
  const std::vector<float> got = Decode(results[0].data, dtype);
  int bad = 0;
  for (size_t i = 0; i < count && bad < 5; ++i) {
    if (integer_valued) {
      const float want = testing::ExpectedInteger(dtype, ref.sum[i], n, op);
      if (got[i] != want) ++bad;
      EXPECT_EQ(got[i], want) << "element " << i;
    } else {
      // Shared memory rounds a 16-bit result once (no forwarded partial sums), within
      // the ring's (n-1)-rounding bound that Tolerance states.
      const double tol = testing::Tolerance(dtype, n, ref.magnitude[i]);
      if (std::fabs(got[i] - ref.value[i]) > tol) ++bad;
      EXPECT_NEAR(got[i], ref.value[i], tol) << "element " << i;
    }
  }
  const size_t slot = options.slot_bytes > 0 ? options.slot_bytes : ShmCommunicator::kDefaultSlotBytes;
  for (int r = 0; r < n; ++r) {
    int64_t sent = 0, received = 0;
    if (count > 0) ExpectedBytes(count, DTypeSize(dtype), n, r, slot / 2, &sent, &received);
    EXPECT_EQ(results[r].sent, sent) << "rank " << r;
    EXPECT_EQ(results[r].received, received) << "rank " << r;
  }
}

using AllReduceParam = std::tuple<int, size_t, DType, ReduceOp>;
class ShmAllReduceTest : public ::testing::TestWithParam<AllReduceParam> {};

TEST_P(ShmAllReduceTest, MatchesReference) {
  const auto [n, count, dtype, op] = GetParam();
  // f32 on integer-valued inputs (exact); 16-bit on fractional ones, to measure the
  // rounding against its bound.
  CheckAllReduce(n, count, dtype, op, /*integer_valued=*/dtype == DType::kF32);
}

// 1,048,583 elements: more than half a default slot (2 MiB) in every dtype, so two or
// three rounds with a short last one.
INSTANTIATE_TEST_SUITE_P(
    Grid, ShmAllReduceTest,
    ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 6, 7, 8),
                       ::testing::Values(size_t{0}, size_t{1}, size_t{7}, size_t{1000},
                                         size_t{65537}, size_t{(1 << 20) + 7}),
                       ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                       ::testing::Values(ReduceOp::kSum, ReduceOp::kAverage)),
    [](const ::testing::TestParamInfo<AllReduceParam>& info) {
      return fmt::format("n{}_c{}_{}_{}", std::get<0>(info.param), std::get<1>(info.param),
                         DTypeName(std::get<2>(info.param)),
                         std::get<3>(info.param) == ReduceOp::kSum ? "sum" : "avg");
    });

class ShmWorldTest : public ::testing::TestWithParam<int> {};

TEST_P(ShmWorldTest, FractionalF32AndInteger16BitMatchReference) {
  CheckAllReduce(GetParam(), 1000, DType::kF32, ReduceOp::kSum, false);
  CheckAllReduce(GetParam(), 1000, DType::kF32, ReduceOp::kAverage, false);
  CheckAllReduce(GetParam(), 1000, DType::kBF16, ReduceOp::kSum, true);
  CheckAllReduce(GetParam(), 1000, DType::kF16, ReduceOp::kAverage, true);
}

// A 16 KiB slot makes every round 8 KiB: many rounds, slices of every length down to
// zero elements (count < n in the last round), both halves reused many times.
TEST_P(ShmWorldTest, SmallSlotsManyRoundsMatchReference) {
  ShmOptions small;
  small.slot_bytes = 16 << 10;
  CheckAllReduce(GetParam(), 65537, DType::kF32, ReduceOp::kSum, true, small);
  CheckAllReduce(GetParam(), 10007, DType::kBF16, ReduceOp::kAverage, false, small);
  CheckAllReduce(GetParam(), 4097, DType::kF16, ReduceOp::kSum, true, small);
}

TEST_P(ShmWorldTest, AllGatherIsExact) {
  const int n = GetParam();
  ShmOptions small;
  small.slot_bytes = 16 << 10;  // 65537 bytes take 9 rounds
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{65537}}) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("shm-allgather");
    RunRanks(n, [&](int r) {
      auto comm = Connect(&kv, prefix, r, n, small);
      if (!comm) return;
      std::vector<char> mine(bytes), all(n * bytes, 0);
      for (size_t i = 0; i < bytes; ++i) mine[i] = static_cast<char>(r * 31 + i);
      ASSERT_TRUE(comm->AllGather(mine.data(), all.data(), bytes, {}).ok());
      std::vector<char> inplace(n * bytes, 0);
      std::copy(mine.begin(), mine.end(), inplace.begin() + r * bytes);
      ASSERT_TRUE(comm->AllGather(inplace.data() + r * bytes, inplace.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) {
          ASSERT_EQ(all[p * bytes + i], static_cast<char>(p * 31 + i)) << "rank " << r;
        }
      }
      EXPECT_EQ(inplace, all);
      const int64_t moved = n > 1 ? static_cast<int64_t>(bytes) : 0;
      EXPECT_EQ(comm->bytes_sent(), 2 * moved);
      EXPECT_EQ(comm->bytes_received(), 2 * (n - 1) * moved);
    });
  }
}

TEST_P(ShmWorldTest, AllToAllDeliversEachBlockToItsRank) {
  const int n = GetParam();
  auto byte = [](int from, int to, size_t i) { return static_cast<char>(from * 37 + to * 11 + i); };
  ShmOptions small;
  small.slot_bytes = 16 << 10;
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{65537}}) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("shm-alltoall");
    RunRanks(n, [&](int r) {
      auto comm = Connect(&kv, prefix, r, n, small);
      if (!comm) return;
      std::vector<char> send(n * bytes);
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) send[p * bytes + i] = byte(r, p, i);
      }
      std::vector<char> got(n * bytes, 0);
      ASSERT_TRUE(comm->AllToAll(send.data(), got.data(), bytes, {}).ok());
      for (int p = 0; p < n; ++p) {
        for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(got[p * bytes + i], byte(p, r, i)) << "rank " << r;
      }
      EXPECT_EQ(comm->bytes_sent(), static_cast<int64_t>((n - 1) * bytes));
      EXPECT_EQ(comm->bytes_received(), static_cast<int64_t>((n - 1) * bytes));
    });
  }
}

TEST_P(ShmWorldTest, BroadcastIsExactFromAnyRoot) {
  const int n = GetParam();
  // 3 MiB + 5 takes two rounds of the default slot's 2 MiB halves.
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{1000}, size_t{(3 << 20) + 5}}) {
    for (int root : {0, n - 1}) {
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("shm-broadcast");
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        if (!comm) return;
        std::vector<char> data(bytes, 0);
        if (r == root) {
          for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<char>(i * 7 + root);
        }
        // Twice in a row: a reader still copying must not see the next call's data.
        for (int rep = 0; rep < 2; ++rep) {
          ASSERT_TRUE(comm->Broadcast(data.data(), bytes, root, {}).ok());
          for (size_t i = 0; i < bytes; ++i) {
            ASSERT_EQ(data[i], static_cast<char>(i * 7 + root)) << "rank " << r << " byte " << i;
          }
        }
        const int64_t moved = n > 1 ? 2 * static_cast<int64_t>(bytes) : 0;
        EXPECT_EQ(comm->bytes_sent(), r == root ? moved : 0);
        EXPECT_EQ(comm->bytes_received(), r == root ? 0 : moved);
      });
    }
  }
}

TEST_P(ShmWorldTest, BarrierWaitsForEveryRank) {
  const int n = GetParam();
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-barrier");
  constexpr int kRounds = 3;
  std::atomic<int> arrived[kRounds] = {};
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    if (!comm) return;
    for (int round = 0; round < kRounds; ++round) {
      if (r == round % n) std::this_thread::sleep_for(30ms);
      arrived[round].fetch_add(1);
      ASSERT_TRUE(comm->Barrier({}).ok());
      EXPECT_EQ(arrived[round].load(), n) << "rank " << r << " left round " << round << " early";
    }
  });
}

// Back-to-back calls of every kind, as a training step makes them (control values,
// buckets, a broadcast): the step counters and slot halves stay in step.
TEST_P(ShmWorldTest, MixedCallsInSequence) {
  const int n = GetParam();
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-mixed");
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    if (!comm) return;
    for (int iter = 0; iter < 50; ++iter) {
      float control[4] = {1.0f, static_cast<float>(r), 0.0f, 0.0f};
      CollectiveOptions opts;
      opts.tag = 1000;
      ASSERT_TRUE(comm->AllReduce(control, 4, DType::kF32, ReduceOp::kSum, opts).ok());
      ASSERT_EQ(control[0], static_cast<float>(n));
      std::vector<float> bucket(3001 + iter, static_cast<float>(r + iter));
      opts.tag = iter % 3;
      ASSERT_TRUE(comm->AllReduce(bucket.data(), bucket.size(), DType::kF32, ReduceOp::kAverage, opts).ok());
      const float want = static_cast<float>(n * iter + n * (n - 1) / 2) / static_cast<float>(n);
      ASSERT_EQ(bucket.front(), want);
      ASSERT_EQ(bucket.back(), want);
      int value = r == iter % n ? iter : -1;
      ASSERT_TRUE(comm->Broadcast(&value, sizeof(value), iter % n, {}).ok());
      ASSERT_EQ(value, iter);
    }
  });
}

// A rank making a different call fails at once, naming the peer and both calls,
// instead of mixing a broadcast's bytes into an allreduce.
TEST(ShmCallsTest, MismatchedCallsFailNamingBoth) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-mismatch");
  std::vector<Status> got(2);
  RunRanks(2, [&](int r) {
    auto comm = Connect(&kv, prefix, r, 2);
    if (!comm) return;
    std::vector<float> v(100, 1.0f);
    CollectiveOptions opts;
    opts.timeout = 5s;
    opts.tag = 3;
    got[r] = r == 0 ? comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts)
                    : comm->Broadcast(v.data(), 400, 0, opts);
    EXPECT_EQ(comm->Barrier({}).code(), StatusCode::kAborted);
  });
  for (int r = 0; r < 2; ++r) {
    // kInternal for the rank that finds it first; the other may find that rank closed
    // already (kAborted), with the same explanation.
    EXPECT_TRUE(got[r].code() == StatusCode::kInternal || got[r].code() == StatusCode::kAborted)
        << got[r].ToString();
    EXPECT_NE(got[r].message().find("do not match"), std::string::npos) << got[r].message();
  }
  EXPECT_NE(got[0].message().find("rank 1 made Broadcast(tag=3, 400 bytes, root 0)"), std::string::npos)
      << got[0].message();
  EXPECT_NE(got[1].message().find("rank 0 made AllReduce(tag=3, 100 x f32, sum)"), std::string::npos)
      << got[1].message();
}

TEST(ShmCallsTest, DifferentCountsAreMismatchedCalls) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("shm-count");
  RunRanks(3, [&](int r) {
    auto comm = Connect(&kv, prefix, r, 3);
    if (!comm) return;
    std::vector<float> v(100, 1.0f);
    const Status s = comm->AllReduce(v.data(), r == 2 ? 99 : 100, DType::kF32, ReduceOp::kSum, {});
    EXPECT_FALSE(s.ok());
  });
}

INSTANTIATE_TEST_SUITE_P(World, ShmWorldTest, ::testing::Values(1, 2, 3, 4, 5, 6, 7, 8),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return fmt::format("n{}", info.param);
                         });

}  // namespace
}  // namespace shoal
