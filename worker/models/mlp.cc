// MlpModel: forward, backward and evaluation of the CPU MLP with row-major cblas_sgemm.
// Every matrix product uses BLAS transposes instead of transposed copies, and the
// elementwise work (bias, ReLU, its mask, bias gradients) is fused into single passes.
#include "worker/models/mlp.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

namespace shoal {
namespace {

// Evaluate walks large batches in blocks of this many rows so that scoring a whole test
// set does not grow the activation buffers far beyond the training batch for good.
constexpr int kEvalChunkRows = 1024;

// Upper bounds that keep every BLAS int argument and every row offset in range.
constexpr int64_t kMaxWidth = int64_t{1} << 24;
constexpr int64_t kMaxParameters = int64_t{1} << 31;

// Uniform in [-bound, bound) from the top 24 bits of one mt19937_64 draw. Hand-rolled
// because std::uniform_real_distribution's algorithm is left to each standard library,
// and ranks and restarts must agree bit for bit on the initial weights for a seed.
float UniformFromBits(uint64_t bits, float bound) {
  const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return (2.0f * u - 1.0f) * bound;
}

// The elementwise passes below take __restrict pointers: without them the compiler must
// assume the activation, gradient and bias rows overlap and emits a scalar, branchy loop
// (measured ~10% of a {784,256,128,10} step); with them each inner loop vectorises.

// z[r][j] += bias[j], then ReLU when `relu`: one pass over the sgemm output.
void AddBiasMaybeRelu(float* __restrict z, const float* __restrict bias, int rows, int width, bool relu) {
  for (int r = 0; r < rows; ++r) {
    float* __restrict row = z + size_t(r) * width;
    if (relu) {
      for (int j = 0; j < width; ++j) row[j] = std::max(row[j] + bias[j], 0.0f);
    } else {
      for (int j = 0; j < width; ++j) row[j] += bias[j];
    }
  }
}

// ReLU backward in place over the activations: a <- (a > 0 ? da : 0), which is dZ of the
// layer below; db receives its column sums (that layer's bias gradient) in the same pass.
void ReluBackwardWithBiasGrad(float* __restrict a, const float* __restrict da, float* __restrict db,
                              int rows, int width) {
  std::fill(db, db + width, 0.0f);
  for (int r = 0; r < rows; ++r) {
    float* __restrict a_row = a + size_t(r) * width;
    const float* __restrict d_row = da + size_t(r) * width;
    for (int j = 0; j < width; ++j) {
      const float g = a_row[j] > 0.0f ? d_row[j] : 0.0f;
      a_row[j] = g;
      db[j] += g;
    }
  }
}

}  // namespace

void ScoreLogits(const float* logits, const int32_t* labels, int rows, int classes, EvalResult* result) {
  for (int r = 0; r < rows; ++r) {
    const float* row = logits + size_t(r) * classes;
    const int y = labels[r];
    const int best = static_cast<int>(std::max_element(row, row + classes) - row);
    if (y < 0 || y >= classes) {
      result->loss_sum += std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    const float mx = row[best];
    double sum = 0;
    for (int j = 0; j < classes; ++j) sum += std::exp(row[j] - mx);
    result->loss_sum += std::log(sum) + mx - row[y];
    result->correct += best == y ? 1 : 0;
  }
}

void SetBlasThreads(int n) { openblas_set_num_threads(std::max(1, n)); }

Status ValidateMlpLayers(const std::vector<int>& layers) {
  if (layers.size() < 2) {
    return InvalidArgument("model.layers needs at least two widths (input and classes), got " +
                           std::to_string(layers.size()));
  }
  int64_t total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] <= 0 || layers[i] > kMaxWidth) {
      return InvalidArgument("model.layers[" + std::to_string(i) + "] = " + std::to_string(layers[i]) +
                             " must be in [1, " + std::to_string(kMaxWidth) + "]");
    }
    if (i > 0) total += int64_t{layers[i]} * layers[i - 1] + layers[i];
    if (total > kMaxParameters) {
      return InvalidArgument("model.layers describe more than 2^31 parameters; this CPU MLP "
                             "is meant for small models");
    }
  }
  return OkStatus();
}

MlpModel::MlpModel(const std::vector<int>& layers, uint64_t seed) : layers_(layers) {
  const int L = num_layers();
  size_t total = 0;
  for (int i = 0; i < L; ++i) total += size_t(layers_[i + 1]) * layers_[i] + layers_[i + 1];
  param_buf_.assign(total, 0.0f);
  grad_buf_.assign(total, 0.0f);

  std::mt19937_64 rng(seed);
  size_t offset = 0;
  for (int i = 0; i < L; ++i) {
    const int in = layers_[i], out = layers_[i + 1];
    const size_t w_numel = size_t(out) * in;
    // Kaiming uniform with the ReLU gain: Var(w) = 2 / fan_in keeps activation variance
    // roughly constant through the ReLU layers.
    const float bound = std::sqrt(6.0f / static_cast<float>(in));
    for (size_t k = 0; k < w_numel; ++k) param_buf_[offset + k] = UniformFromBits(rng(), bound);
    const std::string prefix = "fc" + std::to_string(i);
    params_.push_back({prefix + ".weight", {out, in}, &param_buf_[offset], &grad_buf_[offset], w_numel});
    offset += w_numel;
    params_.push_back({prefix + ".bias", {out}, &param_buf_[offset], &grad_buf_[offset], size_t(out)});
    offset += out;  // biases stay zero
  }
  acts_.resize(L);
}

