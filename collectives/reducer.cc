// Reducer: bucket layout (views where memory is contiguous, staging otherwise), the
// communication thread that reduces buckets in order as they become ready, and the
// timing of what Wait() actually blocked.
#include "collectives/reducer.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "common/clock.h"

namespace shoal {
namespace {

// Used when the caller passes no codec: a plain f32 allreduce-sum of the bucket.
class SumCodec : public GradientCodec {
 public:
  std::string name() const override { return "none"; }
  Status Reduce(float* bucket, size_t count, const std::vector<TensorSlice>&, uint64_t, int64_t,
                Communicator* comm, const CollectiveOptions& opts) override {
    CountUncompressed(count, comm->size());
    return comm->AllReduce(bucket, count, DType::kF32, ReduceOp::kSum, opts);
  }
  bool reentrant() const override { return true; }
};

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

struct Reducer::Bucket {
  std::vector<size_t> params;        // reverse index order (backward order)
  std::vector<TensorSlice> slices;   // memory order; offsets into the bucket
  std::vector<float*> grads;         // per slice, for staging copies
  float* view = nullptr;             // the bucket in place, if contiguous
  std::vector<float> staging;        // otherwise
  size_t count = 0;
  size_t pending = 0;                // params not yet marked this step
};

Reducer::Reducer(Communicator* comm, GradientCodec* codec, std::vector<ParamTensor>& params,
                 ReducerOptions options)
    : comm_(comm), codec_(codec), options_(std::move(options)) {
  if (codec_ == nullptr) {
    fallback_ = std::make_unique<SumCodec>();
    codec_ = fallback_.get();
  }
  bytes_sent_at_start_ = comm_->bytes_sent();
  codec_name_ = codec_->name();
  BuildBuckets(params);
  marked_.assign(params.size(), false);
  stats_.num_buckets = buckets_.size();
  for (const Bucket& b : buckets_) stats_.num_copied_buckets += b.view == nullptr && b.count > 0;
  const bool concurrent = comm_->concurrent_tags() && codec_->reentrant();
  stats_.in_flight = !concurrent ? 1 : options_.max_in_flight > 0 ? options_.max_in_flight : 2;
  if (options_.overlap) {
    for (int t = 0; t < stats_.in_flight; ++t) threads_.emplace_back([this] { CommLoop(); });
  }
}

Reducer::~Reducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  for (std::thread& t : threads_) t.join();
}

void Reducer::BuildBuckets(std::vector<ParamTensor>& params) {
  bucket_of_.assign(params.size(), 0);
  const size_t first_limit = static_cast<size_t>(std::max(0.0, options_.first_bucket_mib) * kMiB);
  const size_t limit = static_cast<size_t>(std::max(0.0, options_.bucket_mib) * kMiB);
  std::vector<std::vector<size_t>> groups;
  size_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const size_t tensor = params[k].numel * sizeof(float);
    // Close the bucket BEFORE a tensor that would overflow it: a bucket closed after
    // overflowing would wait for that (late, large) tensor, which for the MLP turns
    // the small first bucket into one holding fc1.weight as well. A tensor larger
    // than the limit gets a bucket of its own.
    const size_t cap = groups.size() <= 1 ? first_limit : limit;
    if (groups.empty() || (bytes > 0 && bytes + tensor > cap)) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(k);
    bytes += tensor;
  }
  // A closed-but-empty trailing group cannot occur: a group is opened only to take
  // a tensor. Zero-size tensors ride along (they only count towards readiness).
  buckets_.resize(groups.size());
  for (size_t b = 0; b < groups.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.params = groups[b];
    // Memory order = ascending index; contiguous if each non-empty tensor starts
    // where the previous non-empty one ends.
    bool contiguous = true;
    const float* end = nullptr;
    float* base = nullptr;
    for (auto it = bucket.params.rbegin(); it != bucket.params.rend(); ++it) {
      const ParamTensor& p = params[*it];
      bucket_of_[*it] = b;
      if (p.numel == 0) continue;
      if (base == nullptr) base = p.grad;
      if (end != nullptr && p.grad != end) contiguous = false;
      end = p.grad + p.numel;
      TensorSlice s;
      s.name = p.name;
      s.offset = bucket.count;
      // 2-D and higher: first dimension by the rest; 1-D: a single row.
      s.rows = p.shape.size() >= 2 ? static_cast<size_t>(p.shape[0]) : 1;
      s.cols = s.rows > 0 ? p.numel / s.rows : 0;
      if (s.rows * s.cols != p.numel) {
        s.rows = 1;
        s.cols = p.numel;
      }
      bucket.slices.push_back(s);
      bucket.grads.push_back(p.grad);
      bucket.count += p.numel;
    }
    if (contiguous) {
      bucket.view = base;
    } else {
      bucket.staging.resize(bucket.count);
    }
  }
}

