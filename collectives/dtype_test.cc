// bf16/f16 conversions against hand-checked edge cases and, for f16, against the
// compiler's own _Float16 conversion over every half value and many floats; the AVX2
// bulk path against the scalar one.
#include "collectives/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace shoal {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DTypeTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_STREQ(DTypeName(DType::kF32), "f32");
  EXPECT_STREQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_STREQ(DTypeName(DType::kF16), "f16");
}

TEST(DTypeTest, BF16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
  EXPECT_EQ(F32ToBF16(FromBits(0x3F808000)), 0x3F80);
  // 1 + 3*2^-8 is halfway between two bf16s whose upper is even: rounds up.
  EXPECT_EQ(F32ToBF16(FromBits(0x3F818000)), 0x3F82);
  EXPECT_EQ(F32ToBF16(FromBits(0x3F808001)), 0x3F81);  // just above half: up
  EXPECT_EQ(F32ToBF16(-2.0f), 0xC000);
  // The largest float rounds past bf16's max to infinity.
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(F32ToBF16(-std::numeric_limits<float>::infinity()), 0xFF80);
  // A NaN whose payload sits only in the dropped bits must stay NaN.
  const uint16_t nan = F32ToBF16(FromBits(0x7F800001));
  EXPECT_TRUE(std::isnan(BF16ToF32(nan)));
  // Subnormal floats keep their top bits.
  EXPECT_EQ(F32ToBF16(FromBits(0x00010000)), 0x0001);
}

TEST(DTypeTest, BF16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = BF16ToF32(static_cast<uint16_t>(h));
    EXPECT_EQ(Bits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(f))));
    } else {
      ASSERT_EQ(F32ToBF16(f), h) << std::hex << h;
    }
  }
}

TEST(DTypeTest, F16EdgeCases) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);   // largest finite half
  EXPECT_EQ(F32ToF16(65519.0f), 0x7BFF);   // below the rounding midpoint 65520
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);   // midpoint ties to even: infinity
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // half of it: tie to even (0)
  EXPECT_EQ(F32ToF16(std::ldexp(1.5f, -25)), 0x0001);  // above the tie: up
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie to even (2)
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToF32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::nanf("")))));
}

#ifdef __FLT16_MAX__
// GCC and Clang implement _Float16 conversions exactly (RNE, subnormals), so they
// are an independent reference.
TEST(DTypeTest, F16MatchesCompilerEverywhere) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    _Float16 ref;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&ref, &bits, 2);
    const float f = F16ToF32(bits);
    if (std::isnan(static_cast<float>(ref))) {
      ASSERT_TRUE(std::isnan(f));
      continue;
    }
    ASSERT_EQ(Bits(f), Bits(static_cast<float>(ref))) << std::hex << h;
    ASSERT_EQ(F32ToF16(f), bits) << std::hex << h;
  }
  std::mt19937 rng(42);
  for (int i = 0; i < 2'000'000; ++i) {
    // Random bit patterns cover every exponent; restrict most to the half range.
    uint32_t u = rng();
    if (i % 2 == 0) u = (u & 0x807FFFFF) | ((100 + rng() % 45) << 23);
    const float f = FromBits(u);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &ref, 2);
    ASSERT_EQ(F32ToF16(f), want) << std::hex << u;
  }
}
#endif

TEST(DTypeTest, BulkConversionsRoundTrip) {
  std::vector<float> values = {0.0f, 1.5f, -3.25f, 1e-3f, 100.0f};
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<char> wire(values.size() * DTypeSize(t));
    FromF32(values.data(), t, wire.data(), values.size());
    std::vector<float> back(values.size());
    ToF32(wire.data(), t, back.data(), back.size());
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(back[i], values[i], std::fabs(values[i]) * 4e-3) << DTypeName(t);
    }
  }
}

// F16C's vcvtph2ps quiets signalling NaNs; the scalar path does the same so that
// both paths agree. Infinity keeps its pattern.
TEST(DTypeTest, F16NaNWidensQuietWithPayload) {
  EXPECT_EQ(Bits(F16ToF32(0x7C01)), 0x7FC02000u);
  EXPECT_EQ(Bits(F16ToF32(0xFE00)), 0xFFC00000u);
  EXPECT_EQ(Bits(F16ToF32(0x7DFF)), 0x7FFFE000u);
  EXPECT_EQ(Bits(F16ToF32(0xFC00)), 0xFF800000u);
}

