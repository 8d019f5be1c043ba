// The codecs with AVX2 kernels (bf16, fp16, qblock 8/4-bit) give the same bits on the
// AVX2 path as on the scalar path: outputs, contributions and residuals, over two
// steps (the second with residuals), at lengths around the vector width and the
// qblock block, with inputs that reach the edge cases (zeros of both signs, fp16
// saturation and subnormals, infinities and NaN).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "collectives/compression/codec_test_util.h"
#include "collectives/dtype.h"
#include "collectives/gloo/gloo_communicator.h"
#include "collectives/memory_kv_store.h"

namespace shoal::compression {
namespace {

using namespace std::chrono_literals;

const std::vector<size_t> kLengths = {0, 1, 7, 8, 9, 15, 17, 511, 512, 513, 1023, 1025, 4099};

// Gradients in [-1, 1) with, per salt, a different family of special values mixed in.
std::vector<float> Input(int rank, size_t count, uint64_t salt) {
  std::vector<float> g = testing::Gradient(rank, count, salt);
  const float inf = std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < count; ++i) {
    if (salt % 4 == 1 && i % 13 == 0) g[i] = 0.0f;         // blocks whose range ends at +0 / -0
    if (salt % 4 == 1 && i % 17 == 0) g[i] = -0.0f;
    if (salt % 4 == 2 && i % 11 == 0) g[i] *= 1e6f;        // past fp16's saturation limit
    if (salt % 4 == 2 && i % 7 == 0) g[i] *= 1e-7f;        // fp16 subnormals
    if (salt % 4 == 3 && i == count / 2) g[i] = (rank % 2) ? -inf : std::nanf("");
  }
  if (salt % 4 == 1 && count > 600) std::fill(g.begin() + 520, g.begin() + 600, 0.0f);
  return g;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    // NaN payloads may follow operand order, which the compiler may swap in the scalar
    // loops; NaN-ness is what the codecs promise.
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  }
  return true;
}

// outcomes[rank][length][step] of `name` over `n` ranks on the chosen path.
using Outcomes = std::vector<std::vector<std::vector<testing::Outcome>>>;
using InputFn = std::vector<float> (*)(int rank, size_t count, uint64_t salt);
Outcomes RunCodec(const CodecOptions& options, int n, bool avx2, const std::vector<size_t>& lengths = kLengths,
                  InputFn input = Input) {
  SetAvx2ForTesting(avx2);
  constexpr int kSteps = 2;
  Outcomes all(n, std::vector<std::vector<testing::Outcome>>(lengths.size(), std::vector<testing::Outcome>(kSteps)));
  MemoryKvStore kv;
  const std::string prefix = ::shoal::testing::UniquePrefix("codec_simd");
  ::shoal::testing::RunRanks(n, [&](int r) {
    auto comm = MakeGlooCommunicator(r, n, &kv, prefix, 10s);
    ASSERT_TRUE(comm.ok()) << comm.status().ToString();
    auto codec = testing::Make(options);
    ASSERT_NE(codec, nullptr);
    for (size_t l = 0; l < lengths.size(); ++l) {
      const testing::Layout layout{"flat", lengths[l], {}};
      for (int s = 0; s < kSteps; ++s) {
        const Status st = testing::Step(codec.get(), comm->get(), layout, input(r, lengths[l], l * 4 + s + 2 * (l % 2)),
                                        l, s, &all[r][l][s]);
        ASSERT_TRUE(st.ok()) << st.ToString();
      }
    }
  });
  SetAvx2ForTesting(true);
  return all;
}

struct Case {
  std::string codec;  // as testing::Options names it
  size_t block;       // qblock only
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.codec << " block " << c.block; }

class CodecSimdTest : public ::testing::TestWithParam<Case> {};

TEST_P(CodecSimdTest, Avx2MatchesScalarAtEveryLength) {
  if (!UseAvx2()) GTEST_SKIP() << "no AVX2+F16C on this CPU";
  CodecOptions options = testing::Options(GetParam().codec);
  options.qblock_block = GetParam().block;
  for (int n : {1, 2}) {
    const Outcomes simd = RunCodec(options, n, true), scalar = RunCodec(options, n, false);
    for (int r = 0; r < n; ++r) {
      for (size_t l = 0; l < kLengths.size(); ++l) {
        for (size_t s = 0; s < simd[r][l].size(); ++s) {
          const testing::Outcome &a = simd[r][l][s], &b = scalar[r][l][s];
          const std::string where = "n " + std::to_string(n) + " rank " + std::to_string(r) + " length " +
                                    std::to_string(kLengths[l]) + " step " + std::to_string(s);
          EXPECT_TRUE(SameBits(a.out, b.out)) << where << ": output";
          EXPECT_TRUE(SameBits(a.contribution, b.contribution)) << where << ": contribution";
          EXPECT_TRUE(SameBits(a.residual, b.residual)) << where << ": residual";
        }
      }
    }
  }
}

