// Codec `powersgd` (Vogels et al., 2019): each large matrix gradient M (rows x cols)
// travels as two thin factors P (rows x r) and Q (cols x r), one power iteration per
// step warm-started from the previous Q, with error feedback of what rank r missed.
//
// The products are skinny (r is small), so their cost is memory traffic over the
// bucket, not flops. Per compressed tensor the bucket is streamed three times, by the
// kernels in powersgd_kernels.h, and M never leaves it:
//   A. M = grad + residual, in the bucket in place, and P = M Q from the same rows.
//   B. Q_local = M^T P^, the rows of M accumulated into a cols x r sum held in cache.
//   C. after Q's allreduce: the output P^ Q_sum^T over M in the bucket, and the
//      residual M - output / world written to a fresh buffer with inf/NaN zeroed.
#include <algorithm>
#include <cmath>
#include <vector>

#include "collectives/compression/codec_internal.h"
#include "collectives/compression/powersgd_kernels.h"

namespace shoal::compression {
namespace {

// Columns whose length after removing the earlier columns falls below this fraction of
// their original length are (numerically) in the span of the earlier ones; they are
// zeroed rather than normalised, since normalising rounding noise gives a direction
// that is not orthogonal to the rest.
constexpr double kDependentColumn = 1e-6;

struct Compressed {
  uint32_t index;  // in the bucket's tensor list (the Q state key)
  size_t offset, rows, cols;
  size_t p_at, q_at;  // offsets of its P in the first message and its Q in the second
};

// The bucket split into what is compressed (`big`, with the factors' offsets in the
// messages) and what is sent uncompressed (`plain`, [begin, end) ranges in bucket
// order: 1-D tensors, matrices compressing under 2x, gaps between tensors; ranges,
// not indices, since buckets hold millions).
struct Partition {
  std::vector<Compressed> big;
  std::vector<std::pair<size_t, size_t>> plain;
  size_t p_total = 0, q_total = 0, plain_total = 0;
};

Partition Split(const std::vector<TensorSlice>& tensors, size_t count, int r) {
  Partition out;
  std::vector<std::pair<size_t, size_t>> spans;  // compressed [begin, end)
  for (uint32_t t = 0; t < tensors.size(); ++t) {
    const TensorSlice& s = tensors[t];
    if (s.rows < 2 || s.cols < 2) continue;
    // Compression ratio rows*cols / (r*(rows+cols)) >= 2, in integers.
    if (s.rows * s.cols < 2 * static_cast<size_t>(r) * (s.rows + s.cols)) continue;
    out.big.push_back({t, s.offset, s.rows, s.cols, out.p_total, out.q_total});
    out.p_total += s.rows * r;
    out.q_total += s.cols * r;
    spans.emplace_back(s.offset, s.offset + s.numel());
  }
  std::sort(spans.begin(), spans.end());
  size_t at = 0;
  for (const auto& [b, e] : spans) {
    if (b > at) out.plain.emplace_back(at, b);
    at = e;
  }
  if (at < count) out.plain.emplace_back(at, count);
  for (const auto& [b, e] : out.plain) out.plain_total += e - b;
  return out;
}

void AddInPlace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

class PowerSgdCodec : public FeedbackCodec {
 public:
  using FeedbackCodec::FeedbackCodec;

