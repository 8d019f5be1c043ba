// CPU multilayer perceptron on OpenBLAS: Linear+ReLU hidden layers and a softmax
// cross-entropy head, behind the Model interface the trainer drives. The parameter layout
// below is also the checkpoint layout, so the cuBLAS twin must keep it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/models/model.h"

namespace shoal {

// Sets OpenBLAS's thread count for the whole process. Workers share the machine's cores,
// so only the trainer decides; nothing in models/ changes it on its own.
void SetBlasThreads(int n);

// Adds argmax hits and softmax cross-entropy of `rows` logit rows to `result`; a label
// outside [0, classes) counts as wrong and makes the loss NaN. Shared by the CPU model
// and its cuBLAS twin so both score identically.
void ScoreLogits(const float* logits, const int32_t* labels, int rows, int classes, EvalResult* result);

// Checks a width list for MakeMlp: input first, classes last, at least one Linear layer,
// every width positive and the model small enough to index with BLAS's int arguments.
Status ValidateMlpLayers(const std::vector<int>& layers);

// Parameter layout. For layer i = 0..L-1 in forward order: fc{i}.weight {out_i, in_i}
// row-major, then fc{i}.bias {out_i}, packed back to back in ONE f32 buffer; gradients
// sit at the same offsets in a second buffer. params()[2i] is layer i's weight and
// params()[2i+1] its bias. Backward produces gradients in the reverse order (weight and
// bias of the last layer first), which is the order on_ready reports them.
//
// Not thread-safe: activation buffers are reused between calls (they only grow), so one
// model serves one thread, as one worker owns one model.
class MlpModel : public Model {
 public:
  // `layers` must pass ValidateMlpLayers (MakeMlp checks it). Weights are Kaiming-uniform
  // for ReLU, U(-sqrt(6/fan_in), +sqrt(6/fan_in)), from std::mt19937_64(seed); biases 0.
  MlpModel(const std::vector<int>& layers, uint64_t seed);
  MlpModel(const MlpModel&) = delete;  // params_ points into our own buffers
  MlpModel& operator=(const MlpModel&) = delete;

  std::vector<ParamTensor>& params() override { return params_; }
  size_t num_parameters() const override { return param_buf_.size(); }
  double ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) override;
  EvalResult Evaluate(const Batch& batch) override;
  double TakeSgemmSeconds() override;

  const std::vector<int>& layers() const { return layers_; }
  // The flat buffers behind params(), for whole-model copies (broadcast, checkpoint).
  float* param_buffer() { return param_buf_.data(); }
  float* grad_buffer() { return grad_buf_.data(); }

  // Label contract: a label outside [0, classes) cannot be trained on; that sample's loss
  // is NaN (so the returned sum shows it and the trainer's divergence check trips) and it
  // contributes no gradient. Evaluate counts it as wrong.

 private:
  int num_layers() const { return static_cast<int>(layers_.size()) - 1; }
  void EnsureRows(int n);
  // Runs all Linear layers on n rows of x; leaves logits in acts_.back().
  void Forward(const float* x, int n);
  void Gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda,
            const float* b, int ldb, float* c, int ldc);

  std::vector<int> layers_;
  std::vector<float> param_buf_;
  std::vector<float> grad_buf_;
  std::vector<ParamTensor> params_;
  // acts_[i]: n x layers_[i+1] output of layer i (post-ReLU for hidden layers, logits for
  // the last). Backward overwrites each with that layer's pre-activation gradient dZ once
  // the activation is no longer needed, so backward needs only one extra buffer.
  std::vector<std::vector<float>> acts_;
  std::vector<float> scratch_;  // dA of the layer below, before the ReLU mask
  int rows_capacity_ = 0;
  double sgemm_seconds_ = 0;
};

// Builds an MlpModel after ValidateMlpLayers; {784, 256, 128, 10} is the MNIST example.
StatusOr<std::unique_ptr<Model>> MakeMlp(const std::vector<int>& layers, uint64_t seed);

}  // namespace shoal
