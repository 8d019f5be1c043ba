// ProbeCudaDevices: the one place that first touches the CUDA runtime. Error 35 (no or
// too old driver, as on CPU build machines) and 100 (no device) both read as "no GPU".
#include "common/nvml/cuda_device.h"

#include <cuda_runtime.h>

namespace shoal {

const CudaProbe& ProbeCudaDevices() {
  static const CudaProbe probe = [] {
    CudaProbe p;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      p.reason = "cudaGetDeviceCount failed with error " + std::to_string(static_cast<int>(e)) + " (" +
                 cudaGetErrorString(e) + ")";
      (void)cudaGetLastError();  // clear it so later unrelated calls do not report it
      return p;
    }
    p.device_count = n;
    if (n == 0) p.reason = "cudaGetDeviceCount reports 0 devices";
    return p;
  }();
  return probe;
}

}  // namespace shoal
