// bf16/f16 <-> f32 conversions, written with integer bit manipulation so the result
// does not depend on compiler flags (-ffast-math, FTZ) or on F16C being present.
#include "collectives/dtype.h"

#include <cstring>

namespace shoal {

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
