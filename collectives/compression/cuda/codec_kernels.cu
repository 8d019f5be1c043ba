// CUDA kernels of the gradient codecs. Each kernel evaluates the per-element functions
// of codec_host.h, so its output is the CPU codec's to the bit where the arithmetic
// allows (see the tolerances in codec_gpu_test.cc); the host wrappers check every call.
#include "collectives/compression/cuda/codec_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <thrust/iterator/counting_iterator.h>

#include <cmath>
#include <cub/block/block_reduce.cuh>
#include <cub/device/device_select.cuh>
#include <vector>

#include "collectives/compression/cuda/codec_host.h"
#include "common/nvml/cublas_gemm.h"
#include "common/nvml/cuda_check.h"

namespace shoal::gpu_codec {
namespace {

constexpr unsigned kOrthoThreads = 256;

__global__ void AddIntoKernel(float* x, const float* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    x[i] = AddRn(x[i], y[i]);
  }
}

__global__ void ZeroNonFiniteKernel(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    if (!isfinite(x[i])) x[i] = 0.0f;
  }
}

template <typename Wire>
__device__ Wire ToWire(float v);
template <>
__device__ __nv_bfloat16 ToWire(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __half ToWire(float v) { return __float2half_rn(v); }
__device__ float FromWire(__nv_bfloat16 w) { return __bfloat162float(w); }
__device__ float FromWire(__half w) { return __half2float(w); }

// One pass: read bucket and residual, write wire and residual (14 bytes per element).
template <typename Wire>
__global__ void CastEncodeKernel(const float* bucket, float* residual, Wire* wire, size_t n, float world) {
  const float inv = 1.0f / world;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float x = AddRn(bucket[i], residual[i]);
    const Wire w = ToWire<Wire>(MulRn(x, inv));
    wire[i] = w;
    residual[i] = SubRn(x, MulRn(FromWire(w), world));
  }
}

template <typename Wire>
__global__ void CastDecodeKernel(const Wire* wire, float* bucket, size_t n, float world) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    bucket[i] = MulRn(FromWire(wire[i]), world);
  }
}

// Block-wide min and max through shared memory (blockDim.x <= 1024, a warp multiple).
__device__ void BlockMinMax(float* lo, float* hi) {
  __shared__ float s_lo[32], s_hi[32];
  for (int off = 16; off > 0; off /= 2) {
    *lo = fminf(*lo, __shfl_xor_sync(0xffffffffu, *lo, off));
    *hi = fmaxf(*hi, __shfl_xor_sync(0xffffffffu, *hi, off));
  }
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    s_lo[warp] = *lo;
    s_hi[warp] = *hi;
  }
  __syncthreads();
  if (warp == 0) {
    *lo = lane < warps ? s_lo[lane] : INFINITY;
    *hi = lane < warps ? s_hi[lane] : -INFINITY;
    for (int off = 16; off > 0; off /= 2) {
      *lo = fminf(*lo, __shfl_xor_sync(0xffffffffu, *lo, off));
      *hi = fmaxf(*hi, __shfl_xor_sync(0xffffffffu, *hi, off));
    }
    if (lane == 0) {
      s_lo[0] = *lo;
      s_hi[0] = *hi;
    }
  }
  __syncthreads();
  *lo = s_lo[0];
  *hi = s_hi[0];
}

