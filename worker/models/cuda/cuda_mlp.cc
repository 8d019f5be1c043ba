// CudaMlpModel: MlpModel's algorithm on the GPU. Products go to cuBLAS with the CPU
// twin's own row-major arguments (RowMajorSgemm); bias+ReLU, softmax cross-entropy and
// ReLU backward are fused kernels; gradients of a layer are announced as soon as final.
#include "worker/models/cuda/cuda_mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/nvml/cublas_gemm.h"
#include "common/nvml/cuda_device.h"
#include "worker/models/cuda/mlp_kernels.h"
#include "worker/models/mlp.h"

namespace shoal {
namespace {

constexpr int kEvalChunkRows = 1024;  // as MlpModel: bounded activation memory in Evaluate

}  // namespace

CudaMlpModel::CudaMlpModel(const std::vector<int>& layers, int device) : layers_(layers), device_(device) {}

StatusOr<std::unique_ptr<CudaMlpModel>> CudaMlpModel::Create(const std::vector<int>& layers, uint64_t seed,
                                                             int device) {
  RETURN_IF_ERROR(ValidateMlpLayers(layers));
  const CudaProbe& probe = ProbeCudaDevices();
  if (probe.device_count == 0) return Unavailable("cuda mlp: no GPU: " + probe.reason);
  if (device < 0 || device >= probe.device_count) {
    return InvalidArgument("cuda mlp: device " + std::to_string(device) + " outside [0, " +
                           std::to_string(probe.device_count) + ")");
  }
  std::unique_ptr<CudaMlpModel> m(new CudaMlpModel(layers, device));
  RETURN_IF_ERROR(m->Init(seed));
  return m;
}

Status CudaMlpModel::Init(uint64_t seed) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  // The CPU twin defines layout and initial weights; copying them keeps the two
  // bit-identical at step 0 without a second initialiser to keep in sync.
  MlpModel cpu(layers_, seed);
  total_ = cpu.num_parameters();
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&h_params_, total_ * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&h_grads_, total_ * sizeof(float)));
  std::memcpy(h_params_, cpu.param_buffer(), total_ * sizeof(float));
  std::memset(h_grads_, 0, total_ * sizeof(float));
  for (const ParamTensor& t : cpu.params()) {
    const size_t off = static_cast<size_t>(t.data - cpu.param_buffer());
    offsets_.push_back(off);
    params_.push_back({t.name, t.shape, h_params_ + off, h_grads_ + off, t.numel});
  }
  CUDA_RETURN_IF_ERROR(cudaMalloc(&d_params_, total_ * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&d_grads_, total_ * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, compute_));
  grad_ready_.resize(num_layers());
  grads_copied_.resize(num_layers());
  for (int i = 0; i < num_layers(); ++i) {
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&grad_ready_[i], cudaEventDisableTiming));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&grads_copied_[i], cudaEventDisableTiming));
  }
  for (Slot& s : slots_) {
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&s.staged, cudaEventDisableTiming));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&s.consumed, cudaEventDisableTiming));
  }
  acts_.assign(num_layers(), nullptr);
  return UploadParams();
}

CudaMlpModel::~CudaMlpModel() {
  if (compute_) cudaStreamSynchronize(compute_);
  if (copy_) cudaStreamSynchronize(copy_);
  for (float* a : acts_) cudaFree(a);
  cudaFree(scratch_);
  cudaFree(d_loss_rows_);
  for (Slot& s : slots_) {
    cudaFreeHost(s.h_x);
    cudaFreeHost(s.h_y);
    cudaFree(s.d_x);
    cudaFree(s.d_y);
    if (s.staged) cudaEventDestroy(s.staged);
    if (s.consumed) cudaEventDestroy(s.consumed);
  }
  for (cudaEvent_t e : grad_ready_) cudaEventDestroy(e);
  for (cudaEvent_t e : grads_copied_) cudaEventDestroy(e);
  for (cudaEvent_t e : gemm_events_) cudaEventDestroy(e);
  if (cublas_) cublasDestroy(cublas_);
  if (compute_) cudaStreamDestroy(compute_);
  if (copy_) cudaStreamDestroy(copy_);
  cudaFree(d_params_);
  cudaFree(d_grads_);
  cudaFreeHost(h_params_);
  cudaFreeHost(h_grads_);
}

