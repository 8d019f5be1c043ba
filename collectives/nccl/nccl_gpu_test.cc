// NcclCommunicator over real NCCL on one GPU: collectives on device and host buffers,
// the overlapped bucket group, the factory path, and the acceptance case "world size 2,
// one rank started" aborted within its timeout and rebuilt in the same process.
// Every test skips, with the reason, where no GPU is usable.
#include <cuda_runtime.h>

#include <chrono>
#include <vector>

#include <gtest/gtest.h>

#include "collectives/factory.h"
#include "collectives/memory_kv_store.h"
#include "collectives/nccl/nccl_communicator.h"
#include "common/nvml/cuda_device.h"

namespace shoal::nccl {
namespace {

using namespace std::chrono_literals;

NcclOptions One(KvStore* kv, const std::string& prefix) {
  NcclOptions o;
  o.kv = kv;
  o.prefix = prefix;
  o.timeout = 30'000ms;
  return o;
}

TEST(NcclGpu, CollectivesOnOneGpu) {
  SHOAL_SKIP_WITHOUT_GPU();
  MemoryKvStore kv;
  auto c = NcclCommunicator::Create(One(&kv, "gpu/1"), RealNcclApi());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<float> host = {1, 2, 3, 4};
  ASSERT_TRUE((*c)->AllReduce(host.data(), 4, DType::kF32, ReduceOp::kSum, {}).ok());
  EXPECT_EQ(host, (std::vector<float>{1, 2, 3, 4}));  // world of one: the sum is the input
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 4 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*c)->AllReduce(dev, 4, DType::kF32, ReduceOp::kAverage, {}).ok());
  int32_t mine = 5, all = 0;
  ASSERT_TRUE((*c)->AllGather(&mine, &all, 4, {}).ok());
  EXPECT_EQ(all, 5);
  ASSERT_TRUE((*c)->Broadcast(host.data(), 16, 0, {}).ok());
  ASSERT_TRUE((*c)->Barrier({}).ok());

  // Buckets issued after an event on another stream (backward's), then synchronised.
  cudaStream_t compute;
  cudaEvent_t done;
  ASSERT_EQ(cudaStreamCreate(&compute), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(dev, 0, 16, compute), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(done, compute), cudaSuccess);
  ASSERT_TRUE((*c)->EnqueueAllReduce({{dev, 4, DType::kF32}}, ReduceOp::kSum, done, {}).ok());
  ASSERT_TRUE((*c)->Synchronize().ok());
  std::vector<float> back(4, -1);
  ASSERT_EQ(cudaMemcpy(back.data(), dev, 16, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, (std::vector<float>(4, 0.0f)));
  cudaEventDestroy(done);
  cudaStreamDestroy(compute);
  cudaFree(dev);
}

TEST(NcclGpu, PeerNeverArrivesThenRebuild) {
  SHOAL_SKIP_WITHOUT_GPU();
  MemoryKvStore kv;
  NcclOptions o = One(&kv, "gpu/lonely");
  o.size = 2;  // rank 1 is never started
  o.timeout = 5'000ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto lonely = NcclCommunicator::Create(o, RealNcclApi());
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(lonely.status().code(), StatusCode::kDeadlineExceeded) << lonely.status().ToString();
  EXPECT_LT(took, 5.0 + 2.0);  // the timeout plus ncclCommAbort, not a hang
  std::printf("RESULT nccl_abort_seconds %.2f (timeout 5.00)\n", took);

  auto again = NcclCommunicator::Create(One(&kv, "gpu/next-generation"), RealNcclApi());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  float x = 2.0f;
  EXPECT_TRUE((*again)->AllReduce(&x, 1, DType::kF32, ReduceOp::kSum, {}).ok());
}

TEST(NcclGpu, FactoryBuildsNccl) {
  SHOAL_SKIP_WITHOUT_GPU();
  MemoryKvStore kv;
  CommunicatorConfig config;
  config.backend = "nccl";
  config.kv = &kv;
  config.prefix = "gpu/factory";
  auto c = MakeCommunicator(config);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->backend(), "nccl");
}

TEST(NcclGpu, FactoryRefusesNcclWithoutGpu) {
  if (ProbeCudaDevices().device_count > 0) GTEST_SKIP() << "a GPU is present";
  CommunicatorConfig config;
  config.backend = "nccl";
  auto c = MakeCommunicator(config);
  EXPECT_EQ(c.status().code(), StatusCode::kFailedPrecondition) << c.status().ToString();
}

}  // namespace
}  // namespace shoal::nccl
