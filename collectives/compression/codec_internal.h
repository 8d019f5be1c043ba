// Machinery shared by the codecs in this folder: the error-feedback base class that
// owns per-bucket state (residuals, PowerSGD's Q) and its checkpoint format, and a
// counter-based RNG whose streams every rank can reproduce from the same keys.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "collectives/compression/codec.h"
#include "collectives/compression/codec_common.h"

namespace shoal::compression {

// What one piece of codec state is. The numbers are part of the checkpoint format.
enum class StateKind : uint8_t {
  kResidual = 0,   // error feedback of one bucket: `count` floats
  kPowerSgdQ = 1,  // PowerSGD's warm-start Q of one tensor: cols x rank floats
  kMomentum = 2,   // top-k's local momentum (momentum correction) of one bucket: `count` floats
};

struct StateKey {
  StateKind kind = StateKind::kResidual;
  uint64_t bucket_id = 0;
  uint32_t tensor = 0;  // index into the bucket's tensor list; 0 for residuals
  auto operator<=>(const StateKey&) const = default;
};

// Standard normal from the stream `key` (Box-Muller on two uniforms per element).
float NormalAt(uint64_t key, uint64_t i);

// Base of every codec here. It serialises calls (one lock per codec), validates the
// bucket layout, counts bytes_uncompressed, and commits a codec's new state only when
// its Reduce succeeded: a failed reduction leaves residuals and Q as they were (the
// bucket itself is then unspecified, as with the Communicator).
class FeedbackCodec : public GradientCodec {
 public:
  explicit FeedbackCodec(CodecOptions options) : options_(std::move(options)) {}

  std::string name() const override { return options_.name; }
  Status Reduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                uint64_t bucket_id, int64_t step, Communicator* comm,
                const CollectiveOptions& opts) final;

  // Format (little-endian), version 1:
  //   "SHCS" | u32 version | u32 name length | name | u64 entries |
  //   entries x (u8 kind | u64 bucket_id | u32 tensor | u64 floats | f32 x floats) |
  //   u64 FNV-1a of everything before it.
  // LoadState refuses (and keeps the current state) on a wrong magic, version or codec
  // name, sizes that do not add up, an unknown kind, a duplicate entry or a checksum
  // mismatch. The empty string loads as "no state".
  std::string SaveState() const override;
  Status LoadState(const std::string& bytes) override;
  // Drops residuals and PowerSGD's Q. Every rank must reset together: Q has to be
  // identical on all ranks (it is re-initialised from the shared seed).
  void ResetState() override;

  // Inspection for tests and benchmarks.
  std::optional<std::vector<float>> StateEntry(const StateKey& key) const;
  // Needs CodecOptions::record_contributions.
  std::optional<std::vector<float>> LastContribution(uint64_t bucket_id) const;

 protected:
  // What one Reduce wants to change; applied only if it returns OK.
  struct Update {
    std::map<StateKey, std::vector<float>> set;
    std::vector<StateKey> erase;
    std::vector<float> contribution;  // filled when options_.record_contributions
    // True when the codec's own kernels already wrote 0 for every non-finite residual
    // and momentum element; otherwise the commit makes that pass itself.
    bool state_finite = false;
  };

  // Runs with the lock held, after validation; `tensors` is never empty (a bucket
  // without a layout is one 1-D tensor) and its tensors do not overlap.
  virtual Status DoReduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                          uint64_t bucket_id, int64_t step, Communicator* comm,
                          const CollectiveOptions& opts, Update* update) = 0;

  // Committed state, or null. Valid during DoReduce.
  const std::vector<float>* Find(const StateKey& key) const;
  // This bucket's residual (null if none). InvalidArgument if the stored residual has
  // another size: the bucket layout changed without a ResetState().
  Status Residual(uint64_t bucket_id, size_t count, const float** residual) const;
  // x = bucket + residual, in a borrowed buffer.
  Status WithResidual(const float* bucket, size_t count, uint64_t bucket_id, std::vector<float>* x);

  // Buffers of `n` floats (contents unspecified) from a small pool. Buckets are tens of
  // MB: fresh allocations would page-fault on every step, which costs more than the
  // codecs' arithmetic. Replaced state goes back to the pool on commit; codecs give
  // temporaries back with GiveBack. At most kPoolSize buffers are kept.
  std::vector<float> Borrow(size_t n);
  void GiveBack(std::vector<float>&& v);
  static constexpr size_t kPoolSize = 6;

  const CodecOptions options_;

 private:
  mutable std::mutex mu_;  // guards everything below; DoReduce runs under it unless reentrant()
  std::map<StateKey, std::vector<float>> state_;
  std::map<uint64_t, std::vector<float>> contributions_;
  std::vector<std::vector<float>> pool_;
};

// The codecs; options are validated by MakeCodec.
std::unique_ptr<GradientCodec> MakeNoneCodec(const CodecOptions& options);
std::unique_ptr<GradientCodec> MakeCastCodec(const CodecOptions& options, DType wire);
std::unique_ptr<GradientCodec> MakePowerSgdCodec(const CodecOptions& options);
std::unique_ptr<GradientCodec> MakeQBlockCodec(const CodecOptions& options);
std::unique_ptr<GradientCodec> MakeTopKCodec(const CodecOptions& options);

// Gram-Schmidt on the columns of p (rows x r, row-major), in place: columns become
// orthonormal, or zero when (nearly) dependent on earlier ones. Shared with the CUDA
// codecs' host reference so both sides use one definition.
void Orthogonalise(float* p, size_t rows, int r);

}  // namespace shoal::compression
