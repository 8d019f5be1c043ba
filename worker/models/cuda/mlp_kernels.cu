// Kernels of the GPU MLP. Each fuses what the CPU twin fuses into one pass (mlp.cc), so
// the activations are read and written once per step; products stay on cuBLAS.
#include "worker/models/cuda/mlp_kernels.h"

#include <cmath>

#include "common/nvml/cuda_check.h"
#include "worker/models/cuda/mlp_launch.h"

namespace shoal::gpu_mlp {
namespace {

__global__ void BiasActKernel(float* __restrict__ z, const float* __restrict__ bias, size_t n, int width, bool relu) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = z[i] + bias[i % width];
    z[i] = relu ? fmaxf(v, 0.0f) : v;
  }
}

__device__ float WarpMax(float v) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ double WarpSum(double v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// One warp per row: max, exp and its double sum, loss, then the scaled gradient.
__global__ void SoftmaxXentKernel(float* z, const int32_t* y, int rows, int classes, float grad_scale,
                                  double* loss_rows) {
  const int r = blockIdx.x * blockDim.y + threadIdx.y;
  if (r >= rows) return;  // whole warps exit together: no shuffle is left half-empty
  float* row = z + size_t(r) * classes;
  const int label = y[r];
  const bool valid = label >= 0 && label < classes;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < classes; j += 32) mx = fmaxf(mx, row[j]);
  mx = WarpMax(mx);
  const float zy = valid ? row[label] : 0.0f;
  double sum = 0;
  for (int j = threadIdx.x; j < classes; j += 32) {
    const float e = expf(row[j] - mx);
    row[j] = e;
    sum += e;
  }
  sum = WarpSum(sum);
  if (threadIdx.x == 0) loss_rows[r] = valid ? log(sum) + mx - zy : nan("");
  const float scale = valid ? grad_scale : 0.0f;
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (int j = threadIdx.x; j < classes; j += 32) {
    row[j] = scale * (row[j] * inv_sum - (j == label ? 1.0f : 0.0f));
  }
}

// Column sums of a (rows x width), optionally applying the ReLU mask first: 32 columns
// per block (coalesced), 8 row-slices reduced through shared memory.
template <bool kMask>
__global__ void ColumnKernel(float* a, const float* da, float* db, int rows, int width) {
  __shared__ float partial[kRowSlices][kColTile];
  const int col = blockIdx.x * kColTile + threadIdx.x;
  float acc = 0.0f;
  if (col < width) {
    for (int r = threadIdx.y; r < rows; r += kRowSlices) {
      const size_t i = size_t(r) * width + col;
      float g = a[i];
      if (kMask) {
        g = g > 0.0f ? da[i] : 0.0f;
        a[i] = g;
      }
      acc += g;
    }
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < width) {
    float s = 0.0f;
    for (int k = 0; k < static_cast<int>(kRowSlices); ++k) s += partial[k][threadIdx.x];
    db[col] = s;
  }
}

__global__ void SgdKernel(float* p, const float* g, size_t n, float lr) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    p[i] -= lr * g[i];
  }
}

}  // namespace

Status BiasAct(float* z, const float* bias, int rows, int width, bool relu, cudaStream_t s) {
  const size_t n = size_t(rows) * width;
  if (n == 0) return OkStatus();
  BiasActKernel<<<ElementwiseBlocks(n), 256, 0, s>>>(z, bias, n, width, relu);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status SoftmaxXent(float* z, const int32_t* y, int rows, int classes, float grad_scale, double* loss_rows, float* db,
                   cudaStream_t s) {
  if (rows == 0) return OkStatus();
  const Launch2 l = RowWarpLaunch(rows);
  SoftmaxXentKernel<<<l.grid_x, dim3(l.block_x, l.block_y), 0, s>>>(z, y, rows, classes, grad_scale, loss_rows);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  const Launch2 c = ColumnTileLaunch(classes);
  ColumnKernel<false><<<c.grid_x, dim3(c.block_x, c.block_y), 0, s>>>(z, nullptr, db, rows, classes);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status ReluBackward(float* a, const float* da, float* db, int rows, int width, cudaStream_t s) {
  const Launch2 c = ColumnTileLaunch(width);
  ColumnKernel<true><<<c.grid_x, dim3(c.block_x, c.block_y), 0, s>>>(a, da, db, rows, width);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status SgdStep(float* p, const float* g, size_t n, float lr, cudaStream_t s) {
  if (n == 0) return OkStatus();
  SgdKernel<<<ElementwiseBlocks(n), 256, 0, s>>>(p, g, n, lr);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace shoal::gpu_mlp
