// CudaMlpModel against its CPU twin MlpModel on the same weights and batches: loss,
// gradients, on_ready order, empty and invalid-label batches, evaluation, prefetch, and
// a short training run. Skips, with the reason, where no GPU is usable.
// Tolerances: cuBLAS sums in another order and expf differs from glibc by <= 2 ulp, so
// values agree to ~1e-6 relative; we allow 1e-4 of the largest gradient magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/nvml/cuda_device.h"
#include "worker/models/cuda/cuda_mlp.h"
#include "worker/models/mlp.h"

namespace shoal {
namespace {

const std::vector<int> kLayers = {784, 256, 128, 10};

struct Data {
  std::vector<float> x;
  std::vector<int32_t> y;
  Batch batch(int n) const { return {x.data(), y.data(), n}; }
};

Data MakeData(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Data d;
  d.x.resize(size_t(n) * kLayers.front());
  for (float& v : d.x) v = u(rng);
  for (int i = 0; i < n; ++i) d.y.push_back(int32_t(rng() % kLayers.back()));
  return d;
}

void ExpectGradsClose(const std::vector<ParamTensor>& gpu, const std::vector<ParamTensor>& cpu) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t t = 0; t < gpu.size(); ++t) {
    ASSERT_EQ(gpu[t].name, cpu[t].name);
    ASSERT_EQ(gpu[t].numel, cpu[t].numel);
    float scale = 0;
    for (size_t i = 0; i < cpu[t].numel; ++i) scale = std::max(scale, std::fabs(cpu[t].grad[i]));
    for (size_t i = 0; i < cpu[t].numel; ++i) {
      ASSERT_NEAR(gpu[t].grad[i], cpu[t].grad[i], 1e-4f * scale + 1e-7f) << cpu[t].name << "[" << i << "]";
    }
  }
}

TEST(CudaMlp, MatchesCpuTwin) {
  SHOAL_SKIP_WITHOUT_GPU();
  auto gpu = CudaMlpModel::Create(kLayers, 7);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  MlpModel cpu(kLayers, 7);
  for (size_t t = 0; t < cpu.params().size(); ++t) {  // same layout and initial weights
    for (size_t i = 0; i < cpu.params()[t].numel; ++i) ASSERT_EQ((*gpu)->params()[t].data[i], cpu.params()[t].data[i]);
  }
  const Data d = MakeData(96, 1);
  std::vector<size_t> order_gpu, order_cpu;
  const double lg = (*gpu)->ForwardBackward(d.batch(96), 1.0f / 96, [&](size_t i) { order_gpu.push_back(i); });
  const double lc = cpu.ForwardBackward(d.batch(96), 1.0f / 96, [&](size_t i) { order_cpu.push_back(i); });
  ASSERT_TRUE((*gpu)->last_error().ok()) << (*gpu)->last_error().ToString();
  EXPECT_NEAR(lg, lc, 1e-5 * std::fabs(lc));
  EXPECT_EQ(order_gpu, order_cpu);
  ExpectGradsClose((*gpu)->params(), cpu.params());

  const EvalResult eg = (*gpu)->Evaluate(d.batch(96)), ec = cpu.Evaluate(d.batch(96));
  EXPECT_EQ(eg.count, ec.count);
  EXPECT_NEAR(eg.correct, ec.correct, 1);  // an exact tie could flip one argmax
  EXPECT_NEAR(eg.loss_sum, ec.loss_sum, 1e-5 * std::fabs(ec.loss_sum));
}

TEST(CudaMlp, EmptyBatchInvalidLabelAndPrefetch) {
  SHOAL_SKIP_WITHOUT_GPU();
  auto gpu = CudaMlpModel::Create(kLayers, 3);
  ASSERT_TRUE(gpu.ok());
  int ready = 0;
  EXPECT_EQ((*gpu)->ForwardBackward({nullptr, nullptr, 0}, 1.0f, [&](size_t) { ++ready; }), 0.0);
  EXPECT_EQ(ready, 6);
  for (const auto& t : (*gpu)->params()) {
    for (size_t i = 0; i < t.numel; ++i) ASSERT_EQ(t.grad[i], 0.0f);
  }
  Data d = MakeData(16, 2);
  d.y[3] = 99;  // outside [0, 10): NaN loss, as the CPU twin
  EXPECT_TRUE(std::isnan((*gpu)->ForwardBackward(d.batch(16), 1.0f / 16, nullptr)));
  d.y[3] = 1;
  ASSERT_TRUE((*gpu)->Prefetch(d.batch(16)).ok());
  const double prefetched = (*gpu)->ForwardBackward(d.batch(16), 1.0f / 16, nullptr);
  const double direct = (*gpu)->ForwardBackward(d.batch(16), 1.0f / 16, nullptr);
  EXPECT_EQ(prefetched, direct);
}

TEST(CudaMlp, TrainsLikeCpuTwinForTwentySteps) {
  SHOAL_SKIP_WITHOUT_GPU();
  auto gpu = CudaMlpModel::Create(kLayers, 11);
  ASSERT_TRUE(gpu.ok());
  MlpModel cpu(kLayers, 11);
  const Data d = MakeData(64, 5);
  double first = 0, lg = 0, lc = 0;
  for (int step = 0; step < 20; ++step) {
    lg = (*gpu)->ForwardBackward(d.batch(64), 1.0f / 64, nullptr);
    lc = cpu.ForwardBackward(d.batch(64), 1.0f / 64, nullptr);
    if (step == 0) first = lc;
    for (Model* m : {static_cast<Model*>(gpu->get()), static_cast<Model*>(&cpu)}) {
      for (auto& t : m->params()) {
        for (size_t i = 0; i < t.numel; ++i) t.data[i] -= 0.1f * t.grad[i];  // host SGD, as the trainer
      }
    }
  }
  EXPECT_LT(lc, first);
  EXPECT_NEAR(lg, lc, 1e-3 * std::fabs(lc));  // 20 steps of 1e-6 differences compound
}

}  // namespace
}  // namespace shoal