// The bulk conversions on the scalar path (SetAvx2ForTesting(false)) for as long as
// it lives.
struct ScalarOnly {
  ScalarOnly() { SetAvx2ForTesting(false); }
  ~ScalarOnly() { SetAvx2ForTesting(true); }
};

// `convert(out)` run on the AVX2 path and on the scalar path, into n elements each.
template <typename T, typename F>
std::pair<std::vector<T>, std::vector<T>> BothPaths(size_t n, F convert) {
  std::vector<T> simd(n), scalar(n);
  convert(simd.data());
  ScalarOnly scalar_only;
  convert(scalar.data());
  return {simd, scalar};
}

// Every 16-bit pattern, widened by both paths. The buffer starts one element in and
// is not a multiple of 8 long, so the vector loop's scalar tail takes part too.
TEST(DTypeSimdTest, WideningMatchesScalarForEveryPattern) {
  if (!UseAvx2()) GTEST_SKIP() << "no AVX2+F16C on this CPU";
  std::vector<uint16_t> all = {0x7C01};
  for (uint32_t h = 0; h < 0x10000; ++h) all.push_back(static_cast<uint16_t>(h));
  all.push_back(0xFFFF);
  all.push_back(0x0001);
  for (DType t : {DType::kBF16, DType::kF16}) {
    const auto [simd, scalar] = BothPaths<float>(all.size(), [&](float* out) { ToF32(all.data(), t, out, all.size()); });
    for (size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(Bits(simd[i]), Bits(scalar[i])) << DTypeName(t) << " pattern " << std::hex << all[i];
    }
  }
}

// Random floats of every exponent, many in each format's range, and the edges: zeros,
// infinities, NaNs with payloads in the kept or only the dropped bits (quiet and
// signalling), subnormals of both formats, rounding ties and the overflow boundary.
TEST(DTypeSimdTest, NarrowingMatchesScalar) {
  if (!UseAvx2()) GTEST_SKIP() << "no AVX2+F16C on this CPU";
  std::vector<float> values;
  for (uint32_t u : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
                     0x7F800001u, 0xFF800001u, 0x7F802000u, 0x7FA00000u, 0x7FBFFFFFu, 0x7FFFFFFFu,
                     0x00000001u, 0x00010000u, 0x00018000u, 0x007FFFFFu, 0x00800000u, 0x3F808000u,
                     0x3F818000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F8000u, 0x477FE000u, 0x477FEFFFu,
                     0x477FF000u, 0x477FF001u, 0x33000000u, 0x33000001u, 0x33C00000u, 0x387FC000u,
                     0x387FE000u, 0x38800000u}) {
    for (uint32_t sign : {0u, 0x80000000u}) values.push_back(FromBits(u ^ sign));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 4'000'000; ++i) {
    uint32_t u = rng();
    if (i % 3 == 0) u = (u & 0x807FFFFF) | ((100 + rng() % 45) << 23);  // around the half range
    if (i % 7 == 0) u &= 0xFFFF8000u | ((rng() & 1) << 12);             // bf16 and f16 ties
    values.push_back(FromBits(u));
  }
  values.push_back(1.0f);  // an odd length
  for (DType t : {DType::kBF16, DType::kF16}) {
    const auto [simd, scalar] =
        BothPaths<uint16_t>(values.size(), [&](uint16_t* out) { FromF32(values.data(), t, out, values.size()); });
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(simd[i], scalar[i]) << DTypeName(t) << " input " << std::hex << Bits(values[i]);
    }
  }
}

// Lengths around the vector width: the tail is the scalar loop.
TEST(DTypeSimdTest, OddLengthsMatchScalar) {
  std::vector<float> values(1100);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::ldexp(static_cast<float>(i) - 500.5f, -static_cast<int>(i % 30));
  for (DType t : {DType::kBF16, DType::kF16}) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 17, 1023, 1025}) {
      std::vector<uint16_t> wire(n + 1, 0xABCD), wire_scalar(n + 1, 0xABCD);
      std::vector<float> back(n + 1, -1.0f), back_scalar(n + 1, -1.0f);
      FromF32(values.data(), t, wire.data(), n);
      ToF32(wire.data(), t, back.data(), n);
      {
        ScalarOnly scalar_only;
        FromF32(values.data(), t, wire_scalar.data(), n);
        ToF32(wire_scalar.data(), t, back_scalar.data(), n);
      }
      EXPECT_EQ(wire, wire_scalar) << DTypeName(t) << " length " << n;  // incl. the untouched sentinel
      EXPECT_EQ(back, back_scalar) << DTypeName(t) << " length " << n;
    }
  }
}

}  // namespace
}  // namespace shoal
