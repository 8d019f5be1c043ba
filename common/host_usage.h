// What a worker process uses of its host, for cost attribution (issue 20): its CPU time
// and resident memory, and its share of the CPU package energy where the kernel exposes
// Intel RAPL counters (/sys/class/powercap/intel-rapl:N/energy_uj, also AMD's under the
// same driver). RAPL measures a whole package, so a process is attributed the package
// energy of each interval times its share of the host's busy CPU time in it; where
// RAPL is missing or unreadable (containers, VMs, non-root) energy is unknown, never 0.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace shoal {

struct ProcessUsage {
  double cpu_seconds = 0;  // user + system, all threads, since the process started
  int64_t rss_bytes = 0;
};
ProcessUsage ReadProcessUsage();

class RaplMeter {
 public:
  // nullptr when no package domain under `powercap_root` is readable. `proc_stat` is
  // where the host's CPU times are read (tests point both at files of their own).
  // `process_cpu_seconds_now` is the baseline Sample's first interval starts from
  // (negative: this process's CPU time now).
  static std::unique_ptr<RaplMeter> Open(const std::string& powercap_root = "/sys/class/powercap",
                                         const std::string& proc_stat = "/proc/stat",
                                         double process_cpu_seconds_now = -1);
  // Energy attributed to this process so far, given its cumulative CPU seconds now.
  double Sample(double process_cpu_seconds);
  double package_joules() const { return package_joules_; }  // every package, since Open

 private:
  struct Domain {
    std::string energy_path;
    uint64_t max_uj = 0;   // the counter wraps at max_energy_range_uj
    uint64_t last_uj = 0;
  };
  RaplMeter() = default;
  double HostBusySeconds() const;
  std::vector<Domain> domains_;
  std::string proc_stat_;
  double last_process_cpu_ = 0, last_host_busy_ = 0;
  double package_joules_ = 0, attributed_joules_ = 0;
};

}  // namespace shoal
