// The Reducer: gradients packed into fusion buckets in the order backward produces
// them, each bucket reduced through a GradientCodec on a communication thread as soon
// as its last gradient is ready, while backward goes on; the optimizer calls Wait().
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "collectives/communicator.h"
#include "collectives/compression/codec.h"
#include "collectives/span_sink.h"
#include "collectives/tensor.h"
#include "common/status.h"

namespace shoal {

struct ReducerOptions {
  // Defaults chosen by measurement (bench/fusion_bench, bench/overlap_bench, 2 ranks
  // on loopback): past ~16 MiB a bigger bucket gains no throughput and delays the
  // start of communication; the first bucket is small so the last layer's gradients
  // go out while backward is still in the layers below.
  double bucket_mib = 16;
  double first_bucket_mib = 1;
  bool overlap = true;  // false: everything is reduced inside Wait(), after backward
  // Buckets reduced at once (with overlap), each on its own communication thread and
  // under its own tag (collective.tag + bucket index). 0: 2 where both the
  // communicator (concurrent_tags) and the codec (reentrant) allow it, else 1. Two
  // buckets in flight hide each reduction's start and drain (measured on Gloo, see
  // docs/BENCHMARKS.md); more than 1 is refused (taken as 1) otherwise.
  int max_in_flight = 0;
  CollectiveOptions collective;
  // Timeline trace of each bucket's reduction (worker/trace.h); null: none. Must outlive
  // the Reducer.
  SpanSink* trace = nullptr;
};

struct ReducerStats {
  int64_t steps = 0;                  // steps whose Wait() has returned
  size_t num_buckets = 0;
  size_t num_copied_buckets = 0;      // buckets whose tensors are not one contiguous range
  int in_flight = 1;                  // buckets reduced at once
  double comm_seconds = 0;            // summed time buckets spent reducing, all steps
  double exposed_comm_seconds = 0;    // summed time Wait() blocked, all steps
  double last_comm_seconds = 0;       // the same two for the last step
  double last_exposed_comm_seconds = 0;
  int64_t bytes_sent = 0;             // the communicator's counter since construction
  int64_t bytes_uncompressed = 0;     // from the codec's stats
  // The codec's CPU time outside the communicator's calls (CodecStats::compute_seconds):
  // since construction, and for the last step.
  double codec_compute_seconds = 0;
  double last_codec_compute_seconds = 0;
};

// Step protocol, on the training thread: BeginStep(step); backward calls
// MarkReady(i) once per tensor (any order; ReadyFn() adapts it to GradReadyFn);
// Wait() before the optimizer reads the gradients. Tensors never marked are taken to
// be final when Wait() is called. Gradients are reduced in place: afterwards every
// grad holds the SUM over ranks (the codec's approximation of it).
//
// Buckets are formed from params in REVERSE index order (backward order for models
// that list parameters forward, like the MLP): a bucket is closed before the tensor
// that would take it past first_bucket_mib (the first bucket) or bucket_mib (the
// others); a tensor larger than that travels alone. Tensors are never split. A bucket whose gradients form one
// contiguous range of memory (the MLP keeps all gradients in one buffer) is reduced
// in place, as a view; otherwise it is copied into a staging buffer and back.
// Buckets are started strictly in bucket order, so every rank issues the same
// collectives in the same order whatever order MarkReady arrives in; with two in
// flight, two consecutive buckets may be on the wire at once under different tags.
class Reducer {
 public:
  // `comm`, `codec` and the gradient memory behind `params` must outlive the
  // Reducer. `codec` may be null: a plain f32 allreduce-sum is used then.
  Reducer(Communicator* comm, GradientCodec* codec, std::vector<ParamTensor>& params,
          ReducerOptions options);
  // Joins the communication thread; a bucket still reducing finishes first (bounded
  // by the collective's timeout).
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Starts a step; `step` goes to the codec (warm-up, shared seeds). If the previous
  // step was not waited for, waits for it first. `control` (count floats, may be null)
  // is summed over the ranks during the step, outside the codec, before the first
  // bucket and overlapped with backward: a few flags the ranks must agree on (the
  // trainer's boundary exchange) ride along without a round trip of their own. The
  // sums are in `control` once Wait() returns OK.
  void BeginStep(int64_t step, float* control = nullptr, size_t control_count = 0);
  // Gradient `param_index` is final. Thread-safe and cheap (called from backward).
  // An index out of range or marked twice in one step makes Wait() fail.
  void MarkReady(size_t param_index);
  GradReadyFn ReadyFn() {
    return [this](size_t i) { MarkReady(i); };
  }
  // Blocks until every bucket is reduced. The first error of the step (a codec or
  // communicator error such as kDeadlineExceeded from a silent peer) is returned;
  // buckets after a failed one are skipped.
  Status Wait();

  ReducerStats stats() const;
  // Bucket b's params, in reverse index order (for tests and benchmark output).
  std::vector<std::vector<size_t>> bucket_params() const;

 private:
  struct Bucket;
  void BuildBuckets(std::vector<ParamTensor>& params);
  void CommLoop();
  // Reduces bucket b (or skips it after an earlier failure) with `lock` released,
  // then records it as done; called and returns with `lock` held.
  void RunBucket(size_t b, std::unique_lock<std::mutex>& lock);
  // Reduces bucket b (outside the lock); returns the time it took through *seconds.
  Status ReduceBucket(size_t b, double* seconds);
  void FinishBucket(size_t b, Status status, double seconds);  // under mu_
  // Reduces this step's control values with `lock` released; called and returns with it held.
  void RunControl(std::unique_lock<std::mutex>& lock);

  Communicator* comm_;
  GradientCodec* codec_;
  std::unique_ptr<GradientCodec> fallback_;
  ReducerOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index -> bucket
  int64_t bytes_sent_at_start_ = 0;
  std::string codec_name_;  // for trace spans, read once (name() builds a string)

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stop_ = false;
  bool in_step_ = false;
  int64_t step_ = 0;
  std::vector<bool> marked_;
  float* control_ = nullptr;    // this step's control values, if any
  size_t control_count_ = 0;
  bool control_started_ = false;  // a communication thread has taken it
  bool control_done_ = true;
  size_t next_ = 0;  // next bucket the communication thread reduces
  size_t done_ = 0;  // buckets finished (or skipped) this step
  Status error_;
  ReducerStats stats_;
  std::vector<std::thread> threads_;  // last: started once everything above exists
};

}  // namespace shoal