Status CudaMlpModel::UploadParams() {
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_params_, h_params_, total_ * sizeof(float), cudaMemcpyHostToDevice, compute_));
  return OkStatus();
}

Status CudaMlpModel::DownloadGrads() {
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h_grads_, d_grads_, total_ * sizeof(float), cudaMemcpyDeviceToHost, compute_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));
  return OkStatus();
}

Status CudaMlpModel::SgdStepOnDevice(float lr) { return gpu_mlp::SgdStep(d_params_, d_grads_, total_, lr, compute_); }

Status CudaMlpModel::EnsureRows(int n) {
  if (n <= rows_capacity_) return OkStatus();
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));  // old buffers may be in use
  int widest_hidden = 1;
  for (int i = 0; i < num_layers(); ++i) {
    cudaFree(acts_[i]);
    acts_[i] = nullptr;
    CUDA_RETURN_IF_ERROR(cudaMalloc(&acts_[i], size_t(n) * layers_[i + 1] * sizeof(float)));
    if (i > 0) widest_hidden = std::max(widest_hidden, layers_[i]);
  }
  cudaFree(scratch_);
  scratch_ = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&scratch_, size_t(n) * widest_hidden * sizeof(float)));
  cudaFree(d_loss_rows_);
  d_loss_rows_ = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&d_loss_rows_, size_t(n) * sizeof(double)));
  h_loss_rows_.resize(n);
  rows_capacity_ = n;
  return OkStatus();
}

Status CudaMlpModel::StageBatch(const Batch& batch, bool use_prefetched, int* slot_out) {
  for (int i = 0; i < 2 && use_prefetched; ++i) {
    if (slots_[i].key == batch.x && slots_[i].n == batch.n) {
      slots_[i].key = nullptr;  // used once: a reused buffer with new contents is copied again
      *slot_out = i;
      return OkStatus();
    }
  }
  const int i = next_slot_;
  next_slot_ = 1 - next_slot_;
  Slot& s = slots_[i];
  const int dim = layers_.front();
  // The pinned buffer may still feed this slot's previous copy; the device buffer may
  // still be read by the previous step's kernels.
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(s.staged));
  if (batch.n > s.capacity) {
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));
    cudaFreeHost(s.h_x);
    cudaFreeHost(s.h_y);
    cudaFree(s.d_x);
    cudaFree(s.d_y);
    s.h_x = s.d_x = nullptr;
    s.h_y = s.d_y = nullptr;
    s.capacity = 0;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&s.h_x, size_t(batch.n) * dim * sizeof(float)));
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&s.h_y, size_t(batch.n) * sizeof(int32_t)));
    CUDA_RETURN_IF_ERROR(cudaMalloc(&s.d_x, size_t(batch.n) * dim * sizeof(float)));
    CUDA_RETURN_IF_ERROR(cudaMalloc(&s.d_y, size_t(batch.n) * sizeof(int32_t)));
    s.capacity = batch.n;
  }
  std::memcpy(s.h_x, batch.x, size_t(batch.n) * dim * sizeof(float));
  std::memcpy(s.h_y, batch.y, size_t(batch.n) * sizeof(int32_t));
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_, s.consumed, 0));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.d_x, s.h_x, size_t(batch.n) * dim * sizeof(float), cudaMemcpyHostToDevice, copy_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.d_y, s.h_y, size_t(batch.n) * sizeof(int32_t), cudaMemcpyHostToDevice, copy_));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(s.staged, copy_));
  s.key = use_prefetched ? nullptr : batch.x;  // only Prefetch leaves a batch to be found
  s.n = batch.n;
  *slot_out = i;
  return OkStatus();
}

