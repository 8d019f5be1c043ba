// Is there a usable CUDA device? Asked once before any other CUDA runtime call, so the
// binaries run (and GPU tests skip with the reason) on machines with no driver or GPU.
#pragma once

#include <string>

namespace shoal {

struct CudaProbe {
  int device_count = 0;
  std::string reason;  // why device_count is 0 ("cudaGetDeviceCount: error 35 ...")
};

// Cached after the first call: cudaGetDeviceCount's answer cannot change in a process.
const CudaProbe& ProbeCudaDevices();

}  // namespace shoal

// For GPU tests: skips the test, printing why, when there is no usable device.
#define SHOAL_SKIP_WITHOUT_GPU()                                                        \
  do {                                                                                  \
    const auto& _shoal_probe = ::shoal::ProbeCudaDevices();                             \
    if (_shoal_probe.device_count == 0) GTEST_SKIP() << "no GPU: " << _shoal_probe.reason; \
  } while (0)
