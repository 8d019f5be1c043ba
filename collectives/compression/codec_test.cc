// Codecs over Gloo with ranks as threads: every codec x world size 1..4 x bucket sizes
// (0, 1, odd, multi-block, mixed matrices) against the reference sum and the
// error-feedback contract; linearity of the exact codecs; a silent peer times out.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <tuple>

#include "collectives/compression/codec_test_util.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"
#include "common/clock.h"

namespace shoal::compression {
namespace {

using namespace std::chrono_literals;
using ::shoal::testing::RunRanks;
using ::shoal::testing::UniquePrefix;
using testing::Connect;
using testing::Layout;
using testing::Outcome;

const std::vector<std::string> kCodecs = {"none", "bf16", "fp16", "powersgd", "qblock", "qblock4", "topk"};

using GridParam = std::tuple<std::string, int>;
class CodecGridTest : public ::testing::TestWithParam<GridParam> {};

// Three steps per layout: step 0 has no residual yet (exact codecs are compared with
// the reference sum; PowerSGD is in warm-up), steps 1 and 2 compress with residuals.
TEST_P(CodecGridTest, MatchesReferenceAndConserves) {
  const auto [name, n] = GetParam();
  const auto layouts = testing::Layouts();
  constexpr int kSteps = 3;
  // outcomes[layout][step][rank]
  std::vector<std::vector<std::vector<Outcome>>> outcomes(
      layouts.size(), std::vector<std::vector<Outcome>>(kSteps, std::vector<Outcome>(n)));
  std::vector<int64_t> uncompressed(n, 0);
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("codec_grid");
  RunRanks(n, [&](int r) {
    auto comm = Connect(&kv, prefix, r, n);
    auto codec = testing::Make(testing::Options(name));
    if (!comm || !codec) return;
    for (size_t l = 0; l < layouts.size(); ++l) {
      for (int s = 0; s < kSteps; ++s) {
        const auto input = testing::Gradient(r, layouts[l].count, l * 10 + s);
        const Status st = testing::Step(codec.get(), comm.get(), layouts[l], input, l, s,
                                        &outcomes[l][s][r]);
        ASSERT_TRUE(st.ok()) << layouts[l].label << " step " << s << ": " << st.ToString();
      }
    }
    uncompressed[r] = codec->stats().bytes_uncompressed;
  });
  int64_t want = 0;
  for (size_t l = 0; l < layouts.size(); ++l) {
    want += kSteps * testing::UncompressedBytes(layouts[l].count, n);
    for (int s = 0; s < kSteps; ++s) {
      ASSERT_EQ(outcomes[l][s][n - 1].out.size(), layouts[l].count) << "a rank failed";
      testing::CheckStep(name, outcomes[l][s], fmt::format("{} step {}", layouts[l].label, s),
                         /*inputs_only=*/s == 0);
    }
  }
  for (int r = 0; r < n; ++r) EXPECT_EQ(uncompressed[r], want) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Gloo, CodecGridTest,
                         ::testing::Combine(::testing::ValuesIn(kCodecs), ::testing::Values(1, 2, 3, 4)),
                         [](const ::testing::TestParamInfo<GridParam>& info) {
                           return fmt::format("{}_n{}", std::get<0>(info.param), std::get<1>(info.param));
                         });

// reduce(a) + reduce(b) == reduce(a + b) for the codecs that are linear up to
// rounding, each reduction from a fresh state so residuals play no part.
TEST(CodecLinearityTest, ExactCodecsCommuteWithSummation) {
  for (const std::string name : {"none", "bf16", "fp16"}) {
    for (int n : {2, 3}) {
      const size_t count = 1001;
      std::vector<std::vector<float>> ra(n), rb(n), rab(n);
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("codec_linear");
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        auto codec = testing::Make(testing::Options(name));
        if (!comm || !codec) return;
        ra[r] = testing::Gradient(r, count, 1);
        rb[r] = testing::Gradient(r, count, 2);
        rab[r].resize(count);
        for (size_t i = 0; i < count; ++i) rab[r][i] = ra[r][i] + rb[r][i];
        for (auto* v : {&ra[r], &rb[r], &rab[r]}) {
          codec->ResetState();
          ASSERT_TRUE(codec->Reduce(v->data(), count, {}, 0, 0, comm.get(), {}).ok());
        }
      });
      ASSERT_EQ(rab[n - 1].size(), count);
      for (size_t i = 0; i < count; ++i) {
        // Each of the three reductions is within its reference bound (n*u per unit of
        // summed magnitude, see codec_test_util.h) and the magnitudes are <= 2n each
        // (inputs in [-1, 1), a+b in [-2, 2)): the difference is within the sum of the
        // three bounds, 4n * n*u; f32 (none) only sees summation-order rounding.
        const double u = name == "none" ? 1e-6 : name == "bf16" ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
        const double tol = 4.0 * n * n * u + 1e-6;
        EXPECT_NEAR(ra[0][i] + rb[0][i], rab[0][i], tol) << name << " n=" << n << " element " << i;
      }
    }
  }
}

