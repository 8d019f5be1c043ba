// The Reducer against one allreduce per tensor, ranks as threads over Gloo: world
// sizes 1-4, contiguous (view) and scattered (staging) gradients, zero-size tensors,
// any MarkReady order, overlap on and off, several steps, and a silent peer.
#include "collectives/reducer.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"

namespace shoal {
namespace {

using namespace std::chrono_literals;
using testing::RunRanks;
using testing::UniquePrefix;

// Shapes with a zero-size tensor, 1-element and odd sizes, and 2-D weights.
const std::vector<std::vector<int64_t>> kShapes = {
    {64, 100}, {64}, {0}, {7}, {256, 256}, {1}, {30, 100}, {0, 5}, {10}};

// One rank's model-like gradients: either one buffer in param order (like the MLP)
// or one allocation per tensor.
struct Grads {
  std::vector<float> flat;
  std::vector<std::vector<float>> separate;
  std::vector<ParamTensor> params;

  Grads(bool contiguous, int rank, int step) {
    size_t total = 0;
    std::vector<size_t> numel;
    for (const auto& s : kShapes) {
      size_t n = 1;
      for (int64_t d : s) n *= static_cast<size_t>(d);
      numel.push_back(n);
      total += n;
    }
    flat.resize(contiguous ? total : 0);
    separate.resize(kShapes.size());
    size_t at = 0;
    for (size_t i = 0; i < kShapes.size(); ++i) {
      ParamTensor p;
      p.name = fmt::format("t{}", i);  // fmt: GCC 12 warns falsely on "t" + string
      p.shape = kShapes[i];
      p.numel = numel[i];
      if (contiguous) {
        p.grad = flat.data() + at;
      } else {
        separate[i].resize(numel[i] + 1);  // +1: never adjacent to the next tensor
        p.grad = separate[i].data();
      }
      // Integer values: every sum is exact, so results compare with ==.
      for (size_t k = 0; k < numel[i]; ++k) {
        p.grad[k] = testing::InputValue(DType::kF32, rank * 7 + step, at + k, true);
      }
      at += numel[i];
      params.push_back(p);
    }
  }
};

enum class Order { kBackward, kForward, kShuffled, kNever };

struct Case {
  int world;
  bool contiguous;
  bool overlap;
  Order order;
  bool codec = false;  // MakeCodec("none") instead of the Reducer's built-in sum
  int max_in_flight = 0;  // ReducerOptions::max_in_flight
};

void RunCase(const Case& c) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("reducer");
  constexpr int kSteps = 3;
  RunRanks(c.world, [&](int r) {
    auto made = MakeGlooCommunicator(r, c.world, &kv, prefix, 10s);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    auto comm = std::move(made).value();
    Grads grads(c.contiguous, r, 0);
    ReducerOptions options;
    options.bucket_mib = 0.1;          // several buckets from these ~330 KB
    options.first_bucket_mib = 0.01;
    options.overlap = c.overlap;
    options.max_in_flight = c.max_in_flight;
    std::unique_ptr<GradientCodec> codec;
    if (c.codec) {
      auto made_codec = MakeCodec(CodecOptions{});
      ASSERT_TRUE(made_codec.ok()) << made_codec.status().ToString();
      codec = std::move(made_codec).value();
    }
    Reducer reducer(comm.get(), codec.get(), grads.params, options);
    EXPECT_GT(reducer.stats().num_buckets, 2u);
    EXPECT_EQ(reducer.stats().num_copied_buckets == 0, c.contiguous);
    // Gloo and both "none" codecs allow buckets in flight together: 2 by default.
    EXPECT_EQ(reducer.stats().in_flight, c.max_in_flight > 0 ? c.max_in_flight : 2);
    std::mt19937 rng(1234 + r);  // a different order on every rank
    for (int step = 0; step < kSteps; ++step) {
      Grads input(c.contiguous, r, step);
      // The reference: one allreduce per tensor of this step's inputs.
      std::vector<std::vector<float>> want(kShapes.size());
      for (size_t i = 0; i < kShapes.size(); ++i) {
        want[i].assign(input.params[i].grad, input.params[i].grad + input.params[i].numel);
        ASSERT_TRUE(comm->AllReduce(want[i].data(), want[i].size(), DType::kF32,
                                    ReduceOp::kSum, {}).ok());
      }
      for (size_t i = 0; i < kShapes.size(); ++i) {
        std::copy(input.params[i].grad, input.params[i].grad + input.params[i].numel,
                  grads.params[i].grad);
      }
      std::vector<size_t> order(kShapes.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      if (c.order == Order::kBackward) std::reverse(order.begin(), order.end());
      if (c.order == Order::kShuffled) std::shuffle(order.begin(), order.end(), rng);
      if (c.order == Order::kNever) order.clear();
      // Odd steps carry control values (the trainer's boundary exchange): summed over
      // the ranks alongside the buckets, whatever order the buckets come in.
      float control[2] = {static_cast<float>(r + 1), static_cast<float>(step)};
      const bool with_control = step % 2 == 1;
      reducer.BeginStep(step, with_control ? control : nullptr, 2);
      for (size_t i : order) reducer.MarkReady(i);
      const Status s = reducer.Wait();
      ASSERT_TRUE(s.ok()) << s.ToString();
      if (with_control) {
        EXPECT_EQ(control[0], c.world * (c.world + 1) / 2.0f);
        EXPECT_EQ(control[1], static_cast<float>(step * c.world));
      }
      for (size_t i = 0; i < kShapes.size(); ++i) {
        for (size_t k = 0; k < want[i].size(); ++k) {
          ASSERT_EQ(grads.params[i].grad[k], want[i][k])
              << "rank " << r << " step " << step << " tensor " << i << " element " << k;
        }
      }
    }
    const ReducerStats st = reducer.stats();
    EXPECT_EQ(st.steps, kSteps);
    if (c.world > 1) {
      EXPECT_GT(st.comm_seconds, 0);
      EXPECT_GT(st.bytes_uncompressed, 0);
      // The counter also covers the reference allreduces on the same communicator;
      // BytesAreOneRingPerBucket checks the exact count.
      EXPECT_GT(st.bytes_sent, 0);
    } else {
      EXPECT_EQ(st.bytes_sent, 0);
      EXPECT_EQ(st.bytes_uncompressed, 0);
    }
  });
}

class ReducerTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReducerTest, MatchesOneAllreducePerTensor) { RunCase(GetParam()); }

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int world = 1; world <= 4; ++world) {
    for (bool contiguous : {true, false}) {
      for (bool overlap : {true, false}) {
        cases.push_back({world, contiguous, overlap, world % 2 ? Order::kBackward : Order::kShuffled});
      }
    }
  }
  cases.push_back({2, true, true, Order::kForward});
  cases.push_back({3, true, true, Order::kNever});
  cases.push_back({3, false, true, Order::kShuffled});
  for (int world : {1, 2, 4}) cases.push_back({world, world != 2, world != 4, Order::kBackward, true});
  // One bucket at a time, and three at once (each under its own tag).
  cases.push_back({3, true, true, Order::kShuffled, false, 1});
  cases.push_back({3, false, true, Order::kShuffled, true, 3});
  cases.push_back({4, true, true, Order::kBackward, false, 3});
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  static const char* const kOrder[] = {"backward", "forward", "shuffled", "never"};
  const Case& c = info.param;
  return fmt::format("n{}_{}_{}_{}{}{}", c.world, c.contiguous ? "view" : "staged",
                     c.overlap ? "overlap" : "after", kOrder[static_cast<int>(c.order)],
                     c.codec ? "_codec" : "", c.max_in_flight ? fmt::format("_inflight{}", c.max_in_flight) : "");
}

