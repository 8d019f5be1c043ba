// Token bucket and environment parsing for the emulated links (see bandwidth.h).
#include "collectives/bandwidth.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

namespace shoal {
namespace {

StatusOr<double> ReadNonNegative(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return 0.0;
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !std::isfinite(v) || v < 0) {
    return InvalidArgument(std::string(name) + "='" + text +
                           "' is not a non-negative number (unset it or use 0 to disable)");
  }
  return v;
}

}  // namespace

StatusOr<LinkEmulation> LinkEmulationFor(double spec_bandwidth_mbps, double spec_latency_us) {
  LinkEmulation e;
  e.bandwidth_mbps = spec_bandwidth_mbps;
  e.latency_us = spec_latency_us;
  if (e.bandwidth_mbps <= 0) {
    ASSIGN_OR_RETURN(e.bandwidth_mbps, ReadNonNegative("SHOAL_EMULATE_BANDWIDTH_MBPS"));
  }
  if (e.latency_us <= 0) {
    ASSIGN_OR_RETURN(e.latency_us, ReadNonNegative("SHOAL_EMULATE_LATENCY_US"));
  }
  return e;
}

StatusOr<LinkEmulation> LinkEmulationFromEnv() { return LinkEmulationFor(0, 0); }

TokenBucket::TokenBucket(const LinkEmulation& config)
    : config_(config),
      bytes_per_second_(config.bandwidth_mbps * 1e6 / 8),
      last_(Clock::now()) {}

void TokenBucket::BeforeSend(size_t bytes) {
  if (config_.latency_us > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(config_.latency_us));
  }
  if (bytes_per_second_ <= 0) return;
  double wait_s = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(static_cast<double>(config_.burst_bytes),
                       tokens_ + elapsed * bytes_per_second_);
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ < 0) wait_s = -tokens_ / bytes_per_second_;
  }
  if (wait_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
}

}  // namespace shoal
