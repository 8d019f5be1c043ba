// Codec `qblock`: 8- or 4-bit min-max quantisation in blocks of 512 values with
// stochastic rounding, reduced as scatter-reduce then allgather with requantisation,
// and error feedback of both quantisation stages.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "collectives/compression/codec_internal.h"
#include "collectives/compression/simd_kernels.h"
#include "collectives/dtype.h"

namespace shoal::compression {
namespace {

// The block layout (kQHeader, QBlockBytes, QuantBytes) is in codec_common.h.

// x = grad (+ old where not null): the value quantised, computed where it is needed.
inline float XAt(const float* grad, const float* old, size_t i) { return old ? grad[i] + old[i] : grad[i]; }

// Min and max of one block of x. Returns true when every x is known to be finite and
// small enough (|x| <= 2^120) that the block's step, decoded values and residuals are
// finite too, so that FiniteOrZero can be skipped: the AVX2 range says so (it has seen
// no NaN); the scalar loop, which NaN can slip past, never does.
bool BlockRange(const float* grad, const float* old, size_t len, float* lo, float* hi) {
  if (UseAvx2() && simd::QBlockRangeAvx2(grad, old, len, lo, hi)) {
    constexpr float kSafe = 0x1.0p120f;
    return *lo >= -kSafe && *hi <= kSafe;
  }
  *lo = *hi = XAt(grad, old, 0);
  for (size_t i = 1; i < len; ++i) {
    *lo = std::min(*lo, XAt(grad, old, i));
    *hi = std::max(*hi, XAt(grad, old, i));
  }
  return false;
}

// Code i of a block as stored.
inline uint32_t CodeAt(const uint8_t* codes, size_t i, int bits) {
  return bits == 8 ? codes[i] : (codes[i / 2] >> ((i & 1) * 4)) & 0xF;
}

// The scalar encode of values [from, len) of a block (simd_kernels.h,
// QBlockEncodeArgs), `from` even: the reference the AVX2 kernel matches.
void EncodeTail(const simd::QBlockEncodeArgs& a, size_t from, size_t len) {
  const float levels = static_cast<float>((1 << a.bits) - 1);
  auto code = [&](size_t i, float u) -> uint32_t {
    const float v = (XAt(a.grad, a.old, i) - a.lo) * a.inv + u;
    // Truncation is floor for v >= 0; through int32, which converts in one instruction.
    return static_cast<uint32_t>(static_cast<int32_t>(std::clamp(v, 0.0f, levels)));
  };
  // Counter-based dither (codec_common.h): any value's can be drawn on its own.
  for (size_t i = from; i < len; i += 2) {
    const uint32_t c0 = code(i, QBlockDither(a.key, a.first, i));
    const uint32_t c1 = i + 1 < len ? code(i + 1, QBlockDither(a.key, a.first, i + 1)) : 0;
    if (a.bits == 8) {
      a.codes[i] = static_cast<uint8_t>(c0);
      if (i + 1 < len) a.codes[i + 1] = static_cast<uint8_t>(c1);
    } else {
      a.codes[i / 2] = static_cast<uint8_t>(c0 | (c1 << 4));
    }
  }
  // Error feedback from the stored codes, decoded as a receiver decodes them.
  for (size_t i = from; i < len; ++i) {
    const float decoded = a.lo + static_cast<float>(CodeAt(a.codes, i, a.bits)) * a.step;
    const float r = XAt(a.grad, a.old, i) - decoded;
    a.residual[i] = a.finite ? FiniteOrZero(r) : r;
    if (a.decoded) a.decoded[i] = decoded;
  }
}

// Quantises one block of x (a.grad, a.old) into `wire` (header, then codes) with
// code = floor((x - min)/step + u), u uniform from the stream a.key, which makes the
// code unbiased: E[decode] = x (up to f32 rounding). Writes a.residual (and
// a.decoded) in the same pass; a.lo, a.inv, a.step and a.codes are set here.
// Where UseAvx2(), the AVX2 kernels do the range and the leading multiple of 8 values,
// with the same results; EncodeTail does the rest. Returns the bytes written.
size_t EncodeBlock(simd::QBlockEncodeArgs a, size_t len, uint8_t* wire) {
  float lo, hi;
  // Zeroing non-finite residuals is a no-op where the range rules them out.
  if (BlockRange(a.grad, a.old, len, &lo, &hi)) a.finite = false;
  float step = (hi - lo) / static_cast<float>((1 << a.bits) - 1);
  // A constant block (or a non-finite range) sends its minimum only.
  const float inv = (step > 0 && std::isfinite(step)) ? 1.0f / step : 0.0f;
  if (inv == 0.0f) step = 0.0f;
  std::memcpy(wire, &lo, sizeof(float));
  std::memcpy(wire + sizeof(float), &step, sizeof(float));
  a.lo = lo;
  a.inv = inv;
  a.step = step;
  a.codes = wire + kQHeader;
  EncodeTail(a, UseAvx2() ? simd::QBlockEncodeAvx2(a, len) : 0, len);
  return QBlockBytes(len, a.bits);
}

// sum = (first ? 0 : sum) + (grad + old), old possibly null: the owner's own term.
void AccumulateOwn(float* sum, const float* grad, const float* old, size_t len, bool first) {
  for (size_t i = UseAvx2() ? simd::QBlockAccumulateAvx2(sum, grad, old, len, first) : 0; i < len; ++i) {
    sum[i] = (first ? 0.0f : sum[i]) + XAt(grad, old, i);
  }
}

// out[i] (+)= decode(in)[i]; `add` selects accumulation.
void Dequantize(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add) {
  const bool avx2 = UseAvx2();
  for (size_t b0 = 0; b0 < count; b0 += block) {
    const size_t len = std::min(block, count - b0);
    float lo, step;
    std::memcpy(&lo, in, sizeof(float));
    std::memcpy(&step, in + sizeof(float), sizeof(float));
    const uint8_t* codes = in + kQHeader;
    float* o = out + b0;
    const size_t done = avx2 ? simd::QBlockDecodeAvx2(codes, len, bits, lo, step, o, add) : 0;
    // Four loops rather than per-element branches, so that each one vectorises.
    auto decode = [&](auto code_at) {
      if (add) {
        for (size_t i = done; i < len; ++i) o[i] += lo + static_cast<float>(code_at(i)) * step;
      } else {
        for (size_t i = done; i < len; ++i) o[i] = lo + static_cast<float>(code_at(i)) * step;
      }
    };
    if (bits == 8) {
      decode([codes](size_t i) { return CodeAt(codes, i, 8); });
    } else {
      decode([codes](size_t i) { return CodeAt(codes, i, 4); });
    }
    in += QBlockBytes(len, bits);
  }
}

// Which blocks each rank owns, and the streams of the two quantisations.
struct Plan {
  int n, me, bits;
  size_t block;
  std::vector<size_t> begin;  // rank s owns [begin[s], begin[s + 1])
  size_t slot;                // bytes of the largest run's quantisation
  uint64_t key1, key2;        // stage 1 (my quantisation of x), stage 2 (of my sum)
};

class QBlockCodec : public FeedbackCodec {
 public:
  using FeedbackCodec::FeedbackCodec;