// A peer that never calls Reduce: every codec returns kDeadlineExceeded within about
// the 500 ms timeout (not a hang), and commits no state from the failed step.
TEST(CodecTimeoutTest, SilentPeerTimesOut) {
  const Layout layout = testing::Layouts().back();  // mixed: PowerSGD compresses
  for (const std::string& name : kCodecs) {
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("codec_timeout");
    std::promise<void> done;
    auto done_future = done.get_future().share();
    RunRanks(2, [&](int r) {
      auto comm = Connect(&kv, prefix, r, 2);
      if (!comm) return;
      if (r == 1) {  // connected, then silent until rank 0 is finished
        done_future.wait_for(10s);  // bounded, in case rank 0 failed before set_value
        return;
      }
      auto options = testing::Options(name);
      options.powersgd_warmup_steps = 0;
      auto codec = testing::Make(options);
      if (!codec) return;
      CollectiveOptions opts;
      opts.timeout = 500ms;
      opts.tag = 3;
      auto input = testing::Gradient(0, layout.count, 5);
      const auto start = std::chrono::steady_clock::now();
      const Status s = codec->Reduce(input.data(), layout.count, layout.tensors, 9, 4, comm.get(), opts);
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << name << ": " << s.ToString();
      EXPECT_LT(elapsed, 2.0) << name;
      EXPECT_FALSE(testing::Inspect(codec.get())->StateEntry({StateKind::kResidual, 9, 0}))
          << name << ": a failed step must not commit a residual";
      EXPECT_EQ(codec->stats().bytes_uncompressed, 0) << name;
      done.set_value();
    });
  }
}

// A world of one whose every collective burns 50 ms of the calling thread's CPU, as a
// polling backend does while it waits.
class BusyLoopback : public ::shoal::testing::LoopbackCommunicator {
 public:
  static constexpr double kBurn = 0.05;
  int calls = 0;
  Status AllReduce(void* d, size_t n, DType t, ReduceOp op, const CollectiveOptions& o) override {
    Burn();
    return LoopbackCommunicator::AllReduce(d, n, t, op, o);
  }
  Status AllGather(const void* send, void* recv, size_t bytes, const CollectiveOptions& o) override {
    Burn();
    return LoopbackCommunicator::AllGather(send, recv, bytes, o);
  }
  Status AllToAll(const void* send, void* recv, size_t bytes, const CollectiveOptions& o) override {
    Burn();
    return LoopbackCommunicator::AllToAll(send, recv, bytes, o);
  }

 private:
  void Burn() {
    ++calls;
    const double until = ThreadCpuSeconds() + kBurn;
    while (ThreadCpuSeconds() < until) {
    }
  }
};

// compute_seconds is the codec's own CPU time: what the communicator's calls spend on
// the calling thread is left out, and the work of encoding is counted.
TEST(CodecStatsTest, ComputeSecondsLeaveOutTheCollectives) {
  const Layout layout = testing::Layouts().back();  // mixed: PowerSGD compresses
  for (const std::string& name : kCodecs) {
    auto codec = testing::Make(testing::Options(name));
    ASSERT_TRUE(codec) << name;
    BusyLoopback comm;
    for (int64_t step = 0; step < 3; ++step) {
      auto input = testing::Gradient(0, layout.count, 11 + step);
      ASSERT_TRUE(codec->Reduce(input.data(), layout.count, layout.tensors, 2, step, &comm, {}).ok()) << name;
    }
    // qblock at world 1 owns every block and calls no collective at all.
    EXPECT_GE(comm.calls, name.starts_with("qblock") ? 0 : 3) << name;
    const double compute = codec->stats().compute_seconds;
    // 3 to 9 burns of 50 ms went by inside Reduce; a few thousand floats take
    // microseconds to encode. Counting even one burn would show.
    EXPECT_LT(compute, BusyLoopback::kBurn) << name;
    if (name != "none") {
      EXPECT_GT(compute, 0.0) << name << ": encoding cost nothing?";
    }
  }
}