 protected:
  // Per bucket, two sum-allreduces:
  //   1. [P_1 .. P_k | every uncompressed element], P_i = M_i Q_i with M = grad +
  //      residual. The uncompressed part (1-D tensors, matrices compressing under 2x,
  //      gaps between tensors) is final after this message.
  //   2. [Q_1 .. Q_k] with Q_i = M_i^T P^_i, P^_i = Gram-Schmidt(sum of P_i).
  // Result: P^ (sum_r Q_r)^T = P^ P^^T (sum_r M_r), the projection of the SUM onto the
  // r directions found; allreducing with kSum (not average) keeps that a sum.
  // Error feedback, as the PowerSGD authors' code and PyTorch's hook do it: residual_r
  // = M_r - output / n, this rank's M minus its equal share of the decoded sum. The
  // shares sum to the output, so sum_r residual_r + output = sum_r M_r: nothing is
  // lost. (Subtracting the local approximation P^ Q_r^T instead would conserve the
  // same, but costs r more multiply-adds per element in pass C, a third of the codec's
  // arithmetic.) The allreduced Q is the next warm start (identical on every rank, as
  // P^ is).
  Status DoReduce(float* bucket, size_t count, const std::vector<TensorSlice>& tensors,
                  uint64_t bucket_id, int64_t step, Communicator* comm,
                  const CollectiveOptions& opts, Update* update) override {
    const float* old_residual;
    RETURN_IF_ERROR(Residual(bucket_id, count, &old_residual));
    const StateKey residual_key{StateKind::kResidual, bucket_id, 0};
    if (step < options_.powersgd_warmup_steps) {
      // Uncompressed warm-up: everything is sent, nothing is left over.
      if (old_residual != nullptr) AddInPlace(bucket, old_residual, count);
      if (options_.record_contributions) update->contribution.assign(bucket, bucket + count);
      update->erase.push_back(residual_key);
      return comm->AllReduce(bucket, count, DType::kF32, ReduceOp::kSum, opts);
    }

    const int r = options_.powersgd_rank;
    const auto [big, plain, p_total, q_total, plain_total] = Split(tensors, count, r);

    // Pass A, and message 1: P factors, then the uncompressed elements.
    std::vector<float> msg1(p_total + plain_total);
    std::vector<float> panels;  // one tensor's Q in the kernels' layout
    for (const Compressed& c : big) {
      panels.resize(psgd::PanelSize(c.cols, r));
      psgd::ToPanels(WarmStart(bucket_id, c, step, r).data(), c.cols, r, panels.data());
      const float* res = old_residual ? old_residual + c.offset : nullptr;
      psgd::AddAndProject(bucket + c.offset, res, c.rows, c.cols, panels.data(), r, msg1.data() + c.p_at);
    }
    float* packed = msg1.data() + p_total;
    for (const auto& [b, e] : plain) {
      if (old_residual != nullptr) AddInPlace(bucket + b, old_residual + b, e - b);
      packed = std::copy(bucket + b, bucket + e, packed);
    }
    std::vector<float> before;  // M, kept only to record contributions (tests)
    if (options_.record_contributions) before.assign(bucket, bucket + count);
    RETURN_IF_ERROR(comm->AllReduce(msg1.data(), msg1.size(), DType::kF32, ReduceOp::kSum, opts));
    const float* summed = msg1.data() + p_total;
    for (const auto& [b, e] : plain) {
      std::copy(summed, summed + (e - b), bucket + b);
      summed += e - b;
    }

    // Pass B, and message 2: local Q = M^T P^.
    std::vector<float> msg2(q_total);
    for (const Compressed& c : big) {
      float* p = msg1.data() + c.p_at;
      Orthogonalise(p, c.rows, r);
      panels.resize(psgd::PanelSize(c.cols, r));
      psgd::ProjectBack(bucket + c.offset, c.rows, c.cols, p, r, panels.data());
      psgd::FromPanels(panels.data(), c.cols, r, msg2.data() + c.q_at);
    }
    RETURN_IF_ERROR(comm->AllReduce(msg2.data(), msg2.size(), DType::kF32, ReduceOp::kSum, opts));
    if (big.empty()) {
      update->erase.push_back(residual_key);  // everything went out exactly
      if (options_.record_contributions) update->contribution = std::move(before);
      return OkStatus();
    }

    // Pass C: the output P^ Q_sum^T and the residual M - output / n, from one read of M.
    Floats residual = Borrow(count);
    for (const auto& [b, e] : plain) std::fill(residual.begin() + b, residual.begin() + e, 0.0f);  // sent exactly
    const float share = 1.0f / static_cast<float>(comm->size());
    for (const Compressed& c : big) {
      const float* q = msg2.data() + c.q_at;
      panels.resize(psgd::PanelSize(c.cols, r));
      psgd::ToPanels(q, c.cols, r, panels.data());
      psgd::Decode(bucket + c.offset, c.rows, c.cols, msg1.data() + c.p_at, r, panels.data(), share,
                   residual.data() + c.offset);
      update->set[{StateKind::kPowerSgdQ, bucket_id, c.index}].assign(q, q + c.cols * r);
    }
    if (options_.record_contributions) {
      update->contribution.resize(count);
      for (size_t i = 0; i < count; ++i) update->contribution[i] = before[i] - residual[i];
    }
    update->set[residual_key] = std::move(residual);
    update->state_finite = true;  // Decode zeroed non-finite residuals; the rest is 0
    return OkStatus();
  }