 protected:
  // Ownership: the bucket's blocks are split into n contiguous runs of whole blocks;
  // rank s owns run s. Runs travel in slots padded to the largest run's size,
  // S = Q(largest run) bytes (Q = QuantBytes, about Q(count)/n):
  //   1. scatter-reduce: every rank quantises x = grad + residual outside its own run
  //      (key: seed, rank, step, bucket, 1) and an AllToAll hands run s to owner s;
  //   2. allgather: owner s adds the others' decoded runs and its own exact x (its
  //      part need not travel) in rank order, so its sum is reproducible, requantises
  //      that sum (key: seed, s, step, bucket, 2), and the owners' runs are
  //      allgathered; every rank decodes the others' runs into the bucket.
  // Bytes sent per rank: (n-1) * S in each stage, 2(n-1) * S in all, against the f32
  // ring's 2(n-1)/n * 4 * count: about 32/bits times fewer, less the 8-byte header per
  // block (8-bit: 3.9x, 4-bit: 7.8x).
  // Residual: x - decode(own quantisation) outside the owned run; inside it, the
  // requantisation error sum - decode(requant(sum)). Feeding the owner the stage-2
  // error means nothing is lost globally either: sum_r residual_r + output = sum_r x_r.
  //
  // Memory passes: buckets are tens of MB and each extra pass over one costs about as
  // much as the arithmetic, so every block is finished while it is in L1 and x is never
  // stored (what is left is compute, bound by the kernel's byte-packing shuffles):
  // stage 1 reads grad and the old residual once per block outside the owned run and
  // writes its codes straight into the owner's send slot and its residual; stage 2
  // sums each owned block in a block-sized buffer, then requantises it, writing the
  // codes, the owned output and the residual. The last pass decodes the others' runs
  // into the bucket. The kernels zero non-finite residuals themselves (FiniteOrZero,
  // where a block's range does not rule them out), so the base class needs no pass of
  // its own.
  Status DoReduce(float* bucket, size_t count, const std::vector<TensorSlice>& /*tensors*/,
                  uint64_t bucket_id, int64_t step, Communicator* comm,
                  const CollectiveOptions& opts, Update* update) override {
    const float* old;  // this bucket's residual, null on its first step
    RETURN_IF_ERROR(Residual(bucket_id, count, &old));
    if (count == 0) return OkStatus();  // every rank has the same count: no messages
    // Contributions (x - residual) need x, which the passes below never store, and the
    // residual before FiniteOrZero: tests and benchmarks only, so a slower path.
    const bool record = options_.record_contributions;
    Floats x;
    if (record) RETURN_IF_ERROR(WithResidual(bucket, count, bucket_id, &x));

    const Plan plan = MakePlan(count, bucket_id, static_cast<uint64_t>(step), *comm);
    Floats residual = Borrow(count);
    // A world of one has nothing to exchange: it owns the whole bucket.
    if (plan.n > 1) {
      EncodeOthersRuns(plan, bucket, old, !record, residual.data());
      from_.resize(plan.slot * plan.n);  // from_[p]: rank p's quantisation of my run
      RETURN_IF_ERROR(comm->AllToAll(send_.data(), from_.data(), plan.slot, opts));
    }
    ReduceOwnRun(plan, bucket, old, !record, residual.data());
    if (plan.n > 1) {
      runs_.resize(plan.slot * plan.n);
      RETURN_IF_ERROR(comm->AllGather(requant_.data(), runs_.data(), plan.slot, opts));
      for (int s = 0; s < plan.n; ++s) {
        if (s == plan.me) continue;  // decoded when it was requantised
        Dequantize(runs_.data() + s * plan.slot, plan.begin[s + 1] - plan.begin[s], plan.block, plan.bits,
                   bucket + plan.begin[s], false);
      }
    }

    if (record) {
      update->contribution.resize(count);
      for (size_t i = 0; i < count; ++i) update->contribution[i] = x[i] - residual[i];
      GiveBack(std::move(x));
    }
    update->state_finite = !record;
    update->set[{StateKind::kResidual, bucket_id, 0}] = std::move(residual);
    return OkStatus();
  }

