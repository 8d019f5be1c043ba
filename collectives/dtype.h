// Element conversions for the 16-bit wire formats: bf16 and IEEE half <-> f32.
// Collectives accumulate 16-bit data in f32, so every backend converts through these;
// they are bit-exact (round-to-nearest-even, subnormals, inf and NaN preserved).
#pragma once

#include <cstddef>
#include <cstdint>

#include "collectives/communicator.h"

namespace shoal {

// bf16 is the top half of an f32: widening is a shift, narrowing rounds to nearest
// even on the 16 dropped bits. NaN stays NaN (made quiet so rounding cannot turn it
// into an infinity).
uint16_t F32ToBF16(float f);
float BF16ToF32(uint16_t h);

// IEEE 754 binary16: 5-bit exponent, 10-bit mantissa, subnormals down to 2^-24,
// finite max 65504; values that round past it become infinity.
uint16_t F32ToF16(float f);
float F16ToF32(uint16_t h);

// Bulk forms over a buffer of `dtype` elements. For kF32 they copy (memcpy-safe for
// src == dst).
void ToF32(const void* src, DType dtype, float* dst, size_t count);
void FromF32(const float* src, DType dtype, void* dst, size_t count);

}  // namespace shoal
