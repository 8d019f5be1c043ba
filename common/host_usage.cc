// Process CPU time, memory and RAPL energy (host_usage.h).
#include "common/host_usage.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace shoal {

namespace {
bool ReadU64(const std::string& path, uint64_t* out) {
  std::ifstream in(path);
  return static_cast<bool>(in >> *out);
}
}  // namespace

ProcessUsage ReadProcessUsage() {
  ProcessUsage u;
  rusage r{};
  if (::getrusage(RUSAGE_SELF, &r) == 0)
    u.cpu_seconds = r.ru_utime.tv_sec + r.ru_utime.tv_usec * 1e-6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (statm >> size >> resident) u.rss_bytes = resident * ::sysconf(_SC_PAGESIZE);
  return u;
}

std::unique_ptr<RaplMeter> RaplMeter::Open(const std::string& root, const std::string& proc_stat,
                                           double process_cpu_seconds_now) {
  std::unique_ptr<RaplMeter> m(new RaplMeter());
  m->proc_stat_ = proc_stat;
  std::error_code ec;
  std::vector<std::string> dirs;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    // Top-level package domains only ("intel-rapl:0"), not their sub-domains
    // ("intel-rapl:0:0", core or dram), which the package already counts.
    if (name.rfind("intel-rapl:", 0) == 0 && std::count(name.begin(), name.end(), ':') == 1)
      dirs.push_back(e.path().string());
  }
  std::sort(dirs.begin(), dirs.end());
  for (const std::string& d : dirs) {
    Domain dom;
    dom.energy_path = d + "/energy_uj";
    if (!ReadU64(dom.energy_path, &dom.last_uj)) continue;  // root-only since 2020 (CVE-2020-8694)
    if (!ReadU64(d + "/max_energy_range_uj", &dom.max_uj)) dom.max_uj = 0;
    m->domains_.push_back(dom);
  }
  if (m->domains_.empty()) return nullptr;
  m->last_host_busy_ = m->HostBusySeconds();
  m->last_process_cpu_ = process_cpu_seconds_now >= 0 ? process_cpu_seconds_now : ReadProcessUsage().cpu_seconds;
  return m;
}

double RaplMeter::HostBusySeconds() const {
  std::ifstream in(proc_stat_);
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || cpu != "cpu") return 0;
  return static_cast<double>(user + nice + system + irq + softirq + steal) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double RaplMeter::Sample(double process_cpu_seconds) {
  double joules = 0;
  for (Domain& d : domains_) {
    uint64_t now = 0;
    if (!ReadU64(d.energy_path, &now)) continue;
    const uint64_t delta = now >= d.last_uj ? now - d.last_uj : (d.max_uj > d.last_uj ? d.max_uj - d.last_uj + now : now);
    joules += static_cast<double>(delta) * 1e-6;
    d.last_uj = now;
  }
  const double host = HostBusySeconds();
  const double host_delta = host - last_host_busy_;
  const double mine = process_cpu_seconds - last_process_cpu_;
  if (host_delta > 0 && mine > 0) attributed_joules_ += joules * std::min(1.0, mine / host_delta);
  package_joules_ += joules;
  last_host_busy_ = host;
  last_process_cpu_ = process_cpu_seconds;
  return attributed_joules_;
}

}  // namespace shoal
