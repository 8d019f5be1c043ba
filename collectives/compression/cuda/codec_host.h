// Host-side logic shared by the CUDA codec kernels and their CPU tests: the counter RNG,
// qblock's block layout and per-element arithmetic, top-k's threshold and trimming, and
// Gram-Schmidt, written so the kernels compute the CPU codecs' (codec_internal.h) bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "collectives/compression/codec_common.h"  // SHOAL_HD, the RNG, qblock's layout

namespace shoal::gpu_codec {

// f32 arithmetic that nvcc may not contract into FMAs: the CPU codecs (built without
// -mfma) round after every multiply, so an FMA would change quantisation codes.
SHOAL_HD inline float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SHOAL_HD inline float AddRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SHOAL_HD inline float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// The CPU codecs' RNG and qblock layout are the CPU codecs' own definitions.
using compression::kQHeader;
using compression::Mix64;
using compression::QBlockBytes;
using compression::QuantBytes;
using compression::StreamKey;
using compression::UniformAt;

// ---- qblock: [f32 min | f32 step | codes], 8-bit or two 4-bit codes per byte (even
// index in the low nibble). Every block but the last is full, so block b starts at
// b * QBlockBytes(block): one CUDA block per quantisation block needs no prefix sums.
SHOAL_HD inline size_t QBlockOffset(size_t b, size_t block, int bits) { return b * QBlockBytes(block, bits); }
// First element of owner s's run of whole blocks (the CPU codec's split of the bucket).
inline size_t QRunBegin(int s, int n, size_t count, size_t block) {
  const size_t blocks = (count + block - 1) / block;
  const size_t b = blocks * static_cast<size_t>(s) / static_cast<size_t>(n) * block;
  return b < count ? b : count;
}
// step and its inverse for a block's range; a constant or non-finite range sends its
// minimum only (step 0, inv 0), as the CPU codec does.
SHOAL_HD inline void QStep(float lo, float hi, int bits, float* step, float* inv) {
  const float levels = static_cast<float>((1 << bits) - 1);
  float s = (hi - lo) / levels;
  const bool usable = s > 0 && s - s == 0.0f;  // finite and positive
  *inv = usable ? 1.0f / s : 0.0f;
  *step = *inv != 0.0f ? s : 0.0f;  // an inverse that underflows to 0 also means "constant"
}
// The dither of element i of the block starting at b0, exactly as the CPU qblock codec
// draws it (codec_common.h; the CPU-twin test fails if either side changes).
SHOAL_HD inline float QDither(uint64_t key, size_t b0, size_t i) {
  return compression::QBlockDither(key, b0, i);
}
// floor((x - lo) * inv + u), clamped to [0, levels]: stochastic rounding.
SHOAL_HD inline uint32_t QCode(float x, float lo, float inv, float u, int bits) {
  const float levels = static_cast<float>((1 << bits) - 1);
  float v = AddRn(MulRn(SubRn(x, lo), inv), u);
  v = v < 0.0f ? 0.0f : (v > levels ? levels : v);
  return static_cast<uint32_t>(v);
}
SHOAL_HD inline float QDecode(float lo, uint32_t code, float step) {
  return AddRn(lo, MulRn(static_cast<float>(code), step));
}

// Host reference of one quantisation/decode of a whole buffer with the layout above;
// the kernels must produce these bytes and values.
void QuantizeRef(const float* x, size_t count, size_t block, int bits, uint64_t key, uint8_t* out);
void DequantizeRef(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add);

// ---- top-k.
SHOAL_HD inline size_t TopkSampleIndex(uint64_t key, size_t j, size_t count) {
  const size_t i = static_cast<size_t>(MulRn(UniformAt(key, j), static_cast<float>(count)));
  return i < count - 1 ? i : count - 1;
}
// k = ceil(ratio * count), in [1, count].
size_t TopkK(size_t count, double ratio);
// The |x| threshold from magnitudes `mags`: all |x| when count <= sample (exact k-th
// largest), else the sampled magnitudes at TopkSampleIndex (their ratio-quantile).
float TopkThreshold(std::vector<float> mags, size_t count, size_t sample, double ratio);
// Candidates (ascending) with |x| >= threshold > 0; keeps the k largest (ties: lower
// index) when the estimate let more through, then restores ascending order.
std::vector<uint32_t> TopkTrim(std::vector<uint32_t> chosen, const float* x, size_t k);

// ---- PowerSGD: modified Gram-Schmidt twice per column with double dots, in place on
// p (rows x r, row-major); a column that collapses below 1e-6 of its length is zeroed.
constexpr double kDependentColumn = 1e-6;
void OrthogonaliseRef(float* p, size_t rows, int r);

// ---- launch shapes.
struct Launch {
  unsigned blocks = 1;
  unsigned threads = 256;
};
// Grid-stride elementwise kernels: enough blocks to fill the GPU, never more than the
// work needs, at least one (a 0-element launch is skipped by the caller).
Launch ElementwiseLaunch(size_t n, unsigned threads = 256, unsigned max_blocks = 4096);
// qblock: one CUDA block per quantisation block, one thread per value up to 1024.
Launch QBlockLaunch(size_t count, size_t block);

}  // namespace shoal::gpu_codec
