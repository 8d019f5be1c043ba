// Machinery shared by the codecs in this folder: the error-feedback base class that
// owns per-bucket state (residuals, PowerSGD's Q) and its checkpoint format, and a
// counter-based RNG whose streams every rank can reproduce from the same keys.
#pragma once

#include <algorithm>
#include <compare>
#include <cstdlib>
#include <limits>
#include <new>
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

// Codec buffers start on a page boundary. A kernel streaming over a bucket loads from
// some arrays while it stores to others; where a store address trails a load address
// by a few dozen bytes modulo 4 KiB, the CPU takes the load as depending on the store
// ("4K aliasing") and the loop stalls. glibc places big buffers at arbitrary 16-byte
// offsets, and in a one-off test the cast encode took 3.0 ms with spread offsets against
// 10.1 ms with unlucky ones on one 23 MB bucket. With every codec-owned buffer (residuals,
// wire, scratch) at offset 0, only a bucket whose own offset is within ~100 bytes below
// a page boundary still collides.
template <typename T>
struct PageAlignedAllocator {
  using value_type = T;
  static constexpr size_t kAlign = 4096;
  PageAlignedAllocator() = default;
  template <typename U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T) - kAlign) throw std::bad_alloc();
    // aligned_alloc wants a multiple of the alignment, and may return null for 0.
    const size_t bytes = std::max<size_t>(n * sizeof(T), 1);
    void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const PageAlignedAllocator<U>&) const { return true; }
};
template <typename T>
using PageVector = std::vector<T, PageAlignedAllocator<T>>;
using Floats = PageVector<float>;

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
// bucket layout, counts bytes_uncompressed and compute_seconds, and commits a codec's
// new state only when its Reduce succeeded: a failed reduction leaves residuals and Q
// as they were (the bucket itself is then unspecified, as with the Communicator).
class FeedbackCodec : public GradientCodec {
 public:
  explicit FeedbackCodec(CodecOptions options) : options_(std::move(options)) {}

  std::string name() const override { return options_.name; }
  Status Reduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                uint64_t bucket_id, int64_t step, Communicator* comm,
                const CollectiveOptions& opts) final;

  // Format (little-endian), version 2:
  //   "SHCS" | u32 version | u32 name length | name | u64 entries |
  //   entries x (u8 kind | u64 bucket_id | u32 tensor | u64 floats | f32 x floats) |
  //   u64 checksum of everything before it: four-lane word-wise FNV-1a (LaneFnv in
  //   codec_base.cc). Version 1, the same with byte-wise FNV-1a, still loads.
  // LoadState refuses (and keeps the current state) on a wrong magic, version or codec
  // name, sizes that do not add up, an unknown kind, a duplicate entry or a checksum
  // mismatch. The empty string loads as "no state".
  std::string SaveState() const override;
  void SaveStateInto(std::string* out) const override;
  size_t StateBytes() const override;
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
    std::map<StateKey, Floats> set;
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
  const Floats* Find(const StateKey& key) const;
  // This bucket's residual (null if none). InvalidArgument if the stored residual has
  // another size: the bucket layout changed without a ResetState().
  Status Residual(uint64_t bucket_id, size_t count, const float** residual) const;
  // x = bucket + residual, in a borrowed buffer.
  Status WithResidual(const float* bucket, size_t count, uint64_t bucket_id, Floats* x);

  // Buffers of `n` floats (contents unspecified) from a small pool. Buckets are tens of
  // MB: fresh allocations would page-fault on every step, which costs more than the
  // codecs' arithmetic. Replaced state goes back to the pool on commit; codecs give
  // temporaries back with GiveBack. At most kPoolSize buffers are kept.
  Floats Borrow(size_t n);
  void GiveBack(Floats&& v);
  static constexpr size_t kPoolSize = 6;

  const CodecOptions options_;

 private:
  // Reduce without the compute clock: validation, DoReduce, commit.
  Status ReduceAndCommit(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                         uint64_t bucket_id, int64_t step, Communicator* comm, const CollectiveOptions& opts);
  size_t StateBytesLocked() const;

  mutable std::mutex mu_;  // guards everything below; DoReduce runs under it unless reentrant()
  std::map<StateKey, Floats> state_;
  std::map<uint64_t, std::vector<float>> contributions_;
  std::vector<Floats> pool_;
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
