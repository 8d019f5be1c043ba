// The MPI backend under mpirun (-np 2/3/4): each process is one rank. Same
// reference and tolerances as the Gloo tests, plus a timeout against a late peer
// and Abort() from another thread. Run through ctest (mpi_collectives_np*).
#include <mpi.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include "collectives/mpi/mpi_communicator.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::unique_ptr<Communicator> Make() {
  auto comm = MakeMpiCommunicator();
  EXPECT_TRUE(comm.ok()) << comm.status().ToString();
  return comm.ok() ? std::move(comm).value() : nullptr;
}

// Keeps the ranks in step between tests, so a failing test cannot leave a rank
// inside a collective the others have moved past.
void WorldBarrier() { ASSERT_EQ(MPI_Barrier(MPI_COMM_WORLD), MPI_SUCCESS); }

TEST(MpiCollectivesTest, AllReduceMatchesReference) {
  auto comm = Make();
  ASSERT_TRUE(comm);
  const int n = comm->size(), r = comm->rank();
  EXPECT_EQ(comm->backend(), "mpi");
  int64_t expected_bytes = 0;
  for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{65537}}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
        const bool integer_valued = dtype == DType::kF32;
        auto data = testing::MakeInput(dtype, r, count, integer_valued);
        ASSERT_TRUE(comm->AllReduce(data.data(), count, dtype, op, {}).ok());
        const auto ref = testing::ReferenceReduce(dtype, n, count, op, integer_valued);
        const auto got = testing::Decode(data, dtype);
        for (size_t i = 0; i < count; ++i) {
          if (integer_valued) {
            ASSERT_EQ(got[i], testing::ExpectedInteger(dtype, ref.sum[i], n, op))
                << DTypeName(dtype) << " count " << count << " element " << i;
          } else {
            ASSERT_NEAR(got[i], ref.value[i], testing::Tolerance(dtype, n, ref.magnitude[i]))
                << DTypeName(dtype) << " count " << count << " element " << i;
          }
        }
        // Counted, not measured: a ring over the f32 buffer MPI reduces.
        expected_bytes += 2 * static_cast<int64_t>(n - 1) * static_cast<int64_t>(count * 4) / n;
      }
    }
  }
  EXPECT_EQ(comm->bytes_sent(), expected_bytes);
  EXPECT_EQ(comm->bytes_received(), expected_bytes);
  WorldBarrier();
}

// Emulated links (bandwidth.h) on the MPI backend: an allreduce of B bytes sends
// 2(n-1)/n * B per rank under the ring model, so at 100 Mbit/s (12.5 MB/s) it cannot
// finish before that much over the rate (less the bucket's burst); the result stays
// exact. The environment variables reach MakeMpiCommunicator.
TEST(MpiCollectivesTest, EmulatedLinkCapsAllReduce) {
  setenv("SHOAL_EMULATE_BANDWIDTH_MBPS", "100", 1);
  auto comm = Make();
  unsetenv("SHOAL_EMULATE_BANDWIDTH_MBPS");
  ASSERT_TRUE(comm);
  const int n = comm->size(), r = comm->rank();
  const size_t count = 250000;  // 1 MB of f32
  std::vector<float> data(count, static_cast<float>(r + 1));
  WorldBarrier();
  const auto start = Clock::now();
  ASSERT_TRUE(comm->AllReduce(data.data(), count, DType::kF32, ReduceOp::kSum, {}).ok());
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  for (size_t i = 0; i < count; i += 997) ASSERT_EQ(data[i], n * (n + 1) / 2.0f);
  const double sent = 2.0 * (n - 1) * count * 4 / n;
  EXPECT_GE(elapsed, (sent - LinkEmulation{}.burst_bytes) / 12.5e6) << "rank " << r;
  EXPECT_EQ(comm->bytes_sent(), static_cast<int64_t>(sent));
  WorldBarrier();
}

