// The trace recorder: nothing outside the range, every event inside it, several
// threads at once without losing or tearing events, and a file Chrome/Perfetto can read.
#include "worker/trace.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "common/file_util.h"

namespace shoal {
namespace {

// The folders FreshDir named, removed when the test binary exits.
struct MadeDirs {
  std::vector<std::string> dirs;
  ~MadeDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
} made_dirs;

std::string FreshDir(const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() / ("shoal-trace-test-" + tag + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  made_dirs.dirs.push_back(dir.string());
  return dir.string();
}

TraceOptions Range(int64_t begin, int64_t end, const std::string& dir) {
  TraceOptions o;
  o.step_begin = begin;
  o.step_end = end;
  o.dir = dir;
  o.job_id = "job";
  o.host = "host-a";
  return o;
}

nlohmann::json ReadTrace(const std::string& path) {
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  auto j = nlohmann::json::parse(text.ok() ? *text : std::string("{}"), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not valid JSON: " << path;
  return j;
}

std::vector<nlohmann::json> Spans(const nlohmann::json& doc, const std::string& name = "") {
  std::vector<nlohmann::json> out;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == "X" && (name.empty() || e["name"] == name)) out.push_back(e);
  return out;
}

TEST(TraceRecorder, RecordsNothingOutsideTheRange) {
  TraceRecorder r(Range(5, 8, FreshDir("outside")));
  r.SetIdentity(0, "job/m0");
  for (int64_t step = 0; step < 5; ++step) {
    r.AtStep(step);
    EXPECT_FALSE(r.active());
    ScopedSpan s(&r, "step", "step");
    r.Complete("forward", "compute", "training", 1, 2);
  }
  EXPECT_EQ(r.recorded(), 0u);
  ScopedSpan null_recorder(nullptr, "step", "step");  // tracing off: a null recorder is fine
}

TEST(TraceRecorder, RecordsInsideTheRangeAndWritesOnceAtItsEnd) {
  const std::string dir = FreshDir("range");
  TraceRecorder r(Range(2, 4, dir));
  r.SetIdentity(1, "job/m7");
  for (int64_t step = 0; step < 6; ++step) {
    r.AtStep(step);
    const int64_t t = r.NowMicros();
    r.Complete("step", "step", "training", t, t + 10, {{"samples", 64}});
  }
  EXPECT_TRUE(r.flushed());
  EXPECT_EQ(r.path(), dir + "/rank-1-job_m7.trace.json");
  auto doc = ReadTrace(r.path());
  auto spans = Spans(doc, "step");
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0]["args"]["step"], 2);
  EXPECT_EQ(spans[1]["args"]["step"], 3);
  EXPECT_EQ(spans[0]["dur"], 10);
  EXPECT_EQ(spans[0]["args"]["samples"], 64);
  EXPECT_EQ(spans[0]["pid"], 1);
  EXPECT_EQ(doc["displayTimeUnit"], "ms");
  EXPECT_EQ(doc["otherData"]["member"], "job/m7");
  EXPECT_EQ(doc["otherData"]["range_complete"], true);
  bool named_process = false, named_thread = false;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "process_name") named_process = e["args"]["name"].get<std::string>().find("host-a") != std::string::npos;
    if (e["ph"] == "M" && e["name"] == "thread_name") named_thread = e["args"]["name"] == "training";
  }
  EXPECT_TRUE(named_process);
  EXPECT_TRUE(named_thread);
  EXPECT_TRUE(r.Flush().ok());  // a second flush does nothing
}

// Negative durations (a clock read out of order) are clamped, never written.
TEST(TraceRecorder, DurationsAreNeverNegative) {
  TraceRecorder r(Range(0, 10, FreshDir("negative")));
  r.AtStep(0);
  r.Complete("backward", "compute", "training", 100, 90);
  ASSERT_TRUE(r.Flush().ok());
  auto spans = Spans(ReadTrace(r.path()));
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0]["dur"], 0);
}

// Threads record at once (as the training, communication and checkpoint threads do):
// every event arrives whole, each thread on a track of its own, named by its role.
TEST(TraceRecorder, SeveralThreadsRecordWithoutLosingEvents) {
  TraceRecorder r(Range(0, 100, FreshDir("threads")));
  r.SetIdentity(0, "job/m0");
  r.AtStep(0);
  constexpr int kThreads = 4, kEach = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, t] {
      for (int i = 0; i < kEach; ++i) {
        BucketSpan b;
        b.bucket = static_cast<size_t>(t);
        b.begin_us = i;
        b.end_us = i + t;
        b.wire_bytes = 1000 + t;
        b.raw_bytes = 4000;
        b.codec = "none";
        r.BucketReduced(b);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(r.Flush().ok());
  auto doc = ReadTrace(r.path());
  auto spans = Spans(doc, "reduce bucket");
  ASSERT_EQ(spans.size(), static_cast<size_t>(kThreads * kEach));
  std::set<int> tids;
  for (const auto& s : spans) {
    const int bucket = s["args"]["bucket"];
    EXPECT_EQ(s["args"]["wire_bytes"], 1000 + bucket) << "an event torn between threads";
    EXPECT_EQ(s["dur"], bucket);
    EXPECT_EQ(s["args"]["codec"], "none");
    tids.insert(s["tid"].get<int>());
  }
  EXPECT_EQ(tids.size(), static_cast<size_t>(kThreads));
  std::set<std::string> names;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == "M" && e["name"] == "thread_name") names.insert(e["args"]["name"]);
  EXPECT_TRUE(names.count("communication") && names.count("communication 2")) << doc["traceEvents"].dump();
}

// Full reserved memory drops events (counted) instead of allocating.
TEST(TraceRecorder, AFullBufferCountsDroppedEvents) {
  TraceOptions o = Range(0, 10, FreshDir("full"));
  o.capacity = 8;
  TraceRecorder r(o);
  r.AtStep(0);
  for (int i = 0; i < 20; ++i) r.Complete("step", "step", "training", i, i + 1);
  EXPECT_EQ(r.recorded(), 8u);
  EXPECT_EQ(r.dropped(), 12);
  ASSERT_TRUE(r.Flush().ok());
  EXPECT_EQ(ReadTrace(r.path())["otherData"]["dropped_events"], 12);
}

TEST(TraceRecorder, WritesTheClockOffsetIntoTheFile) {
  TraceOptions o = Range(0, 10, FreshDir("offset"));
  o.clock_offset = [] { return ClockOffset{-1234, 56, 7}; };
  TraceRecorder r(o);
  r.AtStep(0);
  ASSERT_TRUE(r.Flush().ok());
  auto other = ReadTrace(r.path())["otherData"];
  EXPECT_EQ(other["clock_offset_us"], -1234);
  EXPECT_EQ(other["clock_uncertainty_us"], 56);
  EXPECT_EQ(other["clock_samples"], 7);
  EXPECT_EQ(other["range_complete"], false);  // written before the range ended (at exit)
}

TEST(TraceClock, MonotonicReadingsMapOntoTheTraceClock) {
  const int64_t a = TraceClockMicros();
  const int64_t b = TraceMicrosFromMonotonic(std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
  const int64_t c = TraceClockMicros();
  EXPECT_LE(a, b + 1);
  EXPECT_LE(b, c + 1);
}

}  // namespace
}  // namespace shoal
