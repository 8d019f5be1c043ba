// The model interface the trainer drives. The CPU MLP (OpenBLAS) implements it now; a
// cuBLAS twin implements it later. Parameters and gradients live in flat f32 buffers
// owned by the model, one ParamTensor per layer weight or bias.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "collectives/tensor.h"  // ParamTensor, GradReadyFn: shared with the Reducer
#include "common/status.h"

namespace shoal {

struct Batch {
  const float* x = nullptr;    // n x input_dim, row-major
  const int32_t* y = nullptr;  // n labels
  int n = 0;
};

struct EvalResult {
  int64_t correct = 0;
  int64_t count = 0;
  double loss_sum = 0;
};

class Model {
 public:
  virtual ~Model() = default;

  virtual std::vector<ParamTensor>& params() = 0;
  virtual size_t num_parameters() const = 0;

  // Forward and backward on a batch. Gradients are OVERWRITTEN with
  // grad_scale * d(sum of per-sample losses)/d(param): data-parallel ranks pass
  // 1/global_batch so that an allreduce-sum yields the exact global-batch mean even when
  // ranks hold unequal shares. Returns the SUM of per-sample losses. n == 0 is valid
  // (gradients become zero, on_ready still fires for every tensor).
  virtual double ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) = 0;

  virtual EvalResult Evaluate(const Batch& batch) = 0;

  // Seconds spent inside sgemm since the last call (for the step-time breakdown).
  virtual double TakeSgemmSeconds() = 0;
};

}  // namespace shoal
