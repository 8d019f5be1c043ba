// Token bucket and environment parsing for the emulated links (see bandwidth.h).
#include "collectives/bandwidth.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
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
  if (const char* f = std::getenv("SHOAL_EMULATE_CONTROL_FILE")) e.control_file = f;
  return e;
}

StatusOr<LinkEmulation> LinkEmulationFromEnv() { return LinkEmulationFor(0, 0); }

TokenBucket::TokenBucket(const LinkEmulation& config)
    : config_(config),
      bytes_per_second_(config.bandwidth_mbps * 1e6 / 8),
      latency_us_(config.latency_us),
      last_(Clock::now()) {}

void TokenBucket::Refresh(Clock::time_point now) {
  if (config_.control_file.empty() || now - refreshed_ < std::chrono::milliseconds(100)) return;
  refreshed_ = now;
  double mbps = config_.bandwidth_mbps, us = config_.latency_us;
  std::ifstream in(config_.control_file);
  double m = 0, u = 0;
  if (in && (in >> m >> u) && std::isfinite(m) && std::isfinite(u) && m >= 0 && u >= 0) {
    mbps = m;
    us = u;
  }
  bytes_per_second_ = mbps * 1e6 / 8;
  latency_us_ = us;
}

void TokenBucket::BeforeSend(size_t bytes) {
  double latency_us = 0, wait_s = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    Refresh(now);
    latency_us = latency_us_;
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    if (bytes_per_second_ > 0) {
      tokens_ = std::min(static_cast<double>(config_.burst_bytes), tokens_ + elapsed * bytes_per_second_);
      tokens_ -= static_cast<double>(bytes);
      if (tokens_ < 0) wait_s = -tokens_ / bytes_per_second_;
    } else {
      tokens_ = 0;  // an unlimited spell saves nothing up for later
    }
  }
  if (latency_us > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(latency_us));
  if (wait_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
}

}  // namespace shoal