 private:
  Plan MakePlan(size_t count, uint64_t bucket_id, uint64_t step, const Communicator& comm) const {
    Plan p{comm.size(), comm.rank(), options_.qblock_bits, options_.qblock_block, {}, 0, 0, 0};
    const size_t blocks = (count + p.block - 1) / p.block;
    p.begin.resize(p.n + 1);
    for (int s = 0; s <= p.n; ++s) p.begin[s] = std::min(count, blocks * s / p.n * p.block);
    size_t largest = 0;
    for (int s = 0; s < p.n; ++s) largest = std::max(largest, p.begin[s + 1] - p.begin[s]);
    p.slot = QuantBytes(largest, p.block, p.bits);
    const uint64_t me = static_cast<uint64_t>(p.me);
    p.key1 = StreamKey({options_.seed, me, step, bucket_id, 1});
    p.key2 = StreamKey({options_.seed, me, step, bucket_id, 2});
    return p;
  }

  // Stage 1: x's runs outside mine, quantised into send_ slot by slot (a run starts on
  // a block boundary, so its blocks are a valid quantisation of the run by themselves),
  // and their residuals. My own slot and the padding are zeros.
  void EncodeOthersRuns(const Plan& p, const float* grad, const float* old, bool finite, float* residual) {
    send_.resize(p.slot * p.n);
    for (int s = 0; s < p.n; ++s) {
      uint8_t* out = send_.data() + s * p.slot;
      for (size_t b0 = p.begin[s]; s != p.me && b0 < p.begin[s + 1]; b0 += p.block) {
        const size_t len = std::min(p.block, p.begin[s + 1] - b0);
        out += EncodeBlock({grad + b0, old ? old + b0 : nullptr, 0, 0, 0, p.bits, p.key1, b0, nullptr,
                            residual + b0, nullptr, finite},
                           len, out);
      }
      std::fill(out, send_.data() + (s + 1) * p.slot, 0);
    }
  }

