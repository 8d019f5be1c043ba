// CPU tests of the CUDA codecs' host-side logic: the RNG and wire layout against the CPU
// codecs, quantisation and top-k references against those codecs' actual output on one
// rank, Gram-Schmidt and launch shapes. The GPU test then holds the kernels to these.
#include "collectives/compression/cuda/codec_host.h"

#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "collectives/dtype.h"

#include "collectives/compression/codec_internal.h"
#include "collectives/test_util.h"

namespace shoal::gpu_codec {
namespace {

using ::shoal::testing::LoopbackCommunicator;

std::vector<float> RandomGradient(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

TEST(GpuCodecHost, RngIsTheCpuCodecsBitForBit) {
  for (uint64_t key : {0ull, 1ull, 0xdeadbeefull, ~0ull}) {
    for (uint64_t i : {0ull, 1ull, 511ull, 123456789ull}) {
      EXPECT_EQ(UniformAt(key, i), compression::UniformAt(key, i));
      EXPECT_EQ(Mix64(key ^ i), compression::Mix64(key ^ i));
    }
  }
  EXPECT_EQ(StreamKey({7, 0, 3, 9, 1}), compression::StreamKey({7, 0, 3, 9, 1}));
}

TEST(GpuCodecHost, QBlockLayout) {
  EXPECT_EQ(QuantBytes(1000, 512, 8), (8 + 512) + (8 + 488));
  EXPECT_EQ(QuantBytes(1000, 512, 4), (8 + 256) + (8 + 244));
  EXPECT_EQ(QuantBytes(513, 512, 4), (8 + 256) + (8 + 1));  // a lone trailing nibble
  EXPECT_EQ(QuantBytes(0, 512, 8), 0u);
  // Block b starts after b full blocks, for any block length (odd ones included).
  for (size_t block : {512u, 7u, 1u}) {
    size_t at = 0;
    for (size_t b = 0; b < 5; ++b) {
      EXPECT_EQ(QBlockOffset(b, block, 4), at);
      at += QBlockBytes(block, 4);
    }
  }
  // Owners' runs are whole blocks and tile the bucket.
  for (int n : {1, 2, 3, 7}) {
    EXPECT_EQ(QRunBegin(0, n, 5000, 512), 0u);
    EXPECT_EQ(QRunBegin(n, n, 5000, 512), 5000u);
    for (int s = 0; s < n; ++s) {
      EXPECT_LE(QRunBegin(s, n, 5000, 512), QRunBegin(s + 1, n, 5000, 512));
      EXPECT_EQ(QRunBegin(s, n, 5000, 512) % 512, 0u);
    }
  }
}

TEST(GpuCodecHost, QuantizeRefErrorAndConstantBlocks) {
  for (int bits : {8, 4}) {
    auto x = RandomGradient(1300, 5);
    std::fill(x.begin() + 1024, x.end(), 0.25f);  // the last block is constant
    std::vector<uint8_t> q(QuantBytes(x.size(), 512, bits));
    QuantizeRef(x.data(), x.size(), 512, bits, 42, q.data());
    std::vector<float> y(x.size());
    DequantizeRef(q.data(), x.size(), 512, bits, y.data(), false);
    for (size_t b0 = 0; b0 < x.size(); b0 += 512) {
      float step;
      std::memcpy(&step, q.data() + QBlockOffset(b0 / 512, 512, bits) + 4, 4);
      for (size_t i = b0; i < std::min(x.size(), b0 + 512); ++i) {
        // Stochastic rounding moves a value by less than one step (plus f32 rounding).
        EXPECT_LE(std::fabs(y[i] - x[i]), step * 1.0001f + 1e-6f) << i;
      }
    }
    for (size_t i = 1024; i < x.size(); ++i) EXPECT_EQ(y[i], 0.25f);  // step 0: exact
  }
}

TEST(GpuCodecHost, QuantizeRefIsUnbiased) {
  const std::vector<float> x = {-1.0f, 0.3f, 0.31f, 1.0f};
  double mean = 0;
  const int trials = 4000;
  std::vector<uint8_t> q(QuantBytes(4, 512, 4));
  std::vector<float> y(4);
  for (int t = 0; t < trials; ++t) {
    QuantizeRef(x.data(), 4, 512, 4, StreamKey({uint64_t(t)}), q.data());
    DequantizeRef(q.data(), 4, 512, 4, y.data(), false);
    mean += y[1];
  }
  // step = 2/15; the std of the mean after 4000 draws is below 0.0011.
  EXPECT_NEAR(mean / trials, 0.3, 0.005);
}

// The CPU qblock codec on one rank returns decode(requantise(x)) with the stage-2 key:
// our reference must reproduce it bit for bit, and its residual x - output.
TEST(GpuCodecHost, QBlockReferenceMatchesCpuCodec) {
  for (int bits : {8, 4}) {
    CodecOptions o;
    o.name = "qblock";
    o.qblock_bits = bits;
    o.seed = 11;
    auto codec = MakeCodec(o);
    ASSERT_TRUE(codec.ok()) << codec.status().ToString();
    LoopbackCommunicator comm;
    auto x = RandomGradient(2000, 9, 0.01f);
    std::vector<float> bucket = x;
    ASSERT_TRUE((*codec)->Reduce(bucket.data(), bucket.size(), {}, 4, 3, &comm, {}).ok());
    std::vector<uint8_t> q(QuantBytes(x.size(), 512, bits));
    QuantizeRef(x.data(), x.size(), 512, bits, StreamKey({11, 0, 3, 4, 2}), q.data());
    std::vector<float> want(x.size());
    DequantizeRef(q.data(), x.size(), 512, bits, want.data(), false);
    ASSERT_EQ(bucket, want) << bits << "-bit";
    auto* fb = dynamic_cast<compression::FeedbackCodec*>(codec->get());
    ASSERT_NE(fb, nullptr);
    auto residual = fb->StateEntry({compression::StateKind::kResidual, 4, 0});
    ASSERT_TRUE(residual.has_value());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ((*residual)[i], x[i] - want[i]) << i;
  }
}

// Top-k on one rank: the output is x on the chosen positions, zero elsewhere (the CPU
// codec sends bf16 values, the GPU codec f32: the reference choice is what matches).
TEST(GpuCodecHost, TopkReferenceMatchesCpuCodec) {
  for (size_t count : {size_t{3000}, size_t{50000}}) {  // exact, then sampled threshold
    CodecOptions o;
    o.name = "topk";
    o.topk_ratio = 0.01;
    o.seed = 5;
    auto codec = MakeCodec(o);
    ASSERT_TRUE(codec.ok());
    LoopbackCommunicator comm;
    auto x = RandomGradient(count, count);
    std::vector<float> bucket = x;
    ASSERT_TRUE((*codec)->Reduce(bucket.data(), count, {}, 2, 6, &comm, {}).ok());

    const uint64_t key = StreamKey({5, 0, 6, 2, 3});
    std::vector<float> mags;
    if (count <= o.topk_sample) {
      for (float v : x) mags.push_back(std::fabs(v));
    } else {
      for (size_t j = 0; j < o.topk_sample; ++j) mags.push_back(std::fabs(x[TopkSampleIndex(key, j, count)]));
    }
    const float thr = TopkThreshold(mags, count, o.topk_sample, o.topk_ratio);
    std::vector<uint32_t> cand;
    for (size_t i = 0; i < count; ++i) {
      if (std::fabs(x[i]) >= thr && std::fabs(x[i]) > 0) cand.push_back(uint32_t(i));
    }
    const auto chosen = TopkTrim(cand, x.data(), TopkK(count, o.topk_ratio));
    std::vector<float> want(count, 0.0f);
    for (uint32_t i : chosen) want[i] = BF16ToF32(F32ToBF16(x[i]));
    EXPECT_EQ(bucket, want) << count;
    EXPECT_LE(chosen.size(), TopkK(count, o.topk_ratio));
  }
}

TEST(GpuCodecHost, TopkTrimKeepsLargestThenIndexOrder) {
  const std::vector<float> x = {0.5f, -3.0f, 2.0f, -2.0f, 1.0f};
  EXPECT_EQ(TopkTrim({0, 1, 2, 3, 4}, x.data(), 2), (std::vector<uint32_t>{1, 2}));  // tie at 2: lower index
  EXPECT_EQ(TopkTrim({1, 4}, x.data(), 3), (std::vector<uint32_t>{1, 4}));
  EXPECT_EQ(TopkK(1000, 0.01), 10u);
  EXPECT_EQ(TopkK(5, 0.01), 1u);
}

TEST(GpuCodecHost, OrthogonaliseRefGivesOrthonormalOrZeroColumns) {
  const size_t rows = 300;
  const int r = 4;
  auto p = RandomGradient(rows * r, 3);
  for (size_t i = 0; i < rows; ++i) p[i * r + 3] = 2.0f * p[i * r + 1];  // dependent column
  OrthogonaliseRef(p.data(), rows, r);
  for (int a = 0; a < r; ++a) {
    for (int b = 0; b < r; ++b) {
      double dot = 0;
      for (size_t i = 0; i < rows; ++i) dot += double(p[i * r + a]) * p[i * r + b];
      const double want = (a == b && a != 3) ? 1.0 : 0.0;
      EXPECT_NEAR(dot, want, 1e-5) << a << "," << b;  // f32 storage of unit vectors
    }
  }
}

TEST(GpuCodecHost, LaunchShapes) {
  EXPECT_EQ(ElementwiseLaunch(1).blocks, 1u);
  EXPECT_EQ(ElementwiseLaunch(257).blocks, 2u);
  EXPECT_EQ(ElementwiseLaunch(size_t{1} << 30).blocks, 4096u);  // grid-stride beyond
  EXPECT_EQ(QBlockLaunch(1000, 512).blocks, 2u);
  EXPECT_EQ(QBlockLaunch(1000, 512).threads, 512u);
  EXPECT_EQ(QBlockLaunch(10, 7).threads, 32u);     // whole warps for the shuffles
  EXPECT_EQ(QBlockLaunch(5000, 4096).threads, 1024u);
}

}  // namespace
}  // namespace shoal::gpu_codec
