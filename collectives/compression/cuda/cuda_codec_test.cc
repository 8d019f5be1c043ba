// The device-bucket codecs against their CPU twins, step for step with error feedback:
// the GPU codec over NCCL on one GPU and the CPU codec over a loopback world of one get
// the same gradients; outputs must be identical (same keys, same f32 operations).
// Skips, with the reason, where no GPU is usable.
#include "collectives/compression/cuda/cuda_codec.h"

#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "collectives/memory_kv_store.h"
#include "collectives/test_util.h"
#include "collectives/nccl/nccl_communicator.h"
#include "common/nvml/cuda_device.h"

namespace shoal::gpu_codec {
namespace {

using ::shoal::testing::LoopbackCommunicator;

class CudaCodecTwinTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(CudaCodecTwinTest, MatchesCpuCodecOverSteps) {
  SHOAL_SKIP_WITHOUT_GPU();
  CodecOptions o;
  o.name = std::get<0>(GetParam());
  o.qblock_bits = std::get<1>(GetParam());
  o.seed = 21;
  auto cpu = MakeCodec(o);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  auto gpu = MakeCudaCodec(o, nullptr);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  MemoryKvStore kv;
  nccl::NcclOptions no;
  no.kv = &kv;
  no.prefix = "twin/" + o.name;
  auto comm = nccl::NcclCommunicator::Create(no, nccl::RealNcclApi());
  ASSERT_TRUE(comm.ok()) << comm.status().ToString();
  LoopbackCommunicator loop;

  const size_t count = 20000;
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, count * 4), cudaSuccess);
  std::mt19937_64 rng(4);
  std::normal_distribution<float> d(0.0f, 0.01f);
  for (int step = 0; step < 3; ++step) {  // residuals from step s feed step s+1
    std::vector<float> g(count);
    for (float& v : g) v = d(rng);
    std::vector<float> want = g, got(count);
    ASSERT_TRUE((*cpu)->Reduce(want.data(), count, {}, 1, step, &loop, {}).ok());
    ASSERT_EQ(cudaMemcpy(dev, g.data(), count * 4, cudaMemcpyHostToDevice), cudaSuccess);
    const Status s = (*gpu)->Reduce(dev, count, {}, 1, step, comm->get(), {});
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(cudaMemcpy(got.data(), dev, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], want[i]) << o.name << " step " << step << " i " << i;
  }
  cudaFree(dev);
}

INSTANTIATE_TEST_SUITE_P(Codecs, CudaCodecTwinTest,
                         ::testing::Values(std::make_tuple("none", 8), std::make_tuple("bf16", 8),
                                           std::make_tuple("fp16", 8), std::make_tuple("qblock", 8),
                                           std::make_tuple("qblock", 4), std::make_tuple("topk", 8)));

TEST(CudaCodec, RefusesWhatItCannotDo) {
  CodecOptions o;
  o.name = "powersgd";
  EXPECT_EQ(MakeCudaCodec(o, nullptr).status().code(), StatusCode::kUnimplemented);
  o.name = "qblock";
  o.qblock_bits = 3;
  EXPECT_EQ(MakeCudaCodec(o, nullptr).status().code(), StatusCode::kInvalidArgument);
  o.name = "zip";
  EXPECT_EQ(MakeCudaCodec(o, nullptr).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::gpu_codec
