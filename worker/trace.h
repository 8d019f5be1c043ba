// A rank's timeline trace: complete events (Chrome / Perfetto trace-event format,
// "ph":"X", microseconds) for the steps the spec's `trace` range names, recorded from
// the training thread, the Reducer's communication threads and the checkpoint writer
// into memory reserved up front, and written once as one JSON file per rank when the
// range ends (or at exit). `shoalctl trace JOB` merges the ranks' files onto the
// coordinator's clock with the offset each file carries.
//
// Cost: a job without `trace` has no recorder (callers test a null pointer); outside the
// range, active() is one relaxed atomic load; inside it an event is two clock reads and
// a slot taken with one atomic add, no lock and no allocation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collectives/span_sink.h"
#include "common/status.h"

namespace shoal {

// Microseconds on the trace clock: the steady clock, anchored once per process at the
// Unix epoch (so it never jumps with the wall clock, yet reads like wall time).
int64_t TraceClockMicros();
// A MonotonicSeconds() reading on the trace clock (for phases timed before the fact).
int64_t TraceMicrosFromMonotonic(double monotonic_seconds);

// How far the coordinator's clock is ahead of this process's trace clock, estimated from
// heartbeats: server time minus the midpoint of the round trip, from the beat with the
// shortest round trip; uncertainty is half that round trip. samples 0: no estimate.
struct ClockOffset {
  int64_t offset_us = 0;
  int64_t uncertainty_us = 0;
  int64_t samples = 0;
};

// One numeric argument of an event; `key` must be a string literal (it is not copied).
struct TraceArg {
  const char* key;
  int64_t value;
};

struct TraceOptions {
  int64_t step_begin = 0, step_end = 0;  // [begin, end) of the steps recorded
  std::string dir;                       // the job's trace folder (spec/trace_paths.h)
  std::string job_id, host;
  size_t capacity = 0;                   // events; 0: sized from the range
  // Read when the file is written (the heartbeat thread's estimate); may be empty.
  std::function<ClockOffset()> clock_offset;
};

class TraceRecorder final : public SpanSink {
 public:
  static constexpr int kMaxArgs = 4;

  explicit TraceRecorder(TraceOptions options);
  ~TraceRecorder() override;
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  // Who this process is in the current generation (file name and track metadata).
  void SetIdentity(int rank, const std::string& member_id);
  // Training thread, before each step (and before a generation's set-up, with the
  // position it starts from): recording is on while step_begin <= step < step_end; the
  // first step at or past step_end writes the file.
  void AtStep(int64_t step);

  bool active() const override { return active_.load(std::memory_order_relaxed); }
  int64_t NowMicros() const override { return TraceClockMicros(); }
  int64_t current_step() const { return step_.load(std::memory_order_relaxed); }

  // A complete event [begin_us, end_us] on the calling thread's track, if active.
  // `name`, `category` and `thread_role` (the track's name, taken from the thread's first
  // event) must be string literals. `text_key`/`text` add one short string argument.
  void Complete(const char* name, const char* category, const char* thread_role, int64_t begin_us, int64_t end_us,
                std::initializer_list<TraceArg> args = {}, const char* text_key = nullptr, std::string_view text = {});
  void BucketReduced(const BucketSpan& span) override;

  // Writes the file now (at most once; later calls do nothing). Safe with other threads
  // still recording: events not finished by then are left out.
  Status Flush();
  // At exit: the position reached (whether the range was covered), then Flush.
  Status Finish(int64_t step);
  bool flushed() const { return flushed_.load(); }
  // The file Flush writes: dir/rank-<r>-<member>.trace.json for the current identity.
  std::string path() const;
  // Events recorded so far, and those refused because the reserved memory was full.
  size_t recorded() const;
  int64_t dropped() const { return dropped_.load(); }

 private:
  struct Event;
  int ThreadTrack(const char* role);

  TraceOptions options_;
  uint64_t id_ = 0;
  std::unique_ptr<Event[]> events_;  // reserved up front: no allocation while tracing
  size_t capacity_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<int64_t> dropped_{0};
  std::atomic<bool> active_{false};
  std::atomic<int64_t> step_{-1};
  std::atomic<bool> flushed_{false};

  mutable std::mutex mu_;  // identity, thread names and the file path
  int rank_ = -1;
  std::string member_id_;
  std::vector<std::string> ranks_seen_;
  std::vector<std::string> thread_names_;  // by track id
  int next_track_ = 0;
};

// A span on the calling thread from construction to destruction, when `recorder` is
// non-null and active; otherwise it reads no clock.
class ScopedSpan {
 public:
  ScopedSpan(TraceRecorder* recorder, const char* name, const char* category, const char* thread_role = "training")
      : recorder_(recorder != nullptr && recorder->active() ? recorder : nullptr), name_(name), category_(category),
        role_(thread_role), begin_us_(recorder_ ? recorder_->NowMicros() : 0) {}
  ~ScopedSpan() {
    if (recorder_) recorder_->Complete(name_, category_, role_, begin_us_, recorder_->NowMicros());
  }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;

 private:
  TraceRecorder* recorder_;
  const char* name_;
  const char* category_;
  const char* role_;
  int64_t begin_us_;
};

}  // namespace shoal
