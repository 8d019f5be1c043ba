// CudaMlpModel: the cuBLAS twin of MlpModel (same layers, same parameter layout and
// initial weights, same loss and gradient contract) behind the Model interface, with
// batches staged through pinned host memory on a copy stream ahead of use.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/models/model.h"

namespace shoal {

class CudaMlpModel : public Model {
 public:
  // kUnavailable where there is no usable GPU (callers fall back to MakeMlp). Weights
  // are MlpModel's for the same seed, so CPU and GPU runs start identical.
  static StatusOr<std::unique_ptr<CudaMlpModel>> Create(const std::vector<int>& layers, uint64_t seed,
                                                        int device = 0);
  ~CudaMlpModel() override;
  CudaMlpModel(const CudaMlpModel&) = delete;
  CudaMlpModel& operator=(const CudaMlpModel&) = delete;

  // params() point into pinned host mirrors, so the trainer's optimizer, broadcasts and
  // checkpoints work unchanged. With host_sync (the default) each ForwardBackward
  // uploads the parameters first and leaves the gradients in the host mirrors.
  std::vector<ParamTensor>& params() override { return params_; }
  size_t num_parameters() const override { return total_; }
  double ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) override;
  EvalResult Evaluate(const Batch& batch) override;
  double TakeSgemmSeconds() override;

  // Starts copying `batch` to the device now (pinned staging, copy stream); the next
  // ForwardBackward on the same batch (same x pointer and n) uses it without waiting.
  Status Prefetch(const Batch& batch);

  // Device-resident training (NCCL overlap, benchmarks): no host copies per step.
  // grad_ready_event(i) is recorded on the compute stream once layer i's gradients
  // (params 2i and 2i+1) are final.
  void set_host_sync(bool on) { host_sync_ = on; }
  float* device_params() { return d_params_; }
  float* device_grads() { return d_grads_; }
  cudaStream_t compute_stream() const { return compute_; }
  cudaEvent_t grad_ready_event(int layer) const { return grad_ready_[layer]; }
  Status SgdStepOnDevice(float lr);
  Status UploadParams();   // host mirrors -> device
  Status DownloadGrads();  // device -> host mirrors (synchronous)
  Status last_error() const { return last_error_; }

 private:
  CudaMlpModel(const std::vector<int>& layers, int device);
  Status Init(uint64_t seed);
  Status EnsureRows(int n);
  // Copies `batch` into a staging slot, or (use_prefetched) takes the slot Prefetch
  // filled for it. Contents are captured at the call: the caller may reuse its buffer.
  Status StageBatch(const Batch& batch, bool use_prefetched, int* slot);
  Status Forward(const float* x, int n);
  Status RunForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready, double* loss);
  Status Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc);
  int num_layers() const { return static_cast<int>(layers_.size()) - 1; }

  std::vector<int> layers_;
  int device_;
  size_t total_ = 0;
  std::vector<size_t> offsets_;  // of params_[i] in the flat buffers
  float* h_params_ = nullptr;    // pinned mirrors
  float* h_grads_ = nullptr;
  float* d_params_ = nullptr;
  float* d_grads_ = nullptr;
  std::vector<ParamTensor> params_;

  cublasHandle_t cublas_ = nullptr;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  std::vector<cudaEvent_t> grad_ready_, grads_copied_;
  // Event pairs around each product of a step, summed after the step for the sgemm share.
  std::vector<cudaEvent_t> gemm_events_;
  size_t gemm_events_used_ = 0;

  // Device activations as in MlpModel: acts_[i] is layer i's output, then its dZ.
  std::vector<float*> acts_;
  float* scratch_ = nullptr;
  double* d_loss_rows_ = nullptr;
  std::vector<double> h_loss_rows_;
  int rows_capacity_ = 0;

  // Two staging slots so the next batch copies while this one computes.
  struct Slot {
    float* h_x = nullptr;
    int32_t* h_y = nullptr;
    float* d_x = nullptr;
    int32_t* d_y = nullptr;
    int capacity = 0;
    const float* key = nullptr;  // the prefetched batch it holds, until used once
    int n = -1;
    cudaEvent_t staged = nullptr;    // copy finished
    cudaEvent_t consumed = nullptr;  // compute finished reading it
  };
  Slot slots_[2];
  int next_slot_ = 0;
  bool host_sync_ = true;
  double sgemm_seconds_ = 0;
  Status last_error_;
};

}  // namespace shoal
