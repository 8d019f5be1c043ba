// Codecs `bf16` and `fp16`: the bucket travels as 16-bit floats, summed in f32 by the
// backend, half the bytes of `none`. Error feedback keeps each element's rounding
// error (and fp16 underflow) locally and adds it to the next step's gradient.
#include <algorithm>
#include <limits>
#include <vector>

#include "collectives/compression/codec_internal.h"
#include "collectives/compression/simd_kernels.h"
#include "collectives/dtype.h"

namespace shoal::compression {
namespace {

// One pass per direction over the bucket (the AVX2 kernel does the leading multiple of
// 8 elements where UseAvx2(), this loop the rest, with the same arithmetic): encode
// x = grad + residual, wire = T(clamp(x / n)), sent = n * decode(wire), residual = x - sent.
template <DType T>
void Encode(const simd::CastEncodeArgs& a, size_t count) {
  for (size_t i = UseAvx2() ? simd::CastEncodeAvx2(T, a, count) : 0; i < count; ++i) {
    const float x = a.old ? a.grad[i] + a.old[i] : a.grad[i];
    a.wire[i] = Narrow<T>(std::clamp(x * a.inv, -a.limit, a.limit));  // NaN passes through
    const float sent = Widen<T>(a.wire[i]) * a.n;  // what this rank actually contributes
    if (a.residual) a.residual[i] = FiniteOrZero(x - sent);  // inf/NaN is not carried over
    if (a.contribution) a.contribution[i] = sent;
  }
}

// bucket = n * decode(wire).
template <DType T>
void Decode(const uint16_t* wire, float n, float* out, size_t count) {
  for (size_t i = UseAvx2() ? simd::CastDecodeAvx2(T, wire, n, out, count) : 0; i < count; ++i) {
    out[i] = Widen<T>(wire[i]) * n;
  }
}

class CastCodec : public FeedbackCodec {
 public:
  CastCodec(CodecOptions options, DType wire) : FeedbackCodec(std::move(options)), wire_type_(wire) {}

 protected:
  // Each rank sends x/n rounded to the wire type; the backend sums those (partial sums
  // rounded to the wire type again on Gloo's ring) and the result is scaled back by n.
  // Dividing first means the sum of n values never exceeds the largest |x| a rank
  // holds, so fp16 (max 65504) cannot overflow in the reduction where the inputs
  // themselves fit (and larger inputs saturate, below). Multiplying by n afterwards
  // is in f32.
  //
  // Residual: x - n * decode(encode(x / n)), i.e. exactly what this rank failed to
  // contribute. The roundings inside the reduction (ring partial sums) are not any
  // rank's local error and are not fed back; they are bounded by (n-1)*u*sum|x|. With
  // a constant gradient they repeat (ties round to even) instead of averaging out, so
  // the running mean converges to within that bound rather than to zero.
  Status DoReduce(float* bucket, size_t count, const std::vector<TensorSlice>& /*tensors*/,
                  uint64_t bucket_id, int64_t /*step*/, Communicator* comm,
                  const CollectiveOptions& opts, Update* update) override {
    const float fn = static_cast<float>(comm->size()), inv = 1.0f / fn;
    const float* old = nullptr;
    const bool feedback = options_.error_feedback;
    if (feedback) RETURN_IF_ERROR(Residual(bucket_id, count, &old));
    Floats residual = feedback ? Borrow(count) : Floats();
    wire_.resize(count);
    const bool record = options_.record_contributions;
    if (record) update->contribution.resize(count);
    // fp16 saturates instead of overflowing: |x/n| is held to 65504 / (n (1 + n 2^-10)),
    // so that n such values and the n-1 roundings (2^-11 each) of the ring's partial
    // sums stay below the largest half, 65504. The excess stays in the residual and
    // goes out in later steps. bf16 has f32's range.
    const float limit = wire_type_ == DType::kF16
                            ? static_cast<float>(65504.0 / (fn * (1.0 + fn / 1024.0)))
                            : std::numeric_limits<float>::infinity();
    const simd::CastEncodeArgs args{bucket, old, inv, fn, limit, wire_.data(), feedback ? residual.data() : nullptr,
                                    record ? update->contribution.data() : nullptr};
    if (wire_type_ == DType::kF16) {
      Encode<DType::kF16>(args, count);
    } else {
      Encode<DType::kBF16>(args, count);
    }
    RETURN_IF_ERROR(comm->AllReduce(wire_.data(), count, wire_type_, ReduceOp::kSum, opts));
    if (wire_type_ == DType::kF16) {
      Decode<DType::kF16>(wire_.data(), fn, bucket, count);
    } else {
      Decode<DType::kBF16>(wire_.data(), fn, bucket, count);
    }
    if (feedback) {
      update->set[{StateKind::kResidual, bucket_id, 0}] = std::move(residual);
      update->state_finite = true;  // Encode zeroed inf/NaN
    }
    return OkStatus();
  }

 private:
  const DType wire_type_;
  PageVector<uint16_t> wire_;  // reused across steps (under the base class's lock)
};

}  // namespace

std::unique_ptr<GradientCodec> MakeCastCodec(const CodecOptions& options, DType wire) {
  return std::make_unique<CastCodec>(options, wire);
}

}  // namespace shoal::compression
