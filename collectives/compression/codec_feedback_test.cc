// Error feedback over many steps (nothing is lost: the running mean converges to the
// true sum), PowerSGD's exactness on low-rank gradients, and codec state: checkpoint
// round trip, refusal of corrupt or foreign state, reset.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <limits>

#include "collectives/compression/codec_test_util.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"

namespace shoal::compression {
namespace {

using namespace std::chrono_literals;
using ::shoal::testing::RunRanks;
using ::shoal::testing::UniquePrefix;
using testing::Connect;
using testing::Layout;
using testing::Outcome;

double Norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

// A constant gradient per rank for T steps. Telescoping the per-rank conservation
// x_t = g + e_{t-1} = c_t + e_t over steps and ranks gives, exactly in real arithmetic,
//   sum_t output_t = T * sum_r g_r - sum_r e_r(T),
// so the running mean's error is |sum_r e_r(T)| / T: it converges iff the residuals
// stay bounded, which is what error feedback has to deliver.
TEST(ErrorFeedbackTest, RunningMeanConvergesToTrueSum) {
  const Layout layout = testing::Layouts().back();  // mixed matrices, bias, scalar
  const int n = 2;
  for (const std::string name : {"bf16", "fp16", "powersgd", "qblock", "qblock4", "topk"}) {
    const int steps = 200;
    std::vector<std::vector<double>> totals(n);    // sum_t output_t per rank
    std::vector<std::vector<float>> residual(n);   // e_r(T)
    std::vector<double> error_at_quarter(n, 0);    // mean's relative error at T/4
    std::vector<double> truth(layout.count, 0.0);
    for (int r = 0; r < n; ++r) {
      const auto g = testing::Gradient(r, layout.count, 99);
      for (size_t i = 0; i < layout.count; ++i) truth[i] += g[i];
    }
    MemoryKvStore kv;
    const std::string prefix = UniquePrefix("codec_feedback");
    RunRanks(n, [&](int r) {
      auto comm = Connect(&kv, prefix, r, n);
      auto codec = testing::Make(testing::Options(name));
      if (!comm || !codec) return;
      const auto g = testing::Gradient(r, layout.count, 99);
      totals[r].assign(layout.count, 0.0);
      for (int t = 0; t < steps; ++t) {
        auto out = g;
        ASSERT_TRUE(codec->Reduce(out.data(), layout.count, layout.tensors, 7, t, comm.get(), {}).ok());
        for (size_t i = 0; i < layout.count; ++i) totals[r][i] += out[i];
        if (t + 1 == steps / 4) {
          std::vector<double> diff(layout.count);
          for (size_t i = 0; i < layout.count; ++i) diff[i] = totals[r][i] / (t + 1) - truth[i];
          error_at_quarter[r] = Norm(diff) / Norm(truth);
        }
      }
      residual[r] = testing::Inspect(codec.get())
                        ->StateEntry({StateKind::kResidual, 7, 0})
                        .value_or(std::vector<float>(layout.count, 0.0f));
    });
    ASSERT_EQ(totals[n - 1].size(), layout.count) << name << ": a rank failed";
    std::vector<double> diff(layout.count), identity(layout.count);
    for (size_t i = 0; i < layout.count; ++i) {
      diff[i] = totals[0][i] / steps - truth[i];
      double e = 0;
      for (int r = 0; r < n; ++r) e += residual[r][i];
      identity[i] = totals[0][i] + e - steps * truth[i];
    }
    const double err = Norm(diff) / Norm(truth);
    const bool cast = testing::IsCast(name);
    if (cast) {
      // Error feedback removes the casts' encoding error, but not the rounding inside
      // the reduction (Gloo's ring rounds partial sums and the result to the wire type;
      // the Communicator returns only the rounded sum, so no rank can see it). With a
      // constant gradient that rounding repeats (ties to even) instead of averaging
      // out, so the mean converges to within the reduction's bound, (n-1)*u relative
      // (test_util.h), and no further (measured: bf16 1.2e-3, fp16 1.4e-4 at n=2).
      const double u = name == "bf16" ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
      EXPECT_LT(Norm(identity) / (steps * Norm(truth)), (n - 1) * u) << name;
      EXPECT_LT(err, (n - 1) * u) << name;
    } else {
      // The telescoped identity holds to f32 rounding accumulated over 200 steps of
      // values of order |g| ~ 1 (outputs summed in double): 1e-4 relative is generous.
      EXPECT_LT(Norm(identity) / (steps * Norm(truth)), 1e-4) << name;
      // Bounded residuals: the error falls roughly as 1/T, so it must at least halve
      // from T/4 to T, and end small (measured at T=200: PowerSGD 1.7e-2, top-k at 10%
      // 2.5e-2, qblock 8-bit 4e-5, 4-bit 7e-4).
      EXPECT_LT(err, 0.5 * error_at_quarter[0]) << name;
      EXPECT_LT(err, 0.05) << name;
    }
    std::printf("%-8s relative error of the running mean: %.2e at T=%d, %.2e at T=%d\n",
                name.c_str(), error_at_quarter[0], steps / 4, err, steps);
  }
}

// When the summed gradient has rank <= r, the first compressed step already
// reproduces it: P = (sum_r M_r) Q spans its column space for any generic Q, and the
// output P^ P^^T sum M_r is then the sum itself. Each rank's own M_r is full-rank
// (noise, drawn anew each step, that cancels across ranks): only the sum is low-rank.
// Checked on the first 4 steps with a warm-up of 0, so step 0 starts from a random Q.
// The low-rank factors stay fixed across steps, as a gradient's dominant directions
// do: with new random factors every step, the f32 rounding left in the residuals
// (rank > r) is missed again each step and amplified by the factors' condition number
// (measured: 5e-7, 2e-6, 2e-5, 2e-4 over steps 0..3).
TEST(PowerSgdTest, ReproducesLowRankSumExactly) {
  for (int n : {2, 3}) {
    for (int true_rank : {4, 2}) {
      const size_t rows = 64, cols = 48;
      Layout layout{"lowrank", rows * cols + cols, {{"w", 0, rows, cols}, {"b", rows * cols, 1, cols}}};
      auto truth_at = [&](int step, std::vector<std::vector<float>>* per_rank) {
        std::vector<double> sum(layout.count, 0.0);
        const auto u = testing::Gradient(100, rows * true_rank, 1);
        const auto v = testing::Gradient(200, cols * true_rank, 1);
        const auto noise = testing::Gradient(300 + step, layout.count, 1);
        per_rank->assign(n, std::vector<float>(layout.count));
        for (int r = 0; r < n; ++r) {
          const float c = 1.0f + r;  // ranks hold different multiples of U V^T
          const float sign = r == 0 ? 1.0f : r == 1 ? -1.0f : 0.0f;
          for (size_t i = 0; i < rows; ++i) {
            for (size_t j = 0; j < cols; ++j) {
              float uv = 0;
              for (int k = 0; k < true_rank; ++k) uv += u[i * true_rank + k] * v[j * true_rank + k];
              (*per_rank)[r][i * cols + j] = c * uv + sign * noise[i * cols + j];
            }
          }
          for (size_t j = 0; j < cols; ++j) (*per_rank)[r][rows * cols + j] = noise[j] * c;
          for (size_t i = 0; i < layout.count; ++i) sum[i] += (*per_rank)[r][i];
        }
        return sum;
      };
      std::vector<std::vector<double>> truths(4);
      std::vector<std::vector<std::vector<float>>> inputs(4);
      for (int s = 0; s < 4; ++s) truths[s] = truth_at(s, &inputs[s]);
      std::vector<std::vector<float>> outs(4);
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("codec_powersgd");
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        auto options = testing::Options("powersgd");
        options.powersgd_warmup_steps = 0;
        auto codec = testing::Make(options);
        if (!comm || !codec) return;
        for (int s = 0; s < 4; ++s) {
          auto v = inputs[s][r];
          ASSERT_TRUE(codec->Reduce(v.data(), layout.count, layout.tensors, 0, s, comm.get(), {}).ok());
          if (r == 0) outs[s] = v;
        }
      });
      for (int s = 0; s < 4; ++s) {
        ASSERT_EQ(outs[s].size(), layout.count);
        std::vector<double> diff(rows * cols), ref(truths[s].begin(), truths[s].begin() + rows * cols);
        for (size_t i = 0; i < rows * cols; ++i) diff[i] = outs[s][i] - truths[s][i];
        // 1e-4 relative (Frobenius): f32 products of length <= 64 and Gram-Schmidt
        // land near 1e-6; anything structural (a missed direction) is O(1).
        EXPECT_LT(Norm(diff) / Norm(ref), 1e-4) << "n=" << n << " rank " << true_rank << " step " << s;
        std::printf("n=%d true rank %d step %d: relative error %.2e\n", n, true_rank, s,
                    Norm(diff) / Norm(ref));
        // The bias goes uncompressed: exact up to f32 summation.
        for (size_t j = 0; j < cols; ++j) {
          EXPECT_NEAR(outs[s][rows * cols + j], truths[s][rows * cols + j], 1e-5);
        }
      }
    }
  }
}

