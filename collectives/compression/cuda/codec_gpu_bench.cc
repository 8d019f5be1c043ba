// Codec kernel bandwidth against device-to-device copy bandwidth, both measured in this
// run on this GPU, counting bytes read plus written. Prints "RESULT" lines that
// scripts/gpu-check.sh turns into its table; exits 0 with "SKIP" where no GPU exists.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "collectives/compression/cuda/codec_host.h"
#include "collectives/compression/cuda/codec_kernels.h"
#include "common/nvml/cuda_device.h"

namespace shoal::gpu_codec {
namespace {

#define BENCH_CHECK(expr)                                                  \
  do {                                                                     \
    auto _st = (expr);                                                     \
    if (!_st.ok()) {                                                       \
      std::fprintf(stderr, "%s\n", _st.ToString().c_str());               \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)
#define CUDA_BENCH(expr)                                                                   \
  do {                                                                                     \
    cudaError_t _e = (expr);                                                               \
    if (_e != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

// Median seconds of `reps` timed runs after warm-up, timed with events on `s`.
double TimeIt(cudaStream_t s, int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CUDA_BENCH(cudaEventCreate(&a));
  CUDA_BENCH(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CUDA_BENCH(cudaEventRecord(a, s));
    fn();
    CUDA_BENCH(cudaEventRecord(b, s));
    CUDA_BENCH(cudaEventSynchronize(b));
    float t = 0;
    CUDA_BENCH(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms[ms.size() / 2] / 1e3;
}

int Main(int argc, char** argv) {
  const auto& probe = ProbeCudaDevices();
  if (probe.device_count == 0) {
    std::printf("SKIP gpu_codec_bench: no GPU: %s\n", probe.reason.c_str());
    return 0;
  }
  const size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : size_t{1} << 26;  // 64 Mi floats
  const int reps = 20;
  cudaDeviceProp prop{};
  CUDA_BENCH(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %zu elements (%.0f MiB of f32)\n", prop.name, n, n * 4.0 / (1 << 20));
  cudaStream_t s;
  CUDA_BENCH(cudaStreamCreate(&s));
  float *x, *y, *res;
  uint8_t* wire;
  CUDA_BENCH(cudaMalloc(&x, n * 4));
  CUDA_BENCH(cudaMalloc(&y, n * 4));
  CUDA_BENCH(cudaMalloc(&res, n * 4));
  CUDA_BENCH(cudaMalloc(&wire, n * 4));
  CUDA_BENCH(cudaMemset(x, 0, n * 4));
  CUDA_BENCH(cudaMemset(res, 0, n * 4));
  {  // non-trivial values so quantisation ranges are real: fill via a 1-step qblock decode
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = UniformAt(1, i) - 0.5f;
    CUDA_BENCH(cudaMemcpy(x, h.data(), n * 4, cudaMemcpyHostToDevice));
  }

  const double copy_s = TimeIt(s, reps, [&] { CUDA_BENCH(cudaMemcpyAsync(y, x, n * 4, cudaMemcpyDeviceToDevice, s)); });
  const double copy_gbs = 2.0 * n * 4 / copy_s / 1e9;
  std::printf("RESULT copy_d2d %.1f 1.00\n", copy_gbs);
  auto report = [&](const std::string& name, double bytes, double secs) {
    const double gbs = bytes / secs / 1e9;
    std::printf("RESULT %s %.1f %.2f\n", name.c_str(), gbs, gbs / copy_gbs);
  };

  for (DType t : {DType::kBF16, DType::kF16}) {
    const std::string tn = t == DType::kBF16 ? "bf16" : "fp16";
    // encode reads bucket + residual, writes wire + residual; decode reads wire, writes f32.
    report(tn + "_encode", n * (4.0 + 4 + 2 + 4),
           TimeIt(s, reps, [&] { BENCH_CHECK(CastEncode(x, res, wire, n, t, 4, s)); }));
    report(tn + "_decode", n * (2.0 + 4), TimeIt(s, reps, [&] { BENCH_CHECK(CastDecode(wire, y, n, t, 4, s)); }));
  }
  for (int bits : {8, 4}) {
    const std::string bn = "qblock" + std::to_string(bits);
    const double qbytes = static_cast<double>(QuantBytes(n, 512, bits));
    // quantise reads x twice (min/max pass, then codes; the second mostly from L2 but
    // counted once, as the byte model counts compulsory traffic) and writes codes + residual.
    report(bn + "_quantize", n * 4.0 + qbytes + n * 4.0,
           TimeIt(s, reps, [&] { BENCH_CHECK(QBlockQuantize(x, n, 512, bits, 9, wire, res, s)); }));
    report(bn + "_dequantize_add", qbytes + n * 8.0,
           TimeIt(s, reps, [&] { BENCH_CHECK(QBlockDequantize(wire, n, 512, bits, y, true, s)); }));
  }
  {
    // top-k: reads x for the selection pass; includes its two host round trips.
    auto* pairs = reinterpret_cast<TopkPair*>(wire);
    report("topk1pct_select", n * 4.0, TimeIt(s, 5, [&] {
             CUDA_BENCH(cudaMemcpyAsync(y, x, n * 4, cudaMemcpyDeviceToDevice, s));
             BENCH_CHECK(TopkSelect(y, n, 0.01, 8192, 3, pairs, s).status());
           }) - copy_s);
  }
  {
    // PowerSGD on a square matrix of n elements, rank 4: P = MQ and Q = M^T P each read M.
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return 1;
    cublasSetStream(h, s);
    size_t side = 1;
    while ((side + 1) * (side + 1) <= n) ++side;
    float *p, *q;
    CUDA_BENCH(cudaMalloc(&p, side * 4 * 4));
    CUDA_BENCH(cudaMalloc(&q, side * 4 * 4));
    CUDA_BENCH(cudaMemset(q, 0, side * 16));
    report("powersgd4_P_and_Q", 2.0 * side * side * 4, TimeIt(s, reps, [&] {
             BENCH_CHECK(PowerSgdP(h, x, side, side, q, 4, p));
             BENCH_CHECK(Orthogonalise(p, side, 4, s));
             BENCH_CHECK(PowerSgdQ(h, x, side, side, p, 4, q));
           }));
    report("powersgd4_decode", side * side * 4.0,
           TimeIt(s, reps, [&] { BENCH_CHECK(PowerSgdApprox(h, p, q, side, side, 4, 1.0f, 0.0f, y)); }));
    cublasDestroy(h);
  }
  return 0;
}

}  // namespace
}  // namespace shoal::gpu_codec

int main(int argc, char** argv) { return shoal::gpu_codec::Main(argc, argv); }
