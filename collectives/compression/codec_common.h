// What the CPU codecs and the CUDA codecs must compute alike, in one place that both the
// host compiler and nvcc read: the counter-based RNG (seeds, stochastic rounding, top-k
// samples) and qblock's wire layout. Functions are host+device under nvcc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#if defined(__CUDACC__)
#define SHOAL_HD __host__ __device__
#else
#define SHOAL_HD
#endif

namespace shoal::compression {

// splitmix64's finaliser: a bijective 64-bit mix, good enough for seeds and for
// stochastic rounding, and cheap (three multiplies).
SHOAL_HD inline uint64_t Mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One stream key from several ids (seed, rank, step, bucket, ...), order-sensitive.
inline uint64_t StreamKey(std::initializer_list<uint64_t> ids) {
  uint64_t h = 0x5348'4F41'4C43'4443ull;  // "SHOALCDC"
  for (uint64_t id : ids) h = Mix64(h ^ id);
  return h;
}

// Uniform in [0, 1) with 24 random bits: element i of the stream `key`. Counter-based,
// so any rank can regenerate any element without replaying the stream.
SHOAL_HD inline float UniformAt(uint64_t key, uint64_t i) {
  return static_cast<float>(Mix64(key + i * 0xD1B54A32D192ED03ull) >> 40) * 0x1.0p-24f;
}

// v, or 0 where v is inf or NaN: what error feedback carries over to the next step.
// Exponent bits all ones = inf or NaN; tested on the bits so that loops vectorise.
SHOAL_HD inline float FiniteOrZero(float v) {
  uint32_t bits;
  __builtin_memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x7F800000u) == 0x7F800000u ? 0.0f : v;
}

// A bijective 32-bit mix (Wellons' "lowbias32"): two multiplies, where Mix64 needs two
// 64-bit ones, which AVX2 can only emulate (three 32-bit multiplies each).
SHOAL_HD inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// qblock's stochastic-rounding dither of value i of the block whose first value has
// index `first` in the quantised array: one 32-bit draw per pair of values, 16 bits
// each. In each group of 16 values, value j < 8 takes the low half of the group's draw
// j and value 8 + j its high half (so a vector kernel splits eight draws into sixteen
// dithers without shuffling). The draw of counter c is Mix32 of c's Weyl step xor the
// stream key folded to 32 bits; block values use counters first + 8 * (i / 16) + i % 8,
// all below first + len, so blocks never share one. 16 bits leave a rounding bias of at
// most 2^-16 of a step (error feedback takes even that back).
constexpr uint32_t kQDitherStride = 0x9E3779B9u;
SHOAL_HD inline uint32_t QDitherKey(uint64_t key) { return static_cast<uint32_t>(key ^ (key >> 32)); }
SHOAL_HD inline float QBlockDither(uint64_t key, uint64_t first, size_t i) {
  const uint32_t counter = static_cast<uint32_t>(first + 8 * (i / 16) + i % 8);
  const uint32_t r = Mix32((counter * kQDitherStride) ^ QDitherKey(key));
  return static_cast<float>((r >> (16 * ((i / 8) % 2))) & 0xFFFFu) * 0x1.0p-16f;
}

// qblock on the wire, block by block: f32 minimum, f32 step, then one code per value
// (8-bit) or two per byte (4-bit, even index in the low nibble). Decoded value =
// min + code * step. Every block but the last is full.
constexpr size_t kQHeader = 2 * sizeof(float);
SHOAL_HD inline size_t QBlockBytes(size_t len, int bits) { return kQHeader + (len * bits + 7) / 8; }
SHOAL_HD inline size_t QuantBytes(size_t count, size_t block, int bits) {
  const size_t full = count / block, rest = count % block;
  return full * QBlockBytes(block, bits) + (rest ? QBlockBytes(rest, bits) : 0);
}

}  // namespace shoal::compression
