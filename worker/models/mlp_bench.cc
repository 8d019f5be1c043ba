// Times MlpModel::ForwardBackward: median, p10 and p90 over N calls after a warm-up, and
// the share spent in sgemm. Usage: mlp_bench [batch=64] [iters=200] [threads=1] [widths...]
// (widths default to 784 256 128 10).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "worker/models/mlp.h"

int main(int argc, char** argv) {
  const int batch = argc > 1 ? std::atoi(argv[1]) : 64;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 200;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  std::vector<int> layers;
  for (int i = 4; i < argc; ++i) layers.push_back(std::atoi(argv[i]));
  if (layers.empty()) layers = {784, 256, 128, 10};
  auto made = shoal::MakeMlp(layers, 1);
  if (!made.ok() || batch < 1 || iters < 1) {
    std::fprintf(stderr, "mlp_bench: %s\n", made.ok() ? "batch and iters must be >= 1" : made.status().ToString().c_str());
    return 2;
  }
  shoal::SetBlasThreads(threads);
  auto& model = *made;

  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(size_t(batch) * layers.front());
  std::vector<int32_t> y(batch);
  for (auto& v : x) v = u(rng);
  for (auto& v : y) v = static_cast<int32_t>(rng() % layers.back());
  const shoal::Batch b{x.data(), y.data(), batch};

  for (int i = 0; i < 20; ++i) model->ForwardBackward(b, 1.0f / batch, nullptr);  // warm caches, grow buffers
  model->TakeSgemmSeconds();
  std::vector<double> us(iters);
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model->ForwardBackward(b, 1.0f / batch, nullptr);
    us[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  const double sgemm_us = model->TakeSgemmSeconds() * 1e6 / iters;
  std::vector<double> sorted = us;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double v : us) mean += v / iters;
  std::printf("ForwardBackward batch %d threads %d: median %.1f us  p10 %.1f  p90 %.1f  mean %.1f  sgemm %.0f%%\n",
              batch, threads, sorted[iters / 2], sorted[iters / 10], sorted[iters * 9 / 10], mean,
              100.0 * sgemm_us / mean);
  return 0;
}
