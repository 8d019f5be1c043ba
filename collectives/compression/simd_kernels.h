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
// residual = FiniteOrZero(x - sent) when not null, and contribution = sent when not null.
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

// qblock, one block of `len` values of x = grad (+ old when not null), x computed on
// the fly so that the codec never writes x out. Range: the scalar loop's min and max;
// false where the answer could depend on the order of comparisons (a NaN, or a zero
// whose sign the first occurrence decides), and the caller then takes the scalar loop.
bool QBlockRangeAvx2(const float* grad, const float* old, size_t len, float* lo, float* hi);
// One pass that quantises a block and does its error feedback while x is in L1:
// code_i = floor((x_i - lo) * inv + u_i) clamped to [0, 2^bits - 1], with u_i the
// dither QBlockDither(key, first, i) (codec_common.h); then
// residual_i = x_i - decode(code_i), 0 where that is not finite when `finite` (the
// codec's FiniteOrZero), and decoded_i = decode(code_i) when `decoded` is not null,
// where decode(c) = lo + c * step.
struct QBlockEncodeArgs {
  const float* grad;
  const float* old;
  float lo, inv, step;
  int bits;
  uint64_t key, first;  // first: the block's first index in the quantised array
  uint8_t* codes;
  float* residual;
  float* decoded;
  bool finite;
};
size_t QBlockEncodeAvx2(const QBlockEncodeArgs& a, size_t len);
// The owner's own term of a block's sum: sum_i = (first ? 0 : sum_i) + (grad_i + old_i)
// (old may be null), in the scalar loop's order of additions.
size_t QBlockAccumulateAvx2(float* sum, const float* grad, const float* old, size_t len, bool first);
// out[i] (+)= lo + code_i * step.
size_t QBlockDecodeAvx2(const uint8_t* codes, size_t len, int bits, float lo, float step, float* out, bool add);

}  // namespace shoal::compression::simd
