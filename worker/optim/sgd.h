// SGD with momentum and L2 weight decay, PyTorch semantics, over a model's ParamTensors.
// Its only state is one flat momentum buffer, which exports to bytes for checkpoints so a
// restarted or re-sized job resumes with the same optimizer state.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/models/model.h"

namespace shoal {

struct SgdOptions {
  float lr = 0.1f;            // base rate; the schedule passes the current one to Step
  float momentum = 0.9f;
  float weight_decay = 0.0f;  // L2 added to the gradient (torch.optim.SGD), not decoupled
  bool nesterov = false;
};

// Rejects negative or non-finite values and nesterov without momentum (as PyTorch does).
Status ValidateSgdOptions(const SgdOptions& options);

// Per element, in params() order:
//   d = g + weight_decay * p
//   buf = momentum * buf + d          (the first step sets buf = d)
//   p -= lr * (nesterov ? d + momentum * buf : buf)
class SgdMomentum {
 public:
  // num_parameters fixes the buffer size up front so LoadState can refuse state that
  // belongs to another model.
  SgdMomentum(const SgdOptions& options, size_t num_parameters);

  // Precondition: the params' numel sum to num_parameters (the same model every step).
  void Step(std::vector<ParamTensor>& params, float lr);

  const SgdOptions& options() const { return options_; }
  size_t num_parameters() const { return momentum_.size(); }
  // One flat buffer aligned with the params in order (tensor k starts at the sum of the
  // numel before it), like the model's own flat parameter buffer.
  std::vector<float>& momentum_buffer() { return momentum_; }
  const std::vector<float>& momentum_buffer() const { return momentum_; }
  // False until the first Step: that step copies d into the buffer instead of blending.
  bool initialized() const { return initialized_; }
  // Drops the momentum (zeros, not initialized), e.g. when a job restarts from weights only.
  void Reset();

  // Bytes: "SGDM", u32 version, u8 initialized, u64 count, count little-endian f32.
  std::string SaveState() const;
  // SaveState() is StateHeader() followed by momentum_buffer()'s bytes: a checkpoint
  // can copy the buffer straight into its own, without a temporary of the model's size.
  std::string StateHeader() const;
  size_t StateBytes() const;
  // Refuses bytes of the wrong size, a bad header, or a count other than num_parameters;
  // on refusal the current state is left unchanged.
  Status LoadState(const std::string& bytes);

 private:
  SgdOptions options_;
  std::vector<float> momentum_;
  bool initialized_ = false;
};

}  // namespace shoal