// Runs `steps` steps of `codec` alone (world size 1) on the mixed layout.
void RunAlone(GradientCodec* codec, Communicator* comm, int first, int steps, std::vector<float>* last) {
  const Layout layout = testing::Layouts().back();
  for (int s = first; s < first + steps; ++s) {
    *last = testing::Gradient(0, layout.count, s);
    ASSERT_TRUE(codec->Reduce(last->data(), layout.count, layout.tensors, 5, s, comm, {}).ok());
  }
}

// The state format's checksums, written again from the format's description.
constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull, kFnvPrime = 0x100000001b3ull;
uint64_t Fnv1a(const char* data, size_t n) {  // version 1
  uint64_t h = kFnvBasis;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(data[i])) * kFnvPrime;
  return h;
}
uint64_t LaneFnv(const char* data, size_t n) {  // version 2
  uint64_t lane[4] = {kFnvBasis, kFnvBasis, kFnvBasis, kFnvBasis};
  const size_t words = n / 32 * 4;
  for (size_t w = 0; w < words; ++w) {
    uint64_t x;
    std::memcpy(&x, data + 8 * w, 8);
    lane[w % 4] = (lane[w % 4] ^ x) * kFnvPrime;
  }
  for (size_t i = words * 8; i < n; ++i) lane[0] = (lane[0] ^ static_cast<uint8_t>(data[i])) * kFnvPrime;
  return (((lane[0] ^ lane[1]) * kFnvPrime ^ lane[2]) * kFnvPrime ^ lane[3]) * kFnvPrime;
}
// `body` with its version field set to `version` and that version's checksum appended.
std::string WithChecksum(std::string body, uint32_t version) {
  std::memcpy(body.data() + 4, &version, 4);
  const uint64_t sum = version == 1 ? Fnv1a(body.data(), body.size()) : LaneFnv(body.data(), body.size());
  body.append(reinterpret_cast<const char*>(&sum), 8);
  return body;
}