// One CUDA block per quantisation block: min/max, header, codes, residual.
__global__ void QuantizeKernel(const float* x, size_t count, size_t block, int bits, uint64_t key, uint8_t* out,
                               float* residual) {
  const size_t b0 = blockIdx.x * block;
  const size_t len = min(block, count - b0);
  float lo = INFINITY, hi = -INFINITY;
  for (size_t i = threadIdx.x; i < len; i += blockDim.x) {
    lo = fminf(lo, x[b0 + i]);
    hi = fmaxf(hi, x[b0 + i]);
  }
  BlockMinMax(&lo, &hi);
  float step, inv;
  QStep(lo, hi, bits, &step, &inv);
  uint8_t* o = out + QBlockOffset(blockIdx.x, block, bits);
  if (threadIdx.x == 0) {
    memcpy(o, &lo, sizeof(float));  // headers need not be 4-byte aligned for odd blocks
    memcpy(o + sizeof(float), &step, sizeof(float));
  }
  uint8_t* codes = o + kQHeader;
  auto code_at = [&](size_t i) {
    const uint32_t c = QCode(x[b0 + i], lo, inv, QDither(key, b0, i), bits);
    if (residual != nullptr) residual[b0 + i] = SubRn(x[b0 + i], QDecode(lo, c, step));
    return c;
  };
  if (bits == 8) {
    for (size_t i = threadIdx.x; i < len; i += blockDim.x) codes[i] = static_cast<uint8_t>(code_at(i));
  } else {
    for (size_t j = threadIdx.x; 2 * j < len; j += blockDim.x) {
      const uint32_t low = code_at(2 * j);
      const uint32_t high = 2 * j + 1 < len ? code_at(2 * j + 1) : 0;
      codes[j] = static_cast<uint8_t>(low | (high << 4));
    }
  }
}

__global__ void DequantizeKernel(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add) {
  const size_t b0 = blockIdx.x * block;
  const size_t len = min(block, count - b0);
  const uint8_t* o = in + QBlockOffset(blockIdx.x, block, bits);
  float lo, step;
  memcpy(&lo, o, sizeof(float));
  memcpy(&step, o + sizeof(float), sizeof(float));
  const uint8_t* codes = o + kQHeader;
  for (size_t i = threadIdx.x; i < len; i += blockDim.x) {
    const uint32_t c = bits == 8 ? codes[i] : (codes[i / 2] >> ((i & 1) * 4)) & 0xF;
    const float v = QDecode(lo, c, step);
    out[b0 + i] = add ? AddRn(out[b0 + i], v) : v;
  }
}

__global__ void GatherSampleKernel(const float* x, size_t count, size_t sample, uint64_t key, float* mags) {
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < sample; j += size_t(gridDim.x) * blockDim.x) {
    mags[j] = fabsf(x[TopkSampleIndex(key, j, count)]);
  }
}

struct AboveThreshold {
  const float* x;
  float threshold;
  __device__ bool operator()(uint32_t i) const {
    const float a = fabsf(x[i]);
    return a >= threshold && a > 0.0f;
  }
};

// Pairs from the chosen indices with values rounded to bf16 as the CPU codec sends
// them (they still travel as f32 here), and the rounding error left in x (the residual).
__global__ void PackPairsKernel(float* x, const uint32_t* idx, size_t n, TopkPair* pairs) {
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < n; j += size_t(gridDim.x) * blockDim.x) {
    const uint32_t i = idx[j];
    const float v = __bfloat162float(__float2bfloat16_rn(x[i]));
    pairs[j] = {i, v};
    x[i] = __fsub_rn(x[i], v);
  }
}

__global__ void ScatterAddKernel(const TopkPair* pairs, size_t n, float* bucket) {
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < n; j += size_t(gridDim.x) * blockDim.x) {
    bucket[pairs[j].index] = AddRn(bucket[pairs[j].index], pairs[j].value);
  }
}

// Gram-Schmidt as OrthogonaliseRef: columns in order, each dot a block-wide double sum.
__global__ void OrthogonaliseKernel(float* p, size_t rows, int r) {
  using Reduce = cub::BlockReduce<double, kOrthoThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  __shared__ double s_result;
  auto block_dot = [&](int a, int b) {
    double part = 0;
    for (size_t i = threadIdx.x; i < rows; i += blockDim.x) part += double(p[i * r + a]) * p[i * r + b];
    const double total = Reduce(tmp).Sum(part);
    if (threadIdx.x == 0) s_result = total;
    __syncthreads();
    const double v = s_result;
    __syncthreads();  // s_result and tmp are reused by the next dot
    return v;
  };
  for (int j = 0; j < r; ++j) {
    const double original = block_dot(j, j);
    for (int pass = 0; pass < 2; ++pass) {
      for (int k = 0; k < j; ++k) {
        const float d = static_cast<float>(block_dot(k, j));
        for (size_t i = threadIdx.x; i < rows; i += blockDim.x) p[i * r + j] = SubRn(p[i * r + j], MulRn(d, p[i * r + k]));
        __syncthreads();
      }
    }
    const double norm = sqrt(block_dot(j, j));
    const bool keep = isfinite(norm) && norm > 0 && norm > kDependentColumn * sqrt(original);
    const float scale = keep ? static_cast<float>(1.0 / norm) : 0.0f;
    for (size_t i = threadIdx.x; i < rows; i += blockDim.x) p[i * r + j] = MulRn(p[i * r + j], scale);
    __syncthreads();
  }
}

}  // namespace

