#include "common/stream_copy.h"

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace shoal {
namespace {

__attribute__((target("avx2"))) void StreamingCopyAvx2(char* dst, const char* src, size_t n) {
  // Streaming stores need 32-byte aligned destinations: memcpy the head up to one.
  size_t i = (32 - (reinterpret_cast<uintptr_t>(dst) & 31)) & 31;
  if (i > n) i = n;
  std::memcpy(dst, src, i);
  for (; i + 128 <= n; i += 128) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32));
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 64));
    const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 96));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), a);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32), b);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 64), c);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 96), d);
  }
  std::memcpy(dst + i, src + i, n - i);
  _mm_sfence();  // streaming stores are weakly ordered
}

bool HaveAvx2() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}

}  // namespace

void StreamingCopy(void* dst, const void* src, size_t n) {
  if (HaveAvx2()) {
    StreamingCopyAvx2(static_cast<char*>(dst), static_cast<const char*>(src), n);
  } else {
    std::memcpy(dst, src, n);
  }
}

}  // namespace shoal
