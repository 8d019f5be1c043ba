// What the Reducer tells a timeline trace (worker/trace.h) about each bucket it reduces,
// without collectives depending on the worker: the Reducer holds a pointer to this
// interface, null when the job traces nothing, so an untraced step costs one branch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shoal {

struct BucketSpan {
  int64_t step = 0;
  size_t bucket = 0;
  int64_t begin_us = 0, end_us = 0;  // the sink's clock (NowMicros)
  int64_t wire_bytes = 0;            // the communicator's sent-bytes counter over the reduction
  int64_t raw_bytes = 0;             // the bucket's f32 gradients
  bool wire_bytes_shared = false;    // another bucket was in flight: its bytes may be counted too
  std::string_view codec;
};

class SpanSink {
 public:
  virtual ~SpanSink() = default;
  // True while the current step is traced; callers read no clock when it is false.
  virtual bool active() const = 0;
  virtual int64_t NowMicros() const = 0;
  // From a communication thread, concurrently with the training thread's own spans.
  virtual void BucketReduced(const BucketSpan& span) = 0;
};

}  // namespace shoal
