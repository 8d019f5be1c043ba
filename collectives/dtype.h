// Element conversions for the 16-bit wire formats: bf16 and IEEE half <-> f32.
// Collectives accumulate 16-bit data in f32, so every backend converts through these;
// they are bit-exact (round-to-nearest-even, subnormals, inf and NaN preserved).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cstring>

#include "collectives/communicator.h"

// Element conversions are inline so the bulk loops (and codecs) can vectorise them:
// out-of-line calls through -fPIC cost ~40% of a bf16 allreduce.
namespace shoal {
namespace dtype_detail {

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Shifts `m` right by `shift` (1..31) with round-to-nearest-even on the dropped bits.
inline uint32_t ShiftRoundEven(uint32_t m, int shift) {
  const uint32_t kept = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1))) ? 1 : 0);
}

}  // namespace dtype_detail

inline uint16_t F32ToBF16(float f) {
  uint32_t u = dtype_detail::Bits(f);
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

inline float BF16ToF32(uint16_t h) { return dtype_detail::FromBits(static_cast<uint32_t>(h) << 16); }

inline uint16_t F32ToF16(float f) {
  const uint32_t u = dtype_detail::Bits(f);
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
    return static_cast<uint16_t>(sign | dtype_detail::ShiftRoundEven(m, 14 - exp));
  }
  // Normal: a mantissa carry propagates into the exponent, and past 30 into infinity.
  const uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1FFFu;
  const uint32_t rounded = h + ((rest > 0x1000u || (rest == 0x1000u && (h & 1))) ? 1 : 0);
  return static_cast<uint16_t>(sign | rounded);
}

inline float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) {
    // inf, or NaN made quiet (as F16C's vcvtph2ps does, so both paths agree bit for bit).
    return dtype_detail::FromBits(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0));
  }
  if (exp == 0) {
    if (mant == 0) return dtype_detail::FromBits(sign);
    // Subnormal: normalise so the leading one becomes the implicit bit.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    return dtype_detail::FromBits(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13));
  }
  return dtype_detail::FromBits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

// bf16 is the top half of an f32: widening is a shift, narrowing rounds to nearest
// even on the 16 dropped bits. NaN stays NaN (made quiet so rounding cannot turn it
// into an infinity).

// IEEE 754 binary16: 5-bit exponent, 10-bit mantissa, subnormals down to 2^-24,
// finite max 65504; values that round past it become infinity.

// Bulk forms over a buffer of `dtype` elements. For kF32 they copy (memcpy-safe for
// src == dst). They take the AVX2 path below where UseAvx2(); the result is the same.
void ToF32(const void* src, DType dtype, float* dst, size_t count);
void FromF32(const float* src, DType dtype, void* dst, size_t count);

// Runtime dispatch: the build targets generic x86-64, so the vector paths (here and in
// the codecs) are compiled for AVX2+F16C per function and chosen when the CPU has
// both. Every vector path is bit-identical to the scalar one. Tests turn it off to
// compare the two; turning it on has no effect on a CPU without AVX2+F16C.
bool UseAvx2();
void SetAvx2ForTesting(bool on);

}  // namespace shoal

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// Not "fma": with -ffp-contract=fast (GNU mode) the compiler would fuse a*b+c, whose
// single rounding differs from the scalar path's two.
#define SHOAL_AVX2 __attribute__((target("avx2,f16c")))

namespace shoal::dtype_detail {

// Eight f32 <-> eight 16-bit values of type T (kBF16 or kF16), exactly as the scalar
// functions above. F16C is IEEE round-to-nearest-even with subnormals, and keeps the
// NaN payload's top bits with the quiet bit set, as F32ToF16 / F16ToF32 do.
template <DType T>
SHOAL_AVX2 inline __m128i NarrowX8(__m256 f) {
  if constexpr (T == DType::kF16) {
    return _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT);
  } else {
    const __m256i u = _mm256_castps_si256(f);
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), _mm256_and_si256(high, _mm256_set1_epi32(1)));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
    const __m256i quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);  // every lane <= 0xFFFF
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  }
}

template <DType T>
SHOAL_AVX2 inline __m256 WidenX8(__m128i h) {
  if constexpr (T == DType::kF16) {
    return _mm256_cvtph_ps(h);
  } else {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

}  // namespace shoal::dtype_detail
#endif

namespace shoal {

// Scalar element conversion chosen at compile time (T = kBF16 or kF16), for loops
// templated on the wire type.
template <DType T>
inline uint16_t Narrow(float f) {
  return T == DType::kF16 ? F32ToF16(f) : F32ToBF16(f);
}
template <DType T>
inline float Widen(uint16_t h) {
  return T == DType::kF16 ? F16ToF32(h) : BF16ToF32(h);
}

}  // namespace shoal
