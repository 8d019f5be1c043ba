// Clocks: wall time for records, monotonic time for timeouts and measurements.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>

namespace shoal {

inline int64_t UnixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Milliseconds that read like wall time (Unix epoch) but advance with the monotonic
// clock: anchored to the wall clock once per process, so a wall-clock step (NTP) never
// makes a heartbeat look late or early. For timing members; records may use UnixMillis.
inline int64_t MonotonicUnixMillis() {
  using namespace std::chrono;
  static const int64_t anchor = UnixMillis() - duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
  return anchor + duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// "2026-12-07 14:00:00" in the local time zone, for people reading records.
inline std::string LocalTimeText(int64_t unix_ms) {
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

inline double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time consumed by the calling thread (not time it spent blocked or descheduled):
// what a piece of work costs in computation, whatever else the machine is doing.
inline double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Measures elapsed seconds since construction or the last Reset().
class Stopwatch {
 public:
  Stopwatch() : start_(MonotonicSeconds()) {}
  double Seconds() const { return MonotonicSeconds() - start_; }
  void Reset() { start_ = MonotonicSeconds(); }

 private:
  double start_;
};

}  // namespace shoal