void Reducer::BeginStep(int64_t step, float* control, size_t control_count) {
  bool unfinished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    unfinished = in_step_;
  }
  if (unfinished) (void)Wait();
  std::lock_guard<std::mutex> lock(mu_);
  step_ = step;
  control_ = control_count > 0 ? control : nullptr;
  control_count_ = control_ ? control_count : 0;
  control_started_ = false;
  control_done_ = control_ == nullptr;
  std::fill(marked_.begin(), marked_.end(), false);
  for (Bucket& b : buckets_) b.pending = b.params.size();
  next_ = done_ = 0;
  error_ = OkStatus();
  stats_.last_comm_seconds = 0;
  stats_.last_codec_compute_seconds = 0;
  in_step_ = true;
  cv_.notify_all();
}

void Reducer::MarkReady(size_t param_index) {
  std::lock_guard<std::mutex> lock(mu_);
  if (param_index >= marked_.size() || marked_[param_index]) {
    if (error_.ok()) {
      error_ = InvalidArgument("Reducer::MarkReady: parameter " + std::to_string(param_index) +
                               (param_index >= marked_.size() ? " out of range"
                                                              : " marked twice in one step"));
    }
    return;
  }
  marked_[param_index] = true;
  if (--buckets_[bucket_of_[param_index]].pending == 0) cv_.notify_all();
}

Status Reducer::ReduceBucket(size_t b, double* seconds) {
  Bucket& bucket = buckets_[b];
  *seconds = 0;
  if (bucket.count == 0) return OkStatus();
  Stopwatch clock;
  // Traced steps only: the clock and byte counter reads below are skipped otherwise.
  SpanSink* trace = options_.trace != nullptr && options_.trace->active() ? options_.trace : nullptr;
  const int64_t trace_begin_us = trace ? trace->NowMicros() : 0;
  const int64_t wire_before = trace ? comm_->bytes_sent() : 0;
  float* data = bucket.view;
  if (data == nullptr) {
    data = bucket.staging.data();
    for (size_t i = 0; i < bucket.slices.size(); ++i) {
      std::memcpy(data + bucket.slices[i].offset, bucket.grads[i],
                  bucket.slices[i].numel() * sizeof(float));
    }
  }
  CollectiveOptions opts = options_.collective;
  opts.tag += static_cast<uint32_t>(b);  // buckets in flight together are told apart by tag
  Status s = codec_->Reduce(data, bucket.count, bucket.slices, b, step_, comm_, opts);
  if (s.ok() && bucket.view == nullptr) {
    for (size_t i = 0; i < bucket.slices.size(); ++i) {
      std::memcpy(bucket.grads[i], data + bucket.slices[i].offset,
                  bucket.slices[i].numel() * sizeof(float));
    }
  }
  *seconds = clock.Seconds();
  if (trace) {
    BucketSpan span;
    span.step = step_;
    span.bucket = b;
    span.begin_us = trace_begin_us;
    span.end_us = trace->NowMicros();
    span.wire_bytes = comm_->bytes_sent() - wire_before;
    span.raw_bytes = static_cast<int64_t>(bucket.count * sizeof(float));
    span.wire_bytes_shared = threads_.size() > 1;
    span.codec = codec_name_;
    trace->BucketReduced(span);
  }
  if (!s.ok()) {
    return s.WithContext("reducing gradient bucket " + std::to_string(b) + " (" +
                         std::to_string(bucket.count) + " floats) at step " +
                         std::to_string(step_));
  }
  return OkStatus();
}