INSTANTIATE_TEST_SUITE_P(Grid, ReducerTest, ::testing::ValuesIn(Cases()), CaseName);

// The MLP's layout: one gradient buffer in forward order. Buckets are contiguous
// ranges of it in reverse order, and the first bucket holds the last tensors.
TEST(ReducerLayoutTest, BucketsAreReverseOrderViews) {
  MemoryKvStore kv;
  auto comm = MakeGlooCommunicator(0, 1, &kv, UniquePrefix("layout"), 5s);
  ASSERT_TRUE(comm.ok());
  Grads grads(true, 0, 0);
  ReducerOptions options;
  options.bucket_mib = 0.2;
  options.first_bucket_mib = 0.01;
  Reducer reducer(comm->get(), nullptr, grads.params, options);
  const auto buckets = reducer.bucket_params();
  ASSERT_FALSE(buckets.empty());
  EXPECT_EQ(buckets.front().front(), kShapes.size() - 1);
  size_t expect = kShapes.size();
  for (const auto& b : buckets) {
    for (size_t p : b) EXPECT_EQ(p, --expect);
  }
  EXPECT_EQ(reducer.stats().num_copied_buckets, 0u);
}

// What the reducer sends is exactly one ring allreduce per bucket.
TEST(ReducerBytesTest, BytesAreOneRingPerBucket) {
  constexpr int kWorld = 3;
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("bytes");
  RunRanks(kWorld, [&](int r) {
    auto comm = MakeGlooCommunicator(r, kWorld, &kv, prefix, 10s);
    ASSERT_TRUE(comm.ok());
    Grads grads(true, r, 0);
    ReducerOptions options;
    options.bucket_mib = 0.1;
    options.first_bucket_mib = 0.01;
    Reducer reducer(comm->get(), nullptr, grads.params, options);
    reducer.BeginStep(0);
    ASSERT_TRUE(reducer.Wait().ok());
    int64_t want = 0;
    for (const auto& bucket : reducer.bucket_params()) {
      size_t count = 0;
      for (size_t p : bucket) count += grads.params[p].numel;
      int64_t sent = 0, received = 0;
      testing::RingBytes(count, kWorld, r, sizeof(float), &sent, &received);
      want += sent;
    }
    EXPECT_EQ(reducer.stats().bytes_sent, want);
    EXPECT_EQ((*comm)->bytes_sent(), want);
  });
}