// The bytes each codec puts on the wire, as counted at the transport boundary, match
// the formulas its file documents (Gloo: ring allreduce, ring allgather).
TEST(CodecBytesTest, WireBytesMatchDocumentedFormulas) {
  const Layout mixed = testing::Layouts().back();
  const Layout flat = testing::Layouts()[4];  // 4099 floats: 8 full blocks and a tail
  auto qbytes = [](size_t count, int bits) {  // qblock_codec.cc: QuantBytes
    auto block = [&](size_t len) { return 8 + (len * bits + 7) / 8; };
    return (count / 512) * block(512) + (count % 512 ? block(count % 512) : 0);
  };
  for (int n : {2, 3}) {
    for (const std::string name : {"bf16", "powersgd", "qblock", "qblock4", "topk"}) {
      const Layout& layout = name == "powersgd" ? mixed : flat;
      std::vector<int64_t> sent(n);
      std::vector<size_t> chosen(n);
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("codec_bytes");
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        auto options = testing::Options(name);
        options.powersgd_warmup_steps = 0;
        auto codec = testing::Make(options);
        if (!comm || !codec) return;
        auto v = testing::Gradient(r, layout.count, 8);
        ASSERT_TRUE(codec->Reduce(v.data(), layout.count, layout.tensors, 0, 0, comm.get(), {}).ok());
        sent[r] = comm->bytes_sent();
        const auto c = testing::Inspect(codec.get())->LastContribution(0).value();
        chosen[r] = layout.count - std::count(c.begin(), c.end(), 0.0f);
      });
      for (int r = 0; r < n; ++r) {
        int64_t want = 0, s1 = 0, s2 = 0, ignored = 0;
        if (name == "bf16") {
          ::shoal::testing::RingBytes(layout.count, n, r, 2, &want, &ignored);
        } else if (name == "powersgd") {
          // [P: 40*4 + 24*4 | uncompressed: 24 + 15 + 1], then [Q: 24*4 + 33*4].
          ::shoal::testing::RingBytes(160 + 96 + 40, n, r, 4, &s1, &ignored);
          ::shoal::testing::RingBytes(96 + 132, n, r, 4, &s2, &ignored);
          want = s1 + s2;
        } else if (name == "topk") {
          const size_t most = *std::max_element(chosen.begin(), chosen.end());
          want = (n - 1) * (4 + 6 * static_cast<int64_t>(most));
        } else {
          const int bits = name == "qblock" ? 8 : 4;
          const size_t blocks = (layout.count + 511) / 512;
          size_t largest = 0;
          for (int s = 0; s < n; ++s) {
            const size_t b = std::min(layout.count, blocks * s / n * 512);
            const size_t e = std::min(layout.count, blocks * (s + 1) / n * 512);
            largest = std::max(largest, e - b);
          }
          // An AllToAll and an allgather, each (n-1) padded runs.
          want = static_cast<int64_t>(2) * (n - 1) * static_cast<int64_t>(qbytes(largest, bits));
        }
        EXPECT_EQ(sent[r], want) << name << " n=" << n << " rank " << r;
      }
    }
  }
}

// Codec buffers start on a page boundary (codec_internal.h says why), however they grow.
TEST(PageAlignedAllocatorTest, BuffersStartOnAPage) {
  Floats v(3);
  PageVector<uint16_t> w;
  for (size_t n : {size_t{1}, size_t{4097}, size_t{1} << 22}) {
    v.resize(n);
    w.resize(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 4096, 0u) << n;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data()) % 4096, 0u) << n;
  }
  PageAlignedAllocator<float> alloc;
  float* none = alloc.allocate(0);  // not null, freeable
  ASSERT_NE(none, nullptr);
  alloc.deallocate(none, 0);
  Floats moved = std::move(v);
  EXPECT_EQ(moved.size(), size_t{1} << 22);
}

// qblock's dither (codec_common.h) must be uniform and free of correlation between
// neighbours and between the halves of one draw, or stochastic rounding is biased.
// Over 2^18 values of two streams: mean 1/2 (sd of the mean 0.00056 here), each of 16
// bins within 5 sd of its expectation, and correlations at the lags that share a draw
// (8) or sit side by side (1, 16) near 0 (sd 0.002).
TEST(QBlockDitherTest, UniformAndUncorrelated) {
  constexpr size_t kN = size_t{1} << 18;
  for (const uint64_t key : {StreamKey({1, 2, 3}), StreamKey({0, 0, 0, 0, 2})}) {
    std::vector<double> u(kN);
    std::vector<int> bins(16, 0);
    double mean = 0;
    for (size_t i = 0; i < kN; ++i) {
      u[i] = QBlockDither(key, 512 * (i / 512), i % 512);  // blocks of 512, as the codec's
      ASSERT_GE(u[i], 0.0);
      ASSERT_LT(u[i], 1.0);
      mean += u[i] / kN;
      ++bins[static_cast<int>(u[i] * 16)];
    }
    EXPECT_NEAR(mean, 0.5, 0.003);
    const double expected = kN / 16.0, sd = std::sqrt(expected * 15 / 16);
    for (int b = 0; b < 16; ++b) EXPECT_NEAR(bins[b], expected, 5 * sd) << "bin " << b;
    for (const size_t lag : {size_t{1}, size_t{8}, size_t{16}}) {
      double cov = 0;
      for (size_t i = 0; i + lag < kN; ++i) cov += (u[i] - 0.5) * (u[i + lag] - 0.5);
      EXPECT_NEAR(cov / (kN - lag) * 12, 0.0, 0.01) << "lag " << lag;  // 1/12: the variance
    }
  }
}

