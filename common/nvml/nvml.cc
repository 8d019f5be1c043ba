// NVML through dlopen/dlsym: the handful of entry points Shoal reads, declared here
// with NVML's C ABI so neither nvml.h nor libnvidia-ml is needed at build time.
#include "common/nvml/nvml.h"

#include <dlfcn.h>

#include <string>

namespace shoal {

// NVML's ABI: nvmlReturn_t is an int enum (0 = success), nvmlDevice_t an opaque pointer.
struct NvmlUtilization { unsigned int gpu, memory; };
struct NvmlMemory { unsigned long long total, free, used; };
using NvmlDevice = void*;

struct Nvml::Api {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  const char* (*error_string)(int) = nullptr;
  int (*device_count)(unsigned int*) = nullptr;
  int (*handle_by_index)(unsigned int, NvmlDevice*) = nullptr;
  int (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  int (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  int (*power)(NvmlDevice, unsigned int*) = nullptr;           // milliwatts
  int (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;  // sensor 0 = GPU die
  int (*energy)(NvmlDevice, unsigned long long*) = nullptr;    // millijoules
};

namespace {

template <typename F>
bool Resolve(void* handle, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  return *out != nullptr;
}

std::string NvmlMessage(const Nvml::Api& api, int rc) {
  return std::to_string(rc) + " (" + (api.error_string ? api.error_string(rc) : "?") + ")";
}

}  // namespace

StatusOr<std::unique_ptr<Nvml>> Nvml::Load(const char* library) {
  void* handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return Unavailable(std::string("GPU health unavailable: ") + (err ? err : library) +
                       " (no NVIDIA driver on this host?)");
  }
  std::unique_ptr<Nvml> nvml(new Nvml());
  nvml->handle_ = handle;
  nvml->api_ = std::make_unique<Api>();
  Api& a = *nvml->api_;
  // Only init, count and handle are required; the readings are optional per field.
  if (!Resolve(handle, "nvmlInit_v2", &a.init) || !Resolve(handle, "nvmlShutdown", &a.shutdown) ||
      !Resolve(handle, "nvmlDeviceGetCount_v2", &a.device_count) ||
      !Resolve(handle, "nvmlDeviceGetHandleByIndex_v2", &a.handle_by_index)) {
    return Unavailable(std::string("GPU health unavailable: ") + library + " lacks the NVML v2 entry points");
  }
  Resolve(handle, "nvmlErrorString", &a.error_string);
  Resolve(handle, "nvmlDeviceGetUtilizationRates", &a.utilization);
  Resolve(handle, "nvmlDeviceGetMemoryInfo", &a.memory);
  Resolve(handle, "nvmlDeviceGetPowerUsage", &a.power);
  Resolve(handle, "nvmlDeviceGetTemperature", &a.temperature);
  Resolve(handle, "nvmlDeviceGetTotalEnergyConsumption", &a.energy);
  if (int rc = a.init(); rc != 0) {
    a.shutdown = nullptr;  // init failed: nothing to shut down
    return Unavailable("GPU health unavailable: nvmlInit_v2 failed with " + NvmlMessage(a, rc));
  }
  unsigned int count = 0;
  if (int rc = a.device_count(&count); rc != 0) {
    return Unavailable("GPU health unavailable: nvmlDeviceGetCount_v2 failed with " + NvmlMessage(a, rc));
  }
  nvml->device_count_ = static_cast<int>(count);
  return nvml;
}

Nvml::~Nvml() {
  if (api_ && api_->shutdown) api_->shutdown();
  if (handle_) dlclose(handle_);
}

StatusOr<GpuHealth> Nvml::Sample(int device) const {
  if (device < 0 || device >= device_count_) {
    return InvalidArgument("NVML device " + std::to_string(device) + " outside [0, " +
                           std::to_string(device_count_) + ")");
  }
  NvmlDevice dev = nullptr;
  if (int rc = api_->handle_by_index(static_cast<unsigned>(device), &dev); rc != 0) {
    return Unavailable("nvmlDeviceGetHandleByIndex_v2(" + std::to_string(device) + ") failed with " +
                       NvmlMessage(*api_, rc));
  }
  GpuHealth h;
  h.device = device;
  NvmlUtilization u{};
  if (api_->utilization && api_->utilization(dev, &u) == 0) {
    h.utilization_pct = u.gpu;
    h.memory_utilization_pct = u.memory;
  }
  NvmlMemory m{};
  if (api_->memory && api_->memory(dev, &m) == 0) {
    h.memory_used_bytes = static_cast<int64_t>(m.used);
    h.memory_total_bytes = static_cast<int64_t>(m.total);
  }
  unsigned int mw = 0, temp = 0;
  if (api_->power && api_->power(dev, &mw) == 0) h.power_watts = mw / 1000.0;
  if (api_->temperature && api_->temperature(dev, 0, &temp) == 0) h.temperature_c = temp;
  unsigned long long mj = 0;
  if (api_->energy && api_->energy(dev, &mj) == 0) h.energy_millijoules = static_cast<int64_t>(mj);
  return h;
}

void GpuUsageMeter::AddSample(double t, const GpuHealth& h) {
  if (have_last_ && t > last_t_) {
    const double dt = t - last_t_;
    gpu_seconds_ += dt;  // the job held the device for the whole interval
    if (h.energy_millijoules >= 0 && last_.energy_millijoules >= 0 &&
        h.energy_millijoules >= last_.energy_millijoules) {
      joules_ += (h.energy_millijoules - last_.energy_millijoules) / 1000.0;
    } else if (h.power_watts >= 0 && last_.power_watts >= 0) {
      joules_ += 0.5 * (h.power_watts + last_.power_watts) * dt;  // trapezoid
    }
  }
  have_last_ = true;
  last_t_ = t;
  last_ = h;
}

GpuMonitor::GpuMonitor(int device, const char* library) : device_(device) {
  auto nvml = Nvml::Load(library);
  if (!nvml.ok()) {
    reason_ = nvml.status().message();
    return;
  }
  nvml_ = std::move(*nvml);
}

std::optional<GpuHealth> GpuMonitor::Sample(double now_seconds) {
  if (!nvml_) return std::nullopt;
  auto h = nvml_->Sample(device_);
  if (!h.ok()) {
    reason_ = h.status().message();
    return std::nullopt;
  }
  meter_.AddSample(now_seconds, *h);
  return *h;
}

}  // namespace shoal
