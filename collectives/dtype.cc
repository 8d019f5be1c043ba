// bf16/f16 <-> f32 conversions, written with integer bit manipulation so the result
// does not depend on compiler flags (-ffast-math, FTZ) or on F16C being present.
#include "collectives/dtype.h"

#include <cstring>

namespace shoal {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Shifts `m` right by `shift` (1..31) with round-to-nearest-even on the dropped bits.
uint32_t ShiftRoundEven(uint32_t m, int shift) {
  const uint32_t kept = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1))) ? 1 : 0);
}

}  // namespace

uint16_t F32ToBF16(float f) {
  uint32_t u = Bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    // NaN: keep sign and top payload bits, force the quiet bit so that truncating
    // the payload cannot produce the infinity pattern.
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  // Adding 0x7FFF plus the lsb of the kept part rounds ties to even; a carry out of
  // the mantissa correctly bumps the exponent (up to infinity).
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float BF16ToF32(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t F32ToF16(float f) {
  const uint32_t u = Bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    if (abs == 0x7F800000u) return sign | 0x7C00u;
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));  // quiet NaN
  }
  const int exp = static_cast<int>(abs >> 23) - 127 + 15;  // rebiased for binary16
  const uint32_t mant = abs & 0x7FFFFFu;
  if (exp >= 0x1F) return sign | 0x7C00u;  // beyond the half range even before rounding
  if (exp <= 0) {
    // Subnormal half: value = m * 2^(exp - 14) in units of 2^-24, m with the implicit
    // bit. Below 2^-25 everything rounds to (signed) zero.
    if (exp < -10) return sign;
    const uint32_t m = mant | 0x800000u;
    // A carry into bit 10 yields the smallest normal, which is the right encoding.
    return static_cast<uint16_t>(sign | ShiftRoundEven(m, 14 - exp));
  }
  // Normal: a mantissa carry propagates into the exponent, and past 30 into infinity.
  const uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1FFFu;
  const uint32_t rounded = h + ((rest > 0x1000u || (rest == 0x1000u && (h & 1))) ? 1 : 0);
  return static_cast<uint16_t>(sign | rounded);
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return FromBits(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {
    if (mant == 0) return FromBits(sign);
    // Subnormal: normalise so the leading one becomes the implicit bit.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    return FromBits(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13));
  }
  return FromBits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

void ToF32(const void* src, DType dtype, float* dst, size_t count) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && count > 0) std::memmove(dst, src, count * sizeof(float));
      return;
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = BF16ToF32(s[i]);
      return;
    }
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
  }
}

void FromF32(const float* src, DType dtype, void* dst, size_t count) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && count > 0) std::memmove(dst, src, count * sizeof(float));
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = F32ToBF16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < count; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
  }
}

}  // namespace shoal