void Reducer::FinishBucket(size_t b, Status status, double seconds) {
  (void)b;
  if (!status.ok() && error_.ok()) error_ = std::move(status);
  stats_.last_comm_seconds += seconds;
  // Read here, on the thread that just ran the codec, so stats() never races with
  // the codec updating its counters.
  const CodecStats codec = codec_->stats();
  stats_.bytes_uncompressed = codec.bytes_uncompressed;
  stats_.last_codec_compute_seconds += codec.compute_seconds - stats_.codec_compute_seconds;
  stats_.codec_compute_seconds = codec.compute_seconds;
  ++done_;
  cv_.notify_all();
}

void Reducer::RunControl(std::unique_lock<std::mutex>& lock) {
  control_started_ = true;
  float* data = control_;
  const size_t count = control_count_;
  lock.unlock();
  CollectiveOptions opts = options_.collective;
  // Its own tag, past the buckets': it may be on the wire beside bucket 0.
  opts.tag += static_cast<uint32_t>(buckets_.size());
  Status s = comm_->AllReduce(data, count, DType::kF32, ReduceOp::kSum, opts);
  lock.lock();
  if (!s.ok() && error_.ok()) error_ = s.WithContext("reducing the step's control values at step " + std::to_string(step_));
  control_done_ = true;
  cv_.notify_all();
}

void Reducer::CommLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (in_step_ && control_ && !control_started_) ||
             (in_step_ && control_started_ == (control_ != nullptr) && next_ < buckets_.size() &&
              buckets_[next_].pending == 0);
    });
    if (stop_) return;
    // The control values go first, on every rank, so that backends that match calls
    // by issue order (MPI) see the same order everywhere.
    if (control_ && !control_started_) {
      RunControl(lock);
      continue;
    }
    RunBucket(next_++, lock);
  }
}

void Reducer::RunBucket(size_t b, std::unique_lock<std::mutex>& lock) {
  // After a failure the communicator is unusable: later buckets are skipped, but
  // still counted as done so that Wait() returns.
  const bool skip = !error_.ok();
  lock.unlock();
  double seconds = 0;
  Status s = skip ? OkStatus() : ReduceBucket(b, &seconds);
  lock.lock();
  FinishBucket(b, std::move(s), seconds);
}

Status Reducer::Wait() {
  Stopwatch blocked;
  std::unique_lock<std::mutex> lock(mu_);
  if (!in_step_) return FailedPrecondition("Reducer::Wait without BeginStep");
  // The optimizer is about to read the gradients, so they are final now.
  for (size_t i = 0; i < marked_.size(); ++i) {
    if (!marked_[i]) {
      marked_[i] = true;
      --buckets_[bucket_of_[i]].pending;
    }
  }
  if (options_.overlap) {
    cv_.notify_all();
    cv_.wait(lock, [&] { return done_ == buckets_.size() && control_done_; });
  } else {
    // No communication thread: reduce everything here, the control values first.
    if (control_ && !control_started_) RunControl(lock);
    for (size_t b = 0; b < buckets_.size(); ++b) RunBucket(b, lock);
  }
  in_step_ = false;
  stats_.last_exposed_comm_seconds = blocked.Seconds();
  stats_.exposed_comm_seconds += stats_.last_exposed_comm_seconds;
  stats_.comm_seconds += stats_.last_comm_seconds;
  ++stats_.steps;
  return error_;
}

ReducerStats Reducer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ReducerStats s = stats_;
  s.bytes_sent = comm_->bytes_sent() - bytes_sent_at_start_;
  return s;
}

std::vector<std::vector<size_t>> Reducer::bucket_params() const {
  std::vector<std::vector<size_t>> out;
  for (const Bucket& b : buckets_) out.push_back(b.params);
  return out;
}

}  // namespace shoal