Status CudaMlpModel::Prefetch(const Batch& batch) {
  if (batch.n <= 0) return OkStatus();
  int slot = 0;
  return StageBatch(batch, /*use_prefetched=*/false, &slot);
}

Status CudaMlpModel::Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
                          float* c, int ldc) {
  while (gemm_events_.size() < gemm_events_used_ + 2) {
    cudaEvent_t e;
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    gemm_events_.push_back(e);
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(gemm_events_[gemm_events_used_++], compute_));
  RETURN_IF_ERROR(RowMajorSgemm(cublas_, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(gemm_events_[gemm_events_used_++], compute_));
  return OkStatus();
}

double CudaMlpModel::TakeSgemmSeconds() {
  // Called after steps have synchronised; sum the event pairs recorded since last time.
  for (size_t i = 0; i + 1 < gemm_events_used_; i += 2) {
    float ms = 0;
    if (cudaEventSynchronize(gemm_events_[i + 1]) == cudaSuccess &&
        cudaEventElapsedTime(&ms, gemm_events_[i], gemm_events_[i + 1]) == cudaSuccess) {
      sgemm_seconds_ += ms / 1e3;
    }
  }
  gemm_events_used_ = 0;
  const double s = sgemm_seconds_;
  sgemm_seconds_ = 0;
  return s;
}

Status CudaMlpModel::Forward(const float* x, int n) {
  const int L = num_layers();
  const float* in = x;
  for (int i = 0; i < L; ++i) {
    const int in_w = layers_[i], out_w = layers_[i + 1];
    const float* w = d_params_ + offsets_[2 * i];
    const float* bias = d_params_ + offsets_[2 * i + 1];
    RETURN_IF_ERROR(Gemm(false, true, n, out_w, in_w, in, in_w, w, in_w, acts_[i], out_w));  // Z = A W^T
    RETURN_IF_ERROR(gpu_mlp::BiasAct(acts_[i], bias, n, out_w, /*relu=*/i + 1 < L, compute_));
    in = acts_[i];
  }
  return OkStatus();
}

Status CudaMlpModel::RunForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready,
                                        double* loss) {
  const int L = num_layers();
  const int n = std::max(batch.n, 0);
  *loss = 0;
  if (gemm_events_used_ > 64) TakeSgemmSeconds();  // bound the event pool between reports
  if (host_sync_) RETURN_IF_ERROR(UploadParams());
  if (n == 0) {
    // An empty shard still joins the allreduce: zeros for every tensor.
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(d_grads_, 0, total_ * sizeof(float), compute_));
    if (host_sync_) RETURN_IF_ERROR(DownloadGrads());
    for (int i = L - 1; i >= 0; --i) {
      CUDA_RETURN_IF_ERROR(cudaEventRecord(grad_ready_[i], compute_));
      if (on_ready) {
        on_ready(2 * i);
        on_ready(2 * i + 1);
      }
    }
    return OkStatus();
  }
  RETURN_IF_ERROR(EnsureRows(n));
  int slot = 0;
  RETURN_IF_ERROR(StageBatch(batch, /*use_prefetched=*/true, &slot));
  Slot& s = slots_[slot];
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(compute_, s.staged, 0));
  RETURN_IF_ERROR(Forward(s.d_x, n));
  const int classes = layers_.back();
  RETURN_IF_ERROR(gpu_mlp::SoftmaxXent(acts_[L - 1], s.d_y, n, classes, grad_scale, d_loss_rows_,
                                       d_grads_ + offsets_[2 * L - 1], compute_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h_loss_rows_.data(), d_loss_rows_, size_t(n) * sizeof(double),
                                       cudaMemcpyDeviceToHost, compute_));
  for (int i = L - 1; i >= 0; --i) {
    const int in_w = layers_[i], out_w = layers_[i + 1];
    const float* a_prev = i > 0 ? acts_[i - 1] : s.d_x;
    const float* dz = acts_[i];
    float* dw = d_grads_ + offsets_[2 * i];
    RETURN_IF_ERROR(Gemm(true, false, out_w, in_w, n, dz, out_w, a_prev, in_w, dw, in_w));  // dW = dZ^T A
    CUDA_RETURN_IF_ERROR(cudaEventRecord(grad_ready_[i], compute_));
    if (i == 0) CUDA_RETURN_IF_ERROR(cudaEventRecord(s.consumed, compute_));
    if (host_sync_) {
      // Layer i's weight and bias are adjacent: one copy on the copy stream, while the
      // compute stream goes on with the layers below.
      const size_t off = offsets_[2 * i], len = params_[2 * i].numel + params_[2 * i + 1].numel;
      CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_, grad_ready_[i], 0));
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h_grads_ + off, d_grads_ + off, len * sizeof(float),
                                           cudaMemcpyDeviceToHost, copy_));
      CUDA_RETURN_IF_ERROR(cudaEventRecord(grads_copied_[i], copy_));
    }
    if (i > 0) {
      // dA_prev = dZ W, then the ReLU mask makes it dZ_prev over A_prev, with layer i-1's
      // bias gradient in the same pass. Queued before we block on layer i's copy below.
      RETURN_IF_ERROR(Gemm(false, false, n, in_w, out_w, dz, out_w, d_params_ + offsets_[2 * i], in_w, scratch_, in_w));
      RETURN_IF_ERROR(gpu_mlp::ReluBackward(acts_[i - 1], scratch_, d_grads_ + offsets_[2 * i - 1], n, in_w, compute_));
    }
    if (on_ready) {
      CUDA_RETURN_IF_ERROR(cudaEventSynchronize(host_sync_ ? grads_copied_[i] : grad_ready_[i]));
      on_ready(2 * i);
      on_ready(2 * i + 1);
    }
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));
  if (host_sync_) CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(copy_));
  for (int r = 0; r < n; ++r) *loss += h_loss_rows_[r];  // in row order, like the CPU twin
  return OkStatus();
}