TEST(MakeCodecTest, RejectsBadOptions) {
  CodecOptions o;
  o.name = "zip";
  EXPECT_EQ(MakeCodec(o).status().code(), StatusCode::kInvalidArgument);
  o = testing::Options("qblock");
  o.qblock_bits = 3;
  EXPECT_EQ(MakeCodec(o).status().code(), StatusCode::kInvalidArgument);
  o = testing::Options("qblock");
  o.qblock_block = 511;
  EXPECT_EQ(MakeCodec(o).status().code(), StatusCode::kInvalidArgument);
  o = testing::Options("topk");
  o.topk_ratio = 0;
  EXPECT_EQ(MakeCodec(o).status().code(), StatusCode::kInvalidArgument);
  o = testing::Options("powersgd");
  o.powersgd_rank = 0;
  EXPECT_EQ(MakeCodec(o).status().code(), StatusCode::kInvalidArgument);
  for (const std::string name : {"powersgd", "qblock", "topk"}) {
    o = testing::Options(name);
    o.error_feedback = false;
    const auto refused = MakeCodec(o);
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(refused.status().message().find("error feedback"), std::string::npos) << name;
  }
  for (const std::string& name : kCodecs) {
    auto codec = MakeCodec(testing::Options(name));
    ASSERT_TRUE(codec.ok()) << name;
    EXPECT_EQ((*codec)->name(), name == "qblock4" ? "qblock" : name);
  }
}

// Without error feedback a cast sends round(x / n) and keeps nothing: every step of the
// same gradients gives the same output, the rounded sum, and no residual is stored.
TEST(CastWithoutFeedbackTest, KeepsNoStateAndRoundsEachStepAlike) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("codec_noef");
  const size_t count = 5000;
  for (const std::string name : {"bf16", "fp16"}) {
    RunRanks(2, [&](int r) {
      auto comm = Connect(&kv, prefix + name, r, 2);
      auto options = testing::Options(name);
      options.error_feedback = false;
      auto codec = testing::Make(options);
      ASSERT_TRUE(comm && codec);
      std::vector<float> first;
      for (int s = 0; s < 3; ++s) {
        auto v = testing::Gradient(r, count, 9);
        ASSERT_TRUE(codec->Reduce(v.data(), count, {}, 0, s, comm.get(), {}).ok());
        EXPECT_FALSE(testing::Inspect(codec.get())->StateEntry({StateKind::kResidual, 0, 0})) << name;
        if (s == 0) {
          first = v;
          const auto a = testing::Gradient(0, count, 9), b = testing::Gradient(1, count, 9);
          const double tol = name == "bf16" ? 1.0 / 128 : 1.0 / 1024;  // 2^-8 and 2^-11 twice, relative
          for (size_t i = 0; i < count; ++i) {
            ASSERT_NEAR(v[i], a[i] + b[i], tol * (std::abs(a[i]) + std::abs(b[i])) + 1e-6) << name << " " << i;
          }
        } else {
          EXPECT_EQ(v, first) << name << " step " << s;  // nothing carried over
        }
      }
    });
  }
}

TEST(CodecLayoutTest, RejectsTensorsOutsideOrOverlapping) {
  MemoryKvStore kv;
  auto comm = Connect(&kv, UniquePrefix("codec_layout"), 0, 1);
  ASSERT_TRUE(comm);
  auto codec = testing::Make(testing::Options("powersgd"));
  std::vector<float> v(10, 1.0f);
  std::vector<TensorSlice> outside = {{"w", 4, 2, 4}};
  EXPECT_EQ(codec->Reduce(v.data(), 10, outside, 0, 0, comm.get(), {}).code(),
            StatusCode::kInvalidArgument);
  std::vector<TensorSlice> overlap = {{"a", 0, 2, 3}, {"b", 5, 1, 5}};
  EXPECT_EQ(codec->Reduce(v.data(), 10, overlap, 0, 0, comm.get(), {}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(codec->Reduce(nullptr, 10, {}, 0, 0, comm.get(), {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(codec->Reduce(v.data(), 10, {}, 0, 0, nullptr, {}).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::compression
