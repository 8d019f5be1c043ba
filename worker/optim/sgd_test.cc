// Tests for SgdMomentum: two steps against hand-computed values (momentum, weight decay,
// a changing lr, two tensors sharing the flat buffer), Nesterov, state round trip and
// refusals, and end to end: the MLP learns Gaussian blobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <random>
#include <vector>

#include "worker/models/mlp.h"
#include "worker/optim/sgd.h"

namespace shoal {
namespace {

// Two tensors (2 and 1 elements) backed by caller-owned vectors, like a model's params().
struct TwoTensors {
  std::vector<float> p = {1.0f, -2.0f, 3.0f};
  std::vector<float> g = {0, 0, 0};
  std::vector<ParamTensor> params() {
    return {{"a", {2}, p.data(), g.data(), 2}, {"b", {1}, p.data() + 2, g.data() + 2, 1}};
  }
};

// Writes into an existing vector without reallocating, so ParamTensor pointers stay valid.
void Set(std::vector<float>& v, std::initializer_list<float> values) { std::copy(values.begin(), values.end(), v.begin()); }

// Values around 1-3 carry f32 round-off of ~2e-7 per operation; 1e-6 allows a few.
constexpr float kTol = 1e-6f;

TEST(Sgd, TwoStepsMatchHandComputedReference) {
  TwoTensors t;
  auto params = t.params();
  SgdMomentum opt({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f}, 3);
  EXPECT_FALSE(opt.initialized());
  // Step 1 (lr 0.1): d = g + 0.01 p = {0.51, 0.23, -0.97}; buf = d; p -= 0.1 d.
  Set(t.g, {0.5f, 0.25f, -1.0f});
  opt.Step(params, 0.1f);
  EXPECT_TRUE(opt.initialized());
  EXPECT_NEAR(t.p[0], 0.949f, kTol);
  EXPECT_NEAR(t.p[1], -2.023f, kTol);
  EXPECT_NEAR(t.p[2], 3.097f, kTol);
  // Step 2 (lr 0.05): d = {-0.1 + 0.00949, 0.4 - 0.02023, 2 + 0.03097}
  //   buf = 0.9 * {0.51, 0.23, -0.97} + d = {0.36849, 0.58677, 1.15797}; p -= 0.05 buf.
  Set(t.g, {-0.1f, 0.4f, 2.0f});
  opt.Step(params, 0.05f);
  EXPECT_NEAR(opt.momentum_buffer()[0], 0.36849f, kTol);
  EXPECT_NEAR(opt.momentum_buffer()[1], 0.58677f, kTol);
  EXPECT_NEAR(opt.momentum_buffer()[2], 1.15797f, kTol);
  EXPECT_NEAR(t.p[0], 0.9305755f, kTol);
  EXPECT_NEAR(t.p[1], -2.0523385f, kTol);
  EXPECT_NEAR(t.p[2], 3.0391015f, kTol);
}

TEST(Sgd, NesterovLooksAhead) {
  TwoTensors t;
  auto params = t.params();
  SgdMomentum opt({.lr = 0.1f, .momentum = 0.5f, .weight_decay = 0.0f, .nesterov = true}, 3);
  Set(t.g, {1.0f, 0.0f, 0.0f});
  opt.Step(params, 0.1f);  // buf = 1; p -= 0.1 * (1 + 0.5 * 1)
  EXPECT_NEAR(t.p[0], 1.0f - 0.15f, kTol);
  Set(t.g, {2.0f, 0.0f, 0.0f});
  opt.Step(params, 0.1f);  // buf = 0.5 + 2 = 2.5; p -= 0.1 * (2 + 0.5 * 2.5)
  EXPECT_NEAR(t.p[0], 0.85f - 0.325f, kTol);
  EXPECT_EQ(t.p[1], -2.0f);
}

TEST(Sgd, ZeroMomentumIsPlainSgd) {
  TwoTensors t;
  auto params = t.params();
  SgdMomentum opt({.lr = 0.1f, .momentum = 0.0f}, 3);
  Set(t.g, {1.0f, 1.0f, 1.0f});
  opt.Step(params, 0.1f);
  opt.Step(params, 0.1f);
  EXPECT_NEAR(t.p[0], 0.8f, kTol);
  EXPECT_NEAR(t.p[2], 2.8f, kTol);
}

TEST(Sgd, StateRoundTripsAndContinuesIdentically) {
  TwoTensors a, b;
  auto pa = a.params(), pb = b.params();
  SgdMomentum oa({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f}, 3);
  Set(a.g, {0.5f, 0.25f, -1.0f});
  oa.Step(pa, 0.1f);
  SgdMomentum ob(oa.options(), 3);
  ASSERT_TRUE(ob.LoadState(oa.SaveState()).ok());
  EXPECT_TRUE(ob.initialized());
  EXPECT_EQ(ob.momentum_buffer(), oa.momentum_buffer());
  std::copy(a.p.begin(), a.p.end(), b.p.begin());
  Set(a.g, {-0.1f, 0.4f, 2.0f});
  Set(b.g, {-0.1f, 0.4f, 2.0f});
  oa.Step(pa, 0.05f);
  ob.Step(pb, 0.05f);
  EXPECT_EQ(a.p, b.p);  // same state, same arithmetic: bit-identical
  SgdMomentum fresh(oa.options(), 3);
  SgdMomentum copy(oa.options(), 3);
  ASSERT_TRUE(copy.LoadState(fresh.SaveState()).ok());
  EXPECT_FALSE(copy.initialized());
}

TEST(Sgd, LoadStateRefusesForeignOrDamagedBytes) {
  SgdMomentum src({}, 3), other({}, 4);
  TwoTensors t;
  auto params = t.params();
  src.Step(params, 0.1f);
  const std::string good = src.SaveState();
  SgdMomentum dst({}, 3);
  EXPECT_EQ(other.LoadState(good).code(), StatusCode::kInvalidArgument);        // other model size
  EXPECT_EQ(dst.LoadState(good.substr(0, good.size() - 1)).code(), StatusCode::kInvalidArgument);  // truncated
  EXPECT_EQ(dst.LoadState(good + "x").code(), StatusCode::kInvalidArgument);     // padded
  EXPECT_EQ(dst.LoadState("").code(), StatusCode::kInvalidArgument);
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  EXPECT_EQ(dst.LoadState(bad_magic).code(), StatusCode::kInvalidArgument);
  std::string bad_version = good;
  bad_version[4] = 2;
  EXPECT_EQ(dst.LoadState(bad_version).code(), StatusCode::kInvalidArgument);
  // Refusals leave the state untouched.
  EXPECT_FALSE(dst.initialized());
  EXPECT_EQ(dst.momentum_buffer(), std::vector<float>(3, 0.0f));
}

TEST(Sgd, ValidateOptions) {
  EXPECT_TRUE(ValidateSgdOptions({}).ok());
  EXPECT_FALSE(ValidateSgdOptions({.lr = -1.0f}).ok());
  EXPECT_FALSE(ValidateSgdOptions({.momentum = -0.1f}).ok());
  EXPECT_FALSE(ValidateSgdOptions({.weight_decay = std::nanf("")}).ok());
  EXPECT_FALSE(ValidateSgdOptions({.momentum = 0.0f, .nesterov = true}).ok());
}

TEST(Sgd, MlpLearnsGaussianBlobs) {
  // Two classes with means -1.5 and +1.5 in each of 4 dimensions, unit variance: the
  // means are 6 standard deviations apart, so the Bayes error is Phi(-3) = 0.13%.
  std::mt19937_64 rng(17);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  auto sample = [&](int n, std::vector<float>& x, std::vector<int32_t>& y) {
    x.resize(size_t(n) * 4);
    y.resize(n);
    for (int i = 0; i < n; ++i) {
      y[i] = static_cast<int32_t>(rng() % 2);
      for (int k = 0; k < 4; ++k) x[i * 4 + k] = (y[i] ? 1.5f : -1.5f) + noise(rng);
    }
  };
  std::vector<float> test_x;
  std::vector<int32_t> test_y;
  sample(1000, test_x, test_y);
  MlpModel model({4, 16, 2}, 3);
  SgdMomentum opt({.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f}, model.num_parameters());
  const double before = model.Evaluate({test_x.data(), test_y.data(), 1000}).loss_sum;
  std::vector<float> x;
  std::vector<int32_t> y;
  for (int step = 0; step < 300; ++step) {
    sample(32, x, y);
    model.ForwardBackward({x.data(), y.data(), 32}, 1.0f / 32, nullptr);
    opt.Step(model.params(), opt.options().lr);
  }
  const EvalResult e = model.Evaluate({test_x.data(), test_y.data(), 1000});
  EXPECT_GT(double(e.correct) / e.count, 0.95);
  EXPECT_LT(e.loss_sum, 0.5 * before);
}

}  // namespace
}  // namespace shoal
