// AVX2+F16C kernels of the cast and qblock codecs; see simd_kernels.h. Compiled per
// function for AVX2 (the build targets generic x86-64), without FMA: fusing a*b+c
// would round once where the scalar code rounds twice.
#include "collectives/compression/simd_kernels.h"

#include <cstdint>
#include <cstring>

#include "collectives/compression/codec_common.h"
#include "collectives/compression/simd_common.h"
#include "collectives/dtype.h"

namespace shoal::compression::simd {

#ifdef SHOAL_AVX2
namespace {

// Where the output of a kernel is large and will not be read again soon (a residual
// waits a whole step), non-temporal stores skip the read-for-ownership of each line:
// the pass then moves 2/3 of the bytes. 16-byte aligned, as malloc guarantees.
constexpr size_t kStreamFloats = size_t{1} << 20;  // 4 MiB: beyond L2, most of L3's share
inline bool Streams(const float* out, size_t count) {
  return count >= kStreamFloats && reinterpret_cast<uintptr_t>(out) % 16 == 0;
}

// ---- cast codecs

template <DType T>
SHOAL_AVX2 size_t CastEncode(const CastEncodeArgs& a, size_t count) {
  const __m256 inv = _mm256_set1_ps(a.inv), n = _mm256_set1_ps(a.n);
  const __m256 hi = _mm256_set1_ps(a.limit), lo = _mm256_set1_ps(-a.limit);
  // Locals: the stores could alias `a`, which would reload its fields every iteration.
  const float *grad = a.grad, *old = a.old;
  uint16_t* wire = a.wire;
  float *residual = a.residual, *contribution = a.contribution;
  const bool stream = Streams(residual, count);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256 x = _mm256_loadu_ps(grad + i);
    if (old) x = _mm256_add_ps(x, _mm256_loadu_ps(old + i));
    // std::clamp(v, lo, hi) is v < lo ? lo : (hi < v ? hi : v); min/max_ps(a, b)
    // return b unless a < b (a > b), so NaN passes through as it does there. bf16's
    // limit is infinity (f32's range), where the clamp changes nothing.
    __m256 v = _mm256_mul_ps(x, inv);
    if constexpr (T == DType::kF16) v = _mm256_max_ps(lo, _mm256_min_ps(hi, v));
    const __m128i w = dtype_detail::NarrowX8<T>(v);
    const __m256 sent = _mm256_mul_ps(dtype_detail::WidenX8<T>(w), n);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(wire + i), w);
    if (residual != nullptr) {  // null: error feedback off, nothing to keep
      const __m256 r = FiniteOrZeroX8(_mm256_sub_ps(x, sent));
      if (stream) {
        _mm_stream_ps(residual + i, _mm256_castps256_ps128(r));
        _mm_stream_ps(residual + i + 4, _mm256_extractf128_ps(r, 1));
      } else {
        _mm256_storeu_ps(residual + i, r);
      }
    }
    if (contribution) _mm256_storeu_ps(contribution + i, sent);
  }
  if (stream) _mm_sfence();
  return i;
}

template <DType T>
SHOAL_AVX2 size_t CastDecode(const uint16_t* wire, float n, float* out, size_t count) {
  const __m256 vn = _mm256_set1_ps(n);
  const bool stream = Streams(out, count);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wire + i));
    const __m256 v = _mm256_mul_ps(dtype_detail::WidenX8<T>(w), vn);
    if (stream) {
      _mm_stream_ps(out + i, _mm256_castps256_ps128(v));
      _mm_stream_ps(out + i + 4, _mm256_extractf128_ps(v, 1));
    } else {
      _mm256_storeu_ps(out + i, v);
    }
  }
  if (stream) _mm_sfence();
  return i;
}

// ---- qblock

// Mix32 (codec_common.h) of eight lanes.
SHOAL_AVX2 inline __m256i Mix32X8(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}


}  // namespace

size_t CastEncodeAvx2(DType wire_type, const CastEncodeArgs& a, size_t count) {
  return wire_type == DType::kF16 ? CastEncode<DType::kF16>(a, count) : CastEncode<DType::kBF16>(a, count);
}

size_t CastDecodeAvx2(DType wire_type, const uint16_t* wire, float n, float* out, size_t count) {
  return wire_type == DType::kF16 ? CastDecode<DType::kF16>(wire, n, out, count)
                                  : CastDecode<DType::kBF16>(wire, n, out, count);
}

