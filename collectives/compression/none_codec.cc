// Codec `none`: the bucket goes out as one f32 sum-allreduce. Lossless (up to f32
// summation order), so it keeps no residual; the reference the other codecs are
// measured against.
#include "collectives/compression/codec_internal.h"

namespace shoal::compression {
namespace {

class NoneCodec : public FeedbackCodec {
 public:
  using FeedbackCodec::FeedbackCodec;
  bool reentrant() const override { return true; }  // no state: buckets may overlap

 protected:
  Status DoReduce(float* bucket, size_t count, const std::vector<TensorSlice>& /*tensors*/,
                  uint64_t /*bucket_id*/, int64_t /*step*/, Communicator* comm,
                  const CollectiveOptions& opts, Update* update) override {
    if (options_.record_contributions) update->contribution.assign(bucket, bucket + count);
    return comm->AllReduce(bucket, count, DType::kF32, ReduceOp::kSum, opts);
  }
};

}  // namespace

std::unique_ptr<GradientCodec> MakeNoneCodec(const CodecOptions& options) {
  return std::make_unique<NoneCodec>(options);
}

}  // namespace shoal::compression