TEST(CodecStateTest, SaveLoadRoundTripContinuesIdentically) {
  MemoryKvStore kv;
  auto comm = Connect(&kv, UniquePrefix("codec_state"), 0, 1);
  ASSERT_TRUE(comm);
  for (const std::string name : {"none", "bf16", "fp16", "powersgd", "qblock", "qblock4", "topk"}) {
    auto a = testing::Make(testing::Options(name));
    auto b = testing::Make(testing::Options(name));
    std::vector<float> out_a, out_b;
    RunAlone(a.get(), comm.get(), 0, 3, &out_a);
    const std::string saved = a->SaveState();
    EXPECT_EQ(a->StateBytes(), saved.size()) << name;  // what a checkpointer prewarms
    EXPECT_EQ(b->StateBytes(), b->SaveState().size()) << name;  // before any state exists
    ASSERT_TRUE(b->LoadState(saved).ok()) << name;
    EXPECT_EQ(b->SaveState(), saved) << name;
    if (name != "none") {
      EXPECT_TRUE(testing::Inspect(b.get())->StateEntry({StateKind::kResidual, 5, 0})) << name;
    }
    if (name == "powersgd") {
      EXPECT_TRUE(testing::Inspect(b.get())->StateEntry({StateKind::kPowerSgdQ, 5, 0}));
    }
    RunAlone(a.get(), comm.get(), 3, 2, &out_a);
    RunAlone(b.get(), comm.get(), 3, 2, &out_b);
    EXPECT_EQ(out_a, out_b) << name << ": a restored codec must continue bit-identically";
    EXPECT_EQ(a->SaveState(), b->SaveState()) << name;

    a->ResetState();
    auto* f = testing::Inspect(a.get());
    EXPECT_FALSE(f->StateEntry({StateKind::kResidual, 5, 0})) << name;
    EXPECT_FALSE(f->StateEntry({StateKind::kPowerSgdQ, 5, 0})) << name;
  }
}

