// Device health from NVML, loaded at run time with dlopen("libnvidia-ml.so.1") so the
// worker links and runs on hosts with no NVIDIA driver: there it reports "unavailable".
// Also the per-job accounting (GPU-seconds, joules) built from successive samples.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"

namespace shoal {

// One reading of one device. A field NVML cannot give (power on some boards, energy
// before Volta) is left at -1 rather than failing the whole sample.
struct GpuHealth {
  int device = 0;
  double utilization_pct = -1;     // kernel-busy share of the last sample period
  double memory_utilization_pct = -1;
  int64_t memory_used_bytes = -1;
  int64_t memory_total_bytes = -1;
  double power_watts = -1;
  double temperature_c = -1;
  int64_t energy_millijoules = -1;  // cumulative since driver load
};

class Nvml {
 public:
  // kUnavailable (with the dlopen / nvmlInit message) where there is no driver.
  static StatusOr<std::unique_ptr<Nvml>> Load(const char* library = "libnvidia-ml.so.1");
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  int device_count() const { return device_count_; }
  StatusOr<GpuHealth> Sample(int device) const;

  struct Api;  // resolved symbols; defined in nvml.cc

 private:
  Nvml() = default;
  void* handle_ = nullptr;
  std::unique_ptr<Api> api_;
  int device_count_ = 0;
};

// Accumulates a job's GPU use from samples taken at monotonic times. Energy comes from
// the driver's energy counter when present (exact), else from trapezoids of power.
class GpuUsageMeter {
 public:
  void AddSample(double t_seconds, const GpuHealth& h);
  double gpu_seconds() const { return gpu_seconds_; }
  double joules() const { return joules_; }

 private:
  bool have_last_ = false;
  double last_t_ = 0;
  GpuHealth last_;
  double gpu_seconds_ = 0;
  double joules_ = 0;
};

// What the worker's heartbeat uses: NVML loaded once (a worker without a driver just
// reports nothing), the worker's device sampled each beat, the job's usage accumulated.
class GpuMonitor {
 public:
  explicit GpuMonitor(int device, const char* library = "libnvidia-ml.so.1");
  bool available() const { return nvml_ != nullptr; }
  const std::string& unavailable_reason() const { return reason_; }
  // nullopt where NVML is unavailable or the read failed (the reason is kept).
  std::optional<GpuHealth> Sample(double now_seconds);
  const GpuUsageMeter& usage() const { return meter_; }

 private:
  int device_;
  std::unique_ptr<Nvml> nvml_;
  std::string reason_;
  GpuUsageMeter meter_;
};

}  // namespace shoal