 private:
  // The previous step's summed Q, or a fresh Gaussian one from the shared seed and
  // (bucket, tensor, step), the same on every rank. A column that came back zero or
  // non-finite (a zero gradient, or a direction Gram-Schmidt dropped) is redrawn, or
  // the power iteration could never leave it.
  std::vector<float> WarmStart(uint64_t bucket_id, const Compressed& c, int64_t step, int r) const {
    const Floats* prev = Find({StateKind::kPowerSgdQ, bucket_id, c.index});
    std::vector<float> q;
    if (prev != nullptr && prev->size() == c.cols * r) q.assign(prev->begin(), prev->end());
    else q.assign(c.cols * r, 0.0f);
    const uint64_t key = StreamKey({options_.seed, bucket_id, c.index, static_cast<uint64_t>(step)});
    for (int j = 0; j < r; ++j) {
      double norm = 0;
      for (size_t i = 0; i < c.cols; ++i) norm += double(q[i * r + j]) * q[i * r + j];
      if (std::isfinite(norm) && norm > 0) continue;
      for (size_t i = 0; i < c.cols; ++i) q[i * r + j] = NormalAt(key, i * r + j);
    }
    return q;
  }
};

// sum_i p[i][a] * p[i][b] over a rows x r row-major matrix, in double. Four partial sums
// (rows 4k, 4k+1, ...): one running sum is a chain of dependent adds, and this was a
// tenth of the codec's time on the example job's small matrices. The order is fixed, so
// every rank still gets the same bits.
double ColumnDot(const float* p, size_t rows, int r, int a, int b) {
  double s[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    for (int k = 0; k < 4; ++k) s[k] += double(p[(i + k) * r + a]) * p[(i + k) * r + b];
  }
  for (; i < rows; ++i) s[0] += double(p[i * r + a]) * p[i * r + b];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace

// Gram-Schmidt on the columns of p (rows x r, row-major), in place: the columns
// become orthonormal or zero. Modified Gram-Schmidt run twice per column ("twice is
// enough", Giraud et al.), with double accumulators, keeps P^T P = I to f32 precision
// even for nearly dependent columns. Deterministic, so every rank gets the same P.
void Orthogonalise(float* p, size_t rows, int r) {
  for (int j = 0; j < r; ++j) {
    const double original = ColumnDot(p, rows, r, j, j);
    for (int pass = 0; pass < 2; ++pass) {
      for (int k = 0; k < j; ++k) {
        const float d = static_cast<float>(ColumnDot(p, rows, r, k, j));
        for (size_t i = 0; i < rows; ++i) p[i * r + j] -= d * p[i * r + k];
      }
    }
    const double norm = std::sqrt(ColumnDot(p, rows, r, j, j));
    const bool keep = std::isfinite(norm) && norm > 0 && norm > kDependentColumn * std::sqrt(original);
    const float scale = keep ? static_cast<float>(1.0 / norm) : 0.0f;
    for (size_t i = 0; i < rows; ++i) p[i * r + j] *= scale;
  }
}

std::unique_ptr<GradientCodec> MakePowerSgdCodec(const CodecOptions& options) {
  return std::make_unique<PowerSgdCodec>(options);
}

}  // namespace shoal::compression
