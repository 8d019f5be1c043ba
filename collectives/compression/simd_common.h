// AVX2 helpers shared by the codecs' kernel files (simd_kernels.cc, powersgd_kernels.cc).
// Compiled for plain "avx2", a subset of both files' targets (avx2+f16c, avx2+fma),
// so that either can inline them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

namespace shoal::compression::simd {

// FiniteOrZero (codec_common.h) of eight lanes: exponent bits all ones (inf, NaN) -> 0.
__attribute__((target("avx2"))) inline __m256 FiniteOrZeroX8(__m256 v) {
  const __m256i exponent = _mm256_set1_epi32(0x7F800000);
  const __m256i bad = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), exponent), exponent);
  return _mm256_andnot_ps(_mm256_castsi256_ps(bad), v);
}

}  // namespace shoal::compression::simd
#endif
