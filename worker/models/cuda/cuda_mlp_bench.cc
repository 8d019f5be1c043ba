// Step time of the GPU MLP trained on the device (forward, backward, SGD; loss read
// back each step as the trainer needs it), for comparison with PyTorch in the same run
// (scripts/gpu-check.sh). Usage: cuda_mlp_bench [batch=128] [iters=500] [widths...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "common/nvml/cuda_device.h"
#include "worker/models/cuda/cuda_mlp.h"

int main(int argc, char** argv) {
  const auto& probe = shoal::ProbeCudaDevices();
  if (probe.device_count == 0) {
    std::printf("SKIP cuda_mlp_bench: no GPU: %s\n", probe.reason.c_str());
    return 0;
  }
  const int batch = argc > 1 ? std::atoi(argv[1]) : 128;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 500;
  std::vector<int> layers;
  for (int i = 3; i < argc; ++i) layers.push_back(std::atoi(argv[i]));
  if (layers.empty()) layers = {784, 256, 128, 10};
  auto made = shoal::CudaMlpModel::Create(layers, 1);
  if (!made.ok()) {
    std::fprintf(stderr, "cuda_mlp_bench: %s\n", made.status().ToString().c_str());
    return 1;
  }
  auto& model = *made;
  model->set_host_sync(false);  // parameters stay on the device, as in the PyTorch loop
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(size_t(batch) * layers.front());
  std::vector<int32_t> y(batch);
  for (auto& v : x) v = u(rng);
  for (auto& v : y) v = static_cast<int32_t>(rng() % layers.back());
  const shoal::Batch b{x.data(), y.data(), batch};

  auto step = [&] {
    // The batch is prefetched like the trainer's next batch would be (pinned -> device).
    if (!model->Prefetch(b).ok()) std::exit(1);
    const double loss = model->ForwardBackward(b, 1.0f / batch, nullptr);
    if (!model->SgdStepOnDevice(0.01f).ok() || std::isnan(loss)) std::exit(1);
  };
  for (int i = 0; i < 50; ++i) step();
  std::vector<double> us(iters);
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    us[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  std::sort(us.begin(), us.end());
  std::printf("layers");
  for (int w : layers) std::printf(" %d", w);
  std::printf(", batch %d, %d steps\n", batch, iters);
  std::printf("RESULT mlp_step_us %.1f p10 %.1f p90 %.1f\n", us[iters / 2], us[iters / 10], us[iters * 9 / 10]);
  return 0;
}