SHOAL_AVX2 bool QBlockRangeAvx2(const float* grad, const float* old, size_t len, float* lo, float* hi) {
  if (len < 8) return false;
  auto x_at = [grad, old](size_t i) SHOAL_AVX2 {
    const __m256 g = _mm256_loadu_ps(grad + i);
    return old ? _mm256_add_ps(g, _mm256_loadu_ps(old + i)) : g;
  };
  __m256 vlo = x_at(0), vhi = vlo, unordered = _mm256_cmp_ps(vlo, vlo, _CMP_UNORD_Q);
  // The last load may overlap the previous one: min and max do not mind.
  for (size_t i = 8; i < len; i += 8) {
    const __m256 v = x_at(i + 8 <= len ? i : len - 8);
    vlo = _mm256_min_ps(v, vlo);
    vhi = _mm256_max_ps(v, vhi);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  if (_mm256_movemask_ps(unordered) != 0) return false;
  float l[8], h[8];
  _mm256_storeu_ps(l, vlo);
  _mm256_storeu_ps(h, vhi);
  for (int k = 1; k < 8; ++k) {
    l[0] = l[k] < l[0] ? l[k] : l[0];
    h[0] = h[k] > h[0] ? h[k] : h[0];
  }
  // Without NaN, equal values have equal bits except +0 and -0.
  if (l[0] == 0.0f || h[0] == 0.0f) return false;
  *lo = l[0];
  *hi = h[0];
  return true;
}

namespace {

struct QBlockEncodeConsts {
  __m256 lo, inv, step, zero, levels;
};

// Eight values of QBlockEncodeAvx2 at i, with their dithers u: writes the residual (and
// the decoded values) and returns the codes as int32 lanes for the caller to pack.
// Whether x has an old residual to add is a constant, so the loop has no branch on it.
template <bool kOld>
SHOAL_AVX2 inline __m256i QBlockEncode8(const QBlockEncodeArgs& a, const QBlockEncodeConsts& k, size_t i, __m256 u) {
  __m256 x = _mm256_loadu_ps(a.grad + i);
  if constexpr (kOld) x = _mm256_add_ps(x, _mm256_loadu_ps(a.old + i));
  const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, k.lo), k.inv), u);
  // std::clamp(v, 0, levels) and then truncation, as the scalar code does, except for
  // NaN: max_ps returns its second operand when either is NaN, so NaN becomes 0 here,
  // the code the scalar path stores for it (its INT_MIN truncated to 8 or 4 bits).
  // Truncating in float keeps the decode below off the packing shuffles.
  const __m256 cf = _mm256_round_ps(_mm256_min_ps(k.levels, _mm256_max_ps(v, k.zero)),
                                    _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  // Decoded as a receiver decodes the stored codes.
  const __m256 dec = _mm256_add_ps(k.lo, _mm256_mul_ps(cf, k.step));
  __m256 res = _mm256_sub_ps(x, dec);
  if (a.finite) res = FiniteOrZeroX8(res);
  // Plain stores: non-temporal ones measured slower here (the bench's next step finds
  // part of the residual still in L3).
  _mm256_storeu_ps(a.residual + i, res);
  if (a.decoded) _mm256_storeu_ps(a.decoded + i, dec);
  return _mm256_cvttps_epi32(cf);
}

// The dithers of eight values from the 16-bit halves of draws r (codec_common.h: of
// each group of 16 values, the first eight take the low halves, the rest the high).
SHOAL_AVX2 inline __m256 LowDithers(__m256i r) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(r, _mm256_set1_epi32(0xFFFF))),
                       _mm256_set1_ps(0x1.0p-16f));
}
SHOAL_AVX2 inline __m256 HighDithers(__m256i r) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r, 16)), _mm256_set1_ps(0x1.0p-16f));
}