TEST(CodecStateTest, RefusesCorruptOrForeignState) {
  MemoryKvStore kv;
  auto comm = Connect(&kv, UniquePrefix("codec_state"), 0, 1);
  ASSERT_TRUE(comm);
  auto codec = testing::Make(testing::Options("powersgd"));
  std::vector<float> out;
  RunAlone(codec.get(), comm.get(), 0, 3, &out);
  const std::string good = codec->SaveState();
  ASSERT_GT(good.size(), 100u);

  auto target = testing::Make(testing::Options("powersgd"));
  RunAlone(target.get(), comm.get(), 0, 1, &out);
  const std::string before = target->SaveState();
  auto refused = [&](const std::string& bytes, StatusCode code, const char* what) {
    const Status s = target->LoadState(bytes);
    EXPECT_EQ(s.code(), code) << what << ": " << s.ToString();
    EXPECT_EQ(target->SaveState(), before) << what << ": a refused load must not change state";
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  refused(flipped, StatusCode::kDataLoss, "flipped byte");
  refused(good.substr(0, good.size() - 9), StatusCode::kDataLoss, "truncated");
  refused("garbage", StatusCode::kDataLoss, "not state");
  refused(testing::Make(testing::Options("topk"))->SaveState(), StatusCode::kInvalidArgument,
          "another codec's state");
  const std::string body = good.substr(0, good.size() - 8);
  ASSERT_EQ(WithChecksum(body, 2), good) << "SaveState writes version 2 as documented";
  // A future version, correctly checksummed: refused by version, not as corruption.
  refused(WithChecksum(body, 3), StatusCode::kInvalidArgument, "version 3");
  // Well-formed framing around an entry that claims more floats than there are.
  std::string lying = body;
  const size_t first_count_at = 4 + 4 + 4 + 8 + 8 + 1 + 8 + 4;  // "powersgd": 8 bytes of name
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(lying.data() + first_count_at, &huge, 8);
  refused(WithChecksum(lying, 2), StatusCode::kDataLoss, "oversized entry");

  // Version 1 (byte-wise FNV-1a), as older checkpoints hold it, loads the same state.
  EXPECT_TRUE(target->LoadState(WithChecksum(body, 1)).ok());
  EXPECT_EQ(target->SaveState(), good);
  EXPECT_TRUE(target->LoadState(good).ok());
  EXPECT_EQ(target->SaveState(), good);
  EXPECT_TRUE(target->LoadState("").ok());  // no state: same as a reset
  EXPECT_FALSE(testing::Inspect(target.get())->StateEntry({StateKind::kResidual, 5, 0}));
}

// Top-k with momentum correction: each rank's u_t = m u_{t-1} + g_t, and its update
// a_t = u_t (heavy ball) or g_t + m u_t (Nesterov), is what it owes; over steps what
// it sent plus its residual is exactly sum_t a_t (bf16 rounding of the sent values
// stays in the residual). With ratio 1 nothing is held back: the output is the sum of
// the ranks' updates, i.e. momentum SGD, up to bf16 rounding.
TEST(TopKMomentumTest, SentPlusResidualIsTheSumOfUpdates) {
  const size_t count = 3000;
  const int n = 2, steps = 12;
  const float m = 0.9f;
  for (bool nesterov : {false, true}) {
    for (double ratio : {0.01, 1.0}) {
      SCOPED_TRACE(fmt::format("nesterov {} ratio {}", nesterov, ratio));
      MemoryKvStore kv;
      const std::string prefix = UniquePrefix("codec_topk_momentum");
      RunRanks(n, [&](int r) {
        auto comm = Connect(&kv, prefix, r, n);
        auto options = testing::Options("topk");
        options.topk_ratio = ratio;
        options.topk_momentum = m;
        options.topk_nesterov = nesterov;
        options.topk_sample = count;  // exact selection: with ratio 1, every value is sent
        auto codec = testing::Make(options);
        if (!comm || !codec) return;
        std::vector<double> owed(count, 0), sent(count, 0);
        // Every rank's momentum and update, before and after this step.
        std::vector<std::vector<float>> u(n, std::vector<float>(count, 0.0f)), a = u;
        for (int t = 0; t < steps; ++t) {
          const auto before = a;
          for (int p = 0; p < n; ++p) {
            const auto gp = testing::Gradient(p, count, 100 + t);
            for (size_t i = 0; i < count; ++i) {
              u[p][i] = m * u[p][i] + gp[i];
              a[p][i] = nesterov ? gp[i] + m * u[p][i] : u[p][i];
            }
          }
          for (size_t i = 0; i < count; ++i) owed[i] += a[r][i];
          auto out = testing::Gradient(r, count, 100 + t);
          ASSERT_TRUE(codec->Reduce(out.data(), count, {}, 0, t, comm.get(), {}).ok());
          const auto c = testing::Inspect(codec.get())->LastContribution(0).value();
          for (size_t i = 0; i < count; ++i) sent[i] += c[i];
          if (ratio == 1.0) {
            // Every value goes out each step, rounded to bf16 with the previous step's
            // rounding error added back: out - sum_p a_p = sum_p (e_p(t-1) - e_p(t)),
            // and |e_p(t)| <= 2^-9 (|a_p(t)| + |e_p(t-1)|).
            for (size_t i = 0; i < count; ++i) {
              float bound = 0;
              for (int p = 0; p < n; ++p) bound += 0x1.0p-8f * (std::fabs(a[p][i]) + std::fabs(before[p][i]));
              ASSERT_NEAR(out[i], a[0][i] + a[1][i], bound) << "step " << t << " i " << i;
            }
          }
        }
        const auto e = testing::Inspect(codec.get())->StateEntry({StateKind::kResidual, 0, 0}).value();
        for (size_t i = 0; i < count; ++i) {
          ASSERT_NEAR(sent[i] + e[i], owed[i], 1e-4 * (1 + std::fabs(owed[i]))) << "i " << i;
        }
        const auto mom = testing::Inspect(codec.get())->StateEntry({StateKind::kMomentum, 0, 0}).value();
        for (size_t i = 0; i < count; ++i) ASSERT_NEAR(mom[i], u[r][i], 1e-5 * (1 + std::fabs(u[r][i])));
      });
    }
  }
}

TEST(CodecStateTest, ResidualOfAnotherLayoutIsRefusedUntilReset) {
  MemoryKvStore kv;
  auto comm = Connect(&kv, UniquePrefix("codec_state"), 0, 1);
  ASSERT_TRUE(comm);
  auto codec = testing::Make(testing::Options("topk"));
  std::vector<float> v = testing::Gradient(0, 100, 1);
  ASSERT_TRUE(codec->Reduce(v.data(), 100, {}, 1, 0, comm.get(), {}).ok());
  v.resize(50);
  const Status s = codec->Reduce(v.data(), 50, {}, 1, 1, comm.get(), {});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("ResetState"), std::string::npos) << s.message();
  codec->ResetState();
  EXPECT_TRUE(codec->Reduce(v.data(), 50, {}, 1, 1, comm.get(), {}).ok());
}

