// Gradient codecs: how a fusion bucket of f32 gradients is reduced across ranks, with
// or without compression. Lossy codecs keep an error-feedback residual per bucket, so
// what is not sent this step is added to the next step's gradient and never lost.
// Codec state belongs to the worker's state: checkpoints save it, and a change of
// membership resets or re-slices it (see ResetState / SaveState / LoadState).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "collectives/communicator.h"

namespace shoal {

// One parameter tensor inside a bucket: `rows x cols` floats at `offset` (in floats).
// 1-D tensors (biases) have rows == 1.
struct TensorSlice {
  std::string name;
  size_t offset = 0;
  size_t rows = 0;
  size_t cols = 0;
  size_t numel() const { return rows * cols; }
};

struct CodecOptions {
  std::string name = "none";         // none | bf16 | fp16 | powersgd | qblock | topk
  int powersgd_rank = 4;
  int powersgd_warmup_steps = 10;    // uncompressed steps before compression starts
  int qblock_bits = 8;               // 8 or 4
  size_t qblock_block = 512;
  double topk_ratio = 0.01;          // fraction of elements kept
  // top-k momentum correction (Lin et al., Deep Gradient Compression): with m > 0 each
  // rank keeps its own momentum u = m*u + grad and sparsifies residual + u, and the
  // optimizer must then run WITHOUT momentum (the reduced values already carry it).
  // Unlike DGC, u is not masked where values were sent (see topk_codec.cc). 0: off.
  double topk_momentum = 0.0;
  // With topk_momentum: a Nesterov step, grad + m*u, is what accumulates and is sent
  // (the optimizer's nesterov option, moved into the codec with the momentum).
  bool topk_nesterov = false;
  uint64_t seed = 0;                 // shared by all ranks (PowerSGD's Q, stochastic rounding)
  // false: the casts keep no residual (what rounding lost is dropped, as in PyTorch's
  // fp16/bf16 compression hooks): no state, and a Reduce reads and writes a bucket's
  // worth less. Only none, bf16 and fp16 accept false.
  bool error_feedback = true;
  // top-k: how many |values| are sampled to estimate the threshold; buckets no larger
  // than this are selected exactly.
  size_t topk_sample = 8192;
  // Tests and benchmarks: keep, per bucket, the decoded contribution of this rank to
  // the last Reduce (what the others received from it), so that error-feedback
  // conservation (input == contribution + residual) can be checked. Costs a copy.
  bool record_contributions = false;
};

struct CodecStats {
  int64_t bytes_uncompressed = 0;    // what an uncompressed f32 allreduce would have sent
  // CPU time the calling threads spent in Reduce outside the communicator's calls:
  // encoding, decoding, error feedback, state (thread CPU time, so neither time
  // blocked on peers nor other processes' time slices count).
  double compute_seconds = 0;
};

class GradientCodec {
 public:
  virtual ~GradientCodec() = default;
  virtual std::string name() const = 0;

  // Replaces `bucket` (count floats, the concatenation of `tensors`) on every rank with
  // the SUM over ranks of every rank's bucket (compressed codecs: an approximation of
  // it, plus error feedback kept locally). `bucket_id` identifies the bucket across
  // steps (for residuals and warm starts); `step` drives warm-up and shared seeds.
  virtual Status Reduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors, uint64_t bucket_id,
                        int64_t step, Communicator* comm, const CollectiveOptions& opts) = 0;

  // Codec state (residuals, PowerSGD's Q) for checkpoints.
  virtual std::string SaveState() const { return ""; }
  // The same into *out, reusing its allocation: residuals are the size of the model,
  // and a fresh buffer each checkpoint page-faults on the training thread.
  virtual void SaveStateInto(std::string* out) const { *out = SaveState(); }
  // Bytes SaveStateInto would write now (it grows as buckets first pass through), so a
  // checkpointer can fault a buffer of that size in ahead of the first save.
  virtual size_t StateBytes() const { return SaveState().size(); }
  virtual Status LoadState(const std::string& bytes) { return bytes.empty() ? OkStatus() : InvalidArgument("codec " + name() + " has no state"); }
  // Called when membership changes: residuals are per-rank and are dropped.
  virtual void ResetState() {}
  // True if Reduce may run for different buckets at once from different threads (a
  // codec without per-bucket state); the Reducer then keeps several buckets in flight
  // where the communicator allows it. Codecs with state serialise their calls, and
  // ranks could then take buckets in different orders: they say false.
  virtual bool reentrant() const { return false; }

  CodecStats stats() const { return CodecStats{bytes_uncompressed_.load(), compute_nanos_.load() * 1e-9}; }

 protected:
  // What an uncompressed f32 ring allreduce of `count` floats would send from this rank.
  void CountUncompressed(size_t count, int world) {
    bytes_uncompressed_ += static_cast<int64_t>(count) * 4 * 2 * (world - 1) / world;
  }
  void AddComputeSeconds(double s) { compute_nanos_ += static_cast<int64_t>(s * 1e9); }

 private:
  std::atomic<int64_t> bytes_uncompressed_{0};
  std::atomic<int64_t> compute_nanos_{0};
};

StatusOr<std::unique_ptr<GradientCodec>> MakeCodec(const CodecOptions& options);

}  // namespace shoal