// 32 values per step: the shuffles that pack codes into bytes are the scarce resource
// (two ports), and packing four vectors of codes at once takes 4 of them where one
// vector at a time took 12.
template <int kBits, bool kOld>
SHOAL_AVX2 size_t QBlockEncode(const QBlockEncodeArgs& a, size_t len) {
  const QBlockEncodeConsts k{_mm256_set1_ps(a.lo), _mm256_set1_ps(a.inv), _mm256_set1_ps(a.step),
                             _mm256_setzero_ps(), _mm256_set1_ps(static_cast<float>((1 << kBits) - 1))};
  // Weyl steps of the counters of the next eight draws, mod 2^32.
  const uint32_t start = static_cast<uint32_t>(a.first) * kQDitherStride;
  __m256i weyl = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(start)),
                                  _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                     _mm256_set1_epi32(static_cast<int32_t>(kQDitherStride))));
  const __m256i advance = _mm256_set1_epi32(static_cast<int32_t>(8 * kQDitherStride));
  const __m256i key = _mm256_set1_epi32(static_cast<int32_t>(QDitherKey(a.key)));
  // packs/packus work within 128-bit lanes; this puts their 32-bit groups in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    const __m256i r0 = Mix32X8(_mm256_xor_si256(weyl, key));
    weyl = _mm256_add_epi32(weyl, advance);
    const __m256i r1 = Mix32X8(_mm256_xor_si256(weyl, key));
    weyl = _mm256_add_epi32(weyl, advance);
    const __m256i c0 = QBlockEncode8<kOld>(a, k, i, LowDithers(r0));
    const __m256i c1 = QBlockEncode8<kOld>(a, k, i + 8, HighDithers(r0));
    const __m256i c2 = QBlockEncode8<kOld>(a, k, i + 16, LowDithers(r1));
    const __m256i c3 = QBlockEncode8<kOld>(a, k, i + 24, HighDithers(r1));
    // Codes are in [0, levels]: the saturating packs keep them as they are.
    const __m256i bytes = _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3)), order);
    if constexpr (kBits == 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.codes + i), bytes);
    } else {
      // Byte pairs (c0, c1) as 16-bit words: (w | w >> 4) & 0xFF is c0 | c1 << 4.
      const __m256i nib = _mm256_and_si256(_mm256_or_si256(bytes, _mm256_srli_epi16(bytes, 4)), _mm256_set1_epi16(0xFF));
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(nib, nib), 0x08);  // qwords 0, 2
      _mm_storeu_si128(reinterpret_cast<__m128i*>(a.codes + i / 2), _mm256_castsi256_si128(packed));
    }
  }
  return i;
}

}  // namespace

SHOAL_AVX2 size_t QBlockEncodeAvx2(const QBlockEncodeArgs& a, size_t len) {
  // A copy of the arguments in each instance: the stores could alias `a`, which would
  // reload its fields.
  const QBlockEncodeArgs copy = a;
  if (a.bits == 8) return a.old ? QBlockEncode<8, true>(copy, len) : QBlockEncode<8, false>(copy, len);
  return a.old ? QBlockEncode<4, true>(copy, len) : QBlockEncode<4, false>(copy, len);
}

SHOAL_AVX2 size_t QBlockAccumulateAvx2(float* sum, const float* grad, const float* old, size_t len, bool first) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 x = _mm256_loadu_ps(grad + i);
    if (old) x = _mm256_add_ps(x, _mm256_loadu_ps(old + i));
    // 0 + x, not x: the sum of -0 alone is +0, as the scalar loop's.
    _mm256_storeu_ps(sum + i, _mm256_add_ps(first ? _mm256_setzero_ps() : _mm256_loadu_ps(sum + i), x));
  }
  return i;
}

SHOAL_AVX2 size_t QBlockDecodeAvx2(const uint8_t* codes, size_t len, int bits, float lo, float step, float* out,
                                   bool add) {
  const __m256 vlo = _mm256_set1_ps(lo), vstep = _mm256_set1_ps(step);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    __m128i c8;  // the eight codes as bytes
    if (bits == 8) {
      c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i));
    } else {
      int32_t packed;
      std::memcpy(&packed, codes + i / 2, sizeof(packed));
      const __m128i b = _mm_cvtsi32_si128(packed);
      c8 = _mm_unpacklo_epi8(_mm_and_si128(b, low4), _mm_and_si128(_mm_srli_epi16(b, 4), low4));
    }
    __m256 v = _mm256_add_ps(vlo, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c8)), vstep));
    if (add) v = _mm256_add_ps(_mm256_loadu_ps(out + i), v);
    _mm256_storeu_ps(out + i, v);
  }
  return i;
}

#else  // no AVX2 build: UseAvx2() is false and nothing calls these

size_t CastEncodeAvx2(DType, const CastEncodeArgs&, size_t) { return 0; }
size_t CastDecodeAvx2(DType, const uint16_t*, float, float*, size_t) { return 0; }
bool QBlockRangeAvx2(const float*, const float*, size_t, float*, float*) { return false; }
size_t QBlockEncodeAvx2(const QBlockEncodeArgs&, size_t) { return 0; }
size_t QBlockAccumulateAvx2(float*, const float*, const float*, size_t, bool) { return 0; }
size_t QBlockDecodeAvx2(const uint8_t*, size_t, int, float, float, float*, bool) { return 0; }

#endif

}  // namespace shoal::compression::simd
