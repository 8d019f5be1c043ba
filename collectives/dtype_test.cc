// bf16/f16 conversions against hand-checked edge cases and, for f16, against the
// compiler's own _Float16 conversion over every half value and many floats.
#include "collectives/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

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

}  // namespace
}  // namespace shoal