TEST(MpiCollectivesTest, AllGatherBroadcastBarrierAreExact) {
  auto comm = Make();
  ASSERT_TRUE(comm);
  const int n = comm->size(), r = comm->rank();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{65537}}) {
    std::vector<char> mine(bytes), all(n * bytes);
    for (size_t i = 0; i < bytes; ++i) mine[i] = static_cast<char>(r * 31 + i);
    ASSERT_TRUE(comm->AllGather(mine.data(), all.data(), bytes, {}).ok());
    for (int p = 0; p < n; ++p) {
      for (size_t i = 0; i < bytes; ++i) {
        ASSERT_EQ(all[p * bytes + i], static_cast<char>(p * 31 + i));
      }
    }
    for (int root : {0, n - 1}) {
      std::vector<char> data(bytes, r == root ? 0 : 1);
      for (size_t i = 0; r == root && i < bytes; ++i) data[i] = static_cast<char>(i * 7 + root);
      ASSERT_TRUE(comm->Broadcast(data.data(), bytes, root, {}).ok());
      for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(data[i], static_cast<char>(i * 7 + root));
    }
  }
  ASSERT_TRUE(comm->Barrier({}).ok());
  WorldBarrier();
}

TEST(MpiCollectivesTest, AllToAllDeliversEachBlockToItsRank) {
  auto comm = Make();
  ASSERT_TRUE(comm);
  const int n = comm->size(), r = comm->rank();
  auto byte = [](int from, int to, size_t i) { return static_cast<char>(from * 37 + to * 11 + i); };
  int64_t expected_bytes = 0;
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{65537}}) {
    std::vector<char> send(n * bytes), got(n * bytes, 0);
    for (int p = 0; p < n; ++p) {
      for (size_t i = 0; i < bytes; ++i) send[p * bytes + i] = byte(r, p, i);
    }
    ASSERT_TRUE(comm->AllToAll(send.data(), got.data(), bytes, {}).ok());
    for (int p = 0; p < n; ++p) {
      for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(got[p * bytes + i], byte(p, r, i));
    }
    expected_bytes += static_cast<int64_t>((n - 1) * bytes);
  }
  EXPECT_EQ(comm->bytes_sent(), expected_bytes);
  EXPECT_EQ(comm->bytes_received(), expected_bytes);
  WorldBarrier();
}

// Rank 0 gives up after 500 ms while the others arrive a second late; they then
// complete the abandoned collective (MPI cannot cancel it) so nothing is left hanging.
TEST(MpiCollectivesTest, LatePeerTimesOutAndBreaksTheCommunicator) {
  // Declared before the communicator: MPI may write it until the communicator is
  // torn down after rank 0 gives up (see MpiCommunicator's failure model).
  std::vector<float> v(1000, 1.0f);
  auto comm = Make();
  ASSERT_TRUE(comm);
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  CollectiveOptions opts;
  WorldBarrier();
  if (comm->rank() == 0) {
    opts.timeout = 500ms;
    const auto start = Clock::now();
    const Status s = comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.5);
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
    EXPECT_EQ(comm->Barrier({}).code(), StatusCode::kAborted);
  } else {
    std::this_thread::sleep_for(1500ms);
    opts.timeout = 20s;
    EXPECT_TRUE(comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts).ok());
  }
  WorldBarrier();  // rank 0's progress here lets the others' late allreduce finish
}

TEST(MpiCollectivesTest, AbortFromAnotherThreadEndsWaitPromptly) {
  // Declared before the communicator: MPI may write it until the communicator is
  // torn down after rank 0 gives up (see MpiCommunicator's failure model).
  std::vector<float> v(1000, 1.0f);
  auto comm = Make();
  ASSERT_TRUE(comm);
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  CollectiveOptions opts;
  opts.timeout = 20s;
  WorldBarrier();
  if (comm->rank() == 0) {
    auto aborter = std::async(std::launch::async, [&] {
      std::this_thread::sleep_for(100ms);
      comm->Abort();
    });
    const auto start = Clock::now();
    const Status s = comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts);
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    aborter.get();
    EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
    EXPECT_LT(elapsed, 1.0);
    EXPECT_EQ(comm->Barrier({}).code(), StatusCode::kAborted);
  } else {
    std::this_thread::sleep_for(1s);
    EXPECT_TRUE(comm->AllReduce(v.data(), v.size(), DType::kF32, ReduceOp::kSum, opts).ok());
  }
  WorldBarrier();
}

}  // namespace
}  // namespace shoal

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Initialise MPI (and report the thread level) before any test runs.
  {
    auto probe = shoal::MakeMpiCommunicator();
    if (!probe.ok()) {
      std::fprintf(stderr, "%s\n", probe.status().ToString().c_str());
      return 1;
    }
    std::printf("rank %d of %d, MPI thread level %s\n", (*probe)->rank(), (*probe)->size(),
                shoal::MpiThreadLevel().c_str());
  }
  const int rc = RUN_ALL_TESTS();
  shoal::FinalizeMpiIfInitialized();
  return rc;
}
