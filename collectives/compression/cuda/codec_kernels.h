// The CUDA codec kernels behind host wrappers that return Status: bf16/fp16 casts with
// error feedback, qblock quantise/dequantise, top-k selection, and PowerSGD's products
// and orthogonalisation. All pointers are device memory; calls are asynchronous on
// `stream` unless they say otherwise. Semantics: the CPU codecs in compression/.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "collectives/communicator.h"
#include "common/status.h"

namespace shoal::gpu_codec {

// x += y (x = bucket, y = residual: the error-feedback input of every codec).
Status AddInto(float* x, const float* y, size_t count, cudaStream_t stream);
// x <- isfinite(x) ? x : 0: a residual never carries an inf/NaN into later steps.
Status ZeroNonFinite(float* x, size_t count, cudaStream_t stream);

// Cast codec, encode: x = bucket + residual; wire = round(x / world) in `wire_type`
// (kBF16 or kF16); residual = x - world * decode(wire). Decode: bucket = world *
// decode(wire), applied to the summed wire after the allreduce.
Status CastEncode(const float* bucket, float* residual, void* wire, size_t count, DType wire_type, int world,
                  cudaStream_t stream);
Status CastDecode(const void* wire, float* bucket, size_t count, DType wire_type, int world, cudaStream_t stream);

// qblock: quantises x into `out` (QuantBytes(count, block, bits) bytes) with the
// stream `key`; if `residual` is not null it receives x - decode(out). 4- or 8-bit.
Status QBlockQuantize(const float* x, size_t count, size_t block, int bits, uint64_t key, uint8_t* out,
                      float* residual, cudaStream_t stream);
// out (+)= decode(in).
Status QBlockDequantize(const uint8_t* in, size_t count, size_t block, int bits, float* out, bool add,
                        cudaStream_t stream);

// top-k: one (index, value) pair on the wire, as the CPU codec sends it.
struct TopkPair {
  uint32_t index;
  float value;
};
// Selects from x (count floats) the pairs the CPU codec would send and writes them to
// `pairs` (capacity TopkK(count, ratio)); zeroes the chosen entries of x, so x becomes
// the new residual. Synchronises `stream`: the threshold is chosen on the host from a
// sample (sample_size magnitudes, stream `key`). Returns how many pairs were written.
StatusOr<size_t> TopkSelect(float* x, size_t count, double ratio, size_t sample_size, uint64_t key,
                            TopkPair* pairs, cudaStream_t stream);
// bucket[pair.index] += pair.value for n pairs of one rank (indices distinct within a
// rank; call once per rank, in rank order, for bit-identical replicas).
Status TopkScatterAdd(const TopkPair* pairs, size_t n, float* bucket, cudaStream_t stream);

// PowerSGD, row-major like the CPU codec: P = M Q, Q = M^T P, out = alpha P Q^T + beta
// out (M rows x cols, P rows x r, Q cols x r), on the handle's stream.
Status PowerSgdP(cublasHandle_t h, const float* m, size_t rows, size_t cols, const float* q, int r, float* p);
Status PowerSgdQ(cublasHandle_t h, const float* m, size_t rows, size_t cols, const float* p, int r, float* q);
Status PowerSgdApprox(cublasHandle_t h, const float* p, const float* q, size_t rows, size_t cols, int r,
                      float alpha, float beta, float* out);
// Gram-Schmidt of P's columns in place (one thread block; r is small).
Status Orthogonalise(float* p, size_t rows, int r, cudaStream_t stream);

}  // namespace shoal::gpu_codec