double CudaMlpModel::ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) {
  double loss = 0;
  last_error_ = RunForwardBackward(batch, grad_scale, on_ready, &loss);
  // The interface has no Status: a device failure shows as a NaN loss, which trips the
  // trainer's divergence check; last_error() says what happened.
  return last_error_.ok() ? loss : std::numeric_limits<double>::quiet_NaN();
}

EvalResult CudaMlpModel::Evaluate(const Batch& batch) {
  EvalResult result;
  const int n = std::max(batch.n, 0);
  const int in_w = layers_.front(), classes = layers_.back();
  const int chunk = std::max(rows_capacity_, kEvalChunkRows);
  std::vector<float> logits;
  last_error_ = host_sync_ ? UploadParams() : OkStatus();
  for (int start = 0; start < n && last_error_.ok(); start += chunk) {
    const int m = std::min(chunk, n - start);
    const Batch part{batch.x + size_t(start) * in_w, batch.y + start, m};
    int slot = 0;
    last_error_ = EnsureRows(m);
    if (last_error_.ok()) last_error_ = StageBatch(part, /*use_prefetched=*/true, &slot);
    if (!last_error_.ok()) break;
    cudaStreamWaitEvent(compute_, slots_[slot].staged, 0);
    last_error_ = Forward(slots_[slot].d_x, m);
    if (!last_error_.ok()) break;
    cudaEventRecord(slots_[slot].consumed, compute_);
    logits.resize(size_t(m) * classes);
    cudaMemcpyAsync(logits.data(), acts_.back(), logits.size() * sizeof(float), cudaMemcpyDeviceToHost, compute_);
    if (cudaStreamSynchronize(compute_) != cudaSuccess) {
      last_error_ = Internal("cuda mlp: evaluation failed on the device");
      break;
    }
    ScoreLogits(logits.data(), part.y, m, classes, &result);  // exactly as MlpModel does
  }
  result.count = n;
  if (!last_error_.ok()) result.loss_sum = std::numeric_limits<double>::quiet_NaN();
  return result;
}

}  // namespace shoal
