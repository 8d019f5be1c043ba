// ChooseLocalDevice: explicit index, launcher local rank, or 0, checked against the
// device count with a message that says which source the index came from.
#include "common/nvml/local_device.h"

#include <cstdlib>
#include <string>

namespace shoal {
namespace {

int EnvIndex(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (end != nullptr && *end == '\0' && x >= 0 && x < (1 << 20)) ? static_cast<int>(x) : -1;
}

}  // namespace

StatusOr<int> ChooseLocalDevice(int explicit_device, int device_count) {
  int device = explicit_device;
  std::string source = "the explicit device index";
  if (device < 0) {
    if ((device = EnvIndex("OMPI_COMM_WORLD_LOCAL_RANK")) >= 0) {
      source = "OMPI_COMM_WORLD_LOCAL_RANK";
    } else if ((device = EnvIndex("SLURM_LOCALID")) >= 0) {
      source = "SLURM_LOCALID";
    } else {
      device = 0;
      source = "the default (no launcher local rank)";
    }
  }
  if (device_count <= 0) return Unavailable("no CUDA device on this host");
  if (device >= device_count) {
    return InvalidArgument("GPU index " + std::to_string(device) + " from " + source + " but this host has " +
                           std::to_string(device_count) +
                           " device(s); start at most one rank per GPU on each host");
  }
  return device;
}

}  // namespace shoal
