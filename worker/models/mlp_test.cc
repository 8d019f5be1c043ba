// Tests for the CPU MLP: gradients against finite differences (a double-precision
// reference and the model's own f32 loss), the grad_scale contract data parallelism relies
// on, on_ready order and finality, the empty batch, initialisation and evaluation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "worker/models/mlp.h"

namespace shoal {
namespace {

struct Data {
  std::vector<float> x;
  std::vector<int32_t> y;
  int n = 0;
  Batch batch(int start = 0, int count = -1) const {
    if (count < 0) count = n - start;
    const size_t dim = n ? x.size() / n : 0;
    return Batch{x.data() + start * dim, y.data() + start, count};
  }
};

Data RandomData(int n, int dim, int classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data d;
  d.n = n;
  for (int i = 0; i < n * dim; ++i) d.x.push_back(normal(rng));
  for (int i = 0; i < n; ++i) d.y.push_back(static_cast<int32_t>(rng() % classes));
  return d;
}

std::unique_ptr<MlpModel> Make(const std::vector<int>& layers, uint64_t seed = 42) {
  EXPECT_TRUE(ValidateMlpLayers(layers).ok());
  return std::make_unique<MlpModel>(layers, seed);
}

std::vector<float> Grads(MlpModel& m) { return {m.grad_buffer(), m.grad_buffer() + m.num_parameters()}; }

// Sum of per-sample cross-entropy losses computed entirely in double from a flat parameter
// vector in the model's layout: an independent reference for loss and gradients. If `mask`
// is given it receives which hidden units are active, row by row: the loss is smooth only
// while that pattern stays the same.
double RefLoss(const std::vector<int>& layers, const std::vector<double>& p, const Data& d,
               std::vector<bool>* mask = nullptr) {
  if (mask) mask->clear();
  const int L = static_cast<int>(layers.size()) - 1;
  double total = 0;
  for (int r = 0; r < d.n; ++r) {
    std::vector<double> a(d.x.begin() + r * layers[0], d.x.begin() + (r + 1) * layers[0]);
    size_t off = 0;
    for (int i = 0; i < L; ++i) {
      const int in = layers[i], out = layers[i + 1];
      std::vector<double> z(out);
      for (int o = 0; o < out; ++o) {
        double s = p[off + size_t(out) * in + o];
        for (int k = 0; k < in; ++k) s += p[off + size_t(o) * in + k] * a[k];
        z[o] = i + 1 < L ? std::max(s, 0.0) : s;
        if (mask && i + 1 < L) mask->push_back(s > 0);
      }
      off += size_t(out) * in + out;
      a = z;
    }
    const double mx = *std::max_element(a.begin(), a.end());
    double sum = 0;
    for (double v : a) sum += std::exp(v - mx);
    total += std::log(sum) + mx - a[d.y[r]];
  }
  return total;
}

class MlpGradient : public ::testing::TestWithParam<std::vector<int>> {};

TEST_P(MlpGradient, MatchesDoubleFiniteDifferencesOnEveryCoordinate) {
  const std::vector<int> layers = GetParam();
  auto m = Make(layers, 7);
  const Data d = RandomData(6, layers[0], layers.back(), 11);
  const double loss = m->ForwardBackward(d.batch(), 1.0f, nullptr);
  const std::vector<float> g = Grads(*m);
  std::vector<double> p(m->param_buffer(), m->param_buffer() + m->num_parameters());
  // The f32 forward of a handful of small dot products agrees with double to ~1e-6.
  EXPECT_NEAR(loss, RefLoss(layers, p, d), 1e-5 * std::abs(loss));
  // h = 1e-5 in double: truncation O(h^2) and round-off ~1e-16/h are both far below the
  // f32 gradient's own error, and a step this small almost never crosses a ReLU kink.
  const double h = 1e-5;
  for (size_t k = 0; k < p.size(); ++k) {
    const double saved = p[k];
    std::vector<bool> mask_up, mask_down;
    p[k] = saved + h;
    const double up = RefLoss(layers, p, d, &mask_up);
    p[k] = saved - h;
    const double down = RefLoss(layers, p, d, &mask_down);
    p[k] = saved;
    ASSERT_EQ(mask_up, mask_down) << "a ReLU kink within 1e-5 of coordinate " << k << "; pick another seed";
    const double fd = (up - down) / (2 * h);
    // f32 backprop through three small layers: relative error ~1e-6; 1e-4 leaves margin,
    // and the 1e-6 absolute floor covers coordinates whose gradient is ~0 (dead units).
    EXPECT_NEAR(g[k], fd, 1e-4 * std::abs(fd) + 1e-6) << "coordinate " << k;
  }
}

TEST_P(MlpGradient, MatchesF32FiniteDifferencesOfTheModelsOwnLoss) {
  const std::vector<int> layers = GetParam();
  auto m = Make(layers, 3);
  const Data d = RandomData(6, layers[0], layers.back(), 5);
  m->ForwardBackward(d.batch(), 1.0f, nullptr);
  const std::vector<float> g = Grads(*m);
  float* p = m->param_buffer();
  size_t checked = 0, skipped = 0;
  for (auto& t : m->params()) {
    const size_t begin = t.data - p;
    for (size_t k = begin; k < begin + t.numel; ++k) {
      const float saved = p[k];
      // h = 4e-3: the loss sum (~6) carries f32 round-off of ~1e-6, so the difference
      // quotient has ~1e-4 absolute noise; a larger h would cross ReLU kinks more often.
      const float up = saved + 4e-3f, down = saved - 4e-3f;
      // A step this size can move some sample's hidden pre-activation across zero; the
      // loss then has a kink inside [down, up] and the central difference averages two
      // slopes. The double reference tells which coordinates straddle a kink; skip those.
      std::vector<double> pd(p, p + m->num_parameters());
      std::vector<bool> mask_up, mask_down;
      pd[k] = up;
      RefLoss(layers, pd, d, &mask_up);
      pd[k] = down;
      RefLoss(layers, pd, d, &mask_down);
      if (mask_up != mask_down) {
        ++skipped;
        continue;
      }
      ++checked;
      p[k] = up;
      const double l_up = m->Evaluate(d.batch()).loss_sum;
      p[k] = down;
      const double l_down = m->Evaluate(d.batch()).loss_sum;
      p[k] = saved;
      // Divide by the step actually taken after rounding saved +- h to f32.
      const double fd = (l_up - l_down) / (double(up) - double(down));
      // 2e-2 relative covers the O(h^2) truncation; 1e-3 absolute covers the round-off
      // noise above on near-zero gradients.
      EXPECT_NEAR(g[k], fd, 2e-2 * std::abs(fd) + 1e-3) << t.name << " element " << k - begin;
    }
  }
  // Kinks are rare (one hidden unit's row at most, for these seeds); most must be checked.
  EXPECT_GT(checked, 4 * skipped) << skipped << " coordinates skipped at kinks";
}

INSTANTIATE_TEST_SUITE_P(Shapes, MlpGradient,
                         ::testing::Values(std::vector<int>{7, 5, 4, 3}, std::vector<int>{4, 3},
                                           std::vector<int>{6, 8, 2}));

// Largest |a - b| over a range relative to the largest |b|: per-element relative error is
// meaningless where contributions cancel to ~0, so tolerances are relative to the tensor.
double MaxRelDiff(const float* a, const float* b, size_t n) {
  double diff = 0, scale = 0;
  for (size_t k = 0; k < n; ++k) {
    diff = std::max(diff, std::abs(double(a[k]) - b[k]));
    scale = std::max(scale, std::abs(double(b[k])));
  }
  return scale > 0 ? diff / scale : diff;
}

TEST(Mlp, GradScaleIsLinearAndLossIsUnscaled) {
  auto m = Make({12, 10, 6, 4});
  const Data d = RandomData(16, 12, 4, 1);
  const double l1 = m->ForwardBackward(d.batch(), 1.0f, nullptr);
  const std::vector<float> g1 = Grads(*m);
  // A power of two scales every rounded value exactly, so the result is bit-identical.
  const double lq = m->ForwardBackward(d.batch(), 0.25f, nullptr);
  for (size_t k = 0; k < g1.size(); ++k) ASSERT_EQ(m->grad_buffer()[k], 0.25f * g1[k]) << k;
  EXPECT_EQ(lq, l1);
  // Any other scale rounds once more per product: a few f32 ulps, so 1e-6 of the tensor.
  m->ForwardBackward(d.batch(), 0.3f, nullptr);
  std::vector<float> expect(g1.size());
  for (size_t k = 0; k < g1.size(); ++k) expect[k] = 0.3f * g1[k];
  for (auto& t : m->params()) {
    const size_t off = t.grad - m->grad_buffer();
    EXPECT_LT(MaxRelDiff(t.grad, expect.data() + off, t.numel), 1e-6) << t.name;
  }
}

TEST(Mlp, UnequalShardsSumToTheGlobalBatchGradient) {
  // What data parallelism relies on: ranks holding a and b samples pass 1/(a+b), and the
  // allreduce sum equals the single-process gradient of the whole batch, written here as
  // a/(a+b) * grad(A, 1/a) + b/(a+b) * grad(B, 1/b).
  const std::vector<int> layers = {20, 16, 8, 4};
  const int a = 5, b = 11;
  const Data d = RandomData(a + b, 20, 4, 9);
  auto m = Make(layers);
  m->ForwardBackward(d.batch(), 1.0f / (a + b), nullptr);
  const std::vector<float> full = Grads(*m);
  m->ForwardBackward(d.batch(0, a), 1.0f / a, nullptr);
  const std::vector<float> ga = Grads(*m);
  m->ForwardBackward(d.batch(a, b), 1.0f / b, nullptr);
  const std::vector<float> gb = Grads(*m);
  std::vector<float> combined(full.size());
  for (size_t k = 0; k < full.size(); ++k) combined[k] = float(a) / (a + b) * ga[k] + float(b) / (a + b) * gb[k];
  for (auto& t : m->params()) {
    const size_t off = t.grad - m->grad_buffer();
    // Only summation order differs (16 rows in one sgemm vs 5 + 11): f32 round-off of a
    // 16-term sum is ~1e-7 of its scale, so 1e-5 relative to the tensor is generous.
    EXPECT_LT(MaxRelDiff(combined.data() + off, full.data() + off, t.numel), 1e-5) << t.name;
  }
}

TEST(Mlp, EmptyBatchZeroesGradientsAndReportsEveryTensor) {
  auto m = Make({7, 5, 4, 3});
  std::fill(m->grad_buffer(), m->grad_buffer() + m->num_parameters(), 1.0f);
  std::vector<size_t> order;
  const double loss = m->ForwardBackward(Batch{nullptr, nullptr, 0}, 0.5f, [&](size_t i) { order.push_back(i); });
  EXPECT_EQ(loss, 0.0);
  EXPECT_EQ(order, (std::vector<size_t>{4, 5, 2, 3, 0, 1}));
  for (size_t k = 0; k < m->num_parameters(); ++k) ASSERT_EQ(m->grad_buffer()[k], 0.0f) << k;
  const EvalResult e = m->Evaluate(Batch{nullptr, nullptr, 0});
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.correct, 0);
  EXPECT_EQ(e.loss_sum, 0.0);
}

TEST(Mlp, OnReadyFiresOnceLastLayerFirstWithFinalGradients) {
  const std::vector<int> layers = {9, 8, 7, 6, 5};
  auto m = Make(layers);
  const Data d = RandomData(10, 9, 5, 2);
  // Poison the gradients so a tensor reported before it is written would show NaN.
  std::fill(m->grad_buffer(), m->grad_buffer() + m->num_parameters(), std::numeric_limits<float>::quiet_NaN());
  std::vector<size_t> order;
  std::vector<std::vector<float>> seen(m->params().size());
  m->ForwardBackward(d.batch(), 0.1f, [&](size_t i) {
    order.push_back(i);
    const ParamTensor& t = m->params()[i];
    seen[i].assign(t.grad, t.grad + t.numel);
  });
  EXPECT_EQ(order, (std::vector<size_t>{6, 7, 4, 5, 2, 3, 0, 1}));
  for (size_t i = 0; i < seen.size(); ++i) {
    const ParamTensor& t = m->params()[i];
    ASSERT_EQ(seen[i].size(), t.numel);
    EXPECT_EQ(0, std::memcmp(seen[i].data(), t.grad, t.numel * sizeof(float))) << t.name;
  }
}

TEST(Mlp, GradientsAreOverwrittenNotAccumulated) {
  auto m = Make({7, 5, 4, 3});
  const Data d = RandomData(8, 7, 3, 4), other = RandomData(8, 7, 3, 5);
  m->ForwardBackward(other.batch(), 1.0f, nullptr);
  m->ForwardBackward(d.batch(), 1.0f, nullptr);
  const std::vector<float> after_other = Grads(*m);
  auto fresh = Make({7, 5, 4, 3});
  fresh->ForwardBackward(d.batch(), 1.0f, nullptr);
  EXPECT_EQ(after_other, Grads(*fresh));
}

TEST(Mlp, InitialisationIsDeterministicKaimingUniform) {
  auto a = Make({784, 256, 128, 10}, 5), b = Make({784, 256, 128, 10}, 5), c = Make({784, 256, 128, 10}, 6);
  ASSERT_EQ(a->num_parameters(), 784u * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(0, std::memcmp(a->param_buffer(), b->param_buffer(), a->num_parameters() * sizeof(float)));
  EXPECT_NE(0, std::memcmp(a->param_buffer(), c->param_buffer(), a->num_parameters() * sizeof(float)));
  for (auto& t : a->params()) {
    if (t.shape.size() == 1) {
      for (size_t k = 0; k < t.numel; ++k) ASSERT_EQ(t.data[k], 0.0f) << t.name;
      continue;
    }
    const double bound = std::sqrt(6.0 / t.shape[1]);
    double sum2 = 0;
    for (size_t k = 0; k < t.numel; ++k) {
      ASSERT_LE(std::abs(t.data[k]), bound) << t.name;
      sum2 += double(t.data[k]) * t.data[k];
    }
    // Var of U(-b, b) is b^2/3 = 2/fan_in; with >= 1280 draws the sample variance is
    // within ~8% (4 standard errors), so 10% only catches a wrong bound.
    EXPECT_NEAR(sum2 / t.numel, 2.0 / t.shape[1], 0.1 * 2.0 / t.shape[1]) << t.name;
  }
}

TEST(Mlp, ParamsAreNamedShapedAndContiguous) {
  auto m = Make({6, 4, 3});
  auto& p = m->params();
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].name, "fc0.weight");
  EXPECT_EQ(p[0].shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(p[1].name, "fc0.bias");
  EXPECT_EQ(p[1].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(p[3].name, "fc1.bias");
  EXPECT_EQ(p[0].data, m->param_buffer());
  EXPECT_EQ(p[0].grad, m->grad_buffer());
  for (size_t i = 1; i < p.size(); ++i) {
    EXPECT_EQ(p[i].data, p[i - 1].data + p[i - 1].numel);
    EXPECT_EQ(p[i].grad, p[i - 1].grad + p[i - 1].numel);
  }
}

TEST(Mlp, MakeMlpRefusesInvalidLayers) {
  for (const auto& bad : std::vector<std::vector<int>>{{}, {5}, {5, 0, 3}, {5, -2, 3}, {1 << 25, 2}, {1 << 16, 1 << 16}}) {
    auto r = MakeMlp(bad, 1);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  auto ok = MakeMlp({784, 256, 128, 10}, 1);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)->params().size(), 6u);
}

TEST(Mlp, EvaluateAgreesWithTrainingLossAndArgmax) {
  auto m = Make({7, 5, 4, 3});
  const Data d = RandomData(40, 7, 3, 6);
  const EvalResult e = m->Evaluate(d.batch());
  EXPECT_EQ(e.count, 40);
  // Same f32 forward, same double loss arithmetic: the two sums agree to round-off.
  EXPECT_NEAR(e.loss_sum, m->ForwardBackward(d.batch(), 1.0f, nullptr), 1e-9 * e.loss_sum);
  std::vector<double> p(m->param_buffer(), m->param_buffer() + m->num_parameters());
  int64_t correct = 0;
  for (int r = 0; r < d.n; ++r) {  // argmax through the double reference, one row at a time
    Data one{{d.x.begin() + r * 7, d.x.begin() + (r + 1) * 7}, {0}, 1};
    double best = 1e300;
    int arg = 0;
    for (int c = 0; c < 3; ++c) {
      one.y[0] = c;
      const double l = RefLoss({7, 5, 4, 3}, p, one);  // lowest loss = highest logit
      if (l < best) best = l, arg = c;
    }
    correct += arg == d.y[r];
  }
  EXPECT_EQ(e.correct, correct);
}

TEST(Mlp, EvaluateInChunksMatchesSlices) {
  auto m = Make({5, 4, 3});
  const Data d = RandomData(2500, 5, 3, 8);  // > kEvalChunkRows, so several chunks
  const EvalResult whole = m->Evaluate(d.batch());
  EvalResult parts;
  for (int s = 0; s < 2500; s += 500) {
    const EvalResult e = m->Evaluate(d.batch(s, 500));
    parts.correct += e.correct, parts.count += e.count, parts.loss_sum += e.loss_sum;
  }
  EXPECT_EQ(whole.count, 2500);
  EXPECT_EQ(whole.correct, parts.correct);
  EXPECT_NEAR(whole.loss_sum, parts.loss_sum, 1e-9 * whole.loss_sum);  // summation order only
}

TEST(Mlp, InvalidLabelGivesNanLossAndNoGradient) {
  auto m = Make({7, 5, 3});
  Data d = RandomData(5, 7, 3, 3);
  m->ForwardBackward(d.batch(0, 4), 1.0f, nullptr);
  const std::vector<float> without = Grads(*m);
  d.y[4] = 3;  // out of range for 3 classes
  EXPECT_TRUE(std::isnan(m->ForwardBackward(d.batch(), 1.0f, nullptr)));
  // The bad row's dZ is zero, so the gradient equals that of the other four rows up to
  // the summation order inside sgemm.
  EXPECT_LT(MaxRelDiff(m->grad_buffer(), without.data(), without.size()), 1e-6);
  const EvalResult e = m->Evaluate(d.batch());
  EXPECT_TRUE(std::isnan(e.loss_sum));
  EXPECT_LE(e.correct, 4);
}

TEST(Mlp, TakeSgemmSecondsAccumulatesAndResets) {
  auto m = Make({784, 256, 128, 10});
  const Data d = RandomData(64, 784, 10, 1);
  m->TakeSgemmSeconds();
  m->ForwardBackward(d.batch(), 1.0f / 64, nullptr);
  const double s = m->TakeSgemmSeconds();
  EXPECT_GT(s, 0.0);
  EXPECT_LT(s, 10.0);
  EXPECT_EQ(m->TakeSgemmSeconds(), 0.0);
}

}  // namespace
}  // namespace shoal
