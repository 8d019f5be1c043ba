// GPU tests of the codec kernels against the host references (which codec_host_test
// ties to the CPU codecs). Every test skips, with the reason, where no GPU is usable.
// Tolerances: casts, qblock and top-k are bit-exact (same f32 operations, no FMA);
// Gram-Schmidt and the PowerSGD products differ only in summation order.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "collectives/compression/cuda/codec_host.h"
#include "collectives/compression/cuda/codec_kernels.h"
#include "collectives/dtype.h"
#include "common/nvml/cuda_device.h"

namespace shoal::gpu_codec {
namespace {

template <typename T>
struct DeviceVec {
  explicit DeviceVec(size_t n) : n(n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  explicit DeviceVec(const std::vector<T>& h) : DeviceVec(h.size()) {
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceVec() { cudaFree(p); }
  std::vector<T> Get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  T* p = nullptr;
  size_t n;
};

std::vector<float> Gradient(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

TEST(GpuCodecKernels, CastMatchesHostConversionAndFeedback) {
  SHOAL_SKIP_WITHOUT_GPU();
  for (DType wire : {DType::kBF16, DType::kF16}) {
    const int world = 3;
    auto g = Gradient(10007, 1), r = Gradient(10007, 2);
    DeviceVec<float> bucket(g), residual(r);
    DeviceVec<uint16_t> w(g.size());
    ASSERT_TRUE(CastEncode(bucket.p, residual.p, w.p, g.size(), wire, world, nullptr).ok());
    ASSERT_TRUE(CastDecode(w.p, bucket.p, g.size(), wire, world, nullptr).ok());
    const auto wires = w.Get();
    const auto res = residual.Get(), out = bucket.Get();
    for (size_t i = 0; i < g.size(); ++i) {
      const float x = g[i] + r[i];
      float scaled = x * (1.0f / world);
      uint16_t want;
      FromF32(&scaled, wire, &want, 1);
      ASSERT_EQ(wires[i], want) << i;
      float back;
      ToF32(&want, wire, &back, 1);
      ASSERT_EQ(res[i], x - back * world) << i;
      ASSERT_EQ(out[i], back * world) << i;
    }
  }
}

TEST(GpuCodecKernels, QBlockBytesAndResidualMatchReference) {
  SHOAL_SKIP_WITHOUT_GPU();
  for (int bits : {8, 4}) {
    for (size_t block : {size_t{512}, size_t{7}, size_t{2048}}) {
      auto x = Gradient(5000, bits + block);
      const size_t bytes = QuantBytes(x.size(), block, bits);
      DeviceVec<float> dx(x), dres(x.size()), dout(x.size());
      DeviceVec<uint8_t> dq(bytes);
      ASSERT_TRUE(QBlockQuantize(dx.p, x.size(), block, bits, 77, dq.p, dres.p, nullptr).ok());
      ASSERT_TRUE(QBlockDequantize(dq.p, x.size(), block, bits, dout.p, false, nullptr).ok());
      std::vector<uint8_t> want(bytes);
      QuantizeRef(x.data(), x.size(), block, bits, 77, want.data());
      std::vector<float> decoded(x.size());
      DequantizeRef(want.data(), x.size(), block, bits, decoded.data(), false);
      ASSERT_EQ(dq.Get(), want) << bits << "-bit, block " << block;
      ASSERT_EQ(dout.Get(), decoded);
      const auto res = dres.Get();
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(res[i], x[i] - decoded[i]) << i;
    }
  }
}

TEST(GpuCodecKernels, TopkSelectMatchesReference) {
  SHOAL_SKIP_WITHOUT_GPU();
  for (size_t count : {size_t{3000}, size_t{200000}}) {
    const double ratio = 0.01;
    const size_t sample = 8192;
    const uint64_t key = StreamKey({5, 0, 6, 2, 3});
    auto x = Gradient(count, count);
    DeviceVec<float> dx(x);
    DeviceVec<TopkPair> pairs(TopkK(count, ratio));
    auto n = TopkSelect(dx.p, count, ratio, sample, key, pairs.p, nullptr);
    ASSERT_TRUE(n.ok()) << n.status().ToString();

    std::vector<float> mags;
    if (count <= sample) {
      for (float v : x) mags.push_back(std::fabs(v));
    } else {
      for (size_t j = 0; j < sample; ++j) mags.push_back(std::fabs(x[TopkSampleIndex(key, j, count)]));
    }
    const float thr = TopkThreshold(mags, count, sample, ratio);
    std::vector<uint32_t> cand;
    for (size_t i = 0; i < count; ++i) {
      if (std::fabs(x[i]) >= thr && std::fabs(x[i]) > 0) cand.push_back(uint32_t(i));
    }
    const auto chosen = TopkTrim(cand, x.data(), TopkK(count, ratio));
    ASSERT_EQ(*n, chosen.size());
    const auto got = pairs.Get();
    for (size_t j = 0; j < chosen.size(); ++j) {
      ASSERT_EQ(got[j].index, chosen[j]);
      ASSERT_EQ(got[j].value, x[chosen[j]]);
    }
    auto residual = dx.Get();
    for (uint32_t i : chosen) ASSERT_EQ(residual[i], 0.0f);
    // Decode: scatter into zeros gives x on the chosen positions.
    DeviceVec<float> out(std::vector<float>(count, 0.0f));
    ASSERT_TRUE(TopkScatterAdd(pairs.p, *n, out.p, nullptr).ok());
    const auto o = out.Get();
    for (uint32_t i : chosen) ASSERT_EQ(o[i], x[i]);
  }
}

TEST(GpuCodecKernels, OrthogonaliseAndProductsMatchReference) {
  SHOAL_SKIP_WITHOUT_GPU();
  const size_t rows = 1000, cols = 300;
  const int r = 4;
  auto m = Gradient(rows * cols, 8), q = Gradient(cols * r, 9);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  DeviceVec<float> dm(m), dq(q), dp(rows * r), dq2(cols * r), dout(rows * cols);
  ASSERT_TRUE(PowerSgdP(h, dm.p, rows, cols, dq.p, r, dp.p).ok());
  auto p = dp.Get();
  // P = M Q in double: cuBLAS's order of summation differs, so compare at 1e-4 of the
  // row's magnitude (sum of |m||q| over 300 terms, f32 accumulation).
  for (size_t i = 0; i < rows; ++i) {
    for (int j = 0; j < r; ++j) {
      double want = 0, mag = 0;
      for (size_t k = 0; k < cols; ++k) {
        want += double(m[i * cols + k]) * q[k * r + j];
        mag += std::fabs(double(m[i * cols + k]) * q[k * r + j]);
      }
      ASSERT_NEAR(p[i * r + j], want, 1e-4 * mag + 1e-12);
    }
  }
  ASSERT_TRUE(Orthogonalise(dp.p, rows, r, nullptr).ok());
  OrthogonaliseRef(p.data(), rows, r);
  const auto pg = dp.Get();
  for (size_t i = 0; i < pg.size(); ++i) ASSERT_NEAR(pg[i], p[i], 1e-5) << i;  // unit columns
  ASSERT_TRUE(PowerSgdQ(h, dm.p, rows, cols, dp.p, r, dq2.p).ok());
  ASSERT_TRUE(PowerSgdApprox(h, dp.p, dq2.p, rows, cols, r, 1.0f, 0.0f, dout.p).ok());
  // P P^T M is a projection: applying it twice changes nothing (up to f32 rounding).
  DeviceVec<float> dq3(cols * r), dout2(rows * cols);
  ASSERT_TRUE(PowerSgdQ(h, dout.p, rows, cols, dp.p, r, dq3.p).ok());
  ASSERT_TRUE(PowerSgdApprox(h, dp.p, dq3.p, rows, cols, r, 1.0f, 0.0f, dout2.p).ok());
  const auto a = dout.Get(), b = dout2.Get();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5);
  cublasDestroy(h);
}

}  // namespace
}  // namespace shoal::gpu_codec
