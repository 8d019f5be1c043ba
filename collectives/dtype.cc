// bf16/f16 <-> f32 conversions. The scalar path is integer bit manipulation, so the
// result does not depend on compiler flags (-ffast-math, FTZ) or on F16C being
// present; the AVX2+F16C path, taken where the CPU has it, gives the same bits.
#include "collectives/dtype.h"

#include <atomic>
#include <cstring>

namespace shoal {
namespace {

std::atomic<bool> avx2_allowed{true};

bool CpuHasAvx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = [] {
    __builtin_cpu_init();  // in case the first call comes from a static initialiser
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  }();
  return has;
#else
  return false;
#endif
}

template <DType T>
void ToF32Scalar(const uint16_t* src, float* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = Widen<T>(src[i]);
}

template <DType T>
void FromF32Scalar(const float* src, uint16_t* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = Narrow<T>(src[i]);
}

#ifdef SHOAL_AVX2
template <DType T>
SHOAL_AVX2 void ToF32Avx2(const uint16_t* src, float* dst, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, dtype_detail::WidenX8<T>(h));
  }
  ToF32Scalar<T>(src + i, dst + i, count - i);
}

template <DType T>
SHOAL_AVX2 void FromF32Avx2(const float* src, uint16_t* dst, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), dtype_detail::NarrowX8<T>(_mm256_loadu_ps(src + i)));
  }
  FromF32Scalar<T>(src + i, dst + i, count - i);
}
#endif

template <DType T>
void ToF32Of(const void* src, float* dst, size_t count) {
  const auto* s = static_cast<const uint16_t*>(src);
#ifdef SHOAL_AVX2
  if (UseAvx2()) return ToF32Avx2<T>(s, dst, count);
#endif
  ToF32Scalar<T>(s, dst, count);
}

template <DType T>
void FromF32Of(const float* src, void* dst, size_t count) {
  auto* d = static_cast<uint16_t*>(dst);
#ifdef SHOAL_AVX2
  if (UseAvx2()) return FromF32Avx2<T>(src, d, count);
#endif
  FromF32Scalar<T>(src, d, count);
}

}  // namespace

bool UseAvx2() { return CpuHasAvx2() && avx2_allowed.load(std::memory_order_relaxed); }

void SetAvx2ForTesting(bool on) { avx2_allowed.store(on, std::memory_order_relaxed); }

void ToF32(const void* src, DType dtype, float* dst, size_t count) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && count > 0) std::memmove(dst, src, count * sizeof(float));
      return;
    case DType::kBF16:
      return ToF32Of<DType::kBF16>(src, dst, count);
    case DType::kF16:
      return ToF32Of<DType::kF16>(src, dst, count);
  }
}

void FromF32(const float* src, DType dtype, void* dst, size_t count) {
  switch (dtype) {
    case DType::kF32:
      if (src != dst && count > 0) std::memmove(dst, src, count * sizeof(float));
      return;
    case DType::kBF16:
      return FromF32Of<DType::kBF16>(src, dst, count);
    case DType::kF16:
      return FromF32Of<DType::kF16>(src, dst, count);
  }
}

}  // namespace shoal