  // Stage 2, block by block over my run: the sum of the ranks' contributions in rank
  // order (from_ for the others, my exact x), requantised into requant_ (padded with
  // zeros to the slot), decoded into the bucket, its error into the residual. Pairs
  // count from the run's start: stage 2 quantises the run as an array of its own.
  void ReduceOwnRun(const Plan& p, float* bucket, const float* old, bool finite, float* residual) {
    const size_t own0 = p.begin[p.me], own1 = p.begin[p.me + 1];
    sum_.resize(std::min(p.block, own1 - own0));
    requant_.resize(p.slot);
    uint8_t* out = requant_.data();
    for (size_t b0 = own0; b0 < own1; b0 += p.block) {
      const size_t len = std::min(p.block, own1 - b0), at = QuantBytes(b0 - own0, p.block, p.bits);
      // sum = ((0 + c_0) + c_1) + ...: the first term is written, not added to zeros.
      // A decoded value lo + code * step is never -0 (code * step >= +0 for any step a
      // rank computes), so writing it equals adding it to 0; x may be -0, so it is
      // added to 0 explicitly.
      float* sum = sum_.data();
      for (int r = 0; r < p.n; ++r) {
        const bool first = r == 0;
        const float* g = bucket + b0;
        if (r != p.me) {
          Dequantize(from_.data() + r * p.slot + at, len, p.block, p.bits, sum, !first);
        } else {
          AccumulateOwn(sum, g, old ? old + b0 : nullptr, len, first);
        }
      }
      out += EncodeBlock({sum, nullptr, 0, 0, 0, p.bits, p.key2, b0 - own0, nullptr, residual + b0,
                          bucket + b0, finite},
                         len, out);
    }
    std::fill(out, requant_.data() + p.slot, 0);
  }

  // Buffers reused across steps (under the base class's lock): the wire's, and one
  // block of the owner's sum.
  PageVector<uint8_t> send_, from_, runs_, requant_;
  std::vector<float> sum_;
};

}  // namespace

std::unique_ptr<GradientCodec> MakeQBlockCodec(const CodecOptions& options) {
  return std::make_unique<QBlockCodec>(options);
}

}  // namespace shoal::compression