// fp16 saturates rather than overflowing: 2 ranks each holding 1e5 (past the largest
// half, 65504) get a finite sum, the excess waits in the residual, and over steps the
// running total catches up with the true one.
TEST(CastTest, Fp16SaturatesAndCatchesUp) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("codec_fp16");
  std::vector<double> total(2, 0.0);
  RunRanks(2, [&](int r) {
    auto comm = Connect(&kv, prefix, r, 2);
    auto codec = testing::Make(testing::Options("fp16"));
    if (!comm || !codec) return;
    for (int s = 0; s < 8; ++s) {
      std::vector<float> v = {s < 2 ? 1e5f : 0.0f, -3e4f * (s < 2)};
      ASSERT_TRUE(codec->Reduce(v.data(), 2, {}, 0, s, comm.get(), {}).ok());
      ASSERT_TRUE(std::isfinite(v[0]) && std::isfinite(v[1])) << "step " << s;
      if (r == 0) {
        total[0] += v[0];
        total[1] += v[1];
      }
    }
  });
  // After 8 steps everything sent in steps 0-1 (4e5 and -1.2e5 in all) has gone out,
  // up to fp16 rounding of the last step's leftovers (2^-11 relative).
  EXPECT_NEAR(total[0], 4e5, 4e5 * 1e-3);
  EXPECT_NEAR(total[1], -1.2e5, 1.2e5 * 1e-3);
}

