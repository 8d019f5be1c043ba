// CUDA_RETURN_IF_ERROR / CUBLAS_RETURN_IF_ERROR: every runtime and cuBLAS call in Shoal
// goes through one of these, so a failure surfaces as a Status with file:line and the
// library's message instead of a silent sticky error found three kernels later.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/nvml/gpu_status.h"

namespace shoal {

// Error 35 (driver older than the runtime, or none at all) and 100 (no device) both
// mean "no usable GPU here": callers skip or fall back instead of failing hard.
inline bool CudaMeansNoDevice(cudaError_t e) {
  return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver;
}

}  // namespace shoal

#define CUDA_RETURN_IF_ERROR(expr)                                                           \
  do {                                                                                       \
    const cudaError_t _shoal_cuda_err = (expr);                                              \
    if (_shoal_cuda_err != cudaSuccess) {                                                    \
      return ::shoal::GpuCallError("CUDA", #expr, static_cast<long>(_shoal_cuda_err),        \
                                   cudaGetErrorString(_shoal_cuda_err), __FILE__, __LINE__,  \
                                   ::shoal::CudaMeansNoDevice(_shoal_cuda_err));             \
    }                                                                                        \
  } while (0)

// Kernel launches report configuration errors only through cudaGetLastError.
#define CUDA_RETURN_IF_LAUNCH_FAILED() CUDA_RETURN_IF_ERROR(cudaGetLastError())

#define CUBLAS_RETURN_IF_ERROR(expr)                                                         \
  do {                                                                                       \
    const cublasStatus_t _shoal_cublas_st = (expr);                                          \
    if (_shoal_cublas_st != CUBLAS_STATUS_SUCCESS) {                                         \
      return ::shoal::GpuCallError("cuBLAS", #expr, static_cast<long>(_shoal_cublas_st),     \
                                   cublasGetStatusString(_shoal_cublas_st), __FILE__,        \
                                   __LINE__);                                                \
    }                                                                                        \
  } while (0)
