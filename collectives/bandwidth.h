// Bandwidth emulation for the CPU backends: a token bucket that caps one worker's send
// rate, plus a fixed delay per message, applied at the transport boundary (the Gloo
// backend calls BeforeSend() before posting each message segment; the MPI backend,
// which does not show its messages, before each collective for the messages of its
// ring model). Test and benchmark feature, so the effect of compression can be
// measured on one machine.
//
// Set by the job spec (collectives.emulate_bandwidth_mbps, collectives.emulate_latency_us)
// or the environment, which a spec field left at 0 falls back to (read by
// MakeGlooCommunicator and MakeMpiCommunicator when not given one; unset, empty or 0 = off):
//   SHOAL_EMULATE_BANDWIDTH_MBPS  cap on this worker's send rate, in megabits per
//                                 second (10^6 bit/s), summed over all its peers.
//   SHOAL_EMULATE_LATENCY_US      microseconds added before every message is posted.
//                                 The delay is served by the sending thread, so a
//                                 transfer split into k segments pays it k times (a
//                                 per-message cost, not a pipelined propagation delay).
//   SHOAL_EMULATE_CONTROL_FILE    a file that, while it exists, overrides both with its
//                                 two numbers "MBPS US" (re-read every 100 ms): a link
//                                 that slows down and recovers while the job runs (the
//                                 chaos harness's slow-link fault). Absent: the above.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>

#include "common/status.h"

namespace shoal {

struct LinkEmulation {
  double bandwidth_mbps = 0;  // 0 = no cap
  double latency_us = 0;      // 0 = no added delay
  // Tokens an idle link may save up: a message up to this size after a pause goes
  // out at once. Small, so that any transfer of B bytes takes >= (B - burst) / rate.
  size_t burst_bytes = 64 << 10;
  std::string control_file;   // see SHOAL_EMULATE_CONTROL_FILE; "" = fixed settings
  bool enabled() const { return bandwidth_mbps > 0 || latency_us > 0 || !control_file.empty(); }
};

// Reads the two variables above. kInvalidArgument (naming the variable) for a value
// that is not a finite non-negative number.
StatusOr<LinkEmulation> LinkEmulationFromEnv();

// The job spec's settings, field by field: a value > 0 is used as given, 0 takes the
// environment's. Errors as LinkEmulationFromEnv (only a variable that is consulted).
StatusOr<LinkEmulation> LinkEmulationFor(double spec_bandwidth_mbps, double spec_latency_us);

// Thread-safe token bucket: every sender of one communicator shares it, so the cap is
// per worker. The bucket starts EMPTY, so the first B bytes already take B / rate.
class TokenBucket {
 public:
  explicit TokenBucket(const LinkEmulation& config);

  // Blocks until `bytes` may be sent: sleeps the latency, then for as long as the
  // bucket is in deficit. Concurrent callers reserve their tokens under the lock
  // and sleep outside it, so their waits add up as on one shared link.
  void BeforeSend(size_t bytes);

  const LinkEmulation& config() const { return config_; }

 private:
  using Clock = std::chrono::steady_clock;
  // With a control file: takes its settings (or the fixed ones when it is absent) at
  // most every 100 ms. Called with mu_ held.
  void Refresh(Clock::time_point now);

  LinkEmulation config_;
  double bytes_per_second_ = 0;  // 0 = unlimited
  double latency_us_ = 0;
  Clock::time_point refreshed_{};
  std::mutex mu_;
  double tokens_ = 0;  // bytes; negative = reserved ahead of time
  Clock::time_point last_;
};

}  // namespace shoal
