// Turns a failed CUDA / cuBLAS / NCCL / NVML call into a Status that names the call,
// where it happened (file:line) and the library's own message (NCCL's checks.h style).
// Header-only and free of GPU headers so .cc, .cu and CPU-only code can all use it.
#pragma once

#include <string>

#include "common/status.h"

namespace shoal {

// kUnavailable for "no device / no driver" so callers can fall back or skip; kInternal
// for everything else, since a failing kernel launch is not something to retry blindly.
inline Status GpuCallError(const char* library, const char* expr, long code, const char* message,
                           const char* file, int line, bool no_device = false) {
  std::string m = std::string(file) + ":" + std::to_string(line) + ": " + library + " call `" + expr +
                  "` failed with " + std::to_string(code) + " (" + (message ? message : "?") + ")";
  return Status(no_device ? StatusCode::kUnavailable : StatusCode::kInternal, std::move(m));
}

}  // namespace shoal