void MlpModel::Gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda,
                    const float* b, int ldb, float* c, int ldc) {
  const auto t0 = std::chrono::steady_clock::now();
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  sgemm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double MlpModel::TakeSgemmSeconds() {
  const double s = sgemm_seconds_;
  sgemm_seconds_ = 0;
  return s;
}

void MlpModel::EnsureRows(int n) {
  if (n <= rows_capacity_) return;  // grow only: steady state allocates nothing
  const int L = num_layers();
  int widest_hidden = 0;
  for (int i = 0; i < L; ++i) acts_[i].resize(size_t(n) * layers_[i + 1]);
  for (int i = 1; i < L; ++i) widest_hidden = std::max(widest_hidden, layers_[i]);
  scratch_.resize(size_t(n) * widest_hidden);
  rows_capacity_ = n;
}

void MlpModel::Forward(const float* x, int n) {
  const int L = num_layers();
  const float* in = x;
  for (int i = 0; i < L; ++i) {
    const int in_w = layers_[i], out_w = layers_[i + 1];
    const float* w = params_[2 * i].data;
    const float* bias = params_[2 * i + 1].data;
    float* z = acts_[i].data();
    Gemm(false, true, n, out_w, in_w, in, in_w, w, in_w, z, out_w);  // Z = A W^T
    AddBiasMaybeRelu(z, bias, n, out_w, /*relu=*/i + 1 < L);
    in = z;
  }
}

double MlpModel::ForwardBackward(const Batch& batch, float grad_scale, const GradReadyFn& on_ready) {
  const int L = num_layers();
  const int n = std::max(batch.n, 0);
  if (n == 0) {
    // An empty shard still joins the allreduce, so it must publish zeros for every tensor.
    std::fill(grad_buf_.begin(), grad_buf_.end(), 0.0f);
    for (int i = L - 1; i >= 0; --i) {
      if (on_ready) {
        on_ready(2 * i);
        on_ready(2 * i + 1);
      }
    }
    return 0.0;
  }
  EnsureRows(n);
  Forward(batch.x, n);

  // Softmax cross-entropy and its gradient in one pass, in place over the logits:
  // dZ = grad_scale * (softmax(z) - onehot(y)). Folding grad_scale in here makes every
  // later gradient carry it for free. The last bias gradient (a column sum) rides along.
  const int classes = layers_.back();
  float* dz = acts_[L - 1].data();
  float* db = params_[2 * L - 1].grad;
  std::fill(db, db + classes, 0.0f);
  double loss_sum = 0;
  for (int r = 0; r < n; ++r) {
    float* row = dz + size_t(r) * classes;
    const int y = batch.y[r];
    const bool valid = y >= 0 && y < classes;
    const float mx = *std::max_element(row, row + classes);  // stability: exp(z - max) <= 1
    const float zy = valid ? row[y] : 0.0f;
    double sum = 0;
    for (int j = 0; j < classes; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    // log-sum-exp minus the true logit, in double: the loss sum over a batch is what
    // finite-difference checks and loss curves compare.
    loss_sum += valid ? std::log(sum) + mx - zy : std::numeric_limits<double>::quiet_NaN();
    const float scale = valid ? grad_scale : 0.0f;  // an invalid label contributes no gradient
    const float inv_sum = static_cast<float>(1.0 / sum);
    for (int j = 0; j < classes; ++j) {
      row[j] = scale * (row[j] * inv_sum - (j == y ? 1.0f : 0.0f));
      db[j] += row[j];
    }
  }

  for (int i = L - 1; i >= 0; --i) {
    const int in_w = layers_[i], out_w = layers_[i + 1];
    const float* a_prev = i > 0 ? acts_[i - 1].data() : batch.x;
    dz = acts_[i].data();
    // dW = dZ^T A_prev: (out x n)(n x in), straight into the gradient buffer.
    Gemm(true, false, out_w, in_w, n, dz, out_w, a_prev, in_w, params_[2 * i].grad, in_w);
    // Both tensors of layer i are final now; report them before the (larger) dA product
    // so their allreduce overlaps the rest of backward.
    if (on_ready) {
      on_ready(2 * i);
      on_ready(2 * i + 1);
    }
    if (i == 0) break;
    // dA_prev = dZ W: (n x out)(out x in). Then the ReLU mask turns it into dZ_prev, written
    // over A_prev (its last use is the mask itself), with layer i-1's bias gradient
    // accumulated in the same pass.
    Gemm(false, false, n, in_w, out_w, dz, out_w, params_[2 * i].data, in_w, scratch_.data(), in_w);
    ReluBackwardWithBiasGrad(acts_[i - 1].data(), scratch_.data(), params_[2 * i - 1].grad, n, in_w);
  }
  return loss_sum;
}

EvalResult MlpModel::Evaluate(const Batch& batch) {
  EvalResult result;
  const int n = std::max(batch.n, 0);
  const int in_w = layers_.front(), classes = layers_.back();
  const int chunk = std::max(rows_capacity_, kEvalChunkRows);
  for (int start = 0; start < n; start += chunk) {
    const int m = std::min(chunk, n - start);
    EnsureRows(m);
    Forward(batch.x + size_t(start) * in_w, m);
    const float* logits = acts_.back().data();
    ScoreLogits(logits, batch.y + start, m, classes, &result);
  }
  result.count = n;
  return result;
}

StatusOr<std::unique_ptr<Model>> MakeMlp(const std::vector<int>& layers, uint64_t seed) {
  RETURN_IF_ERROR(ValidateMlpLayers(layers));
  return std::unique_ptr<Model>(std::make_unique<MlpModel>(layers, seed));
}

}  // namespace shoal