Status AddInto(float* x, const float* y, size_t count, cudaStream_t stream) {
  if (count == 0) return OkStatus();
  const Launch l = ElementwiseLaunch(count);
  AddIntoKernel<<<l.blocks, l.threads, 0, stream>>>(x, y, count);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status ZeroNonFinite(float* x, size_t count, cudaStream_t stream) {
  if (count == 0) return OkStatus();
  const Launch l = ElementwiseLaunch(count);
  ZeroNonFiniteKernel<<<l.blocks, l.threads, 0, stream>>>(x, count);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status CastEncode(const float* bucket, float* residual, void* wire, size_t count, DType wire_type, int world,
                  cudaStream_t stream) {
  if (count == 0) return OkStatus();
  const Launch l = ElementwiseLaunch(count);
  if (wire_type == DType::kBF16) {
    CastEncodeKernel<<<l.blocks, l.threads, 0, stream>>>(bucket, residual, static_cast<__nv_bfloat16*>(wire), count,
                                                         float(world));
  } else if (wire_type == DType::kF16) {
    CastEncodeKernel<<<l.blocks, l.threads, 0, stream>>>(bucket, residual, static_cast<__half*>(wire), count,
                                                         float(world));
  } else {
    return InvalidArgument("cast codec: wire type must be bf16 or f16");
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status CastDecode(const void* wire, float* bucket, size_t count, DType wire_type, int world, cudaStream_t stream) {
  if (count == 0) return OkStatus();
  const Launch l = ElementwiseLaunch(count);
  if (wire_type == DType::kBF16) {
    CastDecodeKernel<<<l.blocks, l.threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(wire), bucket, count,
                                                         float(world));
  } else if (wire_type == DType::kF16) {
    CastDecodeKernel<<<l.blocks, l.threads, 0, stream>>>(static_cast<const __half*>(wire), bucket, count, float(world));
  } else {
    return InvalidArgument("cast codec: wire type must be bf16 or f16");
  }
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status QBlockQuantize(const float* x, size_t count, size_t block, int bits, uint64_t key, uint8_t* out,
                      float* residual, cudaStream_t stream) {
  if (bits != 4 && bits != 8) return InvalidArgument("qblock: bits must be 4 or 8");
  if (count == 0) return OkStatus();
  if (block == 0) return InvalidArgument("qblock: block must be positive");
  const Launch l = QBlockLaunch(count, block);
  QuantizeKernel<<<l.blocks, l.threads, 0, stream>>>(x, count, block, bits, key, out, residual);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status QBlockDequantize(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add,
                        cudaStream_t stream) {
  if (bits != 4 && bits != 8) return InvalidArgument("qblock: bits must be 4 or 8");
  if (count == 0) return OkStatus();
  if (block == 0) return InvalidArgument("qblock: block must be positive");
  const Launch l = QBlockLaunch(count, block);
  DequantizeKernel<<<l.blocks, l.threads, 0, stream>>>(in, count, block, bits, out, add);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

StatusOr<size_t> TopkSelect(float* x, size_t count, double ratio, size_t sample_size, uint64_t key,
                            TopkPair* pairs, cudaStream_t stream) {
  if (count == 0) return size_t{0};
  if (count > 0xffffffffull) return InvalidArgument("topk: bucket exceeds 32-bit indices; use smaller buckets");
  const size_t k = TopkK(count, ratio);
  // 1. Threshold on the host from |x| (small buckets) or a sample of it: a few KiB.
  const bool exact = count <= sample_size;
  const size_t m = exact ? count : sample_size;
  float* mags_dev = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(&mags_dev, m * sizeof(float), stream));
  if (exact) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(mags_dev, x, m * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  } else {
    const Launch l = ElementwiseLaunch(m);
    GatherSampleKernel<<<l.blocks, l.threads, 0, stream>>>(x, count, m, key, mags_dev);
    CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  std::vector<float> mags(m);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(mags.data(), mags_dev, m * sizeof(float), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaFreeAsync(mags_dev, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  if (exact) {
    for (float& v : mags) v = std::fabs(v);
  }
  const float threshold = TopkThreshold(std::move(mags), count, sample_size, ratio);

  // 2. Stable compaction of the indices above it (ascending, like the CPU loop).
  uint32_t* idx = nullptr;
  size_t* num_dev = nullptr;
  size_t temp_bytes = 0;
  thrust::counting_iterator<uint32_t> first(0);
  const AboveThreshold pred{x, threshold};
  CUDA_RETURN_IF_ERROR(cub::DeviceSelect::If(nullptr, temp_bytes, first, idx, num_dev, count, pred, stream));
  void* temp = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(&temp, temp_bytes, stream));
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(&idx, count * sizeof(uint32_t), stream));
  CUDA_RETURN_IF_ERROR(cudaMallocAsync(&num_dev, sizeof(size_t), stream));
  CUDA_RETURN_IF_ERROR(cub::DeviceSelect::If(temp, temp_bytes, first, idx, num_dev, count, pred, stream));
  size_t num = 0;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&num, num_dev, sizeof(size_t), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));

  // 3. Rare: ties or a low estimate let more than k through; trim on the host exactly as
  // the CPU codec does (costs a copy of x, only on this path).
  if (num > k) {
    std::vector<uint32_t> chosen(num);
    std::vector<float> xh(count);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(chosen.data(), idx, num * sizeof(uint32_t), cudaMemcpyDeviceToHost, stream));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(xh.data(), x, count * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    chosen = TopkTrim(std::move(chosen), xh.data(), k);
    num = chosen.size();
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(idx, chosen.data(), num * sizeof(uint32_t), cudaMemcpyHostToDevice, stream));
  }
  if (num > 0) {
    const Launch l = ElementwiseLaunch(num);
    PackPairsKernel<<<l.blocks, l.threads, 0, stream>>>(x, idx, num, pairs);
    CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  CUDA_RETURN_IF_ERROR(cudaFreeAsync(temp, stream));
  CUDA_RETURN_IF_ERROR(cudaFreeAsync(idx, stream));
  CUDA_RETURN_IF_ERROR(cudaFreeAsync(num_dev, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // the host vector above must outlive the copy
  return num;
}

Status TopkScatterAdd(const TopkPair* pairs, size_t n, float* bucket, cudaStream_t stream) {
  if (n == 0) return OkStatus();
  const Launch l = ElementwiseLaunch(n);
  ScatterAddKernel<<<l.blocks, l.threads, 0, stream>>>(pairs, n, bucket);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

Status PowerSgdP(cublasHandle_t h, const float* m, size_t rows, size_t cols, const float* q, int r, float* p) {
  return RowMajorSgemm(h, false, false, int(rows), r, int(cols), 1.0f, m, int(cols), q, r, 0.0f, p, r);
}

Status PowerSgdQ(cublasHandle_t h, const float* m, size_t rows, size_t cols, const float* p, int r, float* q) {
  return RowMajorSgemm(h, true, false, int(cols), r, int(rows), 1.0f, m, int(cols), p, r, 0.0f, q, r);
}

Status PowerSgdApprox(cublasHandle_t h, const float* p, const float* q, size_t rows, size_t cols, int r, float alpha,
                      float beta, float* out) {
  return RowMajorSgemm(h, false, true, int(rows), int(cols), r, alpha, p, r, q, r, beta, out, int(cols));
}

Status Orthogonalise(float* p, size_t rows, int r, cudaStream_t stream) {
  if (rows == 0 || r <= 0) return OkStatus();
  OrthogonaliseKernel<<<1, kOrthoThreads, 0, stream>>>(p, rows, r);
  CUDA_RETURN_IF_LAUNCH_FAILED();
  return OkStatus();
}

}  // namespace shoal::gpu_codec
