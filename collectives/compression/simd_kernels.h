// AVX2+F16C bodies of the codecs' element loops (cast encode/decode, qblock
// quantise/dequantise). The codecs call them only where UseAvx2() (collectives/dtype.h)
// and finish with their scalar loop from the returned index, so each kernel does the
// leading multiple of 8 elements and the scalar code stays the reference: every
// kernel gives the same bits as the scalar code it replaces.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collectives/communicator.h"

namespace shoal::compression::simd {

// One encode of the cast codecs over [0, count): x = grad (+ old when not null),
// wire = narrow(clamp(x * inv, -limit, limit)), sent = widen(wire) * n,
// residual = FiniteOrZero(x - sent), and contribution = sent when not null.
struct CastEncodeArgs {
  const float* grad;
  const float* old;
  float inv, n, limit;
  uint16_t* wire;
  float* residual;
  float* contribution;
};
size_t CastEncodeAvx2(DType wire_type, const CastEncodeArgs& a, size_t count);
// out = widen(wire) * n.
size_t CastDecodeAvx2(DType wire_type, const uint16_t* wire, float n, float* out, size_t count);

// qblock, one block of `len` values. Range: the scalar loop's min and max; false where
// the answer could depend on the order of comparisons (a NaN, or a zero whose sign
// the first occurrence decides), and the caller then takes the scalar loop.
bool QBlockRangeAvx2(const float* x, size_t len, float* lo, float* hi);
// codes of x[i] = floor((x[i] - lo) * inv + u_i) clamped to [0, 2^bits - 1], with u_i
// the dither of pair `pair0 + i / 2` drawn from `key` as qblock_codec.cc does.
size_t QBlockCodesAvx2(const float* x, size_t len, float lo, float inv, int bits, uint64_t key,
                       uint64_t pair0, uint8_t* codes);
// out[i] (+)= lo + code_i * step.
size_t QBlockDecodeAvx2(const uint8_t* codes, size_t len, int bits, float lo, float step, float* out, bool add);

}  // namespace shoal::compression::simd