// A NaN or inf in one step's gradient spoils that step's output (the trainer has to
// skip it) but is not carried over: the residual stays finite for every codec.
TEST(ErrorFeedbackTest, NonFiniteInputIsNotCarriedOver) {
  MemoryKvStore kv;
  auto comm = Connect(&kv, UniquePrefix("codec_nan"), 0, 1);
  ASSERT_TRUE(comm);
  const Layout layout = testing::Layouts().back();
  for (const std::string name : {"bf16", "fp16", "powersgd", "qblock", "qblock4", "topk"}) {
    auto options = testing::Options(name);
    options.powersgd_warmup_steps = 0;
    auto codec = testing::Make(options);
    auto v = testing::Gradient(0, layout.count, 1);
    v[3] = std::numeric_limits<float>::quiet_NaN();
    v[700] = std::numeric_limits<float>::infinity();
    ASSERT_TRUE(codec->Reduce(v.data(), layout.count, layout.tensors, 0, 0, comm.get(), {}).ok());
    const auto res = testing::Inspect(codec.get())->StateEntry({StateKind::kResidual, 0, 0});
    ASSERT_TRUE(res) << name;
    for (float e : *res) ASSERT_TRUE(std::isfinite(e)) << name;
  }
}

TEST(PowerSgdTest, WarmupStepsAreExactAndLeaveNoResidual) {
  MemoryKvStore kv;
  const std::string prefix = UniquePrefix("codec_warmup");
  const Layout layout = testing::Layouts().back();
  RunRanks(2, [&](int r) {
    auto comm = Connect(&kv, prefix, r, 2);
    auto options = testing::Options("powersgd");
    options.powersgd_warmup_steps = 3;
    auto codec = testing::Make(options);
    if (!comm || !codec) return;
    for (int s = 0; s < 3; ++s) {
      auto v = testing::Gradient(r, layout.count, s);
      ASSERT_TRUE(codec->Reduce(v.data(), layout.count, layout.tensors, 0, s, comm.get(), {}).ok());
      const auto other = testing::Gradient(1 - r, layout.count, s);
      const auto mine = testing::Gradient(r, layout.count, s);
      for (size_t i = 0; i < layout.count; ++i) ASSERT_NEAR(v[i], mine[i] + other[i], 1e-6);
      EXPECT_FALSE(testing::Inspect(codec.get())->StateEntry({StateKind::kResidual, 0, 0}));
    }
  });
}

}  // namespace
}  // namespace shoal::compression