// Buckets of 4 MiB and more take the kernels' non-temporal stores (residual, decoded
// bucket); the bits must not change, and a NaN or inf must still leave a zero residual.
TEST(CodecSimdTest, StreamingStoresOnLargeBucketsMatchScalar) {
  if (!UseAvx2()) GTEST_SKIP() << "no AVX2+F16C on this CPU";
  const size_t count = (size_t{1} << 20) + 13;
  for (const std::string name : {"bf16", "fp16"}) {
    std::vector<float> in = testing::Gradient(0, count, 5);
    in[100] = std::nanf("");
    in[count - 200] = -std::numeric_limits<float>::infinity();
    testing::Outcome got[2];
    for (int avx2 = 0; avx2 < 2; ++avx2) {
      SetAvx2ForTesting(avx2 == 1);
      MemoryKvStore kv;
      auto comm = MakeGlooCommunicator(0, 1, &kv, ::shoal::testing::UniquePrefix("codec_nt"), 10s);
      ASSERT_TRUE(comm.ok());
      auto codec = testing::Make(testing::Options(name));
      const testing::Layout layout{"flat", count, {}};
      for (int s = 0; s < 2; ++s) {
        ASSERT_TRUE(testing::Step(codec.get(), comm->get(), layout, in, 0, s, &got[avx2]).ok());
      }
    }
    SetAvx2ForTesting(true);
    EXPECT_TRUE(SameBits(got[0].out, got[1].out)) << name;
    EXPECT_TRUE(SameBits(got[0].residual, got[1].residual)) << name;
    EXPECT_EQ(got[1].residual[100], 0.0f) << name;
    EXPECT_EQ(got[1].residual[count - 200], 0.0f) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, CodecSimdTest,
                         ::testing::Values(Case{"bf16", 512}, Case{"fp16", 512}, Case{"qblock", 512},
                                           Case{"qblock4", 512}, Case{"qblock", 10}, Case{"qblock4", 10},
                                           // 32 values per kernel step: blocks that leave a tail each
                                           Case{"qblock", 40}, Case{"qblock4", 72}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.codec + "_block" + std::to_string(info.param.block);
                         });

// qblock's passes (simd_kernels.h, QBlockEncodeArgs) at sizes where blocks and the
// owners' runs end unevenly (at 3 ranks, 511 leaves two ranks without blocks), over 1
// and 3 ranks. Finite inputs (zeros of both signs, large values, a constant block):
// conservation and the sum of contributions (CheckStep). With infinities and NaN as
// well: AVX2 = scalar, replicas agree, and recording contributions, where the codec
// leaves non-finite residuals for the base class to zero, commits the same residuals
// and outputs as the codec's own FiniteOrZero.
const std::vector<size_t> kQBlockLengths = {0, 1, 511, 512, 513, 5000, 1000003};

std::vector<float> FiniteInput(int rank, size_t count, uint64_t salt) {
  std::vector<float> g = testing::Gradient(rank, count, salt);
  for (size_t i = 0; i < count; ++i) {
    if (i % 13 == 0) g[i] = 0.0f;
    if (i % 17 == 0) g[i] = -0.0f;
    if (i % 101 == 0) g[i] *= 1e6f;
  }
  if (count > 2048 && salt % 2) std::fill(g.begin() + 1536, g.begin() + 2048, 0.5f);
  return g;
}

std::vector<float> NonFiniteInput(int rank, size_t count, uint64_t salt) {
  std::vector<float> g = FiniteInput(rank, count, salt);
  if (count > 3) {
    g[count / 2] = (rank % 2) ? -std::numeric_limits<float>::infinity() : std::nanf("");
    g[count / 3] = std::numeric_limits<float>::infinity();
  }
  return g;
}

TEST(CodecSimdQBlock, PassesAtUnevenSizes) {
  for (const char* name : {"qblock", "qblock4"}) {
    for (int n : {1, 3}) {
      const std::string codec = name;
      CodecOptions options = testing::Options(codec);
      const Outcomes finite = RunCodec(options, n, UseAvx2(), kQBlockLengths, FiniteInput);
      for (size_t l = 0; l < kQBlockLengths.size(); ++l) {
        for (size_t s = 0; s < finite[0][l].size(); ++s) {
          std::vector<testing::Outcome> ranks;
          for (int r = 0; r < n; ++r) ranks.push_back(finite[r][l][s]);
          testing::CheckStep(codec, ranks, codec + " n " + std::to_string(n) + " length " +
                                               std::to_string(kQBlockLengths[l]) + " step " + std::to_string(s),
                             s == 0);
        }
      }
      const Outcomes simd = RunCodec(options, n, true, kQBlockLengths, NonFiniteInput);
      const Outcomes scalar = RunCodec(options, n, false, kQBlockLengths, NonFiniteInput);
      options.record_contributions = false;
      const Outcomes unrecorded = RunCodec(options, n, UseAvx2(), kQBlockLengths, NonFiniteInput);
      for (int r = 0; r < n; ++r) {
        for (size_t l = 0; l < kQBlockLengths.size(); ++l) {
          for (size_t s = 0; s < simd[r][l].size(); ++s) {
            const std::string where = codec + " n " + std::to_string(n) + " rank " + std::to_string(r) + " length " +
                                      std::to_string(kQBlockLengths[l]) + " step " + std::to_string(s);
            const testing::Outcome &a = UseAvx2() ? simd[r][l][s] : scalar[r][l][s], &b = scalar[r][l][s];
            const testing::Outcome& c = unrecorded[r][l][s];
            EXPECT_TRUE(SameBits(a.out, b.out)) << where << ": output";
            EXPECT_TRUE(SameBits(a.contribution, b.contribution)) << where << ": contribution";
            EXPECT_TRUE(SameBits(a.residual, b.residual)) << where << ": residual";
            EXPECT_TRUE(SameBits(a.out, simd[0][l][s].out)) << where << ": output differs from rank 0";
            EXPECT_TRUE(SameBits(c.out, b.out)) << where << ": output without recording";
            EXPECT_TRUE(SameBits(c.residual, b.residual)) << where << ": residual without recording";
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace shoal::compression
