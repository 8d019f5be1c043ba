// The GPU MLP's fused elementwise kernels (everything that is not a cuBLAS product):
// bias + ReLU, softmax cross-entropy with its gradient, ReLU backward with the bias
// gradient, column sums, and an SGD step for the benchmark. Asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/status.h"

namespace shoal::gpu_mlp {

// z[r][j] += bias[j], then max(., 0) when `relu`.
Status BiasAct(float* z, const float* bias, int rows, int width, bool relu, cudaStream_t s);

// In place over the logits: z <- grad_scale * (softmax(z) - onehot(y)); loss_rows[r] =
// log-sum-exp - z[y] in double (NaN and no gradient for a label outside [0, classes)).
// db (classes floats) receives the column sums of the new z: the last bias gradient.
Status SoftmaxXent(float* z, const int32_t* y, int rows, int classes, float grad_scale, double* loss_rows,
                   float* db, cudaStream_t s);

// a <- (a > 0 ? da : 0) in place (dZ of the layer below), db <- its column sums.
Status ReluBackward(float* a, const float* da, float* db, int rows, int width, cudaStream_t s);

// p -= lr * g over n floats.
Status SgdStep(float* p, const float* g, size_t n, float lr, cudaStream_t s);

}  // namespace shoal::gpu_mlp