// A codec with per-bucket state serialises its calls, and ranks could then take
// buckets in different orders: such a codec gets one bucket in flight whatever is asked.
TEST(ReducerInFlightTest, StatefulCodecKeepsOneBucketInFlight) {
  MemoryKvStore kv;
  auto comm = MakeGlooCommunicator(0, 1, &kv, UniquePrefix("reducer_inflight"), 10s);
  ASSERT_TRUE(comm.ok());
  Grads grads(true, 0, 0);
  ReducerOptions options;
  options.max_in_flight = 4;
  CodecOptions co;
  co.name = "bf16";
  auto codec = MakeCodec(co);
  ASSERT_TRUE(codec.ok());
  Reducer lossy(comm->get(), codec->get(), grads.params, options);
  EXPECT_EQ(lossy.stats().in_flight, 1);
  Reducer plain(comm->get(), nullptr, grads.params, options);
  EXPECT_EQ(plain.stats().in_flight, 4);
}

TEST(ReducerErrorTest, MarkingTwiceFailsWait) {
  MemoryKvStore kv;
  auto comm = MakeGlooCommunicator(0, 1, &kv, UniquePrefix("twice"), 5s);
  ASSERT_TRUE(comm.ok());
  Grads grads(true, 0, 0);
  Reducer reducer(comm->get(), nullptr, grads.params, {});
  reducer.BeginStep(0);
  reducer.MarkReady(1);
  reducer.MarkReady(1);
  EXPECT_EQ(reducer.Wait().code(), StatusCode::kInvalidArgument);
  reducer.BeginStep(1);  // a new step starts clean
  EXPECT_TRUE(reducer.Wait().ok());
}

// Rank 1 connects but never reduces: rank 0's Wait() must fail with the timeout,
// promptly, on both the overlapped and the after-backward path.
TEST(ReducerErrorTest, SilentPeerTimesOutInsteadOfHanging) {
  for (bool overlap : {true, false}) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("silent");
    std::vector<std::unique_ptr<Communicator>> comms(2);
    RunRanks(2, [&](int r) {
      auto c = MakeGlooCommunicator(r, 2, &kv, prefix, 10s);
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      comms[r] = std::move(c).value();
    });
    ASSERT_TRUE(comms[0] && comms[1]);
    Grads grads(true, 0, 0);
    ReducerOptions options;
    options.overlap = overlap;
    options.collective.timeout = 300ms;
    Reducer reducer(comms[0].get(), nullptr, grads.params, options);
    const auto start = std::chrono::steady_clock::now();
    reducer.BeginStep(0);
    for (size_t i = grads.params.size(); i-- > 0;) reducer.MarkReady(i);
    const Status s = reducer.Wait();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
    EXPECT_NE(s.message().find("bucket"), std::string::npos) << s.message();
    EXPECT_LT(elapsed, 3.0);
  }
}

}  // namespace
}  // namespace shoal
