// The trace recorder: slots reserved with one atomic add and published with a release
// store, so the training thread, the communication threads and the checkpoint writer
// record without a lock, and the writer of the file reads only finished events.
#include "worker/trace.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/log.h"
#include "spec/trace_paths.h"

namespace shoal {

namespace {

int64_t SteadyMicros() {
  using namespace std::chrono;
  return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
}

// Read once: Unix time minus steady time at the first call.
int64_t TraceClockAnchor() {
  using namespace std::chrono;
  static const int64_t anchor =
      duration_cast<microseconds>(system_clock::now().time_since_epoch()).count() - SteadyMicros();
  return anchor;
}

// Events per traced step, for sizing: a step, loader wait, forward, backward, optimizer
// and a few buckets, with room for evaluations, checkpoints and regroups.
constexpr size_t kEventsPerStep = 32;
constexpr size_t kMinEvents = 4096, kMaxEvents = size_t{1} << 20;

// Each recorder has an id, so a thread's cached track never refers to another (or a
// destroyed) recorder that happened to reuse an address.
std::atomic<uint64_t> g_next_recorder_id{1};

struct ThreadTrack {
  uint64_t recorder_id = 0;
  int track = -1;
};
thread_local ThreadTrack t_track;

}  // namespace

int64_t TraceClockMicros() { return TraceClockAnchor() + SteadyMicros(); }

int64_t TraceMicrosFromMonotonic(double monotonic_seconds) {
  // MonotonicSeconds() reads the same steady clock.
  return TraceClockAnchor() + static_cast<int64_t>(monotonic_seconds * 1e6);
}

struct TraceRecorder::Event {
  std::atomic<bool> ready{false};
  const char* name = nullptr;
  const char* category = nullptr;
  int track = 0;
  int nargs = 0;
  int64_t begin_us = 0, dur_us = 0, step = 0;
  TraceArg args[kMaxArgs];
  const char* text_key = nullptr;
  char text[24] = {};
};

TraceRecorder::TraceRecorder(TraceOptions options) : options_(std::move(options)) {
  capacity_ = options_.capacity;
  if (capacity_ == 0) {
    const auto steps = static_cast<size_t>(std::max<int64_t>(0, options_.step_end - options_.step_begin));
    capacity_ = std::clamp(steps * kEventsPerStep + kMinEvents, kMinEvents, kMaxEvents);
  }
  events_ = std::make_unique<Event[]>(capacity_);
  id_ = g_next_recorder_id.fetch_add(1);
  (void)TraceClockAnchor();  // anchored now, not inside a traced step
}

TraceRecorder::~TraceRecorder() = default;

void TraceRecorder::SetIdentity(int rank, const std::string& member_id) {
  std::lock_guard<std::mutex> l(mu_);
  rank_ = rank;
  member_id_ = member_id;
  const std::string seen = std::to_string(rank);
  if (std::find(ranks_seen_.begin(), ranks_seen_.end(), seen) == ranks_seen_.end()) ranks_seen_.push_back(seen);
}

void TraceRecorder::AtStep(int64_t step) {
  step_.store(step, std::memory_order_relaxed);
  if (flushed_.load(std::memory_order_relaxed)) return;
  const bool in_range = step >= options_.step_begin && step < options_.step_end;
  active_.store(in_range, std::memory_order_relaxed);
  if (step < options_.step_end) return;
  // The range is over: written here, once, on the training thread (a one-off cost of
  // one step's time, outside the traced steps).
  if (Status s = Flush(); !s.ok()) SHOAL_LOG_WARN("timeline trace: {}", s.ToString());
  else SHOAL_LOG_INFO("timeline trace of steps [{}, {}) written to {}", options_.step_begin, options_.step_end, path());
}

Status TraceRecorder::Finish(int64_t step) {
  if (flushed_.load()) return OkStatus();
  step_.store(step, std::memory_order_relaxed);
  return Flush();
}

int TraceRecorder::ThreadTrack(const char* role) {
  if (t_track.recorder_id == id_) return t_track.track;
  // Once per thread: name the track after the role of its first event, numbered when
  // two threads share a role (two communication threads).
  std::lock_guard<std::mutex> l(mu_);
  std::string name = role ? role : "thread";
  int same = 0;
  for (const std::string& n : thread_names_) same += n.rfind(name, 0) == 0;
  if (same > 0) {
    name += ' ';
    name += std::to_string(same + 1);
  }
  thread_names_.push_back(name);
  t_track = {id_, next_track_++};
  return t_track.track;
}

void TraceRecorder::Complete(const char* name, const char* category, const char* thread_role, int64_t begin_us,
                             int64_t end_us, std::initializer_list<TraceArg> args, const char* text_key,
                             std::string_view text) {
  if (!active()) return;
  const int track = ThreadTrack(thread_role);
  const size_t slot = next_.fetch_add(1, std::memory_order_relaxed);
  if (slot >= capacity_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Event& e = events_[slot];
  e.name = name;
  e.category = category;
  e.track = track;
  e.begin_us = begin_us;
  e.dur_us = std::max<int64_t>(0, end_us - begin_us);
  e.step = step_.load(std::memory_order_relaxed);
  e.nargs = 0;
  for (const TraceArg& a : args) {
    if (e.nargs == kMaxArgs) break;
    e.args[e.nargs++] = a;
  }
  e.text_key = text_key;
  const size_t n = std::min(text.size(), sizeof(e.text) - 1);
  std::memcpy(e.text, text.data(), n);
  e.text[n] = '\0';
  e.ready.store(true, std::memory_order_release);
}

void TraceRecorder::BucketReduced(const BucketSpan& s) {
  Complete("reduce bucket", "communication", "communication", s.begin_us, s.end_us,
           {{"bucket", static_cast<int64_t>(s.bucket)},
            {"wire_bytes", s.wire_bytes},
            {"raw_bytes", s.raw_bytes},
            {"wire_bytes_shared", s.wire_bytes_shared ? 1 : 0}},
           "codec", s.codec);
}

std::string TraceRecorder::path() const {
  std::lock_guard<std::mutex> l(mu_);
  return options_.dir + "/" + TraceFileName(std::max(0, rank_), member_id_.empty() ? "unregistered" : member_id_);
}

size_t TraceRecorder::recorded() const { return std::min(next_.load(), capacity_); }

Status TraceRecorder::Flush() {
  if (flushed_.exchange(true)) return OkStatus();
  active_.store(false, std::memory_order_relaxed);
  using nlohmann::json;
  int rank;
  std::string member;
  std::vector<std::string> threads, ranks;
  {
    std::lock_guard<std::mutex> l(mu_);
    rank = std::max(0, rank_);
    member = member_id_;
    threads = thread_names_;
    ranks = ranks_seen_;
  }
  json events = json::array();
  std::string label = "rank " + std::to_string(rank) + " · " + member + " · " + options_.host;
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", rank}, {"tid", 0}, {"args", {{"name", label}}}});
  events.push_back(
      {{"ph", "M"}, {"name", "process_sort_index"}, {"pid", rank}, {"tid", 0}, {"args", {{"sort_index", rank}}}});
  for (size_t t = 0; t < threads.size(); ++t) {
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", rank}, {"tid", t}, {"args", {{"name", threads[t]}}}});
    events.push_back(
        {{"ph", "M"}, {"name", "thread_sort_index"}, {"pid", rank}, {"tid", t}, {"args", {{"sort_index", t}}}});
  }
  const size_t n = recorded();
  size_t unfinished = 0;
  for (size_t i = 0; i < n; ++i) {
    const Event& e = events_[i];
    if (!e.ready.load(std::memory_order_acquire)) {
      ++unfinished;  // still being written by another thread
      continue;
    }
    json args = {{"step", e.step}};
    for (int a = 0; a < e.nargs; ++a) args[e.args[a].key] = e.args[a].value;
    if (e.text_key) args[e.text_key] = std::string(e.text);
    events.push_back({{"name", e.name},
                      {"cat", e.category},
                      {"ph", "X"},
                      {"ts", e.begin_us},
                      {"dur", e.dur_us},
                      {"pid", rank},
                      {"tid", e.track},
                      {"args", std::move(args)}});
  }
  const ClockOffset offset = options_.clock_offset ? options_.clock_offset() : ClockOffset{};
  json other = {{"format", "shoal-trace-rank"},
                {"version", 1},
                {"job", options_.job_id},
                {"rank", rank},
                {"ranks", ranks},
                {"member", member},
                {"host", options_.host},
                {"step_begin", options_.step_begin},
                {"step_end", options_.step_end},
                {"last_step", step_.load()},
                {"range_complete", step_.load() >= options_.step_end},
                {"clock", "trace clock: steady, anchored at the Unix epoch (us)"},
                {"clock_offset_us", offset.offset_us},
                {"clock_uncertainty_us", offset.uncertainty_us},
                {"clock_samples", offset.samples},
                {"events", n - unfinished},
                {"dropped_events", dropped_.load()},
                {"unfinished_events", unfinished}};
  json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}, {"otherData", std::move(other)}};
  const std::string file = path();
  if (!options_.dir.empty()) RETURN_IF_ERROR(MakeDirs(options_.dir).WithContext("trace directory " + options_.dir));
  return WriteFileAtomic(file, doc.dump() + "\n").WithContext("writing the trace " + file);
}

}  // namespace shoal
